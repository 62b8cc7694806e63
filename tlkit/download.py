"""Download files into a cache, safely: mirror first, atomic writes, size and checksum checks.

Used for both datasets and weights. The rule is simple: a file appears at its final
path only when it is complete and verified; until then it lives at ``<dest>.part``.
An interrupted or truncated download therefore can never be half-used.

A classroom mirror (``TLKIT_MIRROR``) is tried before the canonical URL. It is either a
directory (a USB stick, a shared drive) or a base URL (``http://lab-server:8000/``);
the file is looked up there by its file name.

Example:
    >>> from tlkit.download import fetch
    >>> path = fetch("https://example.org/data.zip", cache_dir() / "data.zip")  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import platformdirs
from .errors import DatasetError, DownloadError

__all__ = ["DownloadError", "fetch", "cache_dir", "data_homes", "writable", "locked", "mirror", "sha256sum",
           "md5sum"]

CHUNK = 1 << 20




def cache_dir(kind: str = "data") -> Path:
    """Where tlkit keeps downloaded files.

    ``TLKIT_DATA`` overrides the location for datasets, ``TLKIT_CACHE`` for everything
    else (features, weights of timm models); both default to the user's cache directory.

    A folder that cannot be created (a read-only shared cache) is returned all the same:
    tlkit reads what is there and writes elsewhere (see :func:`data_homes`). A variable that
    names a file is an error that says so.

    >>> cache_dir("data").name  # doctest: +SKIP
    'data'
    """
    if kind == "data" and os.environ.get("TLKIT_DATA"):
        variable, path = "TLKIT_DATA", Path(os.environ["TLKIT_DATA"]).expanduser()
    else:
        variable = "TLKIT_CACHE" if os.environ.get("TLKIT_CACHE") else None
        root = os.environ.get("TLKIT_CACHE") or platformdirs.user_cache_dir("tlkit")
        path = Path(root).expanduser() / kind
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        setting = f"{variable}={os.environ[variable]}" if variable else "tlkit's cache folder"
        raise DatasetError(f"{setting}: {blocker} is a file, not a folder, so tlkit cannot keep its {kind} there.\n"
                           f"What to do: point {variable or 'TLKIT_CACHE'} at a folder (it is created if missing), "
                           "or move that file away.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # read-only: callers read what is there and write to a per-user folder instead
    return path


def writable(folder: Path) -> bool:
    """True if files can be created in ``folder`` (creating it first if needed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def data_homes(name: str) -> list[Path]:
    """Where the files of dataset ``name`` may be: the data cache, then a per-user fallback.

    The first entry is ``TLKIT_DATA/<name>`` (or the default data cache). When ``TLKIT_DATA``
    is set (a shared, possibly read-only cache), the user's own cache (``TLKIT_CACHE`` or the
    platform's) follows as ``<cache>/data-fallback/<name>``: tlkit reads both and writes to the
    first one it can write to.
    """
    homes = [cache_dir("data") / name]
    if os.environ.get("TLKIT_DATA"):
        homes.append(cache_dir("data-fallback") / name)
    return homes


@contextlib.contextmanager
def locked(path: Path, what: str = "this file") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file) while the block runs.

    Processes that load the same dataset into one cache take turns: the second waits, then
    finds the first one's result. Where no lock file can be made (a read-only folder), the
    block runs unlocked: it will not write there anyway.
    """
    from filelock import FileLock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def mirror() -> str | None:
    """The classroom mirror from ``TLKIT_MIRROR`` (a directory or a base URL), or None."""
    value = os.environ.get("TLKIT_MIRROR", "").strip()
    return value or None


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return _digest(path, hashlib.sha256())


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file (the checksum MedMNIST publishes), read in chunks."""
    return _digest(path, hashlib.md5())


def _digest(path: str | os.PathLike, digest) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _mirror_candidates(url: str, name: str | None) -> list[str]:
    base = mirror()
    if not base:
        return []
    name = name or url.rstrip("/").rsplit("/", 1)[-1]
    if base.startswith(("http://", "https://", "file://")):
        return [base.rstrip("/") + "/" + name]
    return [str(Path(base).expanduser() / name)]


def _copy_or_download(source: str, part: Path, timeout: float, progress: bool) -> None:
    """Write ``source`` (a local path or a URL) to ``part``; raise on any shortfall."""
    if "://" not in source:
        if not Path(source).is_file():
            raise FileNotFoundError(f"not in the mirror directory: {source}")
        shutil.copyfile(source, part)
        return
    request = urllib.request.Request(source, headers={"User-Agent": "tlkit"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        expected = response.headers.get("Content-Length")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(expected) if expected else None, unit="B", unit_scale=True,
                       desc=part.name.removesuffix(".part"), leave=False)
        written = 0
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            written += len(block)
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()
    if expected is not None and written != int(expected):
        raise OSError(f"truncated download: got {written} of {expected} bytes")


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    md5: str | None = None,
    mirror_checksum: bool = True,
    mirror_name: str | None = None,
    what: str = "file",
    retries: int = 2,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Return ``dest``, downloading it first if it is not already there and verified.

    Sources are tried in order: the classroom mirror (``TLKIT_MIRROR``), then ``url``;
    each is tried ``retries`` times. A download that is truncated or fails its checksum
    is deleted and retried; if every source fails, ``DownloadError`` says what was
    tried, why it failed, and what to do.

    Args:
        url: canonical address of the file.
        dest: final path in the cache.
        sha256: full expected checksum (only where it was computed from the real file).
        sha256_prefix: expected leading hex digits (torchvision's ``name-<hash>.pth`` scheme).
        md5: full expected MD5 (where the publisher gives only that, e.g. MedMNIST).
        mirror_checksum: check the checksum on a mirror's copy too; False where the mirror may
            hold an equivalent file with other bytes (the caller then checks the content).
        mirror_name: file name to look up in the mirror (default: the URL's file name; may
            contain a folder, e.g. ``"medmnist/retinamnist.npz"``).

    Each process writes its own ``<dest>.<random>.part`` and renames it into place when
    complete, so two processes fetching the same file never write into one file.
        what: a few words for messages, e.g. ``"dataset 'flowers'"``.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create {dest.parent} to download the {what} into it ({exc}).\n"
                            "What to do: point TLKIT_DATA / TLKIT_CACHE at a folder you can write to.") from exc
    failures: list[str] = []
    mirrors = _mirror_candidates(url, mirror_name)
    for source in mirrors + [url]:
        checked = mirror_checksum or source not in mirrors
        for attempt in range(1, retries + 1):
            try:
                fd, name = tempfile.mkstemp(prefix=f"{dest.name}.", suffix=".part", dir=dest.parent)
            except OSError as exc:
                raise DownloadError(f"Cannot write the {what} into {dest.parent} ({exc}).\n"
                                    "What to do: point TLKIT_DATA / TLKIT_CACHE at a folder you can write to, or "
                                    "ask your instructor to put the file in the shared cache.") from exc
            os.close(fd)
            part = Path(name)
            try:
                _copy_or_download(source, part, timeout, progress)
                if checked and (sha256 or sha256_prefix):
                    actual = sha256sum(part)
                    if (sha256 and actual != sha256) or (sha256_prefix and not actual.startswith(sha256_prefix)):
                        raise OSError(f"checksum mismatch: expected {sha256 or sha256_prefix + '...'}, got {actual}")
                if checked and md5:
                    actual = md5sum(part)
                    if actual != md5:
                        raise OSError(f"md5 mismatch: expected {md5}, got {actual} (a different or damaged file)")
                os.replace(part, dest)
                return dest
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
                part.unlink(missing_ok=True)
                reason = getattr(exc, "reason", None) or exc
                failures.append(f"  - {source} (try {attempt}): {reason}")
                if isinstance(exc, FileNotFoundError) or isinstance(reason, OSError) and "Name or service" in str(reason):
                    break  # no point retrying a missing mirror file or an unknown host
            finally:
                part.unlink(missing_ok=True)  # never left behind, even on Ctrl-C
    tried = "\n".join(failures)
    raise DownloadError(
        f"Could not download the {what}.\n"
        f"Expected file: {dest}\n"
        f"Tried:\n{tried}\n"
        "What to do: check your internet connection and run again; or copy the file to the path "
        "above by hand; or ask your instructor for a classroom mirror and set TLKIT_MIRROR to its "
        "directory or URL. Run `tlkit doctor` to see what is available offline."
    )
