"""Stratified splits and samples: the one place tlkit draws images per class at random.

Every split tlkit makes (the ``val`` and ``test`` of a dataset without its own, the held-out
part the advisor keeps for validation) and every ``subset`` draws from :func:`class_orders`:
each class shuffled by its own local generator, ``numpy.random.default_rng([seed, label])``.
Nothing here touches the global random state, and adding a class never changes the draw
of the others.

Example:
    >>> stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)
    ([0, 1, 3, 4, 5, 6], [2, 7])
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Sequence

import numpy as np

from ..errors import ArgumentError
from .images import ImageDataset

__all__ = ["stratified_split", "class_orders", "subset"]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ArgumentError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def class_orders(targets: Sequence[int], seed: int = 0) -> dict[int, list[int]]:
    """``{label: positions of that label, in a random order}``, reproducible by ``seed``.

    Each label's order comes from its own generator, ``np.random.default_rng([seed, label])``.

    >>> class_orders([1, 0, 1, 0], seed=0)
    {0: [1, 3], 1: [0, 2]}
    """
    seed = _check_seed(seed)
    labels = np.asarray([int(t) for t in targets], dtype=np.int64)
    orders = {}
    for label in np.unique(labels).tolist():
        members = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, label])
        orders[label] = rng.permutation(members).tolist()
    return orders


def stratified_split(targets: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split positions into (kept, held out), holding out ``fraction`` of every class.

    Each class holds out ``round(n * fraction)`` of its ``n`` images, at least one and at
    most ``n - 1`` when it has two or more (a class of one image is kept whole). Both lists
    are sorted. The same ``targets``, ``fraction`` and ``seed`` give the same split on every
    machine; the global random state is neither used nor changed.

    Args:
        targets: the label of every item.
        fraction: the share of each class to hold out, strictly between 0 and 1.
        seed: picks the split.

    >>> kept, held = stratified_split([0] * 10 + [1] * 5, 0.2, seed=1)
    >>> len(kept), len(held)
    (12, 3)
    """
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction < 1:
        raise ArgumentError(f"fraction must be a number strictly between 0 and 1, got {fraction!r}.")
    kept: list[int] = []
    held: list[int] = []
    for members in class_orders(targets, seed).values():
        n = len(members)
        k = min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0
        held += members[:k]
        kept += members[k:]
    return sorted(kept), sorted(held)


def subset(dataset: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """``per_class`` images of every class, drawn at random but reproducibly (same seed, same images).

    The result keeps the original order and has its own ``key``.

    >>> from tlkit.datasets import load
    >>> small = subset(load("digits"), per_class=5)
    >>> len(small), small.counts()["7"]
    (50, 5)
    """
    if not isinstance(dataset, ImageDataset):
        raise ArgumentError(f"subset() takes a tlkit ImageDataset (from tlkit.datasets.load), got "
                            f"{type(dataset).__name__}.")
    if isinstance(per_class, bool) or not isinstance(per_class, Integral) or per_class < 1:
        raise ArgumentError(f"per_class must be a positive integer, got {per_class!r}")
    orders = class_orders(dataset.targets, seed)
    chosen = []
    for k, name in enumerate(dataset.classes):
        members = orders.get(k, [])
        if len(members) < per_class:
            fewest = min(dataset.counts().values())
            advice = f"Use per_class={fewest} or less." if fewest else "Drop that class or use another split."
            raise ArgumentError(
                f"Class {name!r} has only {len(members)} images in {dataset.name!r} ({dataset.split}), fewer than "
                f"per_class={per_class}. {advice}"
            )
        chosen += members[:per_class]
    return dataset._subset(sorted(chosen))
