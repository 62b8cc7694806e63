"""Registered datasets beyond ImageNet (issue 16): MedMNIST, and train/val/test for every registry entry.

From the classroom mirror: PneumoniaMNIST, RetinaMNIST and the flower photos, counted against the
mirror's README. Downloads of an ``.npz`` go to a local HTTP server on 127.0.0.1 (md5 checked);
``stratified_split``, the one helper behind every random split, is tested on its own.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import tlkit
from tlkit import datasets as D
from tlkit.download import DownloadError


def _find_mirror() -> Path | None:
    for candidate in (os.environ.get("TLKIT_MIRROR"), Path(__file__).resolve().parents[2] / "shared" / "datasets"):
        if candidate and (Path(candidate) / "medmnist" / "pneumoniamnist.npz").is_file():
            return Path(candidate)
    return None


MIRROR = _find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="the classroom mirror (medmnist/, flower_photos/) is not "
                                                         "here; set TLKIT_MIRROR")


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "data"
    monkeypatch.setenv("TLKIT_DATA", str(cache))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TLKIT_MIRROR", raising=False)
    return cache


# ---------------------------------------------------------------------------
# stratified_split: the one implementation
# ---------------------------------------------------------------------------

def test_stratified_split_is_stratified_deterministic_and_local():
    targets = [0] * 50 + [1] * 30 + [2] * 7 + [3] * 1
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    kept, held = D.stratified_split(targets, 0.2, seed=3)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)
    assert sorted(kept + held) == list(range(len(targets))) and not set(kept) & set(held)
    assert kept == sorted(kept) and held == sorted(held)
    per_class = {c: sum(targets[i] == c for i in held) for c in range(4)}
    assert per_class == {0: 10, 1: 6, 2: 1, 3: 0}  # round(n * 0.2), at least one, a single image stays
    assert D.stratified_split(targets, 0.2, seed=3) == (kept, held)
    assert D.stratified_split(targets, 0.2, seed=4) != (kept, held)
    # adding a class does not change the split of the others (each class has its own generator)
    more = targets + [4] * 10
    assert [i for i in D.stratified_split(more, 0.2, seed=3)[1] if i < len(targets)] == held


def test_every_random_split_and_subset_uses_it():
    from tlkit.datasets.loading import split_positions

    digits = D.load("digits", split="all")
    targets = digits.targets
    entry = D.info("digits")
    rest, test = D.stratified_split(targets, entry.test_fraction, entry.seed)
    assert D.load("digits", split="test").targets == [targets[i] for i in test]
    assert split_positions(targets, "test", val_fraction=0.15, test_fraction=0.15) == test
    small = D.subset(digits, per_class=3, seed=5)
    orders = D.splits.class_orders(targets, seed=5)
    assert sorted(small._indices) == sorted(i for c in range(10) for i in orders[c][:3])


# ---------------------------------------------------------------------------
# Every registry dataset: train, val and test, from the mirror
# ---------------------------------------------------------------------------

@needs_mirror
def test_pneumoniamnist_from_the_mirror(monkeypatch, data_cache):
    monkeypatch.setenv("TLKIT_MIRROR", str(MIRROR))
    got = {s: D.load("pneumoniamnist", split=s, progress=False) for s in ("train", "val", "test")}
    # the mirror README: train 1214 / 3494, val 135 / 389, test 234 / 390
    assert {s: ds.counts() for s, ds in got.items()} == {
        "train": {"normal": 1214, "pneumonia": 3494}, "val": {"normal": 135, "pneumonia": 389},
        "test": {"normal": 234, "pneumonia": 390}}
    img = got["test"].load_image(0)
    assert img.mode == "RGB" and img.size == (28, 28)  # grey -> 3 channels for the backbones
    r, g, b = (np.asarray(img)[..., k] for k in range(3))
    assert np.array_equal(r, g) and np.array_equal(g, b) and r.std() > 5  # a real X-ray, not blank
    assert len({ds.key for ds in got.values()}) == 3
    assert not data_cache.exists() or not list(data_cache.rglob("*.npz"))  # read in place, not copied
    x, y = got["val"].with_transform(D.eval_transform("efficientnet_lite0"))[0]
    assert x.shape == (3, 224, 224) and y == got["val"].targets[0]
    assert D.status("pneumoniamnist") == "mirror"


@needs_mirror
def test_retinamnist_from_the_mirror(monkeypatch):
    monkeypatch.setenv("TLKIT_MIRROR", str(MIRROR))
    train = D.load("retinamnist", split="train", progress=False)
    assert train.counts() == {"0": 486, "1": 128, "2": 206, "3": 194, "4": 66}  # the mirror README
    assert len(D.load("retinamnist", split="val", progress=False)) == 120
    assert len(D.load("retinamnist", split="test", progress=False)) == 400
    assert train.load_image(5).size == (28, 28) and train.classes == ["0", "1", "2", "3", "4"]


@needs_mirror
def test_flowers_from_the_mirror_has_a_documented_stratified_split(monkeypatch):
    monkeypatch.setenv("TLKIT_MIRROR", str(MIRROR))
    got = {s: D.load("flowers", split=s, verify=False, progress=False) for s in ("train", "val", "test", "all")}
    readme = {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}  # mirror README
    assert got["all"].counts() == readme
    assert (len(got["train"]), len(got["val"]), len(got["test"])) == (2568, 551, 551)  # as the entry says
    assert "2568/551/551" in D.info("flowers").description
    for name, n in readme.items():
        parts = [got[s].counts()[name] for s in ("train", "val", "test")]
        assert sum(parts) == n and abs(parts[1] - 0.15 * n) <= 1 and abs(parts[2] - 0.15 * n) <= 1, name
    paths = [p for s in ("train", "val", "test") for p in got[s].paths]
    assert len(set(paths)) == len(paths) == 3670
    assert D.load("flowers", split="test", verify=False, progress=False).paths == got["test"].paths


@needs_mirror
def test_mirror_file_with_the_wrong_structure_is_reported(tmp_path, monkeypatch):
    (tmp_path / "m" / "medmnist").mkdir(parents=True)
    with np.load(MIRROR / "medmnist" / "retinamnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["val_images"] = arrays["val_images"][:100]
    np.savez(tmp_path / "m" / "medmnist" / "retinamnist.npz", **arrays)
    monkeypatch.setenv("TLKIT_MIRROR", str(tmp_path / "m"))
    assert len(D.load("retinamnist", split="train", progress=False)) == 1080  # only the split read is checked
    with pytest.raises(D.DatasetError, match="classroom mirror's copy of 'retinamnist' is not usable") as err:
        D.load("retinamnist", split="val", progress=False)
    assert "val: expected 120 images and labels, found 100 and 120" in str(err.value)


# ---------------------------------------------------------------------------
# Downloading an .npz from a local server: md5 checked
# ---------------------------------------------------------------------------

def _breast_npz(size: int = 28) -> bytes:
    """A synthetic BreastMNIST-shaped file: the official structure and counts, other pixels."""
    g = np.random.default_rng(0)
    arrays = {}
    for split, n in D.info("breastmnist").split_sizes.items():
        arrays[f"{split}_images"] = g.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.hits = {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _serve_breast(server, monkeypatch, body: bytes, md5: str | None = None, size: int = 28):
    entry = D.info("breastmnist")
    url = f"{server.url}/files/breastmnist.npz?download=1"
    server.files[f"/files/{'breastmnist.npz' if size == 28 else f'breastmnist_{size}.npz'}"] = body
    monkeypatch.setitem(D.DATASETS, "breastmnist",
                        replace(entry, url=url, md5={**entry.md5, size: md5 or entry.md5[size]}))


def test_npz_download_is_md5_checked_and_cached(server, monkeypatch, data_cache):
    body = _breast_npz()
    _serve_breast(server, monkeypatch, body, md5=hashlib.md5(body).hexdigest())
    test = D.load("breastmnist", split="test", progress=False)
    assert len(test) == 156 and test.classes == ["malignant", "normal, benign"]
    assert test.load_image(0).mode == "RGB"
    assert (data_cache / "medmnist" / "breastmnist.npz").read_bytes() == body
    assert len(D.load("breastmnist", split="train", progress=False)) == 546
    assert server.hits == ["/files/breastmnist.npz?download=1"]  # downloaded once
    assert D.status("breastmnist") == "cached"


def test_npz_md5_mismatch_is_an_error_and_nothing_is_kept(server, monkeypatch, data_cache):
    body = _breast_npz()
    _serve_breast(server, monkeypatch, body)  # the official md5: this synthetic file does not match it
    with pytest.raises(DownloadError, match="md5 mismatch") as err:
        D.load("breastmnist", split="train", progress=False)
    assert D.info("breastmnist").md5[28] in str(err.value) and hashlib.md5(body).hexdigest() in str(err.value)
    assert "What to do" in str(err.value)
    assert sorted(p.name for p in (data_cache / "medmnist").iterdir()) == [".locks"]  # no .npz, no .part


def test_larger_size_downloads_its_own_file(server, monkeypatch, data_cache):
    body = _breast_npz(64)
    _serve_breast(server, monkeypatch, body, md5=hashlib.md5(body).hexdigest(), size=64)
    ds = D.load("breastmnist", split="val", size=64, progress=False)
    assert len(ds) == 78 and ds.load_image(0).size == (64, 64)
    assert ds.name == "breastmnist_64" and ds.key.startswith("breastmnist_64/val/")
    assert server.hits == ["/files/breastmnist_64.npz?download=1"]


def test_mirror_url_copy_is_checked_by_structure_not_md5(server, monkeypatch, data_cache):
    body = _breast_npz()
    server.files["/classroom/medmnist/breastmnist.npz"] = body  # another md5 than the official file
    monkeypatch.setenv("TLKIT_MIRROR", server.url + "/classroom/")
    assert len(D.load("breastmnist", split="val", progress=False)) == 78
    assert server.hits == ["/classroom/medmnist/breastmnist.npz"]
    arrays = dict(np.load(io.BytesIO(body)))
    arrays["test_labels"] = arrays["test_labels"] + 5  # labels out of range: not a BreastMNIST file
    bad = io.BytesIO()
    np.savez(bad, **arrays)
    server.files["/classroom/medmnist/breastmnist.npz"] = bad.getvalue()
    (data_cache / "medmnist" / "breastmnist.npz").unlink()
    monkeypatch.setitem(D.DATASETS, "breastmnist", replace(D.info("breastmnist"),
                                                           url=f"{server.url}/nowhere/breastmnist.npz"))
    with pytest.raises(DownloadError, match="test_labels: expected shape"):
        D.load("breastmnist", split="val", progress=False)
    assert not (data_cache / "medmnist" / "breastmnist.npz").exists()


def test_not_downloaded_and_download_false(data_cache):
    with pytest.raises(D.DatasetError, match="download=True") as err:
        D.load("pneumoniamnist", split="test", download=False)
    assert "medmnist/pneumoniamnist.npz" in str(err.value)
