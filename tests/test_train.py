"""tlkit.fit / evaluate / predict_proba / lr_find on a tiny real subset of hymenoptera, on the CPU.

Models run at a reduced input size (64 px) to keep the file fast: the backbone record's
preprocessing is swapped for a smaller one, which every tlkit function then follows.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os

import matplotlib
import pytest
import torch

import tlkit
from tlkit import _batches, datasets
from tlkit.train import History, LRFinderResult, schedule_factor, evaluate, fit, lr_find, predict_proba

matplotlib.use("Agg")
MIRROR = "/work/shared/datasets"


@pytest.fixture(scope="module", autouse=True)
def _setup():
    os.environ.setdefault("TLKIT_MIRROR", MIRROR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is faster than two busy ones on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_ds():
    return datasets.subset(datasets.load("hymenoptera", "train", verify=False, progress=False), per_class=8)


@pytest.fixture(scope="module")
def val_ds():
    return datasets.subset(datasets.load("hymenoptera", "val", verify=False, progress=False), per_class=6)


def small_model(size: int = 64, until: str | None = "blocks.6", num_classes: int = 2):
    """EfficientNet-Lite0 (ImageNet weights) reading size x size images, body frozen before ``until``."""
    model = tlkit.load_backbone("efficientnet_lite0", num_classes=num_classes)
    info = model.tlkit_backbone
    model.tlkit_backbone = dataclasses.replace(
        info, preprocessing=dataclasses.replace(info.preprocessing, size=size, resize=size + 8))
    if until is not None:
        tlkit.freeze(model, until=until)
    return model


def _owner(model, key):
    for stage in tlkit.list_stages(model):
        if any(key == m or key.startswith(m + ".") for m in stage.modules):
            return stage.name
    raise KeyError(key)


@pytest.mark.slow
def test_fit_lowers_loss_and_keeps_frozen_stages_frozen(train_ds, val_ds):
    model = small_model(until="blocks.5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model, train_ds, val_ds, epochs=4, lr=3e-3, batch_size=8, progress=False)

    assert isinstance(history, History)
    assert history.epochs == 4 and len(history.val_acc) == 4 and len(history.epoch_time) == 4
    assert history.train_loss[-1] < history.train_loss[0]
    assert not model.training, "fit leaves the model in eval mode"
    names = [s.name for s in tlkit.list_stages(model)]
    after = model.state_dict()
    changed_trainable = set()
    for key, old in before.items():
        stage = _owner(model, key)
        changed = not torch.equal(old, after[key])
        if names.index(stage) < names.index("blocks.5"):
            assert not changed, f"{key} in frozen stage {stage} changed (parameter or BatchNorm buffer)"
        elif changed:
            changed_trainable.add(stage)
    assert changed_trainable == {"blocks.5", "blocks.6", "conv_head", "head"}
    # the trainable BatchNorm layers did update their running statistics
    assert not torch.equal(before["blocks.6.0.bn1.running_mean"], after["blocks.6.0.bn1.running_mean"])


def test_head_size_mismatch_is_a_clear_error(train_ds):
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    with pytest.raises(tlkit.ArgumentError, match=r"the model's head has 1000 outputs, the dataset has 2 classes "
                                                r"\(ants, bees\): call tlkit.replace_head\(model, 2\) first"):
        fit(model, train_ds, epochs=1, progress=False)
    with pytest.raises(ValueError, match="1000 outputs"):
        evaluate(model, train_ds)


def test_bad_arguments_are_clear_errors(train_ds, val_ds):
    model = small_model()
    with pytest.raises(ValueError, match="schedule"):
        fit(model, train_ds, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="augment"):
        fit(model, train_ds, augment="heavy", epochs=1, progress=False)
    with pytest.raises(tlkit.ArgumentError, match="ImageDataset"):
        fit(model, [(torch.zeros(3, 8, 8), 0)], progress=False)
    other = datasets.load("digits", "val", progress=False)
    with pytest.raises(ValueError, match="different classes"):
        fit(model, train_ds, other, progress=False)


@pytest.mark.slow
def test_same_seed_gives_identical_history(train_ds, val_ds):
    def run(seed):
        model = small_model()
        h = fit(model, train_ds, val_ds, epochs=2, lr=1e-2, batch_size=8, augment="standard", seed=seed,
                progress=False)
        return h, model.state_dict()

    h1, s1 = run(seed=3)
    h2, s2 = run(seed=3)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss and h1.train_acc == h2.train_acc
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    h3, _ = run(seed=4)
    assert h3.train_loss != h1.train_loss, "a different seed should give another data order and augmentation"


def test_callback_can_stop_training(train_ds):
    seen = []

    def stop_after_first(epoch, history):
        seen.append((epoch, history.epochs))
        return False

    history = fit(small_model(), train_ds, epochs=5, batch_size=16, progress=False, callback=stop_after_first)
    assert history.epochs == 1
    assert seen == [(1, 1)]
    # returning None (or anything but False) keeps going
    history = fit(small_model(), train_ds, epochs=2, batch_size=16, progress=False, callback=lambda e, h: None)
    assert history.epochs == 2


def test_progress_in_a_log_is_plain_lines(train_ds, val_ds, capsys):
    fit(small_model(), train_ds, val_ds, epochs=2, batch_size=16, label="run", progress=True)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "\r" not in text, "no carriage returns when the output is not a terminal"
    assert "epoch 1/2" in text and "epoch 2/2" in text and "val loss" in text
    fit(small_model(), train_ds, epochs=1, batch_size=16, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_schedules():
    assert schedule_factor(None, 5, 10) == 1.0
    assert schedule_factor("cosine", 0, 10) == 1.0
    assert schedule_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert schedule_factor("onecycle", 0, 100) == pytest.approx(1 / 25)
    assert schedule_factor("onecycle", 30, 100) == pytest.approx(1.0)
    peak = max(schedule_factor("onecycle", s, 100) for s in range(101))
    assert peak == pytest.approx(1.0) and schedule_factor("onecycle", 100, 100) == pytest.approx(0.0)


def test_cosine_schedule_lowers_the_recorded_lr(train_ds):
    history = fit(small_model(), train_ds, epochs=3, lr=1e-3, batch_size=8, schedule="cosine", progress=False)
    assert history.lr[0] == pytest.approx(1e-3)
    assert history.lr[0] > history.lr[1] > history.lr[2] > 0


def test_evaluate_predict_and_the_dataloader_path_agree(train_ds, val_ds, monkeypatch):
    model = small_model()
    probs = predict_proba(model, val_ds)
    assert probs.shape == (len(val_ds), 2)
    assert torch.allclose(probs.sum(1), torch.ones(len(val_ds)), atol=1e-5)
    result = evaluate(model, val_ds)
    assert set(result) == {"loss", "accuracy"}
    targets = torch.tensor(val_ds.targets)
    assert result["accuracy"] == pytest.approx((probs.argmax(1) == targets).float().mean().item())
    nll = -probs[torch.arange(len(targets)), targets].log().mean().item()
    assert result["loss"] == pytest.approx(nll, rel=1e-4)

    # a dataset too big for memory goes through a DataLoader: same images, same numbers
    monkeypatch.setattr(_batches, "FAST_PATH_MAX_BYTES", 0)
    batches = _batches.Batches(val_ds, model.tlkit_backbone.preprocessing, batch_size=64,
                               device=torch.device("cpu"), num_workers=0)
    assert not batches.fast
    assert torch.allclose(predict_proba(model, val_ds), probs, atol=1e-6)


def test_eval_batches_equal_the_backbone_preprocessing(val_ds):
    """Decoded squares + centre crop + normalisation = tlkit.preprocess(model) on each PIL image."""
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    pre = model.tlkit_backbone.preprocessing
    x, _ = next(iter(_batches.Batches(val_ds, pre, batch_size=4, device=torch.device("cpu"))))
    direct = torch.stack([tlkit.preprocess(model)(val_ds.load_image(i)) for i in range(4)])
    assert x.shape == direct.shape == (4, 3, 224, 224)
    assert torch.allclose(x, direct, atol=1e-6)


def test_batch_augmentation_per_image_and_seeded():
    x = torch.rand(6, 3, 40, 40)
    flip_only = _batches.BatchAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    out = flip_only(x, 40, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)]
    kept = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    strong = _batches.AUGMENTS["strong"]
    a = strong(x, 32, torch.Generator().manual_seed(1))
    b = strong(x, 32, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a[0], strong(x, 32, torch.Generator().manual_seed(2))[0])
    none = _batches.AUGMENTS["none"](x, 32, torch.Generator())
    assert torch.equal(none, x[..., 4:36, 4:36])


def test_history_repr_and_plot():
    h = History(label="demo", train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[0.9, 0.6],
                val_acc=[0.6, 0.9], lr=[1e-3, 1e-3], epoch_time=[1.0, 1.0])
    assert h.best_val_acc == 0.9 and h.best_epoch == 2
    text = repr(h)
    assert "demo" in text and "best val acc 0.900 (epoch 2)" in text and len(text.splitlines()) == 4
    fig = h.plot()
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy"]
    assert len(fig.axes[0].lines) == 2  # train and validation
    assert fig.axes[0].lines[0].get_ydata().tolist() == [1.0, 0.5]
    assert History().best_val_acc is None


@pytest.mark.slow
def test_lr_find_suggests_a_finite_lr_and_leaves_the_model_alone(train_ds):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, train_ds, start=1e-5, end=1.0, steps=12, batch_size=8, progress=False)
    assert isinstance(result, LRFinderResult)
    assert math.isfinite(result.suggestion) and 1e-5 <= result.suggestion <= 1.0
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) >= 3
    assert all(a < b for a, b in zip(result.lrs, result.lrs[1:]))
    assert all(math.isfinite(v) for v in result.losses)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "lr_find changed the model"
    fig = result.plot()
    assert fig.axes[0].get_xscale() == "log"
    assert "suggested lr" in repr(result)


@pytest.mark.slow
def test_lr_find_stops_on_divergence(train_ds):
    model = small_model()
    result = lr_find(model, train_ds, start=1e-3, end=1e6, steps=20, batch_size=8, progress=False)
    assert result.diverged
    assert len(result.lrs) < 20
    assert all(math.isfinite(v) for v in result.losses + result.raw_losses)
    assert 1e-3 <= result.suggestion <= 1e6
    result.plot()
    buf = io.StringIO()
    print(result, file=buf)
    assert "diverged" in buf.getvalue()


def test_the_gpu_code_path_runs_with_bfloat16_autocast(train_ds, val_ds, monkeypatch):
    """No GPU in CI: force the autocast branch on the CPU to check that the mixed-precision code path works."""
    from tlkit import _runtime, features, train

    for module in (_runtime, train, features):  # each uses tlkit._runtime.uses_amp under that name
        monkeypatch.setattr(module, "uses_amp", lambda device: True)
    model = small_model()
    history = fit(model, train_ds, val_ds, epochs=1, batch_size=8, progress=False)
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert "bfloat16" in history.device
    f = features.extract_features(model, val_ds, cache=False, progress=False)
    assert f.x.dtype == torch.float32 and f.x.shape == (len(val_ds), 1280)
    assert predict_proba(model, val_ds).dtype == torch.float32


# ---------------------------------------------------------------------------
# 0.2: one input contract, names, interruptions, process-wide state
# ---------------------------------------------------------------------------

def test_public_names_follow_the_changelog():
    import inspect

    assert not hasattr(tlkit, "predict") and not hasattr(tlkit.train, "predict"), "predict is now predict_proba"
    assert tlkit.predict_proba is tlkit.train.predict_proba is tlkit._runtime.predict_proba
    for fn, first in ((fit, ["model", "dataset", "val"]), (evaluate, ["model", "dataset"]),
                      (predict_proba, ["model", "dataset"]), (lr_find, ["model", "dataset"]),
                      (tlkit.extract_features, ["model", "dataset", "stage"])):
        params = inspect.signature(fn).parameters
        assert list(params)[: len(first)] == first, fn.__name__
        assert params["progress"].default is True, fn.__name__


def _image_folder(tmp_path, ds):
    """The images of ``ds`` as a torchvision-style class-folder tree (symlinks)."""
    for i, path in enumerate(ds.paths):
        folder = tmp_path / ds.classes[ds.targets[i]]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}_{path.name}").symlink_to(path)
    return tmp_path


def test_a_dataset_with_its_own_transform_is_used_as_it_is(tmp_path, val_ds, train_ds):
    from torchvision.datasets import ImageFolder

    model = small_model(size=160)
    imagenet = tlkit.load_backbone("efficientnet_lite0")  # zero-shot ants vs bees: ImageNet's 'ant' and 'bee'
    with torch.no_grad():
        model.classifier.weight.copy_(imagenet.classifier.weight[[310, 309]])
        model.classifier.bias.copy_(imagenet.classifier.bias[[310, 309]])
    root = _image_folder(tmp_path / "val", val_ds)
    folder = ImageFolder(root, transform=tlkit.preprocess(model))  # yields normalised float tensors
    assert folder.classes == val_ds.classes
    mine, theirs = evaluate(model, val_ds, progress=False), evaluate(model, folder, progress=False)
    assert theirs["accuracy"] == pytest.approx(mine["accuracy"]) and mine["accuracy"] >= 0.75
    assert theirs["loss"] == pytest.approx(mine["loss"], abs=1e-3)  # PIL vs tensor resize: tiny differences
    assert torch.allclose(predict_proba(model, folder, progress=False), predict_proba(model, val_ds, progress=False),
                          atol=2e-3)
    # training would preprocess the tensors a second time: refused, saying what to pass instead
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_folder = ImageFolder(_image_folder(tmp_path / "train", train_ds), transform=tlkit.preprocess(model))
    with pytest.raises(tlkit.DatasetError, match=r"gives float tensors .* transform=None"):
        fit(model, train_folder, epochs=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing trained"
    # without a transform, ImageFolder gives PIL images: it trains like a tlkit dataset
    history = fit(small_model(), ImageFolder(tmp_path / "train"), epochs=1, batch_size=8, progress=False)
    assert history.epochs == 1


def test_a_callable_augment_is_brought_to_the_model_input_size(train_ds):
    pre = tlkit.backbone_info("efficientnet_lite0").preprocessing  # resize 256, input 224
    flip = _batches.Batches(train_ds, pre, batch_size=4, device=torch.device("cpu"), train=True,
                            augment=lambda x: x.flip(-1))  # keeps the 256 px square: centre-cropped
    x, _ = next(iter(flip))
    assert x.shape == (4, 3, 224, 224)
    other = _batches.Batches(train_ds, pre, batch_size=4, device=torch.device("cpu"), train=True,
                             augment=lambda x: x[..., :100, :180])  # any other size: resized
    assert next(iter(other))[0].shape == (4, 3, 224, 224)
    # and fit gives the model what it expects (64 px for this small model)
    model, seen = small_model(), []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    fit(model, train_ds, epochs=1, batch_size=8, augment=lambda x: x.flip(-1), progress=False)
    assert seen and set(seen) == {(64, 64)}


def test_ctrl_c_keeps_the_finished_epochs(train_ds, val_ds, capsys):
    def interrupt_in_second_epoch(epoch, history):
        if epoch == 2:
            raise KeyboardInterrupt

    history = fit(small_model(), train_ds, val_ds, epochs=4, batch_size=8, progress=False,
                  callback=interrupt_in_second_epoch)
    assert history.interrupted and history.epochs == 2 and len(history.val_acc) == 2
    assert "interrupted" in capsys.readouterr().out
    assert "(interrupted)" in repr(history)

    # Ctrl-C in the middle of an epoch: only the finished ones are kept
    model, calls = small_model(), []

    def stop_on_third_batch(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    model.register_forward_pre_hook(stop_on_third_batch)
    history = fit(model, train_ds, epochs=3, batch_size=8, progress=False)  # 2 batches per epoch
    assert history.interrupted and history.epochs == 1
    assert len(history.lr) == len(history.train_acc) == len(history.epoch_time) == 1
    assert not model.training, "the model is left in eval mode"


def test_labels_outside_the_classes_are_refused_before_training(train_ds):
    import copy

    bad = copy.copy(train_ds)
    bad.targets = [-100] + list(train_ds.targets[1:])
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(tlkit.DatasetError, match=r"labels \[-100\] outside 0\.\.1 .*ignore.*not supported"):
        fit(model, bad, epochs=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    bad.targets = list(train_ds.targets[:-1]) + [7]
    with pytest.raises(tlkit.DatasetError, match=r"labels \[7\] outside 0\.\.1"):
        evaluate(model, bad)


def test_a_head_of_the_wrong_size_is_refused(train_ds):
    from PIL import Image

    five = datasets.ImageDataset.from_images([Image.new("RGB", (8, 8))] * 5, [0, 1, 2, 3, 4], list("abcde"))
    with pytest.raises(tlkit.ArgumentError, match=r"head has 2 outputs, the dataset has 5 classes \(a, b, c, d, e\): "
                                                 r"call tlkit.replace_head\(model, 5\)"):
        fit(small_model(), five, epochs=1, progress=False)


def test_batches_leave_no_file_open(train_ds, tmp_path, monkeypatch):
    import gc
    import warnings

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(8 * 2**30))
    usage.write_text(str(2**30))
    monkeypatch.setattr(_batches, "CGROUP_MEMORY_FILES", ((str(limit), str(usage)),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        batches = _batches.Batches(train_ds, small_model().tlkit_backbone.preprocessing, batch_size=8,
                                   device=torch.device("cpu"))
        next(iter(batches))
        del batches
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _batches._available_memory() <= 7 * 2**30  # the container limit was read


def test_fit_and_lr_find_leave_the_global_random_state_alone(train_ds):
    import random

    import numpy as np

    m1, m2, m3 = small_model(), small_model(), small_model()  # building a network draws random weights
    torch.manual_seed(1234)
    state, np_state, py_state = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    h1 = fit(m1, train_ds, epochs=1, batch_size=8, augment="standard", seed=5, progress=False)
    lr_find(m2, train_ds, steps=3, batch_size=8, progress=False)
    assert torch.equal(torch.get_rng_state(), state), "torch's global generator was reseeded"
    assert (np.random.get_state()[1] == np_state).all() and random.getstate() == py_state
    torch.manual_seed(999)  # whatever the global state, the same seed gives the same run
    h2 = fit(m3, train_ds, epochs=1, batch_size=8, augment="standard", seed=5, progress=False)
    assert h1.train_loss == h2.train_loss and h1.train_acc == h2.train_acc


def test_the_image_cache_is_a_bounded_locked_lru(train_ds):
    import threading

    from tlkit._cache import LRUCache

    assert isinstance(_batches.IMAGE_CACHE, LRUCache)
    cache = LRUCache(max_items=3, max_bytes=100, size=lambda v: v)
    for k, v in (("a", 10), ("b", 10), ("c", 10)):
        cache.put(k, v)
    cache.get("a")  # used: "b" is now the oldest
    cache.put("d", 10)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.put("big", 90)  # over max_bytes: the least recently used go until it fits
    assert "big" in cache and sum(cache.get(k, 0) for k in "acd") <= 10

    shared = LRUCache(max_items=50)

    def work(t):
        for i in range(500):
            shared.put((t, i), i)
            shared.get((t, i - 1))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(shared) == 50
    from tlkit.advisor.measurement import STAGE_MEMORY

    STAGE_MEMORY.put("k", torch.zeros(1))
    tlkit.train.clear_cache()
    assert len(_batches.IMAGE_CACHE) == 0 and len(STAGE_MEMORY) == 0 and len(tlkit.features.MEMORY) == 0
