"""tlkit.datasets on hostile input (issue 13) and on shared, read-only caches (issue 15).

Bit depths, symlink loops, dangling links, one-class folders, loose images, bad argument types,
processes killed mid-extraction, TLKIT_DATA naming a file, concurrent loads into one cache and
read-only caches. Every test uses its own empty data cache and tiny synthetic images.
"""
from __future__ import annotations

import http.server
import io
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlkit
from tlkit import datasets as D
from tlkit.datasets import folders

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "data"
    monkeypatch.setenv("TLKIT_DATA", str(cache))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TLKIT_MIRROR", raising=False)
    return cache


def _png(path: Path, value: int = 0, size=(6, 5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)
    return path


def _classes(root: Path, layout: dict[str, int]) -> Path:
    for i, (sub, n) in enumerate(layout.items()):
        for j in range(n):
            _png(root / sub / f"img{j}.png", value=(40 * i + j) % 256)
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# 16-bit and float images (issue 13, item 3)
# ---------------------------------------------------------------------------

def test_16_bit_png_and_tiff_and_float_tiff_scale_to_8_bit(tmp_path):
    root = tmp_path / "scans"
    ramp16 = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2849)  # 0 .. 65527
    for folder, name, array in (("a", "ramp.png", ramp16), ("a", "ramp.tif", ramp16),
                                ("b", "half.tif", np.full((4, 6), 0.5, np.float32)),
                                ("b", "wide.tif", np.linspace(-3, 5, 24, dtype=np.float32).reshape(4, 6))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / name)
    assert Image.open(root / "a" / "ramp.png").mode == "I;16"  # really 16 bit on disk
    assert Image.open(root / "b" / "half.tif").mode == "F"
    ds = D.load(root, split="all", progress=False)  # verify decodes and converts every file
    got = {p.name: np.asarray(ds.load_image(i)) for i, p in enumerate(ds.paths)}
    expected = np.round(ramp16 / 257).astype(np.uint8)
    for name in ("ramp.png", "ramp.tif"):
        assert got[name].shape == (4, 6, 3) and np.array_equal(got[name][..., 0], expected), name
    assert (got["half.tif"] == 128).all()  # PIL alone: all black
    wide = got["wide.tif"][..., 0]
    assert wide.min() == 0 and wide.max() == 255 and (np.diff(wide.ravel().astype(int)) >= 0).all()
    assert len({tuple(np.unique(a)) for a in got.values()}) > 1  # not all white or all black


def test_verify_uses_the_loading_conversion(tmp_path, monkeypatch):
    root = _classes(tmp_path / "p", {"a": 2, "b": 2})
    Image.fromarray(np.full((3, 3), 1000, np.uint16)).save(root / "a" / "deep.png")

    def refuse(img):
        if img.mode.startswith("I"):
            raise ValueError("unsupported bit depth")
        return img.convert("RGB")

    monkeypatch.setattr(folders, "to_rgb", refuse)
    with pytest.raises(D.DatasetError, match="cannot be read") as err:
        D.load(root, split="all", progress=False)
    assert "deep.png" in str(err.value) and "unsupported bit depth" in str(err.value)


# ---------------------------------------------------------------------------
# Symlinks (issue 13, item 4; dangling links)
# ---------------------------------------------------------------------------

def test_symlink_loop_is_not_followed_and_warned(tmp_path):
    root = _classes(tmp_path / "hym", {"ants": 3, "bees": 3})
    (root / "bees" / "loop").symlink_to("..")          # ln -s .. bees/loop
    (root / "ants" / "up").symlink_to("../..")         # a link above the dataset
    with pytest.warns(UserWarning, match="Skipped 2 symbolic link") as record:
        ds = D.load(root, split="all", progress=False)
    assert "loop" in str(record[0].message)
    assert ds.counts() == {"ants": 3, "bees": 3}  # no duplicates, no ants labelled bees
    assert len(set(ds.paths)) == len(ds.paths) == 6


def test_symlink_between_splits_does_not_leak(tmp_path):
    root = _classes(tmp_path / "d", {"train/a": 2, "train/b": 2, "val/a": 2, "val/b": 2})
    (root / "train" / "a" / "more").symlink_to(root / "val" / "a")  # val images would leak into train
    with pytest.warns(UserWarning, match="symbolic link"):
        train = D.load(root, split="train", progress=False)
    with pytest.warns(UserWarning, match="symbolic link"):  # the train folder is scanned for its classes too
        val = D.load(root, split="val", progress=False)
    assert train.counts() == {"a": 2, "b": 2}
    assert not {p.resolve() for p in train.paths} & {p.resolve() for p in val.paths}


def test_symlinked_class_folder_inside_the_tree_is_skipped(tmp_path):
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    (root / "c").symlink_to(root / "a")  # the same images under a second label
    with pytest.warns(UserWarning, match="Skipped 1 symbolic link"):
        ds = D.load(root, split="all", progress=False)
    assert ds.classes == ["a", "b"] and len(set(p.resolve() for p in ds.paths)) == 4


def test_symlink_to_a_folder_outside_is_followed(tmp_path):
    outside = _classes(tmp_path / "elsewhere", {"extra": 2})
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    (root / "b" / "shared").symlink_to(outside / "extra")
    ds = D.load(root, split="all", progress=False)
    assert ds.counts() == {"a": 2, "b": 4}


def test_dangling_symlink_is_named(tmp_path):
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    (root / "b" / "ghost.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(D.DatasetError, match="broken symbolic link") as err:
        D.load(root, split="all", progress=False)
    assert str(root / "b" / "ghost.png") in str(err.value) and "deleted.png" in str(err.value)


# ---------------------------------------------------------------------------
# Folder layout mistakes (issue 13, item 5)
# ---------------------------------------------------------------------------

def test_one_class_means_one_level_too_high(tmp_path):
    top = _classes(tmp_path / "downloads", {"hymenoptera_data/train/ants": 2, "hymenoptera_data/train/bees": 2,
                                             "hymenoptera_data/val/ants": 1, "hymenoptera_data/val/bees": 1})
    before = _files(top)
    with pytest.raises(D.DatasetError, match="one level too high") as err:
        D.load(top, split="all", progress=False)
    message = str(err.value)
    assert "'hymenoptera_data'" in message and "6 images" in message
    assert "train/ants" in message and str(top / "hymenoptera_data") in message
    assert _files(top) == before
    one = _classes(tmp_path / "one", {"train/cats": 2, "val/cats": 1})
    with pytest.raises(D.DatasetError, match="only one class folder, 'cats'"):
        D.load(one, split="train", progress=False)


def test_loose_images_beside_class_folders_are_warned(tmp_path):
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    _png(root / "stray1.png")
    _png(root / "stray2.jpg".replace(".jpg", ".png"))
    with pytest.warns(UserWarning, match=r"2 image\(s\) lie directly in") as record:
        ds = D.load(root, split="all", progress=False)
    assert str(root) in str(record[0].message) and "stray1.png" in str(record[0].message)
    assert ds.counts() == {"a": 2, "b": 2}


@pytest.mark.parametrize("call, message", [
    (lambda root: D.load(None), "got None (NoneType)"),
    (lambda root: D.load(42), "got 42 (int)"),
    (lambda root: D.load(root, split=1), "split must be"),
    (lambda root: D.load(root, transform="resize"), "transform must be a callable"),
    (lambda root: D.load(root, download="yes"), "download must be True or False"),
    (lambda root: D.load(root, size=28), "MedMNIST datasets only"),
    (lambda root: D.load("digits", size=64), "MedMNIST datasets only"),
    (lambda root: D.load("pneumoniamnist", size=32), "sizes 28, 64, 128, 224"),
    (lambda root: D.subset(D.load(root, "all", verify=False), per_class=True), "per_class must be"),
    (lambda root: D.subset([1, 2], per_class=1), "ImageDataset"),
    (lambda root: D.augmentation("medium"), "'standard'"),
    (lambda root: D.augmentation("light", size=64.5), "size must be a positive integer"),
    (lambda root: D.stratified_split([0, 1], 1.5), "strictly between 0 and 1"),
    (lambda root: D.stratified_split([0, 1], 0.5, seed=-1), "seed must be"),
])
def test_bad_arguments_are_argument_errors(tmp_path, call, message):
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    before = _files(tmp_path)
    with pytest.raises(tlkit.ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(root)
    assert _files(tmp_path) == before  # nothing written


def test_tlkit_data_naming_a_file_is_a_clear_error(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("keep me")
    monkeypatch.setenv("TLKIT_DATA", str(not_a_folder))
    root = _classes(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(D.DatasetError, match="is a file, not a folder") as err:
        D.load(root, progress=False)
    assert f"TLKIT_DATA={not_a_folder}" in str(err.value) and "What to do" in str(err.value)
    assert not_a_folder.read_text() == "keep me"


# ---------------------------------------------------------------------------
# Archives: stale extraction folders, concurrent loads, read-only caches
# ---------------------------------------------------------------------------

def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (value, 3, 200)).save(buf, format="PNG")
    return buf.getvalue()


ARCHIVE = _zip({f"pics/{split}/{cls}/{j}.png": _png_bytes(10 * j + (cls == "b"))
                for split in ("train", "val") for cls in ("a", "b") for j in range(3)})


def _entry(url: str) -> D.DatasetInfo:
    return D.DatasetInfo(name="pics", title="pics", description="twelve tiny pictures, for tests",
                         similarity="different", classes=("a", "b"), url=url, folder="pics",
                         splits=("train", "val", "test"), split_dirs=True, test_fraction=0.5, num_images=12)


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 1024):  # slow enough for several processes to overlap
            self.wfile.write(body[i:i + 1024])
            time.sleep(self.server.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    srv.files, srv.hits, srv.delay = {}, [], 0.0
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_stale_extraction_left_by_a_killed_process_is_removed(tmp_path, server, monkeypatch, data_cache):
    """A real process is killed (SIGKILL) while unpacking; the next load cleans up and works."""
    server.files["/pics.zip"] = ARCHIVE
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from tlkit import datasets as D
from tlkit.datasets import folders
real = folders._unpack
def unpack_then_hang(archive, dest):
    real(archive, dest)
    print("unpacked", flush=True)
    time.sleep(60)
folders._unpack = unpack_then_hang
D.DATASETS["pics"] = D.DatasetInfo(name="pics", title="pics", description="x" * 70, similarity="different",
    classes=("a", "b"), url={server.url + "/pics.zip"!r}, folder="pics", splits=("train", "val", "test"),
    split_dirs=True, test_fraction=0.5, num_images=12)
D.load("pics", progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "unpacked"
    finally:
        proc.kill()
        proc.wait()
    home = data_cache / "pics"
    stale = [p.name for p in home.iterdir()]
    assert any(name.startswith(".pics.extracting-") for name in stale), stale  # what the kill left
    (home / "pics.zip.123.part").write_bytes(b"half")  # and a half download of another killed process
    monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))
    assert D.load("pics", split="test", progress=False).counts() == {"a": 2, "b": 2}
    assert sorted(p.name for p in home.iterdir()) == ["pics"]  # stale folder and .part removed


def _load_in_child(queue, split):
    try:
        ds = D.load("pics", split=split, progress=False)
        queue.put((split, ds.counts(), str(ds.root)))
    except BaseException as exc:  # report, do not hang the parent
        queue.put((split, repr(exc), None))


@pytest.mark.parametrize("via", ["slow server", "mirror folder"])
def test_concurrent_loads_into_one_empty_cache_all_succeed(tmp_path, server, monkeypatch, data_cache, via):
    if via == "slow server":
        server.files["/pics.zip"] = ARCHIVE
        server.delay = 0.01
        monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))
    else:
        (tmp_path / "mirror").mkdir()
        (tmp_path / "mirror" / "pics.zip").write_bytes(ARCHIVE)
        monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "mirror"))
        monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))  # not served: 404
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    splits = ["train", "val", "test"]
    procs = [ctx.Process(target=_load_in_child, args=(queue, s)) for s in splits]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [r[0] for r in results] == sorted(splits)
    for split, counts, root in results:
        assert isinstance(counts, dict), counts  # no DownloadError, no half-extracted folder
        assert counts == {"train": {"a": 1, "b": 1}, "val": {"a": 3, "b": 3}, "test": {"a": 2, "b": 2}}[split]
        assert root.startswith(str(data_cache / "pics" / "pics"))
    assert sorted(p.name for p in (data_cache / "pics").iterdir()) == ["pics"]  # no .part, no .extracting-*
    if via == "slow server":
        assert server.hits == ["/pics.zip"]  # the others waited and reused it


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only, also for root (who ignores permission bits): writes there fail."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    monkeypatch.setattr("tlkit.download.os.access",
                        lambda p, mode, _real=os.access: False if Path(p).is_relative_to(folder) else _real(p, mode))
    real_mkdir, real_touch = Path.mkdir, Path.touch

    def mkdir(self, *args, **kwargs):
        if Path(self).is_relative_to(folder) and not self.is_dir():
            raise PermissionError(13, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    def touch(self, *args, **kwargs):
        if Path(self).is_relative_to(folder):
            raise PermissionError(13, "Read-only file system", str(self))
        return real_touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "touch", touch)


@pytest.fixture
def restore_permissions(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def test_own_folder_loads_with_a_read_only_data_cache(tmp_path, monkeypatch, data_cache, restore_permissions):
    root = _classes(tmp_path / "mine", {"a": 3, "b": 3})
    _read_only(monkeypatch, data_cache)
    ds = D.load(root, split="all", progress=False)
    assert ds.counts() == {"a": 3, "b": 3}
    assert _files(data_cache) == []  # nothing written into the read-only cache
    assert len(list((tmp_path / "cache" / "verified").iterdir())) == 1  # the stamp went to the user's cache


def test_read_only_shared_cache_is_read_and_downloads_go_to_the_user_cache(tmp_path, server, monkeypatch,
                                                                            data_cache, restore_permissions):
    server.files["/pics.zip"] = ARCHIVE
    monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))
    _read_only(monkeypatch, data_cache)
    ds = D.load("pics", split="val", progress=False)  # not in the shared cache: downloaded for this user
    assert ds.counts() == {"a": 3, "b": 3}
    assert ds.root == tmp_path / "cache" / "data-fallback" / "pics" / "pics" / "val"
    assert _files(data_cache) == [] and D.status("pics") == "cached"

    monkeypatch.undo()  # the instructor pre-warms the shared cache; then it is read-only for students
    for path in [data_cache, *data_cache.rglob("*")]:
        path.chmod(0o755)
    monkeypatch.delenv("TLKIT_MIRROR", raising=False)
    monkeypatch.setenv("TLKIT_DATA", str(data_cache))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))
    D.load("pics", split="train", verify=False, progress=False)
    _read_only(monkeypatch, data_cache)
    before = _files(data_cache)
    hits = len(server.hits)
    ds = D.load("pics", split="test", progress=False)
    assert ds.root == data_cache / "pics" / "pics" / "train" and ds.counts() == {"a": 2, "b": 2}
    assert _files(data_cache) == before and len(server.hits) == hits  # read in place, nothing fetched


def test_prefetch_warms_a_cache_that_students_then_read_read_only(tmp_path, server, monkeypatch, data_cache,
                                                                  restore_permissions):
    server.files["/pics.zip"] = ARCHIVE
    monkeypatch.setitem(D.DATASETS, "pics", _entry(server.url + "/pics.zip"))
    dead = _entry(server.url + "/gone.zip")
    monkeypatch.setitem(D.DATASETS, "gone", D.DatasetInfo(**{**dead.__dict__, "name": "gone"}))
    result = D.prefetch(["pics", "gone"], progress=False)
    assert result["pics"] == "ok" and result["gone"].startswith("DownloadError: Could not download")
    assert (data_cache / "pics" / "pics" / "train").is_dir() and len(list((data_cache / ".verified").iterdir())) >= 2
    _read_only(monkeypatch, data_cache)
    before = _files(data_cache)
    assert D.load("pics", split="test", progress=False).counts() == {"a": 2, "b": 2}
    assert _files(data_cache) == before and server.hits == ["/pics.zip"] + ["/gone.zip"] * 2
    assert not list((tmp_path / "cache").rglob("verified/*"))  # the shared stamps were enough
    with pytest.raises(tlkit.ArgumentError, match="registered dataset names"):
        D.prefetch("pics")


def test_fetch_into_a_folder_that_cannot_be_written_says_so(tmp_path, monkeypatch):
    from tlkit import download

    target = tmp_path / "shared"
    target.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(download.tempfile, "mkstemp", refuse)
    with pytest.raises(download.DownloadError, match="Cannot write the weights into") as err:
        download.fetch("http://127.0.0.1:9/w.pth", target / "w.pth", what="weights", progress=False)
    assert "TLKIT_CACHE" in str(err.value) and list(target.iterdir()) == []
