"""Which transfer-learning strategy fits your data? The table, a measurement, and a race.

Every transfer-learning guide ends with the same table (CS231n's transfer-learning notes;
the layer-by-layer experiments of Yosinski et al. 2014, "How transferable are features in
deep neural networks?"). It asks two questions: how many images do you have, and how
similar are they to ImageNet?

=================  ======================================  ===========================================
images per class   similar to ImageNet                     different from ImageNet
=================  ======================================  ===========================================
small  (< 200)     feature extraction: a linear classifier  early features: a linear classifier on an
                   on the frozen penultimate features       earlier stage's features (more general)
medium (200-999)   fine-tune the top stages                 fine-tune from a middle stage on
large  (>= 1000)   fine-tune everything, body at lr / 10    retrain everything from the ImageNet weights
=================  ======================================  ===========================================

Four functions use it, from rule of thumb to evidence:

* :func:`advise` reads the table for sizes you give it -> :class:`Advice`;
* :func:`measure` measures where *your* data falls, from frozen features, in seconds
  -> :class:`Measurement` (k-NN / linear-probe accuracy, a probe at every stage, LEEP,
  NCE, LogME; the formulas live in :mod:`tlkit.transferability`);
* :func:`recommend` = measure + advise, saying which signals decided;
* :func:`race` runs the candidate strategies for the same number of epochs and reports
  which actually won -> :class:`RaceResult`, and says so when that is not the advice.

Why 200 and 1000 images per class. Data size matters per class: a linear classifier on
frozen features has (features x classes) weights and needs enough images of every class
to place each class's boundary, and fine-tuning millions of body weights overfits a
handful of images per class. Kornblith et al. 2019 ("Do Better ImageNet Models Transfer
Better?") found a logistic-regression classifier on frozen features within a point or two
of full fine-tuning on datasets with roughly 20-100 images per class (Flowers, Pets,
Caltech-101), and fine-tuning clearly ahead on datasets with hundreds to thousands per
class (Food-101, CIFAR) and on fine-grained data unlike ImageNet's classes (cars,
aircraft). The PyTorch tutorial's ants-and-bees set (~120 per class) is the classic case
where the fixed feature extractor does about as well as fine-tuning. We call < 200 per class "small" and >= 1000 "large"; between them
the table fine-tunes only the top stages. These are rules of thumb: :func:`race` checks them.

Example:
    >>> from tlkit.advisor import advise
    >>> a = advise(n_train=240, n_classes=2, similarity="similar")
    >>> a.strategy, a.freeze_until
    ('feature_extraction', 'head')
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Real
from typing import Any, Sequence

import numpy as np
from torch import nn

from . import transferability as tm
from .backbones import DEFAULT_BACKBONE, backbone_info
from .stages import stages as _stages

__all__ = [
    "SMALL_PER_CLASS", "LARGE_PER_CLASS", "SIMILARITY_THRESHOLD", "STRATEGIES", "TABLE",
    "Advice", "advise", "table", "Measurement", "measure", "stage_features", "recommend", "RaceResult", "race",
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


# ---------------------------------------------------------------------------
# Stage names of a backbone, without loading weights
# ---------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _stage_names_by_name(name: str) -> tuple[str, ...]:
    return tuple(s.name for s in _stages(backbone_info(name).build()))


def _backbone_name_and_stages(backbone: str | nn.Module) -> tuple[str, tuple[str, ...]]:
    if isinstance(backbone, nn.Module):
        info = getattr(backbone, "tlkit_backbone", None)
        name = info.name if info is not None else type(backbone).__name__
        return name, tuple(s.name for s in _stages(backbone))
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name such as {DEFAULT_BACKBONE!r} or a model from "
                        f"tlkit.load_backbone, got {type(backbone).__name__}")
    return backbone, _stage_names_by_name(backbone)


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
        n_train, n_classes, per_class: the data size the advice is for.
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
    n_train: int
    n_classes: int
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
        lines = [f"model = tlkit.load_backbone({b!r}, num_classes={self.n_classes})",
                 f"tlkit.freeze(model, until={self.freeze_until!r})",
                 f"groups = tlkit.param_groups(model, lr={self.head_lr:g}, body_lr={self.body_lr:g})",
                 f"history = tlkit.fit(model, train_ds, val_ds, param_groups=groups, augment={self.augment!r})"]
        return "\n".join(lines)

    def _facts(self) -> list[tuple[str, str]]:
        sim = self.similarity + ("" if self.similarity_score is None else f" (score {self.similarity_score:.2f})")
        facts = [("data", f"{self.n_train} images, {self.n_classes} classes = {self.per_class:.0f} per class: "
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
        raise TypeError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def _similarity(similarity: str | float) -> tuple[str, float | None]:
    if isinstance(similarity, str):
        s = similarity.strip().lower()
        if s not in ("similar", "different"):
            raise ValueError(f"similarity must be 'similar', 'different' or a number in [0, 1], got {similarity!r}")
        return s, None
    if isinstance(similarity, bool) or not isinstance(similarity, Real) or not 0 <= float(similarity) <= 1:
        raise ValueError(f"similarity must be 'similar', 'different' or a number in [0, 1] (0 = unlike ImageNet, "
                         f"1 = like it), got {similarity!r}")
    score = float(similarity)
    return ("similar" if score >= SIMILARITY_THRESHOLD else "different"), score


def size_band(per_class: float) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for a number of training images per class."""
    return "small" if per_class < SMALL_PER_CLASS else ("medium" if per_class < LARGE_PER_CLASS else "large")


def advise(n_train: int, n_classes: int, similarity: str | float,
           backbone: str | nn.Module = DEFAULT_BACKBONE) -> Advice:
    """Read the decision table for a dataset of ``n_train`` images in ``n_classes`` classes.

    Args:
        n_train: number of training images (all classes together).
        n_classes: number of classes (at least 2).
        similarity: ``"similar"`` or ``"different"`` (to ImageNet), or a score in [0, 1];
            scores >= :data:`SIMILARITY_THRESHOLD` count as similar. :func:`measure` measures one.
        backbone: name or model; the freeze point is one of its stage names.

    Returns:
        An :class:`Advice` (prints as text, shows as a card in a notebook).

    >>> advise(20_000, 10, "different").strategy
    'retrain_all'
    >>> advise(1500, 10, 0.2).feature_stage
    'blocks.4'
    """
    n_train = _check_int(n_train, "n_train (the number of training images)", 0)
    n_classes = _check_int(n_classes, "n_classes", 0)
    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes}: a classifier needs at least 2 classes. If your folder shows one "
                         "class, point tlkit at the folder that contains one sub-folder per class.")
    if n_train == 0:
        raise ValueError("n_train=0: there are no training images. Check the dataset path and the split.")
    if n_train < n_classes:
        raise ValueError(f"n_train={n_train} is fewer than n_classes={n_classes}: some classes have no training "
                         "image at all, and nothing can learn them. Add images or drop the empty classes.")
    sim, score = _similarity(similarity)
    name, names = _backbone_name_and_stages(backbone)
    per_class = n_train / n_classes
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
                  head_lr=_HEAD_LR, body_lr=body_lr, augment=augment, n_train=n_train, n_classes=n_classes,
                  per_class=per_class, size=size, similarity=sim, similarity_score=score, rationale=rationale,
                  notes=notes)


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------

PENULTIMATE = "penultimate"
"""Label of the last probe point: the pooled features the head reads (``extract_features(stage=None)``)."""


@dataclass
class Measurement:
    """Signals measured on frozen features of one backbone for one dataset.

    Attributes:
        backbone, dataset: names; n_images, n_classes, per_class: the data measured.
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
    n_images: int
    n_classes: int
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
            ("data", f"{self.n_images} images, {self.n_classes} classes ({self.per_class:.0f}/class)", self.evaluation),
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
        """Probe accuracy at each stage, with chance and the k-NN accuracy for reference. Returns the Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
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
        return fig


def _default_probe_stages(names: Sequence[str]) -> list[str]:
    """Every body stage but the last (the penultimate features stand in for it)."""
    body = [n for n in names if n != "head"]
    return body[:-1]


def _load(backbone: str | nn.Module) -> nn.Module:
    from .backbones import load_backbone

    return backbone if isinstance(backbone, nn.Module) else load_backbone(backbone)


def _imagenet_probs(model: nn.Module, feats) -> "np.ndarray | None":
    """Softmax of the model's own ImageNet head on penultimate features (None if the head is not ImageNet's)."""
    import torch

    from .stages import head_path

    head = model.get_submodule(head_path(model))
    if not isinstance(head, nn.Linear) or head.out_features != 1000 or not getattr(model, "tlkit_pretrained", True):
        return None
    with torch.no_grad():
        weight = head.weight.detach().cpu().float()
        bias = head.bias.detach().cpu().float() if head.bias is not None else 0
        return torch.softmax(feats.cpu().float() @ weight.T + bias, dim=1).double().numpy()


_STAGE_MEMO: dict[str, Any] = {}


def stage_features(model: nn.Module, ds, stages: Sequence[str], *, batch_size: int = 64, device=None,
                   progress: bool = True):
    """Penultimate features plus the pooled output of several stages, from one forward pass.

    ``tlkit.extract_features(model, ds, stage=s)`` gives the same numbers for one stage at a
    time; here forward hooks on every wanted stage catch their outputs (global-average
    pooled) during a single ``extract_features`` pass, so probing nine stages costs one pass,
    not nine. Results are kept in memory under the feature cache's key.

    Returns ``(features, {stage: tensor N x D})``.
    """
    import torch

    from .features import extract_features
    from .stages import get_stage

    caught: dict[str, list] = {s: [] for s in stages}

    def catcher(name):
        def hook(module, args, output):
            out = output.float()
            caught[name].append((out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)).cpu())
        return hook

    def hooked_pass(wanted, cache):
        handles = [model.get_submodule(get_stage(model, s).output).register_forward_hook(catcher(s)) for s in wanted]
        try:  # the hooks fire only if extract_features really runs the model (not when its cache answers)
            return extract_features(model, ds, batch_size=batch_size, device=device, cache=cache, progress=progress)
        finally:
            for h in handles:
                h.remove()

    pen = hooked_pass(stages, cache=True)
    keys = {s: f"{pen.key} | probe={s}" for s in stages}
    missing = [s for s in stages if not caught[s] and keys[s] not in _STAGE_MEMO]
    if missing:  # the penultimate features came from the cache, these stages did not
        hooked_pass(missing, cache=False)
    found = {s: torch.cat(caught[s]) for s in stages if caught[s]}
    if pen.key:
        _STAGE_MEMO.update({keys[s]: x for s, x in found.items()})
        return pen, {s: _STAGE_MEMO[keys[s]] for s in stages}
    return pen, found


def measure(backbone: str | nn.Module, dataset, val=None, stages: Sequence[str] | None = None, *,
            k: int = 5, cv: int = 5, seed: int = 0, batch_size: int = 64, device=None,
            progress: bool = True) -> Measurement:
    """Measure how well a backbone's frozen features fit a dataset: seconds on a CPU for a few hundred images.

    Args:
        backbone: name (its ImageNet weights are loaded) or a model from ``tlkit.load_backbone``.
        dataset: a ``tlkit.datasets.ImageDataset`` (images get the backbone's own preprocessing).
        val: optional validation ImageDataset: accuracies are then train -> val; otherwise
            stratified ``cv``-fold cross-validation on ``dataset``.
        stages: stage names to probe (default: every body stage but the last; the penultimate
            features are always probed, as ``"penultimate"``).
        k: neighbours for the k-NN accuracy.

    Features come from one ``tlkit.extract_features`` pass per dataset; the probed stages'
    outputs are caught on the way by forward hooks (:func:`stage_features`), and everything is
    cached, so measuring twice is instant.
    LEEP, NCE and the ImageNet names use the backbone's ImageNet head on the training images.

    >>> m = measure("efficientnet_lite0", datasets.load("hymenoptera"))  # doctest: +SKIP
    >>> m.plot()  # doctest: +SKIP
    """
    from .backbones import imagenet_classes

    start = time.perf_counter()
    model = _load(backbone)
    info = backbone_info(model)
    names = [s.name for s in _stages(model)]
    probe = list(_default_probe_stages(names) if stages is None else stages)
    bad = [s for s in probe if s not in names or s == "head"]
    if bad:
        raise ValueError(f"cannot probe stage(s) {bad} of {info.name}; body stages are: "
                         f"{', '.join(n for n in names if n != 'head')}")
    n_classes = len(dataset.classes)
    tm.check_labels(dataset.targets, 1 if val is not None else 2)
    if val is not None and list(val.classes) != list(dataset.classes):
        raise ValueError(f"val has classes {val.classes}, the training data {dataset.classes}: they must match")

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
    chance = float(np.bincount(y_eval, minlength=n_classes).max() / len(y_eval))
    knn = score(tm.knn_accuracy, pen_tr.x, pen_va.x if pen_va else None, k=k, cv=cv)
    logistic = score(tm.logistic_accuracy, pen_tr.x, pen_va.x if pen_va else None, cv=cv)
    stage_acc, stage_dims = {}, {}
    for s in probe:
        stage_acc[s] = score(tm.logistic_accuracy, by_stage_tr[s], by_stage_va.get(s), cv=cv)
        stage_dims[s] = int(by_stage_tr[s].shape[1])
    stage_acc[PENULTIMATE], stage_dims[PENULTIMATE] = logistic, int(x.shape[1])

    probs = _imagenet_probs(model, pen_tr.x)
    if probs is None:  # a changed head: ask the original ImageNet classifier
        from .backbones import load_backbone
        from .features import extract_features

        imagenet_model = load_backbone(info.name)
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
        backbone=info.name, dataset=getattr(dataset, "name", "dataset"), n_images=len(y), n_classes=n_classes,
        per_class=len(y) / n_classes, evaluation=evaluation, chance=chance, knn_accuracy=knn,
        logistic_accuracy=logistic, stage_accuracy=stage_acc, stage_dims=stage_dims, leep=leep,
        leep_similarity=tm.leep_similarity(leep, y), nce=nce, nce_similarity=tm.nce_similarity(nce, y),
        logme=tm.logme(x, y), feature_dim=int(x.shape[1]), imagenet_top=imagenet_top, n_eval=n_eval,
        seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------
# recommend: the table, with measured similarity and freeze points
# ---------------------------------------------------------------------------

def _after(names: Sequence[str], stage: str) -> str:
    """The stage after ``stage`` (the first one that should train when ``stage`` is the last general one)."""
    body = [n for n in names if n != "head"]
    if stage == PENULTIMATE or stage not in body:
        return "head"
    return names[names.index(stage) + 1]


def measured_similarity(m: Measurement) -> tuple[str, float, list[str]]:
    """("similar" | "different", score, reasons) from a measurement.

    The score is ``m.leep_similarity``. The per-stage probe can overrule it: if an earlier
    stage's features beat the penultimate ones by more than twice the noise (two standard errors),
    the last stages are specialised for ImageNet in a way that hurts this data, which is
    what "different" means for transfer, whatever the score says.
    """
    score = m.leep_similarity
    label = "similar" if score >= SIMILARITY_THRESHOLD else "different"
    reasons = [f"LEEP similarity {score:.2f} ({'>=' if label == 'similar' else '<'} {SIMILARITY_THRESHOLD}): the "
               f"ImageNet classifier's outputs {'predict' if label == 'similar' else 'barely predict'} your classes"]
    if m.best_stage != PENULTIMATE and m.penultimate_drop > 2 * m.standard_error:
        overruled = label == "similar"
        label = "different"
        reasons.append(f"{'but ' if overruled else ''}the linear probe peaks at {m.best_stage} "
                       f"({m.stage_accuracy[m.best_stage]:.3f}) and the penultimate features lose "
                       f"{m.penultimate_drop:.3f} (more than twice the noise, +-{m.standard_error:.3f}): the last "
                       "stages are too ImageNet-specific for this data")
    else:
        reasons.append(f"the linear probe is best on the penultimate features ({m.logistic_accuracy:.3f}): "
                       "features stay useful all the way up")
    return label, score, reasons


def recommend(backbone: str | nn.Module, dataset, val=None, *, measurement: Measurement | None = None,
              **measure_options) -> Advice:
    """Measure where ``dataset`` falls, then read the table: an :class:`Advice` that says which signals decided.

    Size is the number of training images per class. Similarity is measured
    (:func:`measured_similarity`: LEEP of the ImageNet head, overruled by the per-stage probe
    when an earlier stage reads better). The measurement also replaces the table's default
    stages: features for a linear classifier come from the best-probing stage, and for
    data unlike ImageNet fine-tuning starts right after it (where the features stop being
    general).

    >>> advice = recommend("efficientnet_lite0", datasets.load("hymenoptera"))  # doctest: +SKIP
    >>> advice.strategy  # doctest: +SKIP
    'feature_extraction'
    """
    m = measurement if measurement is not None else measure(backbone, dataset, val, **measure_options)
    names = list(_backbone_name_and_stages(backbone)[1])
    sim, score, reasons = measured_similarity(m)
    advice = advise(len(dataset.targets), len(dataset.classes), score, backbone)
    if sim != advice.similarity:  # the stage profile overruled the score
        advice = advise(len(dataset.targets), len(dataset.classes), sim, backbone)
        advice.similarity_score = score
    best = m.best_stage
    changes = []
    if advice.strategy in ("feature_extraction", "early_features"):
        strategy = "feature_extraction" if best == PENULTIMATE else "early_features"
        if strategy != advice.strategy:
            changes.append(f"the probe is best at {best}, so the classifier reads "
                           f"{'the penultimate features' if best == PENULTIMATE else best + ' features'}")
        advice.strategy = strategy
        advice.feature_stage = None if best == PENULTIMATE else best
        advice.notes = [n for n in advice.notes if "two thirds up" not in n]
    elif sim == "different" and advice.strategy == "fine_tune_top":
        advice.freeze_until = _after(names, best)
        changes.append(f"features are general up to {best}, so fine-tuning starts at {advice.freeze_until}")
    counts = np.bincount(np.asarray(dataset.targets), minlength=len(dataset.classes))
    if counts.min() < 0.5 * counts.mean():
        advice.notes.append(f"Classes are imbalanced ({counts.min()} to {counts.max()} images): the size uses the "
                            f"mean ({counts.mean():.0f}); the smallest class has less.")
    advice.rationale += " Measured: " + "; ".join(reasons) + "."
    if changes:
        advice.rationale += " From the measurement: " + "; ".join(changes) + "."
    advice.signals = {
        "images/class": round(m.per_class), "leep_similarity": m.leep_similarity,
        "nce_similarity": m.nce_similarity, "knn_accuracy": m.knn_accuracy,
        "probe_penultimate": m.logistic_accuracy, "best_stage": best,
        "probe_best": m.stage_accuracy[best], "noise": m.standard_error,
    }
    advice.measurement = m
    return advice


# ---------------------------------------------------------------------------
# race: run the strategies and see
# ---------------------------------------------------------------------------

@dataclass
class RaceEntry:
    """One strategy's run in a race."""

    strategy: str
    val_acc: float
    best_val_acc: float
    seconds: float
    trainable: int
    setting: str
    history: Any = field(repr=False)


@dataclass
class RaceResult:
    """The strategies run side by side for the same budget, and which won.

    Attributes:
        entries: one :class:`RaceEntry` per strategy, in the order run.
        budget: epochs of fine-tuning each fine-tuning strategy got.
        n_val: validation images (sets the noise level of the accuracies).
        advice: the recommendation the race checks (None if it was not given one).
    """

    backbone: str
    dataset: str
    entries: list[RaceEntry]
    budget: int
    n_val: int
    advice: Advice | None = None

    @property
    def accuracies(self) -> dict[str, float]:
        return {e.strategy: e.val_acc for e in self.entries}

    @property
    def winner(self) -> str:
        """The strategy with the highest final validation accuracy (ties: the cheaper, listed first)."""
        return max(self.entries, key=lambda e: e.val_acc).strategy

    @property
    def noise(self) -> float:
        """Binomial standard error of the winner's accuracy on ``n_val`` images."""
        p = max(e.val_acc for e in self.entries)
        return math.sqrt(max(p * (1 - p), 1e-4) / max(self.n_val, 1))

    @property
    def tied(self) -> list[str]:
        """Strategies within one standard error of the winner: the race cannot tell them apart."""
        top = max(e.val_acc for e in self.entries)
        return [e.strategy for e in self.entries if e.val_acc >= top - self.noise]

    @property
    def agrees(self) -> bool | None:
        """Did the recommended strategy win (or tie with the winner)? None without advice or if it did not run."""
        if self.advice is None or self.advice.strategy not in self.accuracies:
            return None
        return self.advice.strategy in self.tied

    @property
    def verdict(self) -> str:
        top = self.accuracies[self.winner]
        text = f"{self.winner} won with {top:.3f} validation accuracy (noise +-{self.noise:.3f} on {self.n_val} images)"
        others = [s for s in self.tied if s != self.winner]
        if others:
            text += f"; {', '.join(others)} within the noise"
        if self.advice is None:
            return text + "."
        rec = self.advice.strategy
        if rec not in self.accuracies:
            return text + f". The recommendation, {rec}, was not in the race."
        if self.agrees:
            return text + f". The race AGREES with the recommendation ({rec})."
        gap = top - self.accuracies[rec]
        return (text + f". The race DISAGREES with the recommendation: {rec} reached {self.accuracies[rec]:.3f}, "
                f"{gap:.3f} below the winner. Trust the experiment for this budget, and check a longer one.")

    def __str__(self) -> str:
        lines = [f"Race on {self.dataset} with {self.backbone}: {self.budget} epoch(s) of fine-tuning each"]
        width = max(len(e.strategy) for e in self.entries)
        for e in self.entries:
            star = " *" if e.strategy == self.winner else "  "
            rec = "  (recommended)" if self.advice is not None and e.strategy == self.advice.strategy else ""
            lines.append(f"{star}{e.strategy:<{width}}  val acc {e.val_acc:.3f}  {e.seconds:6.1f} s  "
                         f"{e.trainable:>10,} trainable  {e.setting}{rec}")
        lines.append(self.verdict)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = ""
        for e in self.entries:
            style = "font-weight:bold;background:#e8f4ea" if e.strategy == self.winner else ""
            rec = " (recommended)" if self.advice is not None and e.strategy == self.advice.strategy else ""
            rows += (f"<tr style='{style}'><td style='padding:2px 8px'>{html.escape(e.strategy + rec)}</td>"
                     f"<td style='padding:2px 8px'>{e.val_acc:.3f}</td><td style='padding:2px 8px'>{e.seconds:.1f} s"
                     f"</td><td style='padding:2px 8px'>{e.trainable:,}</td><td style='padding:2px 8px;color:#666'>"
                     f"{html.escape(e.setting)}</td></tr>")
        color = "#1b5e20" if self.agrees else ("#b71c1c" if self.agrees is False else "#333")
        return (f"<div style='border:1px solid #ccc;border-radius:6px;padding:10px;max-width:820px'>"
                f"<b>Race</b> on {html.escape(self.dataset)} with {html.escape(self.backbone)}: {self.budget} epoch(s) "
                f"of fine-tuning each<table style='border-collapse:collapse'><tr><th>strategy</th><th>val acc</th>"
                f"<th>time</th><th>trainable</th><th>setting</th></tr>{rows}</table>"
                f"<p style='color:{color};margin:4px 0'>{html.escape(self.verdict)}</p></div>")

    def plot(self):
        """Validation accuracy per epoch for each strategy, and the final accuracies against time."""
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
        for e in self.entries:
            acc = e.history.val_acc
            if len(acc) == 1:  # a converged linear probe: one number, drawn across the budget
                ax1.plot([1, max(self.budget, 2)], acc * 2, "--", label=f"{e.strategy} (probe)")
            else:
                ax1.plot(range(1, len(acc) + 1), acc, "o-", ms=3, label=e.strategy)
            ax2.scatter([e.seconds], [e.val_acc], s=60)
            ax2.annotate(e.strategy, (e.seconds, e.val_acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("validation accuracy")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.set_xlabel("seconds")
        ax2.set_ylabel("final validation accuracy")
        ax2.grid(alpha=0.3)
        fig.suptitle(f"Race on {self.dataset}: {self.verdict.split('.')[0]}", fontsize=9)
        fig.tight_layout()
        return fig


def _split(dataset, fraction: float, seed: int):
    """A stratified (train, val) split of an ImageDataset, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(dataset.targets)
    val_idx = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        k = max(1, round(fraction * len(members)))
        if k >= len(members):
            raise ValueError(f"class {dataset.classes[c]!r} has only {len(members)} image(s): too few to hold some "
                             "out for validation. Pass val=... or add images.")
        val_idx += rng.choice(members, size=k, replace=False).tolist()
    held = set(val_idx)
    train_idx = [i for i in range(len(targets)) if i not in held]
    return dataset._subset(train_idx), dataset._subset(sorted(val_idx))


def _stage_or_penultimate(model: nn.Module, ds, stage: str | None, device, progress: bool):
    """Features of one stage (None: penultimate) as ``tlkit.features.Features``, sharing measure's cache."""
    import torch

    from .features import Features

    pen, found = stage_features(model, ds, [] if stage is None else [stage], device=device, progress=progress)
    if stage is None:
        return pen
    return Features(found[stage], torch.as_tensor(list(ds.targets), dtype=torch.long), list(ds.classes), stage)


def _race_plan(strategy: str, names: Sequence[str], advice: Advice) -> tuple[str, str | None]:
    """(freeze_until, feature_stage) for one strategy of a race: the advice's own settings for its
    strategy; for the others, the measured stages where there is a measurement, else the table's defaults."""
    if strategy == advice.strategy:
        return advice.freeze_until, advice.feature_stage
    until, stage = _plan(strategy, names)
    m = advice.measurement
    if m is not None and m.best_stage != PENULTIMATE:
        if strategy == "early_features":
            stage = m.best_stage
        elif strategy == "fine_tune_top" and advice.similarity == "different":
            until = _after(names, m.best_stage)
    return until, stage


def race(backbone: str | nn.Module, dataset, val=None,
         strategies: Sequence[str] = ("feature_extraction", "fine_tune_top", "fine_tune_all"), budget: int = 3, *,
         advice: Advice | None = None, C: float = 1.0, lr: float = _HEAD_LR, augment: str = "light",
         batch_size: int = 32, seed: int = 0, device=None, progress: bool = True) -> RaceResult:
    """Run candidate strategies for the same budget and report which actually won.

    Args:
        backbone: name or model (a fresh copy of its weights is used for every strategy).
        dataset, val: training and validation ImageDatasets (without ``val``, 20% of each
            class of ``dataset`` is held out, seeded).
        strategies: keys of :data:`STRATEGIES`; the recommended strategy is added if missing.
        budget: epochs of fine-tuning for every fine-tuning strategy.
        advice: the recommendation to check (default: ``recommend(backbone, dataset, val)``);
            its freeze point and feature stage are used for its own strategy.
        C: inverse L2 strength of the linear classifier of the feature strategies. They run
            ``tlkit.linear_probe`` (standardised features, logistic regression trained to
            convergence: the same classifier ``measure`` uses) on features computed once, so
            they cost one forward pass; the time column shows what each strategy really cost.
        lr: head learning rate; fine-tuned body stages get ``lr / 10`` (``retrain_all``: ``lr``).
        augment: augmentation preset for the fine-tuning strategies.

    Every strategy is scored by its *final* validation accuracy (no picking the best epoch on
    the validation set). Differences within one standard error are called a tie.

    >>> result = race("efficientnet_lite0", train, val, budget=3)  # doctest: +SKIP
    >>> result.winner, result.agrees  # doctest: +SKIP
    ('feature_extraction', True)
    """
    import copy

    from sklearn.metrics import log_loss

    from .backbones import replace_head
    from .features import linear_probe
    from .freeze import freeze, param_groups, unfreeze
    from .train import History, fit

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    budget = _check_int(budget, "budget (epochs of fine-tuning)", 1)
    if val is None:
        dataset, val = _split(dataset, 0.2, seed)
    base = _load(backbone)
    name = backbone_info(base).name
    names = [s.name for s in _stages(base)]
    if advice is None:
        advice = recommend(base, dataset, val, device=device)
    strategies = list(strategies)
    if advice.strategy not in strategies:  # the recommendation always runs, so the race can check it
        strategies.append(advice.strategy)
    n_classes = len(dataset.classes)
    entries = []
    for strategy in strategies:
        start = time.perf_counter()
        label = strategy
        if strategy in ("feature_extraction", "early_features"):
            stage = _race_plan(strategy, names, advice)[1]
            ftr, fva = (_stage_or_penultimate(base, ds, stage, device, progress) for ds in (dataset, val))
            probe = linear_probe(ftr, fva, C=C)
            labels = list(range(n_classes))
            losses = [log_loss(f.y.numpy(), probe.model.predict_proba(f.x.numpy()), labels=labels) for f in (ftr, fva)]
            history = History(label=f"{label} (linear probe)", train_loss=[losses[0]], train_acc=[probe.train_accuracy],
                              val_loss=[losses[1]], val_acc=[probe.accuracy], epoch_time=[time.perf_counter() - start])
            trainable = (ftr.x.shape[1] + 1) * n_classes
            setting = f"logistic regression on {stage or 'penultimate'} features (C={C:g}), trained to convergence"
        else:
            model = replace_head(copy.deepcopy(base), n_classes)
            unfreeze(model)
            until = _race_plan(strategy, names, advice)[0]
            freeze(model, until=until)
            body_lr = lr if strategy == "retrain_all" else lr / 10
            groups = param_groups(model, lr, body_lr=body_lr)
            history = fit(model, dataset, val, epochs=budget, param_groups=groups, batch_size=batch_size,
                          schedule="cosine", augment=augment, seed=seed, device=device, progress=progress,
                          label=label)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            setting = f"train from {until}, lr head {lr:g} body {body_lr:g}, cosine, augment {augment!r}"
            del model
        acc = history.val_acc[-1] if history.val_acc else float("nan")
        entries.append(RaceEntry(strategy, acc, history.best_val_acc or acc, time.perf_counter() - start,
                                 trainable, setting, history))
    return RaceResult(name, getattr(dataset, "name", "dataset"), entries, budget, len(val), advice)
