"""Image-classification datasets: a small registry of real ones, your own folders, subsets and augmentation.

Every dataset comes back as an :class:`ImageDataset`: a plain ``torch.utils.data.Dataset``
of ``(image, label)`` pairs with ``classes``, ``targets`` and a ``key`` that names its exact
content (used to cache features).

One module per idea:

==================  ===================================================================
``registry``        what each real dataset is: ``DatasetInfo``, ``list_datasets``, ``info``,
                    ``register``, ``status``
``images``          the dataset class, ``ImageDataset``, and where its images come from
``loading``         ``load(name, split=...)``: registered datasets and your own folders;
                    ``prefetch(names)`` warms a shared cache
``splits``          ``stratified_split`` (every random split tlkit makes) and ``subset``
``augment``         ``augmentation``, ``train_transform``, ``eval_transform``, the presets
``folders``         reading folders and archives carefully (symlinks, bit depths, stale files)
``sources``         the cache, the mirror and downloads of registered datasets (with locks)
``medmnist``        the MedMNIST v2 table and its ``.npz`` files
==================  ===================================================================

* Registered datasets (``list_datasets()``, ``info(name)``) are downloaded once into the data
  cache (``TLKIT_DATA``), unpacked atomically and checked. A classroom mirror (``TLKIT_MIRROR``)
  may hold either the archive or the already-unpacked folder; a folder there is used in place.
  Every registered dataset has ``train``, ``val`` and ``test`` splits.
* ``load("path/to/folder")`` reads your own images in ``ImageFolder`` layout.
* ``subset(dataset, per_class=10)`` draws a small stratified sample, reproducibly.
* ``augmentation(augment)`` and ``train_transform(model)`` give the training transforms;
  ``eval_transform(model)`` is the backbone's own preprocessing.

Example:
    >>> from tlkit import datasets
    >>> train = datasets.load("hymenoptera", split="train")  # doctest: +SKIP
    >>> train.classes  # doctest: +SKIP
    ['ants', 'bees']
    >>> small = datasets.subset(train, per_class=10)  # doctest: +SKIP
"""
from __future__ import annotations

from ..errors import ArgumentError, DatasetError
from .augment import PRESET_SETTINGS, PRESETS, Augmentation, augmentation, eval_transform, train_transform
from .images import ImageDataset
from .loading import load, prefetch
from .registry import DATASETS, DatasetInfo, info, list_datasets, register, status
from .splits import stratified_split, subset

__all__ = [
    "DatasetInfo", "DATASETS", "ImageDataset", "DatasetError", "PRESETS", "PRESET_SETTINGS",
    "list_datasets", "info", "register", "status", "load", "prefetch", "subset", "stratified_split",
    "augmentation", "train_transform", "eval_transform", "Augmentation", "ArgumentError",
]
