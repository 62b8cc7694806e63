"""tlkit.datasets: registry, downloads (against a local HTTP server), your own folders, subsets, augmentation.

Every test runs with its own empty data cache (TLKIT_DATA in tmp_path) and no mirror unless
it sets one, so nothing is written to the user's cache.
"""
from __future__ import annotations

import http.server
import io
import os
import socket
import struct
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

import tlkit
from tlkit import datasets as D
from tlkit.download import DownloadError


def _find_mirror() -> Path | None:
    for candidate in (os.environ.get("TLKIT_MIRROR"), Path(__file__).resolve().parents[2] / "shared" / "datasets"):
        if candidate and (Path(candidate) / "hymenoptera_data" / "train").is_dir():
            return Path(candidate)
    return None


MIRROR = _find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="hymenoptera_data not found; set TLKIT_MIRROR")


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "data"
    monkeypatch.setenv("TLKIT_DATA", str(cache))
    monkeypatch.delenv("TLKIT_MIRROR", raising=False)
    return cache


# ---------------------------------------------------------------------------
# Helpers: image folders, a small zip, a local HTTP server
# ---------------------------------------------------------------------------

def _image(path: Path, seed: int, size=(20, 16), fmt="PNG") -> None:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def _folder(root: Path, layout: dict[str, int]) -> Path:
    """``layout``: {"cats": 10} or {"train/cats": 4}; makes that many small PNGs in each folder."""
    for i, (sub, n) in enumerate(layout.items()):
        for j in range(n):
            _image(root / sub / f"img{j:03d}.png", seed=100 * i + j)
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _sample_images() -> list[tuple[str, bytes]]:
    """Three real hymenoptera JPEGs per split and class (synthetic ones if the data is not here)."""
    out = []
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            if MIRROR is not None:
                files = sorted((MIRROR / "hymenoptera_data" / split / cls).glob("*.jpg"))[:3]
                out += [(f"hymenoptera_data/{split}/{cls}/{f.name}", f.read_bytes()) for f in files]
            else:
                for j in range(3):
                    buf = io.BytesIO()
                    Image.new("RGB", (40, 30), (j * 60, 100, 200)).save(buf, format="JPEG")
                    out.append((f"hymenoptera_data/{split}/{cls}/{j}.jpg", buf.getvalue()))
    return out


def _zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        mode = server.modes.get(self.path, "ok")
        if mode == "truncate-once":
            server.modes[self.path] = "ok"
            mode = "truncate"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":  # promise the whole file, send a third, hang up
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.requests = {}, {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny(monkeypatch):
    """A registered dataset 'tiny': a zip of 12 hymenoptera images; returns (register(url), zip bytes, counts)."""
    members = _sample_images()
    counts = {}
    for name, _ in members:
        _, split, cls, _ = name.split("/")
        counts.setdefault(split, {}).setdefault(cls, 0)
        counts[split][cls] += 1

    def register(url: str) -> D.DatasetInfo:
        entry = D.DatasetInfo(name="tiny", title="tiny", description="a few ants and bees, for tests",
                              similarity="similar", classes=("ants", "bees"), url=url, folder="hymenoptera_data",
                              splits=("train", "val"), split_dirs=True, num_images=len(members), counts=counts)
        monkeypatch.setitem(D.DATASETS, "tiny", entry)
        return entry

    return register, _zip_bytes(members), counts


def _assert_clean(cache: Path) -> None:
    """Nothing half-done in the dataset's cache folder: no extracted folder, temp dir, archive or .part."""
    home = cache / "tiny"
    leftovers = sorted(p.name for p in home.iterdir()) if home.exists() else []
    assert leftovers == [], leftovers


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

def test_registry_entries_complete():
    import torchvision.datasets

    expected_classes = {"hymenoptera": 2, "flowers": 5, "eurosat": 10, "digits": 10, "flowers102": 102,
                        "pets": 37, "dtd": 47, "fashion_mnist": 10, "pneumoniamnist": 2, "retinamnist": 5,
                        "pathmnist": 9, "octmnist": 4, "breastmnist": 2, "bloodmnist": 8, "tissuemnist": 8,
                        "organamnist": 11, "organcmnist": 11, "organsmnist": 11}
    assert set(expected_classes) <= set(D.list_datasets())
    assert D.list_datasets() == list(D.DATASETS)
    for name in D.list_datasets():
        entry = D.info(name)
        assert entry.name == name and entry.title
        assert len(entry.description) > 60, name
        assert entry.similarity in ("similar", "different"), name
        assert len(set(entry.classes)) == len(entry.classes) == expected_classes[name], name
        assert {"train", "val", "test"} <= set(entry.splits), name  # every registered dataset has all three
        if entry.source == "archive":
            assert entry.url.startswith("https://") and entry.folder, name
            assert list(entry.classes) == sorted(entry.classes), name  # folder order = label order
        elif entry.source == "torchvision":
            assert hasattr(torchvision.datasets, entry.torchvision) and entry.resources, name
            assert set(entry.split_map) == set(entry.splits), name
            assert all(url.startswith("http") for url, _ in entry.resources), name
        elif entry.source == "medmnist":
            assert entry.url == f"https://zenodo.org/records/10519652/files/{name}.npz?download=1", name
            assert entry.licence == "CC BY 4.0" and set(entry.md5) == {28, 64, 128, 224}, name
            assert all(len(v) == 32 for v in entry.md5.values()) and entry.split_sizes, name
            assert entry.num_images == sum(entry.split_sizes.values()), name
        else:
            assert entry.source == "sklearn" and entry.url is None
    assert D.info("hymenoptera").url == "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
    assert D.info("flowers").url.endswith("/flower_photos.tgz")
    assert D.info("eurosat").url == "https://madm.dfki.de/files/sentinel/EuroSAT.zip"
    assert D.info("Fashion-MNIST") is D.info("fashion_mnist")
    assert D.info("eurosat").similarity == "different" and D.info("hymenoptera").similarity == "similar"
    assert D.info("pneumoniamnist").md5[28] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert D.info("retinamnist").md5[28] == "bd4c0672f1bba3e3a89f0e4e876791e4"
    assert D.info("pneumoniamnist").classes == ("normal", "pneumonia")
    assert "dermamnist" not in D.DATASETS and "chestmnist" not in D.DATASETS  # CC BY-NC; multi-label
    with pytest.raises(tlkit.ArgumentError, match="hymenoptera"):
        D.info("imagenet")


def test_register_checks_similarity_and_duplicates():
    before = dict(D.DATASETS)
    entry = replace(D.info("hymenoptera"), name="mine")
    try:
        assert D.register(entry) is entry and "mine" in D.list_datasets()
        with pytest.raises(ValueError, match="already registered"):
            D.register(entry)
        with pytest.raises(ValueError, match="similarity"):
            D.register(replace(entry, name="other", similarity="close"))
        with pytest.raises(tlkit.ArgumentError, match="DatasetInfo"):
            D.register({"name": "x"})
    finally:
        D.DATASETS.pop("mine", None)
    assert D.DATASETS == before


# ---------------------------------------------------------------------------
# Hymenoptera from the classroom mirror (unpacked folder, used in place)
# ---------------------------------------------------------------------------

@needs_mirror
def test_hymenoptera_loads_from_mirror_folder(monkeypatch, data_cache):
    monkeypatch.setenv("TLKIT_MIRROR", str(MIRROR))
    loaded = {s: D.load("hymenoptera", split=s, progress=False) for s in ("train", "val", "test")}
    for folder_name, splits in (("train", ["train", "test"]), ("val", ["val"])):
        folder = MIRROR / "hymenoptera_data" / folder_name
        expected = {c: sum(1 for p in (folder / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
                    for c in ("ants", "bees")}
        assert expected == dict(D.info("hymenoptera").counts[folder_name])
        paths = [p for s in splits for p in loaded[s].paths]
        assert len(paths) == len(set(paths)) == sum(expected.values())  # train and test partition the train folder
        for s in splits:
            assert loaded[s].classes == ["ants", "bees"]
            assert loaded[s].root == folder  # used in place ...
            assert all(p.is_relative_to(folder) for p in loaded[s].paths)
    assert not (data_cache / "hymenoptera").exists()  # ... not copied
    # the documented split: the tutorial's val folder whole; 20 % of its train folder per class (seed 0) is test
    assert {s: ds.counts() for s, ds in loaded.items()} == {
        "train": {"ants": 98, "bees": 97}, "val": {"ants": 70, "bees": 83}, "test": {"ants": 25, "bees": 24}}
    assert D.load("hymenoptera", split="test", progress=False).paths == loaded["test"].paths  # deterministic
    ds = loaded["val"]
    img = ds.load_image(0)
    assert img.mode == "RGB" and min(img.size) > 50
    x, y = ds.with_transform(D.eval_transform("efficientnet_lite0"))[len(ds) - 1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1


def test_status_says_where_data_would_come_from(monkeypatch, tmp_path, tiny):
    register, body, counts = tiny
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")
    assert D.status("digits") == "bundled"
    assert D.status("tiny") == "needs download" and D.status("fashion_mnist") == "needs download"
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "tiny.zip").write_bytes(body)
    monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "mirror"))
    assert D.status("tiny") == "mirror"
    D.load("tiny", progress=False)
    assert D.status("tiny") == "cached"


# ---------------------------------------------------------------------------
# Downloads against a local HTTP server
# ---------------------------------------------------------------------------

def test_download_extracts_and_caches(server, tiny, data_cache):
    register, body, counts = tiny
    server.files["/tiny.zip"] = body
    register(server.url + "/tiny.zip")
    train = D.load("tiny", "train", progress=False)
    val = D.load("tiny", "val", progress=False)
    assert train.counts() == counts["train"] and val.counts() == counts["val"]
    assert train.root == data_cache / "tiny" / "hymenoptera_data" / "train"
    assert server.requests == ["/tiny.zip"]  # downloaded once
    assert sorted(p.name for p in (data_cache / "tiny").iterdir()) == ["hymenoptera_data"]  # archive removed
    assert train.load_image(0).mode == "RGB"
    if MIRROR is not None:  # the same bytes as the real file
        original = MIRROR / "hymenoptera_data" / "train" / "ants" / train.paths[0].name
        assert train.paths[0].read_bytes() == original.read_bytes()


def test_truncated_download_is_retried(server, tiny, data_cache):
    register, body, counts = tiny
    server.files["/tiny.zip"] = body
    server.modes["/tiny.zip"] = "truncate-once"
    register(server.url + "/tiny.zip")
    ds = D.load("tiny", "val", progress=False)
    assert ds.counts() == counts["val"]
    assert server.requests == ["/tiny.zip", "/tiny.zip"]


def test_truncated_every_time_fails_cleanly_then_works(server, tiny, data_cache):
    register, body, counts = tiny
    server.files["/tiny.zip"] = body
    server.modes["/tiny.zip"] = "truncate"
    register(server.url + "/tiny.zip")
    with pytest.raises(DownloadError, match="truncated") as err:
        D.load("tiny", progress=False)
    assert "tiny.zip" in str(err.value) and "What to do" in str(err.value)
    _assert_clean(data_cache)
    server.modes["/tiny.zip"] = "ok"
    assert D.load("tiny", progress=False).counts() == counts["train"]


@pytest.mark.parametrize("damage", ["flipped bytes", "web page"])
def test_corrupt_archive_gives_clear_error_and_nothing_half_extracted(server, tiny, data_cache, damage):
    register, body, counts = tiny
    if damage == "flipped bytes":  # a real zip with its compressed data damaged
        middle = len(body) // 2
        broken = body[:middle] + bytes(b ^ 0xFF for b in body[middle:middle + 2000]) + body[middle + 2000:]
    else:
        broken = b"<html><body>Please log in to the campus network</body></html>"
    server.files["/tiny.zip"] = broken
    register(server.url + "/tiny.zip")
    with pytest.raises(DownloadError, match="broken twice") as err:
        D.load("tiny", progress=False)
    message = str(err.value)
    assert "tiny.zip" in message and "What to do" in message
    if damage == "web page":
        assert "web page" in message
    assert server.requests == ["/tiny.zip", "/tiny.zip"]  # downloaded afresh once before giving up
    _assert_clean(data_cache)
    server.files["/tiny.zip"] = body  # the server is fixed: the next try works
    assert D.load("tiny", "val", progress=False).counts() == counts["val"]


def _tgz_bytes(members: list[tuple[str, bytes]]) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def test_tgz_without_split_folders_is_split_per_class(server, monkeypatch, data_cache):
    """Like flower_photos.tgz: one folder per class, a LICENSE file beside them, no train/val."""
    members = [(f"flower_photos/{cls}/{cls}{j}.jpg", data)
               for cls in ("daisy", "roses") for j, (_, data) in enumerate(_sample_images()[:10])]
    members.append(("flower_photos/LICENSE.txt", b"All images are licensed CC-BY."))
    server.files["/petals.tgz"] = body = _tgz_bytes(members)
    entry = D.DatasetInfo(name="petals", title="petals", description="for tests", similarity="similar",
                          classes=("daisy", "roses"), url=server.url + "/petals.tgz", folder="flower_photos",
                          num_images=20)
    monkeypatch.setitem(D.DATASETS, "petals", entry)
    train, val, test, everything = (D.load("petals", s, progress=False) for s in ("train", "val", "test", "all"))
    # the registry's default for data without split folders: 70/15/15 per class (10 -> 7/1/2 after rounding)
    assert train.counts() == {"daisy": 7, "roses": 7} and val.counts() == {"daisy": 1, "roses": 1}
    assert test.counts() == {"daisy": 2, "roses": 2}
    assert sorted(train.paths + val.paths + test.paths) == sorted(everything.paths)
    assert len(set(train.paths + val.paths + test.paths)) == 20
    assert (data_cache / "petals" / "flower_photos" / "LICENSE.txt").is_file()
    with pytest.raises(ValueError, match="splits train, val, test, all"):
        D.load("petals", "holdout")

    server.files["/petals.tgz"] = body[: len(body) // 2]  # a complete download of a broken file
    entry2 = replace(entry, name="petals2", url=server.url + "/petals.tgz")
    monkeypatch.setitem(D.DATASETS, "petals2", entry2)
    with pytest.raises(DownloadError, match="damaged"):
        D.load("petals2", progress=False)
    assert sorted(p.name for p in (data_cache / "petals2").iterdir()) == []


def test_archive_with_unexpected_contents_is_rejected(server, tiny, data_cache):
    register, body, counts = tiny
    server.files["/tiny.zip"] = body
    entry = register(server.url + "/tiny.zip")
    D.DATASETS["tiny"] = replace(entry, num_images=entry.num_images + 1)
    with pytest.raises(DownloadError, match="not as expected") as err:
        D.load("tiny", progress=False)
    assert f"expected {entry.num_images + 1} images" in str(err.value)
    _assert_clean(data_cache)


def test_mirror_directory_holding_the_archive(tmp_path, monkeypatch, tiny):
    register, body, counts = tiny
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "tiny.zip").write_bytes(body)
    monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "mirror"))
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")  # the canonical server is down
    assert D.load("tiny", progress=False).counts() == counts["train"]
    assert (tmp_path / "mirror" / "tiny.zip").read_bytes() == body  # the mirror is left as it was


def test_mirror_base_url(server, monkeypatch, tiny):
    register, body, counts = tiny
    server.files["/classroom/tiny.zip"] = body
    monkeypatch.setenv("TLKIT_MIRROR", server.url + "/classroom/")
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")
    assert D.load("tiny", "val", progress=False).counts() == counts["val"]
    assert server.requests == ["/classroom/tiny.zip"]


def test_mirror_folder_that_is_incomplete_is_reported(tmp_path, monkeypatch, tiny):
    register, body, counts = tiny
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        zf.extractall(tmp_path / "mirror")
    next(iter((tmp_path / "mirror" / "hymenoptera_data" / "val" / "bees").iterdir())).unlink()
    monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "mirror"))
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")
    with pytest.raises(D.DatasetError, match="mirror") as err:
        D.load("tiny", progress=False)
    assert "TLKIT_MIRROR" in str(err.value)


def test_offline_names_the_file_and_what_to_do(tiny, data_cache):
    register, body, counts = tiny
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")
    with pytest.raises(DownloadError) as err:
        D.load("tiny", progress=False)
    message = str(err.value)
    assert str(data_cache / "tiny" / "tiny.zip") in message
    assert "What to do" in message and "TLKIT_MIRROR" in message
    _assert_clean(data_cache)


def test_download_false_when_not_cached(tiny):
    register, body, counts = tiny
    register(f"http://127.0.0.1:{_closed_port()}/tiny.zip")
    with pytest.raises(D.DatasetError, match="download=True"):
        D.load("tiny", download=False)


# ---------------------------------------------------------------------------
# torchvision datasets (offline: a fake Fashion-MNIST in a mirror folder)
# ---------------------------------------------------------------------------

def _idx(data: torch.Tensor) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, data.ndim) + b"".join(struct.pack(">I", d) for d in data.shape)
    return header + data.to(torch.uint8).numpy().tobytes()


def test_torchvision_dataset_from_mirror_folder(tmp_path, monkeypatch):
    raw = tmp_path / "mirror" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(torch.randint(0, 256, (n, 28, 28), generator=g)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(torch.arange(n) % 10))
    monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "mirror"))
    train = D.load("fashion_mnist", "train", progress=False)
    val = D.load("fashion_mnist", "val", progress=False)
    assert len(train) == 12 and len(val) == 5
    assert train.classes == list(D.info("fashion_mnist").classes) and train.classes[9] == "Ankle boot"
    assert train.targets == [i % 10 for i in range(12)]
    img = train.load_image(3)
    assert img.mode == "RGB" and img.size == (28, 28)
    assert train.key != val.key


def test_torchvision_dataset_offline_errors(monkeypatch, data_cache):
    with pytest.raises(D.DatasetError, match="not downloaded yet"):
        D.load("fashion_mnist", download=False)
    entry = D.info("fashion_mnist")
    dead = f"http://127.0.0.1:{_closed_port()}/"
    monkeypatch.setitem(D.DATASETS, "fashion_mnist",
                        replace(entry, resources=tuple((dead + rel.rsplit("/", 1)[-1], rel)
                                                       for _, rel in entry.resources)))
    with pytest.raises(DownloadError, match="train-images-idx3-ubyte.gz") as err:
        D.load("fashion_mnist", progress=False)
    assert "What to do" in str(err.value)
    assert not list(data_cache.rglob("*.part"))


# ---------------------------------------------------------------------------
# Bring your own data
# ---------------------------------------------------------------------------

def test_own_flat_folder_is_split_deterministically(tmp_path):
    root = _folder(tmp_path / "pets", {"cats": 10, "dogs": 6})
    train, val, everything = (D.load(root, s, progress=False) for s in ("train", "val", "all"))
    assert train.classes == val.classes == ["cats", "dogs"]
    assert val.counts() == {"cats": 2, "dogs": 1} and train.counts() == {"cats": 8, "dogs": 5}
    assert not set(train.paths) & set(val.paths)
    assert sorted(train.paths + val.paths) == sorted(everything.paths) == _files(root)
    assert D.load(str(root), "val", progress=False).paths == val.paths  # same split every time
    assert len({train.key, val.key, everything.key}) == 3
    assert train.name == "pets" and "pets" in repr(train)


def test_own_split_folders(tmp_path):
    root = _folder(tmp_path / "data", {"train/a": 3, "train/b": 2, "valid/a": 2, "valid/b": 1})
    train = D.load(root, "train", progress=False)
    val = D.load(root, "val", progress=False)
    assert train.counts() == {"a": 3, "b": 2} and val.counts() == {"a": 2, "b": 1}
    assert val.root == root / "valid"
    x, y = D.load(root, "val", transform=D.eval_transform("efficientnet_lite0"), progress=False)[2]
    assert x.shape == (3, 224, 224) and y == 1
    with pytest.raises(D.DatasetError, match="no 'test' folder") as err:
        D.load(root, "test")
    assert "'train', 'val'" in str(err.value)


def test_own_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        D.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="registered dataset"):
        D.load("hymenopterra")

    empty_class = _folder(tmp_path / "e", {"cats": 3, "dogs": 0})
    (empty_class / "dogs").mkdir()
    (empty_class / "dogs" / "notes.txt").write_text("to do")
    with pytest.raises(D.DatasetError, match="hold no images") as err:
        D.load(empty_class)
    assert str(empty_class / "dogs") in str(err.value) and "notes.txt" in str(err.value)

    nothing = tmp_path / "n"
    (nothing / "docs").mkdir(parents=True)
    with pytest.raises(D.DatasetError, match="hold no images|No images"):
        D.load(nothing)
    loose = _folder(tmp_path / "loose", {".": 3})
    with pytest.raises(D.DatasetError, match="no class folders"):
        D.load(loose)

    mismatch = _folder(tmp_path / "m", {"train/cats": 2, "train/dogs": 2, "val/cats": 1, "val/dog": 1})
    with pytest.raises(D.DatasetError, match="different classes") as err:
        D.load(mismatch, "val")
    assert "['cats', 'dogs']" in str(err.value) and "['cats', 'dog']" in str(err.value)

    flat = _folder(tmp_path / "f", {"cats": 3, "dogs": 3})
    with pytest.raises(D.DatasetError, match="split='all'"):
        D.load(flat, "test")
    with pytest.raises(D.DatasetError, match="is a file"):
        D.load(flat / "cats" / "img000.png")


def test_corrupt_image_is_named_and_never_deleted(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 4, "dogs": 4})
    good = D.load(root, "all", progress=False)
    before = _files(root)
    broken = root / "dogs" / "img002.png"
    broken.write_bytes(b"this is not a png")  # changed after a successful check: checked again
    with pytest.raises(D.DatasetError, match="cannot be read") as err:
        D.load(root, "all", progress=False)
    assert str(broken) in str(err.value) and "1 of 8" in str(err.value)
    assert _files(root) == before and broken.read_bytes() == b"this is not a png"
    unchecked = D.load(root, "all", verify=False, progress=False)
    assert unchecked.key != good.key  # the content changed, so the key did
    with pytest.raises(D.DatasetError, match="img002.png"):
        unchecked.load_image(6)


# ---------------------------------------------------------------------------
# ImageDataset, subset
# ---------------------------------------------------------------------------

def test_digits_offline():
    train, val, test = D.load("digits", "train"), D.load("digits", "val"), D.load("digits", "test")
    assert train.classes == [str(d) for d in range(10)]
    assert len(train) + len(val) + len(test) == len(D.load("digits", "all")) == 1797
    assert (len(train), len(val), len(test)) == (1259, 269, 269)  # 70/15/15 per class, documented in the entry
    assert all(130 > n > 115 for n in train.counts().values())
    img = val.load_image(0)
    assert img.mode == "RGB" and img.size == (32, 32)
    assert train.key != val.key and train.key == D.load("digits", "train").key
    x, y = val.with_transform(D.eval_transform("efficientnet_lite0"))[0]
    assert x.shape == (3, 224, 224) and y == val.targets[0]


def test_plot_shows_images_with_class_names():
    import matplotlib

    matplotlib.use("Agg")
    ds = D.load("digits", "val")
    fig = ds.plot(n=6, ncols=3)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 6 and all(ax.get_title() in ds.classes for ax in titled)
    assert titled[0].images[0].get_array().shape == (32, 32, 3)
    import matplotlib.pyplot as plt

    assert fig.number not in plt.get_fignums()  # closed: a notebook shows the returned figure once


def test_image_dataset_basics():
    ds = D.ImageDataset.from_images([torch.full((6, 6), 40 * i, dtype=torch.uint8).numpy() for i in range(4)],
                                    [0, 1, 0, 1], ["a", "b"], name="toy")
    assert len(ds) == 4 and ds.targets == [0, 1, 0, 1] and ds.paths is None
    img, label = ds[-1]
    assert label == 1 and img.mode == "RGB" and img.getpixel((0, 0)) == (120, 120, 120)
    with pytest.raises(IndexError):
        ds[4]
    t = D.eval_transform("efficientnet_lite0")
    other = ds.with_transform(t)
    assert other.transform is t and ds.transform is None and other.key == ds.key
    batch, labels = next(iter(torch.utils.data.DataLoader(other, batch_size=4)))
    assert batch.shape == (4, 3, 224, 224) and labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="targets"):
        D.ImageDataset.from_images([ds.load_image(0)], [2], ["a", "b"])


def test_subset_is_stratified_and_deterministic(tmp_path):
    digits = D.load("digits", "train")
    small = D.subset(digits, per_class=5)
    assert small.counts() == {str(d): 5 for d in range(10)} and len(small) == 50
    again = D.subset(digits, per_class=5, seed=0)
    assert again.key == small.key and again.targets == small.targets
    assert [again.load_image(i).tobytes() for i in range(50)] == [small.load_image(i).tobytes() for i in range(50)]
    other = D.subset(digits, per_class=5, seed=1)
    assert other.key != small.key
    assert len({small.key, other.key, digits.key}) == 3 and small.key.startswith(digits.key)

    folder = D.load(_folder(tmp_path / "f", {"a": 6, "b": 9}), "all", progress=False)
    sub = D.subset(folder, per_class=4, seed=3)
    assert sub.counts() == {"a": 4, "b": 4} and set(sub.paths) <= set(folder.paths)
    assert [folder.paths.index(p) for p in sub.paths] == sorted(folder.paths.index(p) for p in sub.paths)
    subsub = D.subset(sub, per_class=2)
    assert set(subsub.paths) <= set(sub.paths) and subsub.key != sub.key
    assert [subsub[i][1] for i in range(len(subsub))] == subsub.targets == [0, 0, 1, 1]

    with pytest.raises(ValueError, match="'a' has only 6 images"):
        D.subset(folder, per_class=7)
    with pytest.raises(ValueError, match="positive"):
        D.subset(folder, per_class=0)


# ---------------------------------------------------------------------------
# Augmentation and transforms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["none", "light", "standard", "strong"])
def test_augmentation_presets_on_pil_and_uint8(preset):
    torch.manual_seed(0)
    aug = D.augmentation(preset, size=48)
    pil = Image.new("RGB", (90, 70), (200, 30, 10))
    out = aug(pil)
    assert isinstance(out, Image.Image) and out.size == (48, 48) and out.mode == "RGB"
    single = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    assert aug(single).shape == (3, 48, 48) and aug(single).dtype == torch.uint8
    batch = single.expand(6, -1, -1, -1).clone()
    result = aug(batch)
    assert result.shape == (6, 3, 48, 48) and result.dtype == torch.uint8
    distinct = len({r.numpy().tobytes() for r in result})
    assert distinct == (1 if preset == "none" else 6)  # every image of a batch gets its own draw


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError) as err:
        D.augmentation("medium")
    assert all(repr(name) in str(err.value) for name in ("none", "light", "standard", "strong"))
    custom = lambda img: img  # noqa: E731
    assert D.augmentation(custom) is custom


def test_train_transform_uses_the_backbone_normalisation():
    lite = D.train_transform("efficientnet_lite0", "light")
    norm = lite.transforms[-1]
    assert list(norm.mean) == [0.5] * 3 and list(norm.std) == [0.5] * 3
    resnet = D.train_transform("resnet18").transforms[-1]
    assert resnet.mean == list(tlkit.backbone_info("resnet18").preprocessing.mean) != [0.5] * 3
    x = lite(Image.new("RGB", (300, 200), (255, 0, 0)))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(224, 224), atol=1e-3) and torch.allclose(x[1], -torch.ones(224, 224))
    batch = lite(torch.randint(0, 256, (3, 3, 260, 250), dtype=torch.uint8))
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    assert D.train_transform("efficientnet_lite1", "none")(Image.new("RGB", (300, 300))).shape == (3, 240, 240)


def test_eval_transform_is_the_backbone_preprocess():
    img = Image.new("RGB", (320, 260), (10, 120, 250))
    assert torch.equal(D.eval_transform("efficientnet_lite0")(img), tlkit.preprocess("efficientnet_lite0")(img))
