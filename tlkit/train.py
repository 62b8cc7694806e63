"""Training: ``fit``, ``evaluate``, ``predict`` and ``lr_find``, in plain PyTorch.

``fit`` is an ordinary training loop (forward, cross-entropy, backward, optimizer step) with
the choices a lesson should not have to repeat:

* the optimizer is **AdamW** over the *trainable* parameters only, one group per stage
  (``tlkit.param_groups``: the head at ``lr``, earlier trainable stages at smaller rates), so
  frozen stages stay frozen and the BatchNorm policy of ``tlkit.freeze`` is kept;
* images are decoded once and kept as uint8 tensors (on the GPU when there is one);
  augmentation and normalisation run on whole batches on the device (see ``tlkit._batches``);
* channels-last memory everywhere; on a GPU bfloat16 autocast, on the CPU plain float32;
* ``seed`` fixes everything random (initial RNG state, data order, augmentation): two runs on
  the CPU with the same seed give identical numbers.

Example:
    >>> import tlkit
    >>> from tlkit import datasets
    >>> train, val = datasets.load("hymenoptera", "train"), datasets.load("hymenoptera", "val")  # doctest: +SKIP
    >>> model = tlkit.freeze(tlkit.load_backbone(num_classes=2))  # doctest: +SKIP
    >>> history = tlkit.fit(model, train, val, epochs=3)  # doctest: +SKIP
    >>> history.plot()  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._batches import Batches, clear_image_cache
from ._progress import Progress, say
from .backbones import Preprocessing, backbone_info
from .devices import default_device
from .freezing import param_groups as stage_param_groups
from .stages import head_path

__all__ = ["fit", "evaluate", "predict", "lr_find", "History", "LRFinderResult", "clear_cache"]

SCHEDULES = (None, "cosine", "onecycle")


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------

@dataclass
class History:
    """What happened in each epoch of a training run.

    Attributes:
        label: a name for the run (legends of ``plot`` and ``tlkit.viz.history``).
        train_loss, train_acc: mean loss and accuracy over the epoch's training batches
            (measured on augmented images, while the weights were still changing).
        val_loss, val_acc: on the validation set after the epoch (empty without one).
        lr: learning rate of the head (the largest) at the start of each epoch.
        epoch_time: seconds per epoch, training plus validation.
        train_time: seconds per epoch spent in the training steps only.
        setup_time: seconds before the first epoch (decoding the images, moving the model).
        images_per_epoch: training images seen per epoch.
        device: where it ran, e.g. ``"cpu (float32)"``.
    """

    label: str = ""
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    train_time: list[float] = field(default_factory=list)
    setup_time: float = 0.0
    images_per_epoch: int = 0
    device: str = ""

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def best_val_acc(self) -> float | None:
        """The highest validation accuracy of any epoch (None without validation)."""
        return max(self.val_acc) if self.val_acc else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch (counting from 1) with the highest validation accuracy."""
        return int(np.argmax(self.val_acc)) + 1 if self.val_acc else None

    def __repr__(self) -> str:
        title = f"History {self.label!r}" if self.label else "History"
        where = f" on {self.device}" if self.device else ""
        best = (f", best val acc {self.best_val_acc:.3f} (epoch {self.best_epoch})"
                if self.val_acc else "")
        lines = [f"{title}{where}: {self.epochs} epochs{best}",
                 "epoch  train loss  train acc  val loss  val acc        lr    time"]
        for i in range(self.epochs):
            val = (f"{self.val_loss[i]:8.4f}  {self.val_acc[i]:7.3f}" if i < len(self.val_acc)
                   else f"{'-':>8}  {'-':>7}")
            lr = f"{self.lr[i]:9.2e}" if i < len(self.lr) else f"{'-':>9}"
            t = f"{self.epoch_time[i]:6.1f}s" if i < len(self.epoch_time) else ""
            lines.append(f"{i + 1:5d}  {self.train_loss[i]:10.4f}  {self.train_acc[i]:9.3f}  {val}  {lr}  {t}")
        return "\n".join(lines)

    def plot(self, title: str | None = None):
        """A figure with two panels, loss and accuracy per epoch, training vs validation.

        The same picture as ``tlkit.viz.history(history)``, which also overlays several runs.
        """
        from .viz import history as plot_history

        return plot_history(self, title=title)


# ---------------------------------------------------------------------------
# Helpers shared by fit, evaluate, predict and lr_find
# ---------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random generators (CPU and GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(device: str | torch.device | None) -> torch.device:
    return default_device()[0] if device is None else torch.device(device)


def _amp(device: torch.device) -> bool:
    """bfloat16 autocast on a GPU; float32 on the CPU (bf16 there is slow on most CPUs)."""
    return device.type == "cuda"


def _precision(device: torch.device) -> str:
    return f"{device.type} ({'bfloat16 autocast' if _amp(device) else 'float32'}, channels-last)"


def _preprocessing(model: nn.Module) -> Preprocessing:
    return backbone_info(model).preprocessing


def _check_dataset(ds: Any, what: str) -> None:
    for attr in ("classes", "targets"):
        if not hasattr(ds, attr):
            raise TypeError(f"{what} must be a tlkit ImageDataset (with .classes and .targets), "
                            f"got {type(ds).__name__}. Load one with tlkit.datasets.load(...).")
    if len(ds) == 0:
        raise ValueError(f"{what} is empty: it has no images.")


def _check_head(model: nn.Module, classes: list[str]) -> None:
    head = model.get_submodule(head_path(model))
    outputs = getattr(head, "out_features", None)
    if outputs is not None and outputs != len(classes):
        raise ValueError(f"your head has {outputs} outputs, the dataset has {len(classes)} classes: "
                         f"call tlkit.replace_head(model, {len(classes)})")


def _to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model, in channels-last memory format (faster convolutions on GPUs and on CPUs)."""
    return model.to(device).to(memory_format=torch.channels_last)


CPU_CHUNK = 16
"""On the CPU, inference runs on chunks of this many images: faster per image than big batches."""


def _chunks(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The batch itself on a GPU; slices of ``CPU_CHUNK`` images on the CPU (inference only)."""
    return x.split(CPU_CHUNK) if device.type == "cpu" else (x,)


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Batches, device: torch.device) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=_amp(device)):
        for x, y in batches:
            out = torch.cat([model(c) for c in _chunks(x, device)]).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    return loss_sum.item() / batches.n, correct.item() / batches.n


def _schedule_factor(schedule: str | None, step: int, total: int) -> float:
    """Multiplier of every group's learning rate at optimizer step ``step`` (of ``total``).

    ``None``: constant. ``"cosine"``: from 1 down to 0 along half a cosine.
    ``"onecycle"``: linear warm-up from 1/25 to 1 over the first 30% of the steps, then cosine down.
    """
    t = step / max(1, total)
    if schedule is None:
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    warm = 0.3
    if t < warm:
        return 1 / 25 + (1 - 1 / 25) * t / warm
    return 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

def fit(model: nn.Module, train: Any, val: Any = None, epochs: int = 5, lr: float = 1e-3, *,
        param_groups: list[dict] | None = None, batch_size: int = 32, schedule: str | None = None,
        augment: str | Callable | None = "light", weight_decay: float = 0.0, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = True, label: str | None = None,
        callback: Callable[[int, History], Any] | None = None) -> History:
    """Train ``model`` on ``train`` for ``epochs`` epochs; return the :class:`History`.

    Args:
        model: from ``tlkit.load_backbone``; its head must have one output per class. Frozen
            stages (``tlkit.freeze``) stay frozen, with their BatchNorm statistics.
        train, val: ``ImageDataset``s. Their own ``transform`` is not used: images go through
            the backbone's preprocessing, plus ``augment`` for training.
        epochs: passes over the training set.
        lr: learning rate of the head. Trainable body stages get smaller rates
            (``tlkit.param_groups(model, lr)``).
        param_groups: your own optimizer groups instead (e.g. ``tlkit.param_groups(model, lr,
            body_lr=...)``).
        batch_size: images per step. The ragged last batch of each epoch is dropped.
        schedule: ``None`` (constant rate), ``"cosine"`` or ``"onecycle"`` (warm-up, then
            cosine), stepped every batch.
        augment: ``"none"``, ``"light"``, ``"standard"``, ``"strong"`` (as
            ``tlkit.datasets.PRESETS``, done on whole batches on the device), or a callable taking
            a uint8 batch (B, 3, resize, resize). Random crops come from the centre square of
            each image resized to the backbone's ``preprocessing.resize``.
        weight_decay: AdamW's decoupled weight decay.
        seed: fixes initial RNG state, data order and augmentation.
        device: default ``tlkit.default_device()``; the model is moved there and stays there.
        progress: a progress bar (notebook or terminal) and one line per epoch.
        label: the run's name in plots.
        callback: called as ``callback(epoch, history)`` after each epoch (epoch counts from
            1); returning ``False`` stops training.

    The model is left in eval mode. Training stops early, with a warning, if the loss becomes
    NaN or infinite (learning rate too high: try ``lr_find``).

    >>> history = fit(model, train, val, epochs=3, lr=1e-3, schedule="cosine")  # doctest: +SKIP
    >>> history.best_val_acc  # doctest: +SKIP
    0.94
    """
    _check_dataset(train, "train")
    if val is not None:
        _check_dataset(val, "val")
        if list(val.classes) != list(train.classes):
            raise ValueError(f"train and val have different classes: {list(train.classes)} vs {list(val.classes)}. "
                             "Load both splits of the same dataset.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    _check_head(model, list(train.classes))
    pre = _preprocessing(model)

    start = time.perf_counter()
    device = _device(device)
    seed_everything(seed)
    _to_device(model, device)
    groups = param_groups if param_groups is not None else stage_param_groups(model, lr, weight_decay=weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    train_batches = Batches(train, pre, batch_size=batch_size, device=device, train=True, augment=augment,
                            seed=seed, progress=progress)
    val_batches = (Batches(val, pre, batch_size=max(batch_size, 64), device=device, progress=progress)
                   if val is not None else None)
    steps = len(train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule_factor(schedule, step, epochs * steps))
    history = History(label=label or "", setup_time=time.perf_counter() - start,
                      images_per_epoch=steps * train_batches.batch_size, device=_precision(device))
    amp = _amp(device)

    bar = Progress(epochs * steps, desc=f"{label + ': ' if label else ''}epoch 1/{epochs}", enabled=progress)
    bar.line(f"fit{' ' + repr(label) if label else ''}: {len(train)} training images"
             f"{f', {len(val)} validation' if val is not None else ''}; {steps} batches of "
             f"{train_batches.batch_size} per epoch; on {history.device}")
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        for epoch in range(1, epochs + 1):
            history.lr.append(max(g["lr"] for g in optimizer.param_groups))
            t0 = time.perf_counter()
            model.train()  # frozen BatchNorm layers stay in eval mode (tlkit.freeze's hook)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for x, y in train_batches:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(x)
                loss = F.cross_entropy(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                bar.update()
            seen = steps * train_batches.batch_size
            history.train_loss.append(loss_sum.item() / seen)
            history.train_acc.append(correct.item() / seen)
            history.train_time.append(time.perf_counter() - t0)
            if val_batches is not None:
                loss_v, acc_v = _evaluate(model, val_batches, device)
                history.val_loss.append(loss_v)
                history.val_acc.append(acc_v)
            history.epoch_time.append(time.perf_counter() - t0)

            text = (f"epoch {epoch}/{epochs}  train loss {history.train_loss[-1]:.4f} acc {history.train_acc[-1]:.3f}")
            if val_batches is not None:
                text += f"  val loss {history.val_loss[-1]:.4f} acc {history.val_acc[-1]:.3f}"
            text += f"  lr {history.lr[-1]:.1e}  {history.epoch_time[-1]:.1f}s"
            bar.describe(f"{label + ': ' if label else ''}epoch {min(epoch + 1, epochs)}/{epochs}",
                         loss=f"{history.train_loss[-1]:.3f}",
                         **({"val_acc": f"{history.val_acc[-1]:.3f}"} if history.val_acc else {}))
            bar.line(text)
            if not math.isfinite(history.train_loss[-1]):
                warnings.warn(f"the training loss became {history.train_loss[-1]} in epoch {epoch}: the learning "
                              f"rate {lr:g} is too high for this model. Stopped; try a smaller lr (lr_find "
                              "suggests one).", RuntimeWarning, stacklevel=2)
                break
            if callback is not None and callback(epoch, history) is False:
                bar.line(f"stopped by the callback after epoch {epoch}")
                break
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = benchmark
        model.eval()
    return history


# ---------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------

def evaluate(model: nn.Module, ds: Any, batch_size: int = 64, device: str | torch.device | None = None) -> dict:
    """Mean cross-entropy loss and accuracy of ``model`` on ``ds`` (eval preprocessing, no augmentation).

    The model is moved to ``device`` (default ``tlkit.default_device()``).

    >>> evaluate(model, val)  # doctest: +SKIP
    {'loss': 0.21, 'accuracy': 0.93}
    """
    _check_dataset(ds, "ds")
    _check_head(model, list(ds.classes))
    device = _device(device)
    _to_device(model, device)
    loss, acc = _evaluate(model, Batches(ds, _preprocessing(model), batch_size=batch_size, device=device), device)
    return {"loss": loss, "accuracy": acc}


@torch.no_grad()
def predict(model: nn.Module, ds: Any, batch_size: int = 64, device: str | torch.device | None = None
            ) -> torch.Tensor:
    """Class probabilities for every image of ``ds``, in order: a float tensor (N, num_classes) on the CPU.

    Eval preprocessing, no augmentation; the model is moved to ``device`` (default ``tlkit.default_device()``).

    >>> probs = predict(model, val)  # doctest: +SKIP
    >>> probs.argmax(1)[:5]  # doctest: +SKIP
    """
    _check_dataset(ds, "ds")
    device = _device(device)
    _to_device(model, device)
    was_training = model.training
    model.eval()
    out = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=_amp(device)):
        for x, _ in Batches(ds, _preprocessing(model), batch_size=batch_size, device=device):
            out.append(torch.cat([model(c) for c in _chunks(x, device)]).float().softmax(1).cpu())
    model.train(was_training)
    return torch.cat(out)


# ---------------------------------------------------------------------------
# lr_find
# ---------------------------------------------------------------------------

@dataclass
class LRFinderResult:
    """The loss along an exponential learning-rate sweep.

    Attributes:
        lrs: learning rate (of the head) at each step.
        losses: the loss at each step, smoothed (centred moving average over 5 steps).
        raw_losses: the loss of each step's batch, unsmoothed.
        suggestion: where the smoothed loss falls fastest (see :func:`lr_find`).
        diverged: True if the sweep stopped early because the loss blew up.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    diverged: bool = False

    def __repr__(self) -> str:
        if not self.lrs:
            return "LRFinderResult: no finite loss at all"
        end = " (stopped: the loss diverged)" if self.diverged else ""
        return (f"LRFinderResult: {len(self.lrs)} steps from {self.lrs[0]:.1e} to {self.lrs[-1]:.1e}{end}; "
                f"suggested lr {self.suggestion:.1e}")

    def plot(self):
        """Loss against learning rate (log scale), with the suggestion marked."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
        ax.plot(self.lrs, self.raw_losses, color="lightgrey", lw=1, label="loss per batch")
        ax.plot(self.lrs, self.losses, color="C0", lw=2, label="smoothed")
        if self.lrs:
            i = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggestion))))
            ax.plot([self.suggestion], [self.losses[i]], "o", color="C3", ms=9,
                    label=f"suggestion {self.suggestion:.1e}")
            ax.axvline(self.suggestion, color="C3", lw=0.8, ls="--")
            finite = [v for v in self.raw_losses if math.isfinite(v)]
            if finite:
                lo, first = min(finite), self.losses[0]
                ax.set_ylim(lo - 0.05 * abs(lo), max(first, lo) * 1.5 + 0.05)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        ax.set_title("learning-rate finder")
        plt.close(fig)  # a notebook shows the returned figure once, not twice
        return fig


def _smooth(values: list[float], window: int = 5) -> list[float]:
    """Centred moving average (shorter windows at the ends), so the curve does not lag."""
    v = np.asarray(values, dtype=float)
    half = window // 2
    return [float(v[max(0, i - half): i + half + 1].mean()) for i in range(len(v))]


def _suggest(lrs: list[float], smoothed: list[float], start: float) -> float:
    """The lr of steepest descent of the smoothed loss (against log lr), before its minimum."""
    if len(lrs) < 3:
        return lrs[0] if lrs else start
    stop = int(np.argmin(smoothed)) + 1
    skip = max(1, len(lrs) // 10)
    if stop - skip < 2:  # the loss never fell: the lowest point, or 10x below it, but never below start
        return max(lrs[0], lrs[stop - 1] / 10)
    slope = np.gradient(np.asarray(smoothed[:stop]), np.log10(lrs[:stop]))
    return float(lrs[skip + int(np.argmin(slope[skip:]))])


def lr_find(model: nn.Module, train: Any, start: float = 1e-6, end: float = 1.0, steps: int = 50, *,
            batch_size: int = 32, augment: str | Callable | None = "light", weight_decay: float = 0.0,
            seed: int = 0, device: str | torch.device | None = None, progress: bool = True,
            diverge: float = 4.0) -> LRFinderResult:
    """Sweep the learning rate from ``start`` to ``end`` exponentially, one batch per step.

    Trains a *copy* of the model (your model is never changed), with the same optimizer as
    ``fit`` (AdamW over ``tlkit.param_groups``; the lrs reported are the head's). Stops when
    the loss diverges: not finite, or its running (exponential moving) average above both
    ``diverge`` times its lowest value and the loss of a uniform guess, log(classes).

    The suggestion is the learning rate where the smoothed loss falls fastest, i.e. the
    steepest negative slope of loss against log(lr), looking only at the part of the sweep
    before the loss reaches its minimum (the first 10% of steps are skipped as warm-up).
    A good ``fit`` lr is usually close to it, and always below the minimum.

    >>> result = lr_find(model, train)  # doctest: +SKIP
    >>> result.suggestion  # doctest: +SKIP
    0.0021
    >>> result.plot()  # doctest: +SKIP
    """
    _check_dataset(train, "train")
    _check_head(model, list(train.classes))
    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    if steps < 3:
        raise ValueError(f"steps must be at least 3, got {steps}")
    device = _device(device)
    seed_everything(seed)
    work = _to_device(copy.deepcopy(model), device)
    groups = stage_param_groups(work, start, weight_decay=weight_decay)
    ratios = [g["lr"] / start for g in groups]  # each group keeps its share of the head's lr
    optimizer = torch.optim.AdamW(groups, lr=start, weight_decay=weight_decay)
    batches = Batches(train, _preprocessing(work), batch_size=batch_size, device=device, train=True,
                      augment=augment, seed=seed, progress=progress)
    amp = _amp(device)
    chance = math.log(len(train.classes))  # the loss of a uniform guess
    lrs, raw, diverged = [], [], False
    avg, best = 0.0, math.inf
    bar = Progress(steps, desc="lr_find", enabled=progress)
    work.train()
    try:
        step = 0
        while step < steps and not diverged:
            for x, y in batches:
                lr = start * (end / start) ** (step / (steps - 1))
                for g, r in zip(optimizer.param_groups, ratios):
                    g["lr"] = lr * r
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = work(x)
                loss = F.cross_entropy(out.float(), y)
                value = loss.item()
                if not math.isfinite(value):
                    diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lrs.append(lr)
                raw.append(value)
                avg = 0.7 * avg + 0.3 * value
                smooth = avg / (1 - 0.7 ** len(raw))
                best = min(best, smooth)
                bar.update()
                step += 1
                if len(raw) > 3 and smooth > max(diverge * best, chance):
                    diverged = True
                    break
                if step >= steps:
                    break
    finally:
        bar.close()
    smoothed = _smooth(raw)
    result = LRFinderResult(lrs, smoothed, raw, _suggest(lrs, smoothed, start), diverged)
    say(repr(result), progress)
    return result


def clear_cache() -> None:
    """Free the decoded images and the extracted features that tlkit keeps in memory."""
    clear_image_cache()
    from . import features

    features.clear_memory_cache()


# Feature extraction lives in tlkit/features.py; the lessons reach it as ``train.extract_features``
# too, since training a head on extracted features is one of the ways to train.
from .features import Features, ProbeResult, extract_features, linear_probe, train_head  # noqa: E402

__all__ += ["Features", "ProbeResult", "extract_features", "linear_probe", "train_head"]
