"""Training: ``fit``, ``evaluate``, ``predict_proba`` and ``lr_find``, in plain PyTorch.

``fit`` is an ordinary training loop (forward, cross-entropy, backward, optimizer step) with
the choices a lesson should not have to repeat:

* the optimizer is **AdamW** over the *trainable* parameters only, one group per stage
  (``tlkit.param_groups``: the head at ``lr``, earlier trainable stages at smaller rates), so
  frozen stages stay frozen and the BatchNorm policy of ``tlkit.freeze`` is kept;
* images are decoded once and kept as uint8 tensors (on the GPU when there is one);
  augmentation and normalisation run on whole batches on the device (see ``tlkit._batches``);
* channels-last memory everywhere; on a GPU bfloat16 autocast, on the CPU plain float32;
* ``seed`` fixes everything random (dropout, data order, augmentation): two runs on the CPU
  with the same seed give identical numbers, and your own random generators are left alone.

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
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import features
from ._batches import Batches, clear_image_cache, gives_tensors
from ._cache import clear_all
from ._progress import Progress, say
from ._runtime import (check_dataset, check_head, chunks, eval_mode, precision, predict_proba, preprocessing_of,
                       resolve_device, to_device, uses_amp)
from .errors import ArgumentError, DatasetError
from .freezing import param_groups as stage_param_groups
from .history import History

__all__ = ["fit", "evaluate", "predict_proba", "lr_find", "History", "LRFinderResult", "clear_cache", "schedule_factor"]

SCHEDULES = (None, "cosine", "onecycle")


# ---------------------------------------------------------------------------
# Helpers shared by fit, evaluate, predict and lr_find
# ---------------------------------------------------------------------------

@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's generators seeded by ``seed``, and put their state back afterwards.

    Dropout and stochastic depth draw from torch's global generator, so a reproducible run
    must seed it; ``torch.random.fork_rng`` keeps that local: after the block the global state
    is what it was before (scikit-learn's ``random_state`` idea: no tlkit function reseeds
    your generators).
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def seed_everything(seed: int) -> torch.Generator:
    """A local ``torch.Generator`` seeded with ``seed`` (tlkit no longer reseeds the global generators).

    >>> g = seed_everything(0)
    >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=torch.Generator().manual_seed(0)).item()
    True
    """
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Batches, device: torch.device) -> tuple[float, float]:
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with eval_mode(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_amp(device)):
        for x, y in batches:
            out = torch.cat([model(c) for c in chunks(x, device)]).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    return loss_sum.item() / batches.n, correct.item() / batches.n


def schedule_factor(schedule: str | None, step: int, total: int) -> float:
    """Multiplier of every group's learning rate at optimizer step ``step`` (of ``total``).

    ``None``: constant. ``"cosine"``: from 1 down to 0 along half a cosine.
    ``"onecycle"``: linear warm-up from 1/25 to 1 over the first 30% of the steps, then cosine down.
    ``fit(..., schedule=...)`` multiplies every group's rate by it at each step.

    >>> [round(schedule_factor("onecycle", s, 10), 2) for s in (0, 3, 10)]
    [0.04, 1.0, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ArgumentError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
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

def fit(model: nn.Module, dataset: Any, val: Any = None, epochs: int = 5, lr: float = 1e-3, *,
        param_groups: list[dict] | None = None, batch_size: int = 32, schedule: str | None = None,
        augment: str | Callable | None = "light", weight_decay: float = 0.0, seed: int = 0,
        device: str | torch.device | None = None, progress: bool = True, label: str | None = None,
        callback: Callable[[int, History], Any] | None = None) -> History:
    """Train ``model`` on ``dataset`` for ``epochs`` epochs; return the :class:`History`.

    Args:
        model: from ``tlkit.load_backbone``; its head must have one output per class. Frozen
            stages (``tlkit.freeze``) stay frozen, with their BatchNorm statistics.
        dataset, val: training and validation data: ``ImageDataset``s (or ``ImageFolder``s
            without a transform). Their own ``transform`` is not used: images go through the
            backbone's preprocessing, plus ``augment`` for training. Every label must be a
            class index (``0..num_classes - 1``).
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
            a uint8 batch (B, 3, resize, resize); what it returns is centre-cropped (same size
            back) or resized (any other size) to the model's input size. Random crops come from
            the centre square of each image resized to the backbone's ``preprocessing.resize``.
        weight_decay: AdamW's decoupled weight decay.
        seed: fixes data order, augmentation and dropout. Torch's global generators are
            left as they were (the run uses its own seeded state).
        device: default ``tlkit.default_device()``; the model is moved there and stays there.
        progress: a progress bar (notebook or terminal) and one line per epoch.
        label: the run's name in plots.
        callback: called as ``callback(epoch, history)`` after each epoch (epoch counts from
            1); returning ``False`` stops training.

    The model is left in eval mode. Training stops early, with a warning, if the loss becomes
    NaN or infinite (learning rate too high: try ``lr_find``). Ctrl-C (``KeyboardInterrupt``)
    stops it too: the History of the epochs that finished comes back, with
    ``interrupted=True``.

    >>> history = fit(model, train, val, epochs=3, lr=1e-3, schedule="cosine")  # doctest: +SKIP
    >>> history.best_val_acc  # doctest: +SKIP
    0.94
    """
    check_dataset(dataset, "dataset", training=True)
    if val is not None:
        check_dataset(val, "val")
        if list(val.classes) != list(dataset.classes):
            raise DatasetError(f"dataset and val have different classes: {list(dataset.classes)} vs "
                               f"{list(val.classes)}. Load both splits of the same dataset.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ArgumentError(f"epochs must be a positive integer, got {epochs!r}")
    if schedule not in SCHEDULES:
        raise ArgumentError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    check_head(model, list(dataset.classes))
    pre = preprocessing_of(model)
    device = resolve_device(device)
    with seeded(seed, device):
        return _fit(model, dataset, val, epochs, lr, param_groups, batch_size, schedule, augment, weight_decay,
                    seed, device, progress, label, callback, pre)


def _fit(model, dataset, val, epochs, lr, param_groups, batch_size, schedule, augment, weight_decay, seed, device,
         progress, label, callback, pre) -> History:
    """The loop of :func:`fit`, after its checks, inside its seeded random state."""
    start = time.perf_counter()
    to_device(model, device)
    groups = param_groups if param_groups is not None else stage_param_groups(model, lr, weight_decay=weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    train_batches = Batches(dataset, pre, batch_size=batch_size, device=device, train=True, augment=augment,
                            seed=seed, progress=progress)
    val_batches = (Batches(val, pre, batch_size=max(batch_size, 64), device=device, progress=progress)
                   if val is not None else None)
    steps = len(train_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(schedule, step, epochs * steps))
    history = History(label=label or "", setup_time=time.perf_counter() - start,
                      images_per_epoch=steps * train_batches.batch_size, device=precision(device))
    amp = uses_amp(device)

    bar = Progress(epochs * steps, desc=f"{label + ': ' if label else ''}epoch 1/{epochs}", enabled=progress)
    bar.line(f"fit{' ' + repr(label) if label else ''}: {len(dataset)} training images"
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
                              "suggests one).", RuntimeWarning, stacklevel=3)
                break
            if callback is not None and callback(epoch, history) is False:
                bar.line(f"stopped by the callback after epoch {epoch}")
                break
    except KeyboardInterrupt:
        history.keep_epochs(len(history.epoch_time))
        history.interrupted = True
        bar.line(f"interrupted (Ctrl-C): returning the history of the {history.epochs} finished epoch(s); "
                 "the model keeps the weights it had when you stopped it")
        if not progress:
            print(f"fit interrupted: kept the {history.epochs} finished epoch(s)", flush=True)
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = benchmark
        model.eval()
    return history


# ---------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------

def evaluate(model: nn.Module, dataset: Any, batch_size: int = 64, device: str | torch.device | None = None, *,
             progress: bool = True) -> dict:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset`` (eval preprocessing, no augmentation).

    ``dataset`` is an ``ImageDataset`` (its images get the backbone's own preprocessing) or a
    dataset that already gives preprocessed tensors, e.g. ``ImageFolder(root,
    transform=tlkit.preprocess(model))``, whose tensors are used as they are. The model is
    moved to ``device`` (default ``tlkit.default_device()``).

    >>> evaluate(model, val)  # doctest: +SKIP
    {'loss': 0.21, 'accuracy': 0.93}
    """
    check_dataset(dataset, "dataset")
    check_head(model, list(dataset.classes))
    device = resolve_device(device)
    to_device(model, device)
    pre = preprocessing_of(model, required=not gives_tensors(dataset))  # ready tensors need no preprocessing
    batches = Batches(dataset, pre, batch_size=batch_size, device=device, progress=progress)
    loss, acc = _evaluate(model, batches, device)
    return {"loss": loss, "accuracy": acc}


# ``predict_proba(model, dataset)``, class probabilities, is imported above from tlkit._runtime:
# one implementation for tlkit.train and tlkit.viz.


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


def lr_find(model: nn.Module, dataset: Any, start: float = 1e-6, end: float = 1.0, steps: int = 50, *,
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
    check_dataset(dataset, "dataset", training=True)
    check_head(model, list(dataset.classes))
    if not 0 < start < end:
        raise ArgumentError(f"need 0 < start < end, got start={start}, end={end}")
    if steps < 3:
        raise ArgumentError(f"steps must be at least 3, got {steps}")
    device = resolve_device(device)
    with seeded(seed, device):
        return _lr_find(model, dataset, start, end, steps, batch_size, augment, weight_decay, seed, device, progress,
                        diverge)


def _lr_find(model, dataset, start, end, steps, batch_size, augment, weight_decay, seed, device, progress,
             diverge) -> LRFinderResult:
    """The sweep of :func:`lr_find`, after its checks, inside its seeded random state."""
    work = to_device(copy.deepcopy(model), device)
    groups = stage_param_groups(work, start, weight_decay=weight_decay)
    ratios = [g["lr"] / start for g in groups]  # each group keeps its share of the head's lr
    optimizer = torch.optim.AdamW(groups, lr=start, weight_decay=weight_decay)
    batches = Batches(dataset, preprocessing_of(work), batch_size=batch_size, device=device, train=True,
                      augment=augment, seed=seed, progress=progress)
    amp = uses_amp(device)
    chance = math.log(len(dataset.classes))  # the loss of a uniform guess
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
    """Free the decoded images, extracted features and stage outputs that tlkit keeps in memory.

    The disk cache of features stays (``tlkit.download.cache_dir("features")``).
    """
    clear_image_cache()
    features.clear_memory_cache()
    clear_all()  # and every other tlkit cache, e.g. the advisor's stage outputs


# Feature extraction lives in tlkit/features.py; ``tlkit.train`` shows it too, since training a
# head on extracted features is one of the ways to train.
from .features import Features, ProbeResult, extract_features, linear_probe, train_head  # noqa: E402

__all__ += ["Features", "ProbeResult", "extract_features", "linear_probe", "train_head"]
