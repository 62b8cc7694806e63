"""Features computed once: the fast way to use a frozen backbone.

With a frozen body, a network's features never change, so running the body every epoch
(as the classic "fixed feature extractor" recipe does) recomputes the same numbers again
and again. ``extract_features`` runs the body once per image and caches the result in
memory and on disk; ``linear_probe`` (logistic regression) and ``train_head`` (a linear
layer trained with PyTorch) then take well under a second.

Example:
    >>> import tlkit
    >>> from tlkit import datasets
    >>> model = tlkit.load_backbone()  # doctest: +SKIP
    >>> ftrain = tlkit.extract_features(model, datasets.load("hymenoptera", "train"))  # doctest: +SKIP
    >>> fval = tlkit.extract_features(model, datasets.load("hymenoptera", "val"))  # doctest: +SKIP
    >>> tlkit.linear_probe(ftrain, fval)  # doctest: +SKIP
    ProbeResult(accuracy=0.941, train_accuracy=1.000, C=1.0)
    >>> history = tlkit.train_head(ftrain, fval, epochs=25)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__ as tlkit_version
from ._batches import Batches
from ._cache import LRUCache, content_key
from ._progress import Progress, say
from ._runtime import (capture, check_dataset, chunks, eval_mode, forward, gives_tensors, preprocessing_of,
                       resolve_device, to_device, uses_amp)
from .download import cache_dir
from .errors import ArgumentError
from .history import History
from .stages import get_stage, head_path

__all__ = ["Features", "extract_features", "ProbeResult", "linear_probe", "train_head", "clear_memory_cache",
           "MEMORY"]

MEMORY = LRUCache(max_items=64)
"""Features computed in this session, by cache key (thread-safe; the least recently used go first)."""


@dataclass
class Features:
    """One feature vector per image, with the labels.

    Attributes:
        x: float tensor (N, D) on the CPU.
        y: long tensor (N,) of labels.
        classes: class names; label ``k`` is ``classes[k]``.
        stage: the stage the features come from (None: what the head reads).
        key: what they were computed from (backbone, weights, preprocessing, dataset, stage).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    stage: str | None = None
    key: str = field(default="", repr=False)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        where = f"stage {self.stage!r}" if self.stage else "pooled features the head reads"
        return f"Features: {len(self)} images x {self.x.shape[1]} features, {len(self.classes)} classes ({where})"

    def copy(self) -> "Features":
        """A copy whose tensors can be changed without changing the cache."""
        return dataclasses.replace(self, x=self.x.clone(), y=self.y.clone(), classes=list(self.classes))


def _pool(t: torch.Tensor) -> torch.Tensor:
    t = t.float()
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    return t.flatten(1)


def _weights_digest(model: nn.Module, skip: str | None) -> str:
    """A cheap fingerprint of the weights: per tensor, its sum and a strided sample of 64 values."""
    sums, samples, names = [], [], []
    for name, t in model.state_dict().items():
        if skip and (name == skip or name.startswith(skip + ".")):
            continue
        if not t.is_floating_point():
            continue
        flat = t.detach().flatten()
        names.append(f"{name}{tuple(t.shape)}")
        sums.append(flat.float().sum())
        samples.append(flat[:: max(1, flat.numel() // 64)][:64].float())
    h = hashlib.sha1("|".join(names).encode())
    if sums:
        h.update(torch.stack(sums).cpu().numpy().tobytes())
        h.update(torch.cat(samples).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_key(model: nn.Module, dataset: Any, stage: str | None, device: torch.device) -> str | None:
    """What the features depend on: backbone, weights, preprocessing, the dataset's file contents,
    stage, precision, and the torch and tlkit versions that computed them."""
    ds_key = content_key(dataset)
    if ds_key is None:
        return None
    info = getattr(model, "tlkit_backbone", None)
    head = head_path(model)
    skip = None if stage == "head" else head  # the head's weights do not change what it reads
    parts = [getattr(info, "name", type(model).__name__), f"pretrained={getattr(model, 'tlkit_pretrained', '?')}",
             _weights_digest(model, skip), repr(preprocessing_of(model)), ds_key, f"stage={stage}",
             f"amp={uses_amp(device)}", f"torch={torch.__version__}", f"tlkit={tlkit_version}"]
    return " | ".join(parts)


class _NoDiskCache(Exception):
    """The feature cache folder cannot be used (read-only HOME or TLKIT_CACHE)."""


def _disk_path(key: str) -> Path:
    try:
        folder = cache_dir("features")
    except OSError as exc:  # cache_dir creates the folder: read-only HOME / TLKIT_CACHE
        raise _NoDiskCache(str(exc)) from exc
    return folder / (hashlib.sha1(key.encode()).hexdigest()[:24] + ".pt")


def _load_disk(key: str) -> Features | None:
    path = _disk_path(key)
    try:
        if not path.is_file():
            return None
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable or damaged cache file is simply recomputed
        return None
    if d.get("key") != key:
        return None
    return Features(d["x"], d["y"], list(d["classes"]), d["stage"], key)


def _save_disk(f: Features) -> None:
    path = _disk_path(f.key)
    part = path.with_name(path.name + f".{os.getpid()}.part")
    try:
        torch.save({"x": f.x, "y": f.y, "classes": f.classes, "stage": f.stage, "key": f.key}, part)
        os.replace(part, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a read-only folder as a RuntimeError
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass
        raise _NoDiskCache(f"{path.parent}: {exc}") from exc


def clear_memory_cache() -> None:
    """Forget the features kept in memory (the disk cache stays)."""
    MEMORY.clear()


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Any, stage: str | None = None, batch_size: int = 64,
                     device: str | torch.device | None = None, cache: bool = True, *,
                     progress: bool = True) -> Features:
    """Run the model once over ``dataset`` and keep one feature vector per image.

    Args:
        model: from ``tlkit.load_backbone``.
        dataset: an ``ImageDataset``; images get the backbone's eval preprocessing (no
            augmentation). A dataset that already gives preprocessed tensors is used as it is
            (and not cached: tlkit cannot name its content).
        stage: None for the pooled features the head reads (its input); a stage name
            (``tlkit.list_stages(model)``) for the global-average-pooled output of that stage. The
            forward pass stops there, so early stages are quick.
        batch_size: images per forward pass.
        device: default ``tlkit.default_device()``; the model is moved there.
        cache: reuse features computed before, from memory or from the disk cache
            (``tlkit.download.cache_dir("features")``). The key covers the backbone, its
            weights (a fingerprint of every tensor except the head's), the preprocessing, the
            bytes of the dataset's image files, the stage and the torch and tlkit versions, so
            fine-tuned weights or edited images get new features. A cache hit is a copy: changing
            it changes nothing else. If the cache folder is read-only, the features are computed
            in memory, with one warning.
        progress: a progress bar while computing.

    >>> f = extract_features(model, train, stage="blocks.3")  # doctest: +SKIP
    >>> f.x.shape  # doctest: +SKIP
    torch.Size([244, 80])
    """
    check_dataset(dataset, "dataset")
    if stage is not None:
        get_stage(model, stage)  # a clear error for a wrong name
    device = resolve_device(device)
    key = _cache_key(model, dataset, stage, device) if cache else None
    disk = key is not None
    if key is not None:
        found = MEMORY.get(key)
        if found is None:
            try:
                found = _load_disk(key)
            except _NoDiskCache:
                found, disk = None, False
            if found is not None:
                MEMORY.put(key, found)
        if found is not None:
            return found.copy()

    start = time.perf_counter()
    to_device(model, device)
    target = model.get_submodule(head_path(model) if stage is None else get_stage(model, stage).output)
    batches = Batches(dataset, preprocessing_of(model, required=not gives_tensors(dataset)), batch_size=batch_size,
                      device=device, progress=progress)
    bar = Progress(len(batches), desc="extracting features", enabled=progress and len(batches) > 1)
    try:
        with eval_mode(model), capture({"target": target}, inputs=stage is None, stop=True, keep=_pool) as seen, \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_amp(device)):
            for x, _ in batches:
                for chunk in chunks(x, device):
                    forward(model, chunk)  # stops at the target: the rest of the network is not needed
                bar.update()
    finally:
        bar.close()
    captured = seen["target"]
    x = torch.cat(captured).cpu() if captured else torch.empty(0)
    if len(x) != len(dataset):
        raise RuntimeError(f"the hook on {type(target).__name__} saw {len(x)} of {len(dataset)} images: "
                           "the model's forward does not pass through it")
    feats = Features(x, torch.as_tensor(list(dataset.targets), dtype=torch.long),
                     list(dataset.classes), stage, key or "")
    if key is not None:
        MEMORY.put(key, feats)
        if disk:
            try:
                _save_disk(feats)
            except _NoDiskCache as exc:
                warnings.warn(f"the feature cache is not writable ({exc}); the features were computed in memory "
                              "and will be computed again in a new session. Set TLKIT_CACHE to a writable folder "
                              "to keep them.", RuntimeWarning, stacklevel=2)
        else:
            warnings.warn("the feature cache folder cannot be created or read (read-only HOME or TLKIT_CACHE?); "
                          "the features were computed in memory. Set TLKIT_CACHE to a writable folder to keep "
                          "them between sessions.", RuntimeWarning, stacklevel=2)
    if progress and len(batches) > 1:
        say(f"extracted {feats.x.shape[1]} features from {len(feats)} images in {time.perf_counter() - start:.1f}s"
            + ("; cached" if key else ""))
    return feats.copy() if key is not None else feats


# ---------------------------------------------------------------------------
# Classifiers on features
# ---------------------------------------------------------------------------

def _check_pair(train: Features, val: Features | None) -> None:
    for f, what in ((train, "train_features"), (val, "val_features")):
        if f is not None and not (hasattr(f, "x") and hasattr(f, "y")):
            raise TypeError(f"{what} must be tlkit Features (from extract_features), got {type(f).__name__}")
    if val is None:
        return
    if train.x.shape[1] != val.x.shape[1]:
        raise ValueError(f"train and val features have different widths ({train.x.shape[1]} vs {val.x.shape[1]}): "
                         "extract both with the same model and stage.")
    if list(train.classes) != list(val.classes):
        raise ValueError(f"train and val features have different classes: {train.classes} vs {val.classes}")


@dataclass
class ProbeResult:
    """A logistic-regression classifier on frozen features.

    Attributes:
        accuracy: on the validation features.
        train_accuracy: on the training features.
        C: inverse regularisation strength used.
        model: the fitted scikit-learn pipeline (StandardScaler, then LogisticRegression).
    """

    accuracy: float
    train_accuracy: float
    C: float
    model: Any = field(repr=False)

    def __repr__(self) -> str:
        return f"ProbeResult(accuracy={self.accuracy:.3f}, train_accuracy={self.train_accuracy:.3f}, C={self.C:g})"


def linear_probe(train_features: Features, val_features: Features, C: float = 1.0, max_iter: int = 2000
                 ) -> ProbeResult:
    """The baseline: logistic regression on standardised frozen features.

    How good are the pretrained features as they are? Every strategy in the course is
    compared with this number.

    >>> linear_probe(ftrain, fval)  # doctest: +SKIP
    ProbeResult(accuracy=0.941, train_accuracy=1.000, C=1)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check_pair(train_features, val_features)
    if C <= 0:
        raise ValueError(f"C must be positive, got {C}")
    xt, yt = train_features.x.numpy(), train_features.y.numpy()
    xv, yv = val_features.x.numpy(), val_features.y.numpy()
    if len(np.unique(yt)) < 2:
        raise ValueError("the training features hold a single class; a classifier needs at least two.")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(xt, yt)
    return ProbeResult(float(clf.score(xv, yv)), float(clf.score(xt, yt)), C, clf)


def train_head(train_features: Features, val_features: Features | None = None, epochs: int = 25,
               lr: float = 1e-2, *, batch_size: int = 32, weight_decay: float = 0.0, head: nn.Linear | None = None,
               seed: int = 0, label: str | None = None, progress: bool = True,
               callback: Callable[[int, History], Any] | None = None) -> History:
    """Train a linear classifier (``nn.Linear``) on cached features with AdamW and cross-entropy.

    The same training loop as ``fit``, but on feature vectors instead of images, so an epoch
    takes milliseconds. Pass ``head=model.classifier`` (the model's own head, right size) to
    train it in place and get a complete fine-tuned model; otherwise a new layer is made.
    ``seed`` fixes the new layer's initial weights and the batch order without touching torch's
    global generator. ``progress``: a bar over the epochs, then one summary line.

    >>> history = train_head(ftrain, fval, epochs=25, lr=1e-2)  # doctest: +SKIP
    >>> history.val_acc[-1]  # doctest: +SKIP
    0.93
    """
    _check_pair(train_features, val_features)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ArgumentError(f"epochs must be a positive integer, got {epochs!r}")
    x, y = train_features.x.float(), train_features.y.long()
    n, d, c = len(y), x.shape[1], len(train_features.classes)
    if head is None:
        with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves torch's global state alone
            torch.manual_seed(seed)
            head = nn.Linear(d, c)
    if (head.in_features, head.out_features) != (d, c):
        raise ValueError(f"head is Linear({head.in_features}, {head.out_features}); the features need "
                         f"Linear({d}, {c}) ({d} features, {c} classes).")
    head.requires_grad_(True)
    device = head.weight.device
    x, y = x.to(device), y.to(device)
    xv = yv = None
    if val_features is not None:
        xv, yv = val_features.x.float().to(device), val_features.y.long().to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    history = History(label=label or "linear head on features", images_per_epoch=n,
                      device=f"{device.type} (float32)")
    bar = Progress(epochs, desc=history.label, enabled=progress and epochs > 1, unit="epoch")
    head.train()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        history.lr.append(lr)
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(n, generator=order).split(batch_size):
            out = head(x[idx])
            loss = F.cross_entropy(out, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        history.train_loss.append(loss_sum / n)
        history.train_acc.append(correct / n)
        history.train_time.append(time.perf_counter() - t0)
        if xv is not None:
            with torch.no_grad():
                out = head(xv)
                history.val_loss.append(F.cross_entropy(out, yv).item())
                history.val_acc.append((out.argmax(1) == yv).float().mean().item())
        history.epoch_time.append(time.perf_counter() - t0)
        bar.update()
        bar.describe(history.label, loss=f"{history.train_loss[-1]:.3f}",
                     **({"val_acc": f"{history.val_acc[-1]:.3f}"} if history.val_acc else {}))
        if not math.isfinite(history.train_loss[-1]):
            break
        if callback is not None and callback(epoch, history) is False:
            break
    bar.close()
    head.eval()
    text = (f"train_head: {history.epochs} epochs in {time.perf_counter() - start:.2f}s, train loss "
            f"{history.train_loss[-1]:.4f} acc {history.train_acc[-1]:.3f}")
    if history.val_acc:
        text += f", val loss {history.val_loss[-1]:.4f} acc {history.val_acc[-1]:.3f}"
    say(text, progress)
    return history
