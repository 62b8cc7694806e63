"""Measure, then read the table: :func:`recommend` -> an :class:`~tlkit.advisor.Advice` that says which signals decided.

Example:
    >>> advice = recommend("efficientnet_lite0", datasets.load("hymenoptera"))  # doctest: +SKIP
    >>> advice.strategy  # doctest: +SKIP
    'feature_extraction'
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .measurement import Measurement, measure
from .decision_table import PENULTIMATE, SIMILARITY_THRESHOLD, Advice, _after, _backbone_name_and_stages, advise

__all__ = ["recommend", "measured_similarity"]


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


def recommend(model: str | nn.Module, dataset, val=None, *, measurement: Measurement | None = None,
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
    m = measurement if measurement is not None else measure(model, dataset, val, **measure_options)
    names = list(_backbone_name_and_stages(model)[1])
    sim, score, reasons = measured_similarity(m)
    advice = advise(len(dataset.targets), len(dataset.classes), score, model)
    if sim != advice.similarity:  # the stage profile overruled the score
        advice = advise(len(dataset.targets), len(dataset.classes), sim, model)
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
