"""Folders of images and the archives they come in, read carefully (helpers behind :func:`tlkit.datasets.load`).

Two folder layouts are understood, the same as torchvision's ``ImageFolder``::

    root/<class>/<image>            one pool of images (tlkit splits it into train and val)
    root/<split>/<class>/<image>    split folders: train, val (or valid, validation), test

Files whose names start with ``.`` and files without an image extension are ignored.
A symlinked folder that leads back into the dataset (or above it) is not followed, so a
loop never duplicates images or leaks them between splits. Images of any bit depth are
scaled to 8-bit RGB (16-bit PNG and TIFF, float TIFF). Nothing here deletes or changes a
learner's files: the only things ever removed are tlkit's own temporary extraction folders.

Example:
    >>> scan(Path("hymenoptera_data/train")).classes  # doctest: +SKIP
    ['ants', 'bees']
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image
from ..download import cache_dir
from ..errors import ArchiveError, DatasetError

__all__ = ["DatasetError", "ArchiveError", "IMG_EXTENSIONS", "SPLIT_FOLDERS", "ClassFolders", "scan",
           "split_folders", "fingerprint", "verify_images", "extract", "open_rgb", "to_rgb",
           "clean_stale_extractions", "class_folders", "stamp_dirs", "LAYOUT"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File endings read as images (torchvision's ``ImageFolder`` list; ``.gif`` is not included)."""

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
"""Folder names recognised as splits, by the split name ``load`` uses."""

LAYOUT = ("Expected layout: <folder>/<class>/<image> (tlkit splits it 80/20 into 'train' and 'val'), or "
          "<folder>/train/<class>/<image> plus <folder>/val/<class>/<image>.")




def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _subfolders(root: Path) -> list[Path]:
    """Visible subfolders, sorted (skips ``.git``, ``__MACOSX`` and the like)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(folder: Path, top: Path | None = None, skipped: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, in sorted order.

    Symlinked folders are followed only when they lead outside ``top`` (the dataset's root)
    and not to one of its parents; a link back into the tree is skipped with a warning (it
    would list the same images twice, under other classes or splits, or loop forever).
    A symlinked image whose target is missing raises :class:`DatasetError` naming it.
    The skipped links are appended to ``skipped`` (warned about here when it is None).
    """
    top_real = os.path.realpath(top if top is not None else folder)
    warn = skipped is None
    skipped = [] if skipped is None else skipped
    images, others, dangling = [], [], []
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith((".", "__"))):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if _inside(target, top_real) or _inside(top_real, target) or target in seen:
                    skipped.append(Path(full))
                    continue
                seen.add(target)
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _is_image(name) and not path.exists():
                dangling.append(path)
            (images if _is_image(name) else others).append(path)
    if dangling:
        listed = "\n".join(f"  - {p} -> {os.readlink(p) if p.is_symlink() else '?'}" for p in dangling[:10])
        raise DatasetError(f"{len(dangling)} image file(s) are broken symbolic links (their target is missing):\n"
                           f"{listed}\nWhat to do: restore the files they point to, or remove the links.")
    if warn:
        _warn_skipped(skipped, top_real)
    return images, others


def _warn_skipped(skipped: list[Path], top: str | Path) -> None:
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} symbolic link(s) to folders inside (or above) {top}, "
                      f"which would list images twice or loop forever: {', '.join(map(str, skipped[:5]))}. "
                      "Remove the links, or copy the images in instead.", stacklevel=5)


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


def scan(root: Path, top: Path | None = None) -> ClassFolders:
    """List the images of ``root/<class>/...``; raise :class:`DatasetError` for empty classes or no images.

    ``top`` is the dataset's root (``root`` itself, or its parent for a split folder): links
    into it are not followed. Loose images beside the class folders are ignored with a
    warning; a single class is refused (a classifier needs two, and one class usually means
    the folder given is one level too high).
    """
    root = Path(root)
    top = Path(top) if top is not None else root
    class_dirs = _subfolders(root)
    if not class_dirs:
        images, others = _walk(root, top)
        if images:
            raise DatasetError(
                f"{root} holds {len(images)} images ({_examples(images)}) but no class folders. tlkit takes "
                f"each image's label from the folder it is in: make one subfolder per class, e.g. "
                f"{root / 'cats'} and {root / 'dogs'}, and move the images into them."
            )
        found = f" (it holds {len(others)} other files, e.g. {_examples(others)})" if others else ""
        raise DatasetError(f"No images found in {root}{found}. {LAYOUT} "
                           f"Image files end in {', '.join(IMG_EXTENSIONS)}.")
    classes, paths, targets, empty, skipped = [], [], [], [], []
    top_real = os.path.realpath(top)
    for folder in class_dirs:
        if folder.is_symlink() and (_inside(os.path.realpath(folder), top_real)
                                    or _inside(top_real, os.path.realpath(folder))):
            skipped.append(folder)  # a class folder that is another folder of this dataset
            continue
        images, others = _walk(folder, top, skipped)
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
    _warn_skipped(skipped, top_real)
    if len(classes) == 1:
        inside = sorted({p.parent.relative_to(class_dirs[0]).as_posix() for p in paths} - {"."})
        where = f", in its subfolders {', '.join(inside[:6])}{', ...' if len(inside) > 6 else ''}" if inside else ""
        raise DatasetError(
            f"{root} holds only one class folder, {classes[0]!r} ({len(paths)} images{where}). A classifier needs "
            f"at least two classes. You probably pointed one level too high: try {root / classes[0]}. Otherwise "
            f"add a folder per class beside {classes[0]!r}."
        )
    loose = [p for p in root.iterdir() if p.is_file() and _is_image(p.name)]
    if loose:
        warnings.warn(f"{len(loose)} image(s) lie directly in {root}, beside its class folders (e.g. "
                      f"{_examples(sorted(loose))}); they have no class and are not used. Move them into a class "
                      "folder to use them.", stacklevel=2)
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


def class_folders(root: Path) -> dict[str, ClassFolders]:
    """Scan a folder: ``{split: ClassFolders}`` for split layout, ``{"all": ...}`` otherwise."""
    splits = split_folders(root)
    if not splits:
        return {"all": scan(root)}
    others = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
              and p not in splits.values()]
    if others:
        raise DatasetError(
            f"{root} mixes split folders ({', '.join(p.name for p in splits.values())}) with other folders "
            f"({', '.join(sorted(others))}). Move the other folders out, or put every class folder inside "
            f"the split folders. {LAYOUT}"
        )
    scans = {s: scan(p, top=root) for s, p in splits.items()}
    names = list(scans)
    for other in names[1:]:
        a, b = scans[names[0]].classes, scans[other].classes
        if a != b:
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            raise DatasetError(
                f"The split folders of {root} have different classes:\n"
                f"  {splits[names[0]].name}: {a}\n  {splits[other].name}: {b}\n"
                f"Only in {splits[names[0]].name}: {only_a}; only in {splits[other].name}: {only_b}.\n"
                "Every split needs the same class folders (with the same names): add or rename folders so they match."
            )
    return scans


def stamp_dirs() -> list[Path]:
    """Where passing image checks are remembered: the data cache, then the user's own cache."""
    return [cache_dir("data") / ".verified", cache_dir("verified")]


def fingerprint(paths: list[Path], root: Path) -> str:
    """A hex digest of the files' relative paths, sizes and modification times.

    It changes whenever a file is added, removed, renamed or edited.
    """
    digest = hashlib.sha1()
    for path in paths:
        st = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img``, whatever its bit depth (always a new image).

    PIL's own ``convert("RGB")`` clips 16-bit and 32-bit values at 255 (a 16-bit PNG comes out
    all white) and float images at 1 (all black). Here 16-bit images are scaled by 255/65535,
    float images in [0, 1] by 255 and any other range is stretched from its minimum to its maximum.

    >>> to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        import numpy as np

        a = np.asarray(img)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
            finite = a[np.isfinite(a)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if lo >= 0 and hi <= 1:
                lo, hi = 0.0, 1.0
            elif lo >= 0 and hi <= 255:
                lo, hi = 0.0, 255.0
            a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
        else:  # 16-bit (PIL reads 16-bit PNGs as "I;16" or "I"), or 32-bit integers
            a = a.astype(np.int64)
            lo, hi = 0, 65535
            if a.size and (a.min() < 0 or a.max() > 65535):
                lo, hi = int(a.min()), int(a.max())
        scaled = np.clip((a - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255)
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """Image file ``path`` as 8-bit RGB (see :func:`to_rgb`); raises what PIL raises."""
    with Image.open(path) as img:
        return to_rgb(img)


def _decode(path: Path) -> None:
    with Image.open(path) as img:
        img.draft("RGB", (64, 64))  # JPEGs decode at reduced scale: fast, and still reads every byte
        img.load()
        to_rgb(img)  # the same conversion loading does: what cannot be converted fails here


def verify_images(paths: list[Path], root: Path, stamps: Sequence[Path] | Path, *, progress: bool = True,
                  what: str = "images") -> None:
    """Check that every image decodes; raise :class:`DatasetError` listing the files that do not.

    A passing check is remembered (an empty file named by the :func:`fingerprint` in the first
    of ``stamps`` that can be written; all are read), so the same files are decoded only once.
    A read-only stamp folder only costs a second check next time.
    """
    folders = [Path(stamps)] if isinstance(stamps, (str, os.PathLike)) else [Path(p) for p in stamps]
    name = fingerprint(paths, root)
    if any((folder / name).exists() for folder in folders):
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
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).touch()
            return
        except OSError:
            continue  # read-only: try the next place; none at all only costs a re-check next time


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
    half-extracted dataset can never be found and used. A process killed mid-way leaves its
    temporary folder behind: the caller removes it next time with
    :func:`clean_stale_extractions` (while holding the dataset's lock).
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


def clean_stale_extractions(parent: Path, folder: str) -> list[Path]:
    """Remove the temporary folders and ``.part`` files a killed process left in ``parent``.

    Call it only while holding the dataset's lock: then no live process is using them.
    Returns what was removed.
    """
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if path.name.startswith(f".{folder}.extracting-") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif path.name.endswith(".part") and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
