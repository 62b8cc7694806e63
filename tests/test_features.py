"""extract_features (memory and disk cache), linear_probe and train_head on real hymenoptera images.

EfficientNet-Lite0 with its real ImageNet weights at its own input size (224 px): forward
passes only, on 32 + 24 images.
"""
from __future__ import annotations

import os

import pytest
import torch

import tlkit
from tlkit import datasets, features
from tlkit.features import Features, extract_features, linear_probe, train_head

MIRROR = "/work/shared/datasets"
pytestmark = pytest.mark.slow  # about 30 s of forward passes at 224 px on one core


@pytest.fixture(scope="module", autouse=True)
def _setup(tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("TLKIT_MIRROR", "TLKIT_CACHE")}
    os.environ.setdefault("TLKIT_MIRROR", MIRROR)
    os.environ["TLKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # an empty feature cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is faster than two busy ones on a shared 2-core machine
    features.clear_memory_cache()
    yield
    torch.set_num_threads(threads)
    features.clear_memory_cache()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def model():
    return tlkit.load_backbone("efficientnet_lite0", num_classes=2)


@pytest.fixture(scope="module")
def train_ds():
    return datasets.subset(datasets.load("hymenoptera", "train", verify=False, progress=False), per_class=16)


@pytest.fixture(scope="module")
def val_ds():
    return datasets.subset(datasets.load("hymenoptera", "val", verify=False, progress=False), per_class=12)


@pytest.fixture(scope="module")
def feats(model, train_ds, val_ds):
    return extract_features(model, train_ds, progress=False), extract_features(model, val_ds, progress=False)


class CountForwards:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1


def test_features_are_what_the_head_reads(model, val_ds, feats):
    fval = feats[1]
    assert isinstance(fval, Features)
    assert fval.x.shape == (len(val_ds), 1280) and fval.x.dtype == torch.float32
    assert fval.y.tolist() == val_ds.targets and fval.classes == ["ants", "bees"]
    x = torch.stack([tlkit.preprocess(model)(val_ds.load_image(i)) for i in (0, 5, len(val_ds) - 1)])
    with torch.no_grad():
        direct = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    picked = fval.x[[0, 5, len(val_ds) - 1]]
    assert torch.allclose(picked, direct, atol=1e-4)
    assert torch.allclose(model.classifier(picked), logits, atol=1e-4)
    assert "1280 features" in repr(fval)


def test_second_call_comes_from_the_cache(model, train_ds, feats):
    counter = CountForwards(model)
    try:
        again = extract_features(model, train_ds, progress=False)
        assert counter.calls == 0, "the memory cache should answer without running the model"
        assert again is not feats[0] and torch.equal(again.x, feats[0].x)  # a copy: safe to change
        features.clear_memory_cache()
        from_disk = extract_features(model, train_ds, progress=False)
        assert counter.calls == 0, "the disk cache should answer without running the model"
        assert torch.equal(from_disk.x, feats[0].x) and torch.equal(from_disk.y, feats[0].y)
        assert list(tlkit.download.cache_dir("features").glob("*.pt"))
        fresh = extract_features(model, train_ds, cache=False, progress=False)
        assert counter.calls > 0 and torch.allclose(fresh.x, feats[0].x, atol=1e-5)
    finally:
        counter.handle.remove()


def test_changed_weights_mean_new_features(model, train_ds, feats):
    """The cache key covers the weights: a fine-tuned body gets its features recomputed."""
    tuned = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    with torch.no_grad():
        tuned.conv_head.weight.mul_(1.5)
    counter = CountForwards(tuned)
    out = extract_features(tuned, train_ds, progress=False)
    counter.handle.remove()
    assert counter.calls > 0
    assert not torch.allclose(out.x, feats[0].x)
    # the head's weights do not change what the head reads: same features, from the cache
    other_head = tlkit.replace_head(tlkit.load_backbone("efficientnet_lite0", num_classes=2), 2, seed=7)
    counter = CountForwards(other_head)
    same = extract_features(other_head, train_ds, progress=False)
    counter.handle.remove()
    assert counter.calls == 0 and torch.equal(same.x, feats[0].x)


def test_stage_features_are_pooled_and_stop_early(model, val_ds):
    later = []
    handle = model.conv_head.register_forward_hook(lambda *a: later.append(1))
    try:
        f = extract_features(model, val_ds, stage="blocks.3", cache=False, progress=False)
    finally:
        handle.remove()
    assert f.x.shape == (len(val_ds), 80) and f.stage == "blocks.3"
    assert later == [], "the forward pass should stop after the requested stage"
    x = tlkit.preprocess(model)(val_ds.load_image(2))[None]
    with torch.no_grad():
        out = model.blocks[:4](model.bn1(model.conv_stem(x)))
    assert torch.allclose(f.x[2], out.mean(dim=(2, 3))[0], atol=1e-4)
    with pytest.raises(ValueError, match="Valid stages"):
        extract_features(model, val_ds, stage="layer9", progress=False)


def test_linear_probe_beats_chance(feats):
    result = linear_probe(*feats)
    assert result.accuracy > 0.75, result  # chance is 0.5
    assert result.train_accuracy >= result.accuracy - 0.05
    assert result.model.predict(feats[1].x.numpy()).shape == (len(feats[1]),)
    assert "accuracy=" in repr(result)
    with pytest.raises(ValueError, match="C must be positive"):
        linear_probe(*feats, C=0)


def test_train_head_on_features(model, feats):
    history = train_head(*feats, epochs=25, lr=1e-2)
    assert history.epochs == 25 and len(history.val_acc) == 25
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] > 0.75
    # the same run twice gives the same numbers
    assert train_head(*feats, epochs=25, lr=1e-2).val_loss == history.val_loss
    # training the model's own head in place makes the model itself a classifier
    own = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    before = own.classifier.weight.clone()
    train_head(*feats, epochs=10, head=own.classifier)
    assert not torch.equal(before, own.classifier.weight)
    with torch.no_grad():
        acc = (own.classifier(feats[1].x).argmax(1) == feats[1].y).float().mean().item()
    assert acc > 0.75
    with pytest.raises(ValueError, match="Linear"):
        train_head(*feats, head=torch.nn.Linear(1280, 5))


# ---------------------------------------------------------------------------
# 0.2: a cache keyed by content, copies on a hit, and a read-only cache folder
# ---------------------------------------------------------------------------

def _small(model_size: int = 32):
    return tlkit.load_backbone("efficientnet_lite0", num_classes=2, image_size=model_size)


def _bmp_folder(root, seed=0):
    """Two classes of three random 40 x 40 BMP files (uncompressed: an edit keeps the file size)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in "ab":
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.bmp")
    return root


def test_an_edit_that_keeps_size_and_mtime_gives_new_features(tmp_path):
    import numpy as np
    from PIL import Image

    root = _bmp_folder(tmp_path / "imgs")
    model = _small()
    ds = datasets.load(root, "all", progress=False)
    f1 = extract_features(model, ds, progress=False)
    path = ds.paths[0]
    st = os.stat(path)
    Image.fromarray(np.full((40, 40, 3), 255, dtype=np.uint8)).save(path)  # same size, other pixels
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p, rsync -a and unzip do
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    ds2 = datasets.load(root, "all", progress=False)
    f2 = extract_features(model, ds2, progress=False)
    assert f2.key != f1.key
    assert not torch.allclose(f2.x[0], f1.x[0]), "the edited image got its old features back"
    assert torch.allclose(f2.x[1:], f1.x[1:])


def test_a_cache_hit_is_a_copy_and_the_key_names_the_versions(tmp_path):
    model = _small()
    ds = datasets.load(_bmp_folder(tmp_path / "imgs", seed=1), "all", progress=False)
    f1 = extract_features(model, ds, progress=False)
    assert f"torch={torch.__version__}" in f1.key and f"tlkit={tlkit.__version__}" in f1.key
    expected = f1.x.clone()
    f1.x.zero_()
    f2 = extract_features(model, ds, progress=False)  # from memory
    assert torch.equal(f2.x, expected)
    f2.x.zero_()
    features.clear_memory_cache()
    f3 = extract_features(model, ds, progress=False)  # from disk
    assert torch.equal(f3.x, expected)
    assert isinstance(features.MEMORY, tlkit._cache.LRUCache)


def test_a_read_only_cache_folder_costs_only_a_recomputation(tmp_path, monkeypatch):
    import warnings

    model = _small()
    ds = datasets.load(_bmp_folder(tmp_path / "imgs", seed=2), "all", progress=False)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "home" / ".cache" / "tlkit"))

    # 1. the folder cannot even be created (read-only HOME)
    features.clear_memory_cache()
    monkeypatch.setattr(features, "cache_dir", read_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = extract_features(model, ds, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "cannot be created or read" in messages[0] and "TLKIT_CACHE" in messages[0]
    assert f.x.shape == (len(ds), 1280)
    monkeypatch.undo()

    # 2. the folder is there but torch.save fails (a read-only shared cache reports a RuntimeError)
    features.clear_memory_cache()
    folder = features.cache_dir("features")
    before = set(folder.iterdir())

    def failing_save(obj, path, *args, **kwargs):
        raise RuntimeError(f"File {path} cannot be opened.")

    monkeypatch.setattr(torch, "save", failing_save)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = extract_features(model, ds, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "not writable" in messages[0]
    assert torch.equal(g.x, f.x)
    assert set(folder.iterdir()) == before, "nothing was written, no .part file left behind"


def test_train_head_is_seeded_locally_and_reports_by_default(capsys):
    import inspect

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 2
    f = Features(x, y, ["a", "b"])
    assert inspect.signature(train_head).parameters["progress"].default is True
    torch.manual_seed(7)
    state = torch.get_rng_state()
    h1 = train_head(f, f, epochs=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state), "train_head reseeded torch's global generator"
    out = capsys.readouterr().out
    assert "train_head: 3 epochs" in out and "val loss" in out
    h2 = train_head(f, f, epochs=3, seed=1, progress=False)
    assert capsys.readouterr().out == ""
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
