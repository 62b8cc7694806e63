"""The decision table of transfer learning, read for the sizes you give it: :func:`advise` -> :class:`Advice`.

See :mod:`tlkit.advisor` for the table and where its thresholds come from.

Example:
    >>> from tlkit.advisor import advise
    >>> advise(240, 2, "similar").strategy
    'feature_extraction'
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Real
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from torch import nn

from .._runtime import stage_names
from ..backbones import DEFAULT_BACKBONE, backbone_info
from ..errors import ArgumentError

if TYPE_CHECKING:
    from .measurement import Measurement

__all__ = [
    "SMALL_PER_CLASS", "LARGE_PER_CLASS", "SIMILARITY_THRESHOLD", "STRATEGIES", "TABLE", "SIZES", "PENULTIMATE",
    "Advice", "advise", "table", "table_html", "size_band",
]


SMALL_PER_CLASS = 200
"""Fewer images per class than this is "small" (see the module docstring for why)."""
LARGE_PER_CLASS = 1000
"""At least this many images per class is "large"; in between is "medium"."""
SIMILARITY_THRESHOLD = 0.5
"""A similarity score (0 = unlike ImageNet, 1 = like it) at or above this counts as "similar"."""

STRATEGIES = {
    "feature_extraction": "Feature extraction: freeze the whole pretrained network and train only a new linear "
                          "classifier on its penultimate features.",
    "early_features": "Early features: freeze the network and train a linear classifier on the features of an "
                      "earlier stage, which are more general than the last ones.",
    "fine_tune_top": "Fine-tune the top stages: freeze the early stages, train the later ones with a small "
                     "learning rate and the new head with a larger one.",
    "fine_tune_all": "Fine-tune everything: train every stage from the ImageNet weights, the body with a "
                     "smaller learning rate than the head.",
    "retrain_all": "Retrain from the pretrained initialisation: train every layer at the full learning rate; "
                   "ImageNet weights are only the starting point ('from scratch with pretrained init').",
}
"""The strategies, from least to most training."""

SIZES = ("small", "medium", "large")
TABLE = {
    ("small", "similar"): "feature_extraction",
    ("small", "different"): "early_features",
    ("medium", "similar"): "fine_tune_top",
    ("medium", "different"): "fine_tune_top",
    ("large", "similar"): "fine_tune_all",
    ("large", "different"): "retrain_all",
}
"""(size, similarity) -> strategy: the decision table."""

_WHY = {
    ("small", "similar"): "the pretrained features already describe images like yours, and there are too few "
                          "images to fine-tune millions of weights without overfitting",
    ("small", "different"): "the last stages are specialised for ImageNet's classes, while earlier stages (edges, "
                            "textures, simple shapes) stay general; too few images to retrain them",
    ("medium", "similar"): "enough images to adapt the most ImageNet-specific stages a little, not enough to "
                           "move the whole network safely",
    ("medium", "different"): "the later stages need to change for data unlike ImageNet, and there are enough "
                             "images to fine-tune them from a middle stage on",
    ("large", "similar"): "with this much data fine-tuning the whole network helps and rarely overfits; "
                          "the ImageNet weights are a very good start",
    ("large", "different"): "plenty of data, and it is unlike ImageNet: every layer should adapt; ImageNet "
                            "weights still train faster than a random start",
}

_HEAD_LR = 1e-3  # Adam-style learning rate for a new head (tlkit.fit's default)


PENULTIMATE = "penultimate"
"""Label of the last probe point: the pooled features the head reads (``extract_features(stage=None)``)."""


# ---------------------------------------------------------------------------
# Stage names of a backbone, without loading weights
# ---------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _stage_names_by_name(name: str) -> tuple[str, ...]:
    return tuple(stage_names(backbone_info(name).build()))


def _backbone_name_and_stages(model: str | nn.Module) -> tuple[str, tuple[str, ...]]:
    """(backbone name, stage names) of a model or a backbone name (without loading weights)."""
    if isinstance(model, nn.Module):
        info = getattr(model, "tlkit_backbone", None)
        name = info.name if info is not None else type(model).__name__
        return name, tuple(stage_names(model))
    if not isinstance(model, str):
        raise ArgumentError(f"model must be a backbone name such as {DEFAULT_BACKBONE!r} or a model from "
                            f"tlkit.load_backbone, got {type(model).__name__}")
    return model, _stage_names_by_name(model)


def _middle_stage(body: Sequence[str]) -> str:
    """The body stage two thirds of the way up (lite0: blocks.4, ResNet: layer3, VGG: conv4)."""
    return body[round(2 / 3 * (len(body) - 1))]


def _top_stage(body: Sequence[str]) -> str:
    """First stage of the top quarter of the body (lite0: blocks.6, ResNet: layer4, VGG: conv5)."""
    return body[-max(1, round(len(body) / 4))]


def _plan(strategy: str, names: Sequence[str]) -> tuple[str, str | None]:
    """The table's default (freeze_until, feature_stage) for a strategy on a network with these stages."""
    body = [n for n in names if n != "head"]
    if strategy == "feature_extraction":
        return "head", None
    if strategy == "early_features":
        return "head", _middle_stage(body)
    if strategy == "fine_tune_top":
        return _top_stage(body), None
    return names[0], None  # fine_tune_all, retrain_all: nothing frozen


def _after(names: Sequence[str], stage: str) -> str:
    """The stage after ``stage`` (the first one that should train when ``stage`` is the last general one)."""
    body = [n for n in names if n != "head"]
    if stage == PENULTIMATE or stage not in body:
        return "head"
    return names[names.index(stage) + 1]



# ---------------------------------------------------------------------------
# Advice
# ---------------------------------------------------------------------------

@dataclass
class Advice:
    """A transfer-learning plan: what to train, from where, how fast, and why.

    Attributes:
        strategy: a key of :data:`STRATEGIES`.
        backbone: the backbone the stage names refer to.
        freeze_until: first trainable stage, for ``tlkit.freeze(model, until=freeze_until)``
            (``"head"``: only the new head trains).
        feature_stage: for ``"early_features"``, the stage to read features from
            (``tlkit.extract_features(model, ds, stage=feature_stage)``); None means the
            penultimate features, what the head reads.
        head_lr, body_lr: learning rates for the new head and the trainable body (None: frozen body).
        augment: augmentation preset for training (``"none"``, ``"light"``, ``"standard"``, ``"strong"``).
        num_images, num_classes, per_class: the data size the advice is for.
        size: ``"small"``, ``"medium"`` or ``"large"``; similarity: ``"similar"`` or ``"different"``.
        similarity_score: the number in [0, 1] behind ``similarity``, when one was given or measured.
        rationale: the reasoning in plain words, citing the table row.
        signals: measured numbers that drove the advice (filled in by :func:`recommend`).
        notes: caveats worth knowing (class imbalance, one image per class, ...).
    """

    strategy: str
    backbone: str
    freeze_until: str
    feature_stage: str | None
    head_lr: float
    body_lr: float | None
    augment: str
    num_images: int
    num_classes: int
    per_class: float
    size: str
    similarity: str
    similarity_score: float | None
    rationale: str
    signals: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measurement: Measurement | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        return STRATEGIES[self.strategy]

    @property
    def uses_augmentation(self) -> bool:
        return self.augment != "none"

    @property
    def table_row(self) -> tuple[str, str]:
        return self.size, self.similarity

    def code(self) -> str:
        """The few lines of tlkit that carry out this advice."""
        b = self.backbone
        if self.strategy in ("feature_extraction", "early_features"):
            stage = "" if self.feature_stage is None else f", stage={self.feature_stage!r}"
            return (f"model = tlkit.load_backbone({b!r})\n"
                    f"f_train = tlkit.extract_features(model, train_ds{stage})\n"
                    f"f_val = tlkit.extract_features(model, val_ds{stage})\n"
                    "result = tlkit.linear_probe(f_train, f_val)")
        lines = [f"model = tlkit.load_backbone({b!r}, num_classes={self.num_classes})",
                 f"tlkit.freeze(model, until={self.freeze_until!r})",
                 f"groups = tlkit.param_groups(model, lr={self.head_lr:g}, body_lr={self.body_lr:g})",
                 f"history = tlkit.fit(model, train_ds, val_ds, param_groups=groups, augment={self.augment!r})"]
        return "\n".join(lines)

    def _facts(self) -> list[tuple[str, str]]:
        sim = self.similarity + ("" if self.similarity_score is None else f" (score {self.similarity_score:.2f})")
        facts = [("data", f"{self.num_images} images, {self.num_classes} classes = {self.per_class:.0f} per class: "
                          f"{self.size}"),
                 ("similarity to ImageNet", sim),
                 ("freeze", f"every stage before {self.freeze_until!r}" if self.freeze_until != "head"
                  else "the whole body (only the new classifier trains)")]
        if self.strategy == "fine_tune_all" or self.strategy == "retrain_all":
            facts[-1] = ("freeze", "nothing")
        if self.strategy in ("feature_extraction", "early_features"):
            facts.append(("features from", self.feature_stage or "the penultimate layer (what the head reads)"))
        lr = f"head {self.head_lr:g}" + ("" if self.body_lr is None else f", body {self.body_lr:g}")
        facts += [("learning rates", lr), ("augmentation", self.augment)]
        return facts

    def __str__(self) -> str:
        lines = [f"Advice for {self.backbone}: {self.strategy}", f"  {self.description}"]
        lines += [f"  {k + ':':<24}{v}" for k, v in self._facts()]
        lines.append("  why: " + self.rationale)
        if self.signals:
            lines.append("  measured: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.signals.items()))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td style='padding:2px 8px;color:#555'>{html.escape(k)}</td>"
                       f"<td style='padding:2px 8px'>{html.escape(v)}</td></tr>" for k, v in self._facts())
        signals = ""
        if self.signals:
            signals = "<p style='margin:4px 0'><b>Measured:</b> " + ", ".join(
                f"{html.escape(k)} = {html.escape(_fmt(v))}" for k, v in self.signals.items()) + "</p>"
        notes = "".join(f"<p style='margin:4px 0;color:#8a5a00'>Note: {html.escape(n)}</p>" for n in self.notes)
        return (f"<div style='border:1px solid #ccc;border-radius:6px;padding:10px;max-width:760px'>"
                f"<div style='font-size:1.1em'><b><code>{html.escape(self.strategy)}</code></b> "
                f"<span style='color:#777'>for {html.escape(self.backbone)}</span></div>"
                f"<p style='margin:4px 0'>{html.escape(self.description)}</p>"
                f"<div style='display:flex;gap:16px;align-items:flex-start'>"
                f"<table style='border-collapse:collapse'>{rows}</table>{table_html(self.table_row)}</div>"
                f"<p style='margin:4px 0'><b>Why:</b> {html.escape(self.rationale)}</p>{signals}{notes}"
                f"<pre style='background:#f6f6f6;padding:6px;margin:4px 0'>{html.escape(self.code())}</pre></div>")

    def __repr__(self) -> str:
        return str(self)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def table() -> str:
    """The decision table as text (which strategy for which size and similarity)."""
    lines = [f"{'images per class':<22}{'similar':<22}different"]
    bands = {"small": f"small (< {SMALL_PER_CLASS})", "medium": f"medium ({SMALL_PER_CLASS}-{LARGE_PER_CLASS - 1})",
             "large": f"large (>= {LARGE_PER_CLASS})"}
    for size in SIZES:
        lines.append(f"{bands[size]:<22}{TABLE[size, 'similar']:<22}{TABLE[size, 'different']}")
    return "\n".join(lines)


def table_html(highlight: tuple[str, str] | None = None) -> str:
    """The decision table as a small HTML table, with one cell highlighted."""
    head = "<tr><th></th><th>similar</th><th>different</th></tr>"
    body = ""
    for size in SIZES:
        cells = ""
        for sim in ("similar", "different"):
            on = highlight == (size, sim)
            style = "background:#d9f0d9;font-weight:bold" if on else "color:#888"
            cells += f"<td style='padding:2px 6px;{style}'>{TABLE[size, sim].replace('_', ' ')}</td>"
        body += f"<tr><td style='padding:2px 6px'>{size}</td>{cells}</tr>"
    return f"<table style='border-collapse:collapse;font-size:0.9em'>{head}{body}</table>"


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise ArgumentError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def _similarity(similarity: str | float) -> tuple[str, float | None]:
    if isinstance(similarity, str):
        s = similarity.strip().lower()
        if s not in ("similar", "different"):
            raise ArgumentError(f"similarity must be 'similar', 'different' or a number in [0, 1], got {similarity!r}")
        return s, None
    if isinstance(similarity, bool) or not isinstance(similarity, Real) or not 0 <= float(similarity) <= 1:
        raise ArgumentError(f"similarity must be 'similar', 'different' or a number in [0, 1] (0 = unlike ImageNet, "
                            f"1 = like it), got {similarity!r}")
    score = float(similarity)
    return ("similar" if score >= SIMILARITY_THRESHOLD else "different"), score


def size_band(per_class: float) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for a number of training images per class."""
    return "small" if per_class < SMALL_PER_CLASS else ("medium" if per_class < LARGE_PER_CLASS else "large")


def advise(num_images: int, num_classes: int, similarity: str | float,
           model: str | nn.Module = DEFAULT_BACKBONE) -> Advice:
    """Read the decision table for a dataset of ``num_images`` images in ``num_classes`` classes.

    Args:
        num_images: number of training images (all classes together).
        num_classes: number of classes (at least 2).
        similarity: ``"similar"`` or ``"different"`` (to ImageNet), or a score in [0, 1];
            scores >= :data:`SIMILARITY_THRESHOLD` count as similar. :func:`measure` measures one.
        model: a backbone name or a model from ``tlkit.load_backbone``; the freeze point is one
            of its stage names.

    Returns:
        An :class:`Advice` (prints as text, shows as a card in a notebook).

    >>> advise(20_000, 10, "different").strategy
    'retrain_all'
    >>> advise(1500, 10, 0.2).feature_stage
    'blocks.4'
    """
    num_images = _check_int(num_images, "num_images (the number of training images)", 0)
    num_classes = _check_int(num_classes, "num_classes", 0)
    if num_classes < 2:
        raise ArgumentError(f"num_classes={num_classes}: a classifier needs at least 2 classes. If your folder "
                            "shows one class, point tlkit at the folder that contains one sub-folder per class.")
    if num_images == 0:
        raise ArgumentError("num_images=0: there are no training images. Check the dataset path and the split.")
    if num_images < num_classes:
        raise ArgumentError(f"num_images={num_images} is fewer than num_classes={num_classes}: some classes have "
                            "no training image at all, and nothing can learn them. Add images or drop the empty "
                            "classes.")
    sim, score = _similarity(similarity)
    name, names = _backbone_name_and_stages(model)
    per_class = num_images / num_classes
    size = size_band(per_class)
    strategy = TABLE[size, sim]
    freeze_until, feature_stage = _plan(strategy, names)
    if size == "medium" and sim == "different":
        freeze_until = _middle_stage([n for n in names if n != "head"])
    body_lr = {"feature_extraction": None, "early_features": None, "retrain_all": _HEAD_LR}.get(strategy, _HEAD_LR / 10)
    if strategy in ("feature_extraction", "early_features"):
        augment = "none"
    else:
        augment = "light" if size == "large" else "standard"
    sim_text = similarity if score is None else f"{sim} (score {score:.2f}, threshold {SIMILARITY_THRESHOLD})"
    band = {"small": f"fewer than {SMALL_PER_CLASS}", "medium": f"{SMALL_PER_CLASS} to {LARGE_PER_CLASS - 1}",
            "large": f"at least {LARGE_PER_CLASS}"}[size]
    rationale = (f"Table row '{size} data, {sim} {'to' if sim == 'similar' else 'from'} ImageNet': {per_class:.0f} images per class is {size} "
                 f"({band} per class), and the data is {sim_text}. So {strategy.replace('_', ' ')}: "
                 f"{_WHY[size, sim]}.")
    notes = []
    if per_class < 2:
        notes.append("One image per class: this is one-shot learning. Only a classifier on frozen features makes "
                     "sense, and there is nothing left to validate on; collect a few more images per class.")
    elif per_class < 10:
        notes.append(f"Only {per_class:.1f} images per class: expect noisy validation numbers; prefer "
                     "cross-validation (tlkit.advisor.measure does it) to a single split.")
    if feature_stage is not None:
        notes.append(f"{feature_stage!r} is a default two thirds up the network; tlkit.advisor.measure finds the "
                     "stage where the features stop being general for your data.")
    return Advice(strategy=strategy, backbone=name, freeze_until=freeze_until, feature_stage=feature_stage,
                  head_lr=_HEAD_LR, body_lr=body_lr, augment=augment, num_images=num_images, num_classes=num_classes,
                  per_class=per_class, size=size, similarity=sim, similarity_score=score, rationale=rationale,
                  notes=notes)
