"""Folders of images and the archives they come in, read carefully (helpers behind :mod:`tlkit.datasets`).

Two folder layouts are understood, the same as torchvision's ``ImageFolder``::

    root/<class>/<image>            one pool of images (tlkit splits it into train and val)
    root/<split>/<class>/<image>    split folders: train, val (or valid, validation), test

Files whose names start with ``.`` and files without an image extension are ignored.
Nothing here deletes or changes a learner's files: the only things ever removed are
tlkit's own temporary extraction folders.

Example:
    >>> scan(Path("hymenoptera_data/train")).classes  # doctest: +SKIP
    ['ants', 'bees']
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from .errors import ArchiveError, DatasetError

__all__ = ["DatasetError", "ArchiveError", "IMG_EXTENSIONS", "SPLIT_FOLDERS", "ClassFolders", "scan",
           "split_folders", "split_by_class", "fingerprint", "verify_images", "extract"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File endings read as images (torchvision's ``ImageFolder`` list; ``.gif`` is not included)."""

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
"""Folder names recognised as splits, by the split name ``load`` uses."""

LAYOUT = ("Expected layout: <folder>/<class>/<image> (tlkit splits it 80/20 into train and val), or "
          "<folder>/train/<class>/<image> and <folder>/val/<class>/<image>.")




def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _subfolders(root: Path) -> list[Path]:
    """Visible subfolders, sorted (skips ``.git``, ``__MACOSX`` and the like)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, in sorted order."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for name in sorted(filenames):
            (images if _is_image(name) else others).append(Path(dirpath) / name)
    return images, others


def _examples(paths: list[Path], n: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:n])
    return names + (", ..." if len(paths) > n else "")


@dataclass
class ClassFolders:
    """The images of one ``root/<class>/<image>`` folder, in a fixed (sorted) order."""

    root: Path
    classes: list[str]
    paths: list[Path]
    targets: list[int]

    def counts(self) -> dict[str, int]:
        """Number of images per class."""
        counts = dict.fromkeys(self.classes, 0)
        for t in self.targets:
            counts[self.classes[t]] += 1
        return counts


def scan(root: Path) -> ClassFolders:
    """List the images of ``root/<class>/...``; raise :class:`DatasetError` for empty classes or no images."""
    root = Path(root)
    class_dirs = _subfolders(root)
    if not class_dirs:
        images, others = _walk(root)
        if images:
            raise DatasetError(
                f"{root} holds {len(images)} images ({_examples(images)}) but no class folders. tlkit takes "
                f"each image's label from the folder it is in: make one subfolder per class, e.g. "
                f"{root / 'cats'} and {root / 'dogs'}, and move the images into them."
            )
        found = f" (it holds {len(others)} other files, e.g. {_examples(others)})" if others else ""
        raise DatasetError(f"No images found in {root}{found}. {LAYOUT} "
                           f"Image files end in {', '.join(IMG_EXTENSIONS)}.")
    classes, paths, targets, empty = [], [], [], []
    for folder in class_dirs:
        images, others = _walk(folder)
        if not images:
            empty.append((folder, others))
            continue
        targets += [len(classes)] * len(images)
        classes.append(folder.name)
        paths += images
    if empty:
        lines = []
        for folder, others in empty:
            note = f" (it holds {len(others)} files that are not images: {_examples(others)})" if others else ""
            lines.append(f"  - {folder}{note}")
        raise DatasetError(
            "These class folders hold no images:\n" + "\n".join(lines) + "\n"
            f"Add images to them, or move them out of {root} if those classes are not wanted. "
            f"tlkit reads files ending in {', '.join(IMG_EXTENSIONS)}."
        )
    return ClassFolders(root, classes, paths, targets)


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` by split name (``{}`` if it has none)."""
    found: dict[str, Path] = {}
    for folder in _subfolders(Path(root)):
        for split, names in SPLIT_FOLDERS.items():
            if folder.name.lower() in names:
                if split in found:
                    raise DatasetError(
                        f"{root} has two folders for the {split!r} split: {found[split].name} and {folder.name}. "
                        "Keep one of them."
                    )
                found[split] = folder
    return found


def split_by_class(targets: list[int], classes: list[str], val_fraction: float = 0.2,
                   seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic stratified split: (train positions, val positions), both sorted.

    Each class is shuffled with its own seeded generator (so adding a class does not change
    the split of the others) and ``round(n * val_fraction)`` of its images go to val
    (at least one when a class has two or more images).

    >>> split_by_class([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], ["a", "b"])
    ([0, 1, 3, 4, 5, 6, 8, 9], [2, 7])
    """
    train, val = [], []
    for c, name in enumerate(classes):
        members = [i for i, t in enumerate(targets) if t == c]
        random.Random(f"{seed}:{name}").shuffle(members)
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


def fingerprint(paths: list[Path], root: Path) -> str:
    """A hex digest of the files' relative paths, sizes and modification times.

    It changes whenever a file is added, removed, renamed or edited.
    """
    digest = hashlib.sha1()
    for path in paths:
        st = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _decode(path: Path) -> None:
    with Image.open(path) as img:
        img.draft("RGB", (64, 64))  # JPEGs decode at reduced scale: fast, and still reads every byte
        img.load()


def verify_images(paths: list[Path], root: Path, stamps: Path, *, progress: bool = True,
                  what: str = "images") -> None:
    """Check that every image decodes; raise :class:`DatasetError` listing the files that do not.

    A passing check is remembered (an empty file named by the :func:`fingerprint` in
    ``stamps``), so the same files are decoded only once.
    """
    stamp = stamps / fingerprint(paths, root)
    if stamp.exists():
        return
    items = paths
    if progress and len(paths) > 500:
        from tqdm.auto import tqdm

        items = tqdm(paths, desc=f"checking {what}", unit="img", leave=False)
    bad = []
    for path in items:
        try:
            _decode(path)
        except Exception as exc:  # PIL raises many kinds for broken files
            bad.append(f"  - {path}: {exc}")
    if bad:
        shown = "\n".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DatasetError(
            f"{len(bad)} of {len(paths)} {what} cannot be read as images:\n{shown}\n"
            "What to do: open them in an image viewer; replace or remove the broken ones (tlkit never "
            "deletes your files), then load again."
        )
    stamps.mkdir(parents=True, exist_ok=True)
    stamp.touch()


def _unpack(archive: Path, dest: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)  # zipfile drops '..' and absolute parts of member names
            return
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")  # refuses members that would land outside dest
                else:  # pragma: no cover - Python < 3.10.12
                    for member in tf.getmembers():
                        if member.name.startswith(("/", "..")) or "/../" in member.name:
                            raise ArchiveError(f"{archive.name}: unsafe member path {member.name!r}")
                    tf.extractall(dest)
            return
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(f"{archive.name} is damaged and cannot be unpacked ({type(exc).__name__}: {exc}).") from exc
    with open(archive, "rb") as f:
        head = f.read(64)
    hint = " It looks like a web page, not an archive (a proxy or login page?)." if b"<" in head[:16] else ""
    raise ArchiveError(f"{archive.name} is neither a zip nor a tar archive (it starts with {head[:24]!r}).{hint}")


def extract(archive: Path, parent: Path, folder: str, check: Callable[[Path], object]) -> Path:
    """Unpack ``archive``, check its ``folder`` and move it to ``parent / folder``, all or nothing.

    The archive is unpacked into a fresh temporary folder inside ``parent``; ``check`` is
    called on the unpacked ``folder`` (it raises if something is wrong); only then is the
    folder renamed into place. On any failure the temporary folder is removed, so a
    half-extracted dataset can never be found and used.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.extracting-", dir=parent))
    try:
        _unpack(archive, tmp)
        inner = tmp / folder
        if not inner.is_dir():
            top = sorted(p.name for p in tmp.iterdir())
            raise ArchiveError(f"{archive.name} holds no folder {folder!r} (its top level: {top[:5]}).")
        check(inner)
        final = parent / folder
        try:
            os.replace(inner, final)
        except OSError:
            if not final.is_dir():  # another process may have finished the same extraction first
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
