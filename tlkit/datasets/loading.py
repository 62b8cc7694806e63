"""``load``: a registered dataset by name, or your own folder of images, as an ``ImageDataset`` split.

Splits, in one place:

* a registered dataset offers ``train``, ``val`` and ``test``: the source's own where it has
  them; otherwise a stratified split with the entry's fixed seed (``val_fraction`` and
  ``test_fraction`` of each class; hymenoptera, with train and val folders only, holds out
  ``test_fraction`` of each class of its train folder as ``test`` and keeps its val folder
  whole). ``"all"`` gives everything where there are
  no split folders.
* your own folder: its ``train``/``val``/``test`` folders where it has them, otherwise 80/20
  ``train``/``val`` per class (seed 0) or ``"all"``.

Every random split comes from :func:`tlkit.datasets.stratified_split`.

Example:
    >>> ds = load("digits", split="val")
    >>> len(ds.classes), ds.load_image(0).size
    (10, (32, 32))
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ArgumentError, DatasetError
from .folders import LAYOUT, ClassFolders, class_folders, fingerprint, stamp_dirs, verify_images
from .images import ImageDataset, _FileImages, _MemoryImages, _TorchvisionImages
from .registry import DATASETS, DatasetInfo, registry_name
from .sources import archive_folder, digits_arrays, medmnist_arrays, torchvision_split
from .splits import stratified_split

__all__ = ["load", "prefetch", "split_positions"]

_SPLIT_ALIASES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}
OWN_FOLDER_VAL_FRACTION = 0.2
"""The share of each class a folder without split folders keeps for ``val`` (seed 0)."""


def split_positions(targets: Sequence[int], split: str, *, val_fraction: float, test_fraction: float = 0.0,
                    seed: int = 0) -> list[int]:
    """Positions of ``split`` in a pool without split folders: test first, then val from the rest.

    ``test_fraction`` of each class is held out for ``test`` (none when 0), then
    ``val_fraction`` of each class (a share of the whole pool) for ``val``; the rest is ``train``.

    >>> split_positions([0] * 10 + [1] * 10, "test", val_fraction=0.2, test_fraction=0.2)
    [4, 6, 11, 19]
    """
    everything = list(range(len(targets)))
    if split == "all":
        return everything
    pool = everything
    if test_fraction:
        pool, test = stratified_split(targets, test_fraction, seed)
        if split == "test":
            return test
    rest, val = stratified_split([targets[i] for i in pool], val_fraction / (1 - test_fraction), seed)
    return [pool[i] for i in (val if split == "val" else rest)]


def _check_arguments(name: Any, split: Any, transform: Any, download: Any, verify: Any, progress: Any,
                     size: Any) -> str:
    if name is None or not isinstance(name, (str, os.PathLike)):
        raise ArgumentError(f"load() takes a dataset name (one of {', '.join(DATASETS)}) or the path of a folder "
                            f"of images; got {name!r} ({type(name).__name__}).")
    if not isinstance(split, str):
        raise ArgumentError(f"split must be 'train', 'val', 'test' or 'all'; got {split!r} ({type(split).__name__}).")
    if transform is not None and not callable(transform):
        raise ArgumentError(f"transform must be a callable (e.g. tlkit.preprocess(model)) or None; got {transform!r}.")
    for option, value in (("download", download), ("verify", verify), ("progress", progress)):
        if not isinstance(value, bool):
            raise ArgumentError(f"{option} must be True or False; got {value!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise ArgumentError(f"size must be an integer number of pixels (e.g. 28 or 64); got {size!r}.")
    split = split.strip().lower()
    return _SPLIT_ALIASES.get(split, split)


def load(name: str | os.PathLike, split: str = "train", transform: Callable | None = None,
         download: bool = True, *, verify: bool = True, progress: bool = True, size: int | None = None
         ) -> ImageDataset:
    """Load a registered dataset by name, or your own folder of images.

    Args:
        name: a name from ``list_datasets()``, or a folder laid out as
            ``<folder>/<class>/<image>`` or ``<folder>/{train,val[,test]}/<class>/<image>``.
        split: ``"train"``, ``"val"`` or ``"test"`` (every registered dataset has all three; see
            its ``info(name).description`` for how they are made); ``"all"`` for data without
            split folders. Your own folder without split folders is split 80/20 per class into
            ``train`` and ``val`` (seed 0).
        transform: applied to each PIL image (e.g. ``tlkit.preprocess(model)``).
        download: download a registered dataset if it is not in the cache or the mirror yet.
        verify: decode every image once to find broken files (remembered in the data cache).
        progress: show progress bars for downloads and checks.
        size: image side of a MedMNIST dataset: 28 (default), 64, 128 or 224.

    >>> ds = load("digits", split="val")
    >>> len(ds.classes), ds.load_image(0).size
    (10, (32, 32))
    """
    split = _check_arguments(name, split, transform, download, verify, progress, size)
    key = registry_name(name)
    if key is not None:
        entry = DATASETS[key]
        if split not in entry.splits:
            raise ArgumentError(f"Dataset {key!r} has splits {', '.join(entry.splits)}; got split={split!r}.")
        if size is not None and entry.source != "medmnist":
            raise ArgumentError(f"size= applies to the MedMNIST datasets only; {key!r} images come at their own "
                                "size (the transform resizes them).")
        return _load_registered(entry, split, download, verify, progress, size).with_transform(transform)
    if size is not None:
        raise ArgumentError("size= applies to the MedMNIST datasets only, not to a folder of images.")
    path = Path(name).expanduser()
    if not path.exists():
        hint = ""
        if isinstance(name, str) and os.sep not in name and "/" not in name:
            hint = f" It is not a registered dataset either; those are: {', '.join(DATASETS)}."
        raise FileNotFoundError(f"No folder {path.resolve()}.{hint} Give the path of a folder of images. {LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder. If it is an archive, unpack it first and load the "
                           f"folder it contains. {LAYOUT}")
    ds = _from_folder(path, split, path.resolve().name, verify=verify, progress=progress)
    return ds.with_transform(transform)


def prefetch(names: Sequence[str] | None = None, *, progress: bool = True) -> dict[str, str]:
    """Download, unpack and verify registered datasets now: warm a (shared) data cache in one call.

    An instructor runs it once with ``TLKIT_DATA`` pointing at the class's shared cache; students
    then read it, even when it is read-only for them. Every split is loaded once, so every check
    (counts, decoding) is done and remembered. Returns ``{name: "ok"}`` or the error's first line
    (one failure does not stop the others). ``names`` defaults to every registered dataset that
    is not ``"bundled"``.

    >>> prefetch(["digits"], progress=False)
    {'digits': 'ok'}
    """
    from .registry import status

    if names is None:
        names = [n for n in DATASETS if status(n) != "bundled"]
    if isinstance(names, str) or not all(isinstance(n, str) and registry_name(n) for n in names):
        raise ArgumentError(f"prefetch() takes a list of registered dataset names ({', '.join(DATASETS)}); "
                            f"got {names!r}.")
    done = {}
    for name in names:
        entry = DATASETS[registry_name(name)]
        try:
            for split in entry.splits:
                load(entry.name, split=split, progress=progress)
            done[entry.name] = "ok"
        except Exception as exc:  # report it and go on with the next dataset
            done[entry.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return done


def _load_registered(entry: DatasetInfo, split: str, download: bool, verify: bool, progress: bool,
                     size: int | None) -> ImageDataset:
    if entry.source == "sklearn":
        images, targets = digits_arrays()
        positions = split_positions(targets, split, val_fraction=entry.val_fraction,
                                    test_fraction=entry.test_fraction, seed=entry.seed)
        source = _MemoryImages([images[i] for i in positions], size=32)
        return ImageDataset(entry.name, split, entry.classes, [targets[i] for i in positions], source,
                            content=source.digest()[:16])
    if entry.source == "medmnist":
        size = size or entry.sizes[0]
        images, labels = medmnist_arrays(entry, split, size, download, progress)
        source = _MemoryImages(images)
        return ImageDataset(entry.name if size == entry.sizes[0] else f"{entry.name}_{size}", split, entry.classes,
                            labels.tolist(), source, content=source.digest()[:16])
    if entry.source == "torchvision":
        dataset, targets, classes, content = torchvision_split(entry, split, download, progress)
        return ImageDataset(entry.name, split, classes, targets, _TorchvisionImages(dataset), content=content)
    root = archive_folder(entry, download, verify, progress)
    return _from_folder(root, split, entry.name, verify=False, progress=progress, entry=entry)


def _from_folder(root: Path, split: str, name: str, *, verify: bool, progress: bool,
                 entry: DatasetInfo | None = None) -> ImageDataset:
    """One split of a folder; ``entry`` (a registered dataset) sets how missing splits are made."""
    scans = class_folders(root)
    test_fraction = entry.test_fraction if entry is not None and "test" in entry.splits else 0.0
    if "all" in scans:  # no split folders: split every class deterministically
        folders = scans["all"]
        fractions = (dict(val_fraction=entry.val_fraction, test_fraction=test_fraction, seed=entry.seed)
                     if entry else dict(val_fraction=OWN_FOLDER_VAL_FRACTION))
        if split not in ("train", "val", "all") and not fractions.get("test_fraction"):
            raise DatasetError(
                f"{root} has no split folders, so it has no {split!r} split. Use split='train' or split='val' "
                f"(tlkit keeps {OWN_FOLDER_VAL_FRACTION:.0%} of each class for 'val', seeded) or split='all'; or "
                f"make folders {root / 'train'}, {root / 'val'} and {root / split}, each with the class folders."
            )
        positions = split_positions(folders.targets, split, **fractions)
    elif split in ("train", "test") and "test" not in scans and test_fraction:
        # The source has no test split: test_fraction of each class of its train folder becomes
        # test, and its val folder stays whole (the split everyone knows stays the validation set).
        folders = scans["train"]
        kept, held = stratified_split(folders.targets, test_fraction, entry.seed)
        positions = held if split == "test" else kept
    else:
        if split not in scans:
            have = ", ".join(repr(s) for s in scans)
            raise DatasetError(
                f"{root} has no {split!r} folder; its splits are {have}. Use one of those, or add a folder "
                f"{root / split} with the same class folders."
            )
        folders = scans[split]
        positions = range(len(folders.paths))
    return _dataset(folders, positions, name, split, root, verify, progress)


def _dataset(folders: ClassFolders, positions: Sequence[int], name: str, split: str, root: Path, verify: bool,
             progress: bool) -> ImageDataset:
    paths = [folders.paths[i] for i in positions]
    targets = [folders.targets[i] for i in positions]
    if verify:
        verify_images(paths, root, stamp_dirs(), progress=progress, what=f"images in {root}")
    content = fingerprint(paths, root)[:16]
    return ImageDataset(name, split, folders.classes, targets, _FileImages(paths), content=content,
                        root=folders.root, paths=paths)
