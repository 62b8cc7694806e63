"""tlkit.fit / evaluate / predict / lr_find on a tiny real subset of hymenoptera, on the CPU.

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
from tlkit.train import History, LRFinderResult, _schedule_factor, evaluate, fit, lr_find, predict

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
    with pytest.raises(ValueError, match=r"your head has 1000 outputs, the dataset has 2 classes: "
                                         r"call tlkit.replace_head\(model, 2\)"):
        fit(model, train_ds, epochs=1, progress=False)
    with pytest.raises(ValueError, match="1000 outputs"):
        evaluate(model, train_ds)


def test_bad_arguments_are_clear_errors(train_ds, val_ds):
    model = small_model()
    with pytest.raises(ValueError, match="schedule"):
        fit(model, train_ds, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="augment"):
        fit(model, train_ds, augment="heavy", epochs=1, progress=False)
    with pytest.raises(TypeError, match="ImageDataset"):
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
    assert _schedule_factor(None, 5, 10) == 1.0
    assert _schedule_factor("cosine", 0, 10) == 1.0
    assert _schedule_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert _schedule_factor("onecycle", 0, 100) == pytest.approx(1 / 25)
    assert _schedule_factor("onecycle", 30, 100) == pytest.approx(1.0)
    peak = max(_schedule_factor("onecycle", s, 100) for s in range(101))
    assert peak == pytest.approx(1.0) and _schedule_factor("onecycle", 100, 100) == pytest.approx(0.0)


def test_cosine_schedule_lowers_the_recorded_lr(train_ds):
    history = fit(small_model(), train_ds, epochs=3, lr=1e-3, batch_size=8, schedule="cosine", progress=False)
    assert history.lr[0] == pytest.approx(1e-3)
    assert history.lr[0] > history.lr[1] > history.lr[2] > 0


def test_evaluate_predict_and_the_dataloader_path_agree(train_ds, val_ds, monkeypatch):
    model = small_model()
    probs = predict(model, val_ds)
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
    assert torch.allclose(predict(model, val_ds), probs, atol=1e-6)


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
    from tlkit import features, train

    monkeypatch.setattr(train, "_amp", lambda device: True)
    monkeypatch.setattr(features, "_amp", lambda device: True)
    model = small_model()
    history = fit(model, train_ds, val_ds, epochs=1, batch_size=8, progress=False)
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert "bfloat16" in history.device
    f = features.extract_features(model, val_ds, cache=False, progress=False)
    assert f.x.dtype == torch.float32 and f.x.shape == (len(val_ds), 1280)
    assert predict(model, val_ds).dtype == torch.float32
