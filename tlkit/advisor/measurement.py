"""How well do a backbone's frozen features fit your data? :func:`measure` -> :class:`Measurement`.

Seconds on a CPU for a few hundred images: k-NN and linear-probe accuracy, a probe at every
stage, LEEP, NCE and LogME (formulas in :mod:`tlkit.transferability`).

Example:
    >>> m = measure("efficientnet_lite0", datasets.load("hymenoptera"))  # doctest: +SKIP
    >>> m.best_stage  # doctest: +SKIP
    'penultimate'
"""
from __future__ import annotations

import dataclasses
import html
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import transferability as tm
from .._cache import LRUCache
from .._runtime import capture, check_dataset, stage_names
from ..backbones import backbone_info, imagenet_classes, load_backbone
from ..errors import ArgumentError, DatasetError
from ..features import extract_features
from ..stages import get_stage, head_path
from .decision_table import PENULTIMATE

__all__ = ["Measurement", "measure", "stage_features", "PENULTIMATE"]


@dataclass
class Measurement:
    """Signals measured on frozen features of one backbone for one dataset.

    Attributes:
        backbone, dataset: names; num_images, num_classes, per_class: the data measured.
        evaluation: how accuracies were estimated (cross-validation folds, or a validation split).
        chance: accuracy of always guessing the most common class.
        knn_accuracy, logistic_accuracy: k-NN and logistic-regression accuracy on the
            penultimate features: the signals with an absolute meaning.
        stage_accuracy: linear-probe accuracy of the pooled output of each probed stage, in
            forward order; the last entry, ``"penultimate"``, is what the head reads.
        stage_dims: the width of each probed stage's features.
        leep, nce: LEEP and NCE of the backbone's own ImageNet classifier on your labels (<= 0).
        leep_similarity, nce_similarity: the two rescaled to [0, 1] (0: no better than the class
            frequencies, 1: the ImageNet classifier already separates your classes).
        logme: LogME of the penultimate features (for ranking backbones on the same data only).
        imagenet_top: for each of your classes, the ImageNet class its images are most often
            called and the share of its images that get that name.
        seconds: wall time of the whole measurement.
    """

    backbone: str
    dataset: str
    num_images: int
    num_classes: int
    per_class: float
    evaluation: str
    chance: float
    knn_accuracy: float
    logistic_accuracy: float
    stage_accuracy: dict[str, float]
    stage_dims: dict[str, int]
    leep: float
    leep_similarity: float
    nce: float
    nce_similarity: float
    logme: float
    feature_dim: int
    imagenet_top: dict[str, tuple[str, float]] = field(default_factory=dict)
    n_eval: int = 0
    seconds: float = 0.0

    @property
    def similarity(self) -> float:
        """The similarity score to ImageNet used by :func:`recommend`: ``leep_similarity``."""
        return self.leep_similarity

    @property
    def standard_error(self) -> float:
        """Binomial standard error of the best probe accuracy: differences below it are noise."""
        p = max(self.stage_accuracy.values())
        return math.sqrt(max(p * (1 - p), 1e-4) / max(self.n_eval, 1))

    @property
    def best_stage(self) -> str:
        """The probed stage whose features a linear classifier reads best.

        Among the stages within one standard error of the best accuracy, the latest one
        (later features are cheaper to use and usually the default).
        """
        top = max(self.stage_accuracy.values())
        close = [s for s, a in self.stage_accuracy.items() if a >= top - self.standard_error]
        return close[-1]

    @property
    def penultimate_drop(self) -> float:
        """Probe accuracy lost by reading the penultimate features instead of the best stage's."""
        return max(self.stage_accuracy.values()) - self.stage_accuracy[PENULTIMATE]

    def _penultimate_in_words(self) -> str:
        """How the penultimate features (what the head reads) compare with the best stage's, in words."""
        drop, noise = self.penultimate_drop, self.standard_error
        if self.best_stage == PENULTIMATE:
            return "the penultimate features (what the head reads) are the best"
        if drop <= 2 * noise:
            return (f"the penultimate features do as well: {drop:.3f} lower, within the noise "
                    f"(one standard error is {noise:.3f})")
        return (f"the penultimate features do worse: {drop:.3f} lower, more than twice the noise "
                f"(one standard error is {noise:.3f})")

    def rows(self) -> list[tuple[str, str, str]]:
        """(signal, value, what it means) for display."""
        best = self.best_stage
        return [
            ("data", f"{self.num_images} images, {self.num_classes} classes ({self.per_class:.0f}/class)", self.evaluation),
            ("chance", f"{self.chance:.3f}", "always guessing the most common class"),
            ("k-NN accuracy", f"{self.knn_accuracy:.3f}", "nearest neighbours in penultimate-feature space"),
            ("linear-probe accuracy", f"{self.logistic_accuracy:.3f}", "logistic regression on penultimate features"),
            ("best stage", f"{best} ({self.stage_accuracy[best]:.3f})", self._penultimate_in_words()),
            ("LEEP", f"{self.leep:.3f}", f"-> similarity {self.leep_similarity:.2f} (0 = class frequencies, 1 = perfect)"),
            ("NCE", f"{self.nce:.3f}", f"-> similarity {self.nce_similarity:.2f} (share of label information)"),
            ("LogME", f"{self.logme:.3f}", "rank backbones on this data only; favours wide features "
                                            "when images < feature dims"),
        ]

    def __str__(self) -> str:
        lines = [f"Measurement: {self.backbone} on {self.dataset} ({self.seconds:.1f} s)"]
        lines += [f"  {k:<22}{v:<26}{why}" for k, v, why in self.rows()]
        lines.append("  probe accuracy by stage:")
        width = max(len(s) for s in self.stage_accuracy)
        for s, a in self.stage_accuracy.items():
            bar = "#" * round(30 * a)
            mark = "  <- best" if s == self.best_stage else ""
            lines.append(f"    {s:<{width}}  {a:.3f}  {bar}{mark}")
        if self.imagenet_top:
            lines.append("  ImageNet's name for each class: " + "; ".join(
                f"{c} -> {n} ({share:.0%})" for c, (n, share) in list(self.imagenet_top.items())[:10]))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td style='padding:2px 8px'>{html.escape(k)}</td><td style='padding:2px 8px'>"
                       f"<b>{html.escape(v)}</b></td><td style='padding:2px 8px;color:#666'>{html.escape(w)}</td></tr>"
                       for k, v, w in self.rows())
        bars = ""
        for s, a in self.stage_accuracy.items():
            color = "#2a7ab0" if s == self.best_stage else "#9cc3dd"
            bars += (f"<tr><td style='padding:0 6px;font-size:0.85em'>{html.escape(s)}</td><td style='width:220px'>"
                     f"<div style='background:{color};height:10px;width:{max(a, 0) * 100:.0f}%'></div></td>"
                     f"<td style='font-size:0.85em'>{a:.3f}</td></tr>")
        names = ""
        if self.imagenet_top:
            names = ("<p style='margin:4px 0'><b>ImageNet's name for each class:</b> " + html.escape("; ".join(
                f"{c} -> {n} ({share:.0%})" for c, (n, share) in list(self.imagenet_top.items())[:10])) + "</p>")
        return (f"<div style='border:1px solid #ccc;border-radius:6px;padding:10px;max-width:820px'>"
                f"<b>Measurement</b>: {html.escape(self.backbone)} on {html.escape(self.dataset)} "
                f"<span style='color:#777'>({self.seconds:.1f} s)</span>"
                f"<table style='border-collapse:collapse'>{rows}</table>"
                f"<p style='margin:6px 0 2px'><b>Linear-probe accuracy by stage</b> (where do the features stop "
                f"being general for this data?)</p><table>{bars}</table>{names}</div>")

    def plot(self, ax=None):
        """Probe accuracy at each stage, with chance and the k-NN accuracy for reference. Returns the Figure.

        A new figure is closed in pyplot before it is returned, so a notebook shows it once (as the
        cell's value); on an ``ax`` of yours, your figure is left as it is.
        """
        import matplotlib.pyplot as plt

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(7, 3.2))
        else:
            fig = ax.figure
        names = list(self.stage_accuracy)
        acc = list(self.stage_accuracy.values())
        x = np.arange(len(names))
        se = self.standard_error
        ax.plot(x, acc, "o-", color="#2a7ab0", label="linear probe")
        ax.fill_between(x, np.array(acc) - se, np.array(acc) + se, color="#2a7ab0", alpha=0.15)
        best = names.index(self.best_stage)
        ax.plot([best], [acc[best]], "o", ms=12, mfc="none", mec="#d62728", label=f"best: {self.best_stage}")
        ax.axhline(self.chance, color="gray", ls=":", label="chance")
        ax.axhline(self.knn_accuracy, color="#ff7f0e", ls="--", lw=1, label="k-NN (penultimate)")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{self.dataset}: where do {self.backbone}'s features stop being general?", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        if own:
            plt.close(fig)
        return fig


def _default_probe_stages(names: Sequence[str]) -> list[str]:
    """Every body stage but the last (the penultimate features stand in for it)."""
    body = [n for n in names if n != "head"]
    return body[:-1]


def _load(model: str | nn.Module) -> nn.Module:
    """The model itself, or the backbone of that name with its ImageNet weights."""
    if isinstance(model, nn.Module):
        return model
    if not isinstance(model, str):
        raise ArgumentError(f"model must be a backbone name or a model from tlkit.load_backbone, "
                            f"got {type(model).__name__}")
    return load_backbone(model)


def _imagenet_probs(model: nn.Module, feats) -> "np.ndarray | None":
    """Softmax of the model's own ImageNet head on penultimate features (None if the head is not ImageNet's)."""
    head = model.get_submodule(head_path(model))
    if not isinstance(head, nn.Linear) or head.out_features != 1000 or not getattr(model, "tlkit_pretrained", True):
        return None
    with torch.no_grad():
        weight = head.weight.detach().cpu().float()
        bias = head.bias.detach().cpu().float() if head.bias is not None else 0
        return torch.softmax(feats.cpu().float() @ weight.T + bias, dim=1).double().numpy()


STAGE_MEMORY = LRUCache(max_items=256)
"""Pooled stage outputs computed by :func:`stage_features`, by feature-cache key and stage (thread-safe)."""


def _pool(t: torch.Tensor) -> torch.Tensor:
    t = t.float()
    return (t.mean(dim=(2, 3)) if t.ndim == 4 else t.flatten(1)).cpu()


def stage_features(model: nn.Module, dataset, stages: Sequence[str], *, batch_size: int = 64, device=None,
                   progress: bool = True):
    """Penultimate features plus the pooled output of several stages, from one forward pass.

    ``tlkit.extract_features(model, ds, stage=s)`` gives the same numbers for one stage at a
    time; here forward hooks on every wanted stage catch their outputs (global-average
    pooled) during a single ``extract_features`` pass, so probing nine stages costs one pass,
    not nine. Results are kept in memory under the feature cache's key.

    Returns ``(features, {stage: tensor N x D})``.
    """
    def hooked_pass(wanted, cache):
        modules = {name: model.get_submodule(get_stage(model, name).output) for name in wanted}
        with capture(modules, keep=_pool) as seen:  # the hooks fire only if extract_features runs the model
            features = extract_features(model, dataset, batch_size=batch_size, device=device, cache=cache,
                                        progress=progress)
        return features, {name: torch.cat(v) for name, v in seen.items() if v}

    pen, found = hooked_pass(stages, cache=True)
    if not pen.key:  # a dataset tlkit cannot name: nothing is cached
        return pen, found
    keys = {s: f"{pen.key} | probe={s}" for s in stages}
    for name, x in found.items():
        STAGE_MEMORY.put(keys[name], x)
    missing = [s for s in stages if keys[s] not in STAGE_MEMORY]
    if missing:  # the penultimate features came from the cache, these stages did not
        for name, x in hooked_pass(missing, cache=False)[1].items():
            STAGE_MEMORY.put(keys[name], x)
            found[name] = x
    return pen, {s: found[s] if s in found else STAGE_MEMORY.get(keys[s]) for s in stages}


def measure(model: str | nn.Module, dataset, val=None, stages: Sequence[str] | None = None, *,
            k: int = 5, cv: int = 5, seed: int = 0, batch_size: int = 64, device=None,
            progress: bool = True) -> Measurement:
    """Measure how well a backbone's frozen features fit a dataset: seconds on a CPU for a few hundred images.

    Args:
        model: a model from ``tlkit.load_backbone`` (its own preprocessing record is used, e.g.
            its ``image_size``), or a backbone name (its ImageNet weights are loaded).
        dataset: a ``tlkit.datasets.ImageDataset`` (images get the backbone's own preprocessing).
        val: optional validation ImageDataset: accuracies are then train -> val; otherwise
            stratified ``cv``-fold cross-validation on ``dataset``.
        stages: stage names to probe (default: every body stage but the last; the penultimate
            features are always probed, as ``"penultimate"``).
        k: neighbours for the k-NN accuracy.

    Features come from one ``tlkit.extract_features`` pass per dataset; the probed stages'
    outputs are caught on the way by forward hooks (:func:`stage_features`), and everything is
    cached, so measuring twice is instant.
    LEEP, NCE and the ImageNet names use the backbone's ImageNet head on the training images,
    at the model's own input size (a model whose head was replaced borrows the ImageNet head
    of a fresh copy of the same backbone, with the model's preprocessing record).

    >>> m = measure("efficientnet_lite0", datasets.load("hymenoptera"))  # doctest: +SKIP
    >>> m.plot()  # doctest: +SKIP
    """
    start = time.perf_counter()
    model = _load(model)
    info = backbone_info(model)
    names = stage_names(model)
    probe = list(_default_probe_stages(names) if stages is None else stages)
    bad = [s for s in probe if s not in names or s == "head"]
    if bad:
        raise ArgumentError(f"cannot probe stage(s) {bad} of {info.name}; body stages are: "
                            f"{', '.join(n for n in names if n != 'head')}")
    check_dataset(dataset, "dataset")
    if val is not None:
        check_dataset(val, "val")
    num_classes = len(dataset.classes)
    tm.check_labels(dataset.targets, 1 if val is not None else 2)
    if val is not None and list(val.classes) != list(dataset.classes):
        raise DatasetError(f"val has classes {val.classes}, the training data {dataset.classes}: they must match")

    def feats(ds):
        if ds is None:
            return None, {}
        return stage_features(model, ds, probe, batch_size=batch_size, device=device, progress=progress)

    (pen_tr, by_stage_tr), (pen_va, by_stage_va) = feats(dataset), feats(val)
    x, y = pen_tr.x.double().numpy(), pen_tr.y.numpy()
    val_xy = (lambda a: (a.double().numpy(), np.asarray(val.targets))) if val is not None else None

    def score(fn, train_x, val_x, **kw):
        return fn(train_x.double().numpy(), y, seed=seed, val=val_xy(val_x) if val_xy else None, **kw)

    if val is not None:
        evaluation, n_eval, y_eval = f"train ({len(y)}) -> val ({len(val)})", len(val), np.asarray(val.targets)
    else:
        folds = int(min(cv, np.bincount(y).min()))
        evaluation, n_eval, y_eval = f"{folds}-fold cross-validation on {len(y)} images", len(y), y
    chance = float(np.bincount(y_eval, minlength=num_classes).max() / len(y_eval))
    knn = score(tm.knn_accuracy, pen_tr.x, pen_va.x if pen_va else None, k=k, cv=cv)
    logistic = score(tm.logistic_accuracy, pen_tr.x, pen_va.x if pen_va else None, cv=cv)
    stage_acc, stage_dims = {}, {}
    for s in probe:
        stage_acc[s] = score(tm.logistic_accuracy, by_stage_tr[s], by_stage_va.get(s), cv=cv)
        stage_dims[s] = int(by_stage_tr[s].shape[1])
    stage_acc[PENULTIMATE], stage_dims[PENULTIMATE] = logistic, int(x.shape[1])

    probs = _imagenet_probs(model, pen_tr.x)
    if probs is None:  # a changed head: ask the original ImageNet classifier, at this model's input size
        imagenet_model = load_backbone(info.name)
        imagenet_model.tlkit_backbone = dataclasses.replace(imagenet_model.tlkit_backbone,
                                                            preprocessing=info.preprocessing)
        probs = _imagenet_probs(imagenet_model, extract_features(imagenet_model, dataset, batch_size=batch_size,
                                                                 device=device, progress=progress).x)
    leep = tm.leep(probs, y)
    top1 = probs.argmax(1)
    nce = tm.nce(top1, y)
    inet = imagenet_classes()
    imagenet_top = {}
    for c, cname in enumerate(dataset.classes):
        z = top1[y == c]
        if len(z):
            common = np.bincount(z).argmax()
            imagenet_top[cname] = (inet[common], float(np.mean(z == common)))
    return Measurement(
        backbone=info.name, dataset=getattr(dataset, "name", "dataset"), num_images=len(y), num_classes=num_classes,
        per_class=len(y) / num_classes, evaluation=evaluation, chance=chance, knn_accuracy=knn,
        logistic_accuracy=logistic, stage_accuracy=stage_acc, stage_dims=stage_dims, leep=leep,
        leep_similarity=tm.leep_similarity(leep, y), nce=nce, nce_similarity=tm.nce_similarity(nce, y),
        logme=tm.logme(x, y), feature_dim=int(x.shape[1]), imagenet_top=imagenet_top, n_eval=n_eval,
        seconds=time.perf_counter() - start)
