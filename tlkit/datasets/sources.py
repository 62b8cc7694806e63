"""Where registered datasets come from: archives, scikit-learn, torchvision and MedMNIST files.

Each function here finds (or downloads) one kind of source and checks it; :mod:`.loading`
turns the result into an :class:`~tlkit.datasets.ImageDataset` split. The rules every
source follows:

* the data cache (``TLKIT_DATA``) first, then a classroom mirror (``TLKIT_MIRROR``; a folder
  there is used in place, read-only), then the canonical address;
* downloads and unpacking of one dataset take a file lock, so several processes sharing a
  cache take turns and the later ones reuse the first one's result; what a killed process
  left behind (``.extracting-*`` folders, ``.part`` files) is removed under that lock;
* a read-only data cache is read, never written: new downloads go to the user's own cache.

Example:
    >>> from tlkit.datasets.registry import info
    >>> images, targets = digits_arrays()
    >>> images.shape
    (1797, 8, 8)
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..download import DownloadError, cache_dir, data_homes, fetch, locked, mirror, writable
from ..errors import ArchiveError, ArgumentError, DatasetError
from .folders import class_folders, clean_stale_extractions, extract, stamp_dirs, verify_images
from .medmnist import medmnist_file, read_npz
from .registry import DatasetInfo

__all__ = ["archive_folder", "digits_arrays", "torchvision_split", "medmnist_arrays"]


def _writable_home(entry_name: str, what: str) -> Path:
    """The first of :func:`data_homes` that can be written, or a DownloadError saying where it looked."""
    homes = data_homes(entry_name)
    for home in homes:
        if writable(home):
            return home
    raise DownloadError(f"Cannot download {what}: none of {', '.join(map(str, homes))} can be written to.\n"
                        "What to do: set TLKIT_CACHE (or TLKIT_DATA) to a folder you can write to, or ask your "
                        "instructor to put the dataset in the shared cache or the classroom mirror.")


def _lock_file(home: Path) -> Path:
    return home.parent / ".locks" / f"{home.name}.lock"


# -- registered archives ----------------------------------------------------------------------

def check_registry_folder(entry: DatasetInfo, root: Path, verify: bool, progress: bool) -> None:
    """Raise DatasetError unless ``root`` holds exactly the dataset ``entry`` describes."""
    scans = class_folders(root)
    wanted = ["train", "val"] if entry.split_dirs else ["all"]
    wanted += [s for s in ("test",) if entry.split_dirs and s in scans]
    missing = [s for s in wanted if s not in scans]
    if missing:
        raise DatasetError(f"{root} lacks the split folders {missing} (found: {list(scans)}).")
    total = 0
    for s in wanted:
        found = scans[s]
        if found.classes != list(entry.classes):
            raise DatasetError(f"{found.root}: expected the classes {list(entry.classes)}, found {found.classes}.")
        expected = (entry.counts or {}).get(s)
        if expected and found.counts() != dict(expected):
            raise DatasetError(f"{found.root}: expected {dict(expected)} images per class, found {found.counts()}.")
        total += len(found.paths)
    if entry.num_images is not None and total != entry.num_images:
        raise DatasetError(f"{root}: expected {entry.num_images} images in all, found {total}.")
    if verify:
        for s in wanted:
            verify_images(scans[s].paths, root, stamp_dirs(), progress=progress, what=f"{entry.name} images")


def _cached_folder(entry: DatasetInfo, verify: bool, progress: bool) -> Path | None:
    for home in data_homes(entry.name):
        local = home / entry.folder
        if local.is_dir():
            try:
                check_registry_folder(entry, local, verify, progress)
            except DatasetError as exc:
                raise DatasetError(f"The cached copy of {entry.name!r} is damaged: {exc}\nWhat to do: delete the "
                                   f"folder {local} and load again to download a fresh copy.") from None
            return local
    return None


def archive_folder(entry: DatasetInfo, download: bool, verify: bool, progress: bool) -> Path:
    """The checked, unpacked folder of a registered archive: cache, else mirror, else download."""
    local = _cached_folder(entry, verify, progress)
    if local is not None:
        return local
    source = mirror()
    if source and "://" not in source:
        base = Path(source).expanduser()
        for candidate in (base / entry.folder, base / entry.name / entry.folder):
            if candidate.is_dir():
                try:
                    check_registry_folder(entry, candidate, verify, progress)
                except DatasetError as exc:
                    raise DatasetError(
                        f"The classroom mirror's copy of {entry.name!r} at {candidate} is not usable: {exc}\n"
                        "What to do: tell your instructor; or unset TLKIT_MIRROR to download the dataset instead."
                    ) from None
                return candidate  # used in place, read-only
    home = data_homes(entry.name)[0]
    if not download:
        raise DatasetError(f"Dataset {entry.name!r} is not downloaded yet (looked in {home}"
                           f"{' and the mirror ' + source if source else ''}). Call load({entry.name!r}) with "
                           "download=True, or set TLKIT_MIRROR to a folder holding it.")
    home = _writable_home(entry.name, f"dataset {entry.name!r}")
    with locked(_lock_file(home)):
        local = _cached_folder(entry, verify, progress)  # another process may have finished meanwhile
        if local is not None:
            return local
        clean_stale_extractions(home, entry.folder)  # what a killed process left; nobody else is inside
        return _download_and_extract(entry, home, source, verify, progress)


def _download_and_extract(entry: DatasetInfo, home: Path, source: str | None, verify: bool, progress: bool) -> Path:
    archive = home / entry.url.rsplit("/", 1)[-1]
    for attempt in (1, 2):
        _fetch_archive(entry, archive, progress)
        try:
            root = extract(archive, home, entry.folder,
                           check=lambda folder: check_registry_folder(entry, folder, verify, progress))
        except ArchiveError as exc:
            archive.unlink(missing_ok=True)  # a broken download: remove it, download once more
            if attempt == 1:
                continue
            raise DownloadError(
                f"The archive of dataset {entry.name!r} was broken twice in a row: {exc}\n"
                f"The broken file was removed and nothing was unpacked into {home}.\n"
                f"What to do: run again later; if it keeps failing, its source (TLKIT_MIRROR={source or 'not set'}, "
                f"then {entry.url}) holds a broken copy: tell your instructor"
                f"{' or unset TLKIT_MIRROR' if source else ''}, "
                f"or download {entry.url} in a browser and save it as {archive}."
            ) from exc
        except DatasetError as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"The archive of dataset {entry.name!r} unpacked, but its contents are not as expected: {exc}\n"
                f"The archive was removed and nothing was kept in {home}. The source may hold a different "
                "version of the dataset: tell your instructor or report it to the tlkit maintainers."
            ) from exc
        archive.unlink(missing_ok=True)  # unpacked and checked: the archive is no longer needed
        return root
    raise AssertionError("unreachable")


def _fetch_archive(entry: DatasetInfo, archive: Path, progress: bool) -> Path:
    errors = []
    for url in (entry.url, *entry.mirrors):
        try:
            return fetch(url, archive, mirror_name=archive.name, what=f"dataset {entry.name!r} ({archive.name})",
                         progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("\n\n".join(errors))


# -- scikit-learn digits ----------------------------------------------------------------------

@lru_cache(maxsize=1)
def digits_arrays() -> tuple[Any, list[int]]:
    """scikit-learn's 1797 digits as uint8 images (white ink on black) and their labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 ink -> 0..255, white on black
    return images, digits.target.tolist()


# -- MedMNIST ---------------------------------------------------------------------------------

def medmnist_arrays(entry: DatasetInfo, split: str, size: int, download: bool, progress: bool
                    ) -> tuple[Any, Any]:
    """(images, labels) of one split of a MedMNIST entry at ``size`` px, checked.

    Looked for in the data cache, then the mirror folder (``<mirror>/medmnist/<file>``, read in
    place), then downloaded (from a mirror URL, then the official address; the official file
    is checked by md5). Whatever the source, the arrays are checked by structure and counts.
    """
    if size not in entry.sizes:
        raise ArgumentError(f"{entry.name!r} comes in sizes {', '.join(map(str, entry.sizes))}; got size={size!r}.")
    file = medmnist_file(entry.name, size)
    for home in data_homes("medmnist"):
        if (home / file).is_file():
            return _read_checked(entry, home / file, size, split, "cached copy",
                                 f"delete {home / file} and load again to download a fresh copy")
    source = mirror()
    if source and "://" not in source:
        candidate = Path(source).expanduser() / "medmnist" / file
        if candidate.is_file():
            return _read_checked(entry, candidate, size, split, "classroom mirror's copy",
                                 "tell your instructor; or unset TLKIT_MIRROR to download the dataset instead")
    if not download:
        raise DatasetError(f"Dataset {entry.name!r} ({file}) is not downloaded yet (looked in "
                           f"{data_homes('medmnist')[0]}{' and the mirror ' + source if source else ''}). "
                           f"Call load({entry.name!r}) with download=True, or set TLKIT_MIRROR to a folder "
                           f"holding medmnist/{file}.")
    home = _writable_home("medmnist", f"dataset {entry.name!r}")
    url = entry.url if size == entry.sizes[0] else entry.url.replace(medmnist_file(entry.name), file)
    with locked(_lock_file(home / entry.name)):
        dest = fetch(url, home / file, md5=entry.md5.get(size), mirror_checksum=False,
                     mirror_name=f"medmnist/{file}", what=f"dataset {entry.name!r} ({file})", progress=progress)
    try:
        read_npz(dest, entry.name, size)  # every split, once, right after the download
        return read_npz(dest, entry.name, size, (split,))[split]
    except DatasetError as exc:
        dest.unlink(missing_ok=True)  # only a mirror URL's copy can get here (the official one is md5-checked)
        raise DownloadError(f"The downloaded {file} is not as expected and was removed: {exc}\n"
                            "What to do: tell your instructor (the classroom mirror holds another file).") from exc


def _read_checked(entry: DatasetInfo, path: Path, size: int, split: str, which: str, todo: str
                  ) -> tuple[Any, Any]:
    try:
        return read_npz(path, entry.name, size, (split,))[split]
    except DatasetError as exc:
        raise DatasetError(f"The {which} of {entry.name!r} is not usable: {exc}\nWhat to do: {todo}.") from None


# -- torchvision ------------------------------------------------------------------------------

def _torchvision_dataset(entry: DatasetInfo, root: Path, split: str, download: bool) -> Dataset:
    from torchvision import datasets as tvd

    cls = getattr(tvd, entry.torchvision)
    native = entry.split_map[split]
    kwargs = {"train": native == "train"} if entry.torchvision == "FashionMNIST" else {"split": native}
    return cls(str(root), download=download, **kwargs)


def torchvision_split(entry: DatasetInfo, split: str, download: bool, progress: bool
                      ) -> tuple[Dataset, list[int], list[str], str]:
    """(torchvision dataset, targets, classes, content digest) of one split."""
    roots = [cache_dir("data")]
    source = mirror()
    if source and "://" not in source:
        roots.insert(0, Path(source).expanduser())  # an unpacked copy in the mirror, used read-only
    dataset = None
    for root in roots:
        try:
            dataset = _torchvision_dataset(entry, root, split, download=False)
            break
        except (RuntimeError, FileNotFoundError, OSError):
            continue
    if dataset is None:
        if not download:
            raise DatasetError(f"Dataset {entry.name!r} is not downloaded yet (looked in "
                               f"{', '.join(map(str, roots))}). Call load({entry.name!r}) with download=True.")
        home = cache_dir("data")
        with locked(home / ".locks" / f"{entry.name}.lock"):
            for url, rel in entry.resources:  # mirror first, atomic, retried; torchvision then finds them
                fetch(url, home / rel, mirror_name=rel.rsplit("/", 1)[-1], what=f"dataset {entry.name!r} ({rel})",
                      progress=progress)
            try:
                dataset = _torchvision_dataset(entry, home, split, download=True)
            except Exception as exc:  # torchvision raises RuntimeError, URLError, ...
                raise DownloadError(
                    f"torchvision could not prepare dataset {entry.name!r} in {home}: {exc}\n"
                    "What to do: check your internet connection and run again, or ask your instructor for a "
                    "classroom mirror (TLKIT_MIRROR)."
                ) from exc
    targets = dataset.targets if hasattr(dataset, "targets") else dataset._labels
    targets = targets.tolist() if isinstance(targets, torch.Tensor) else list(targets)
    classes = list(getattr(dataset, "classes", entry.classes))
    content = hashlib.sha1(f"{entry.torchvision}:{split}:{targets}".encode()).hexdigest()[:16]
    return dataset, targets, classes, content
