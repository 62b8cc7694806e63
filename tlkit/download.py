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

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import platformdirs
from .errors import DownloadError

__all__ = ["DownloadError", "fetch", "cache_dir", "mirror", "sha256sum"]

CHUNK = 1 << 20




def cache_dir(kind: str = "data") -> Path:
    """Where tlkit keeps downloaded files.

    ``TLKIT_DATA`` overrides the location for datasets, ``TLKIT_CACHE`` for everything
    else (features, weights of timm models); both default to the user's cache directory.

    >>> cache_dir("data").name  # doctest: +SKIP
    'data'
    """
    if kind == "data" and os.environ.get("TLKIT_DATA"):
        path = Path(os.environ["TLKIT_DATA"]).expanduser()
    else:
        root = os.environ.get("TLKIT_CACHE") or platformdirs.user_cache_dir("tlkit")
        path = Path(root).expanduser() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror() -> str | None:
    """The classroom mirror from ``TLKIT_MIRROR`` (a directory or a base URL), or None."""
    value = os.environ.get("TLKIT_MIRROR", "").strip()
    return value or None


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
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
        mirror_name: file name to look up in the mirror (default: the URL's file name).
        what: a few words for messages, e.g. ``"dataset 'flowers'"``.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for source in _mirror_candidates(url, mirror_name) + [url]:
        for attempt in range(1, retries + 1):
            try:
                _copy_or_download(source, part, timeout, progress)
                if sha256 or sha256_prefix:
                    actual = sha256sum(part)
                    if (sha256 and actual != sha256) or (sha256_prefix and not actual.startswith(sha256_prefix)):
                        raise OSError(f"checksum mismatch: expected {sha256 or sha256_prefix + '...'}, got {actual}")
                os.replace(part, dest)
                return dest
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
                part.unlink(missing_ok=True)
                reason = getattr(exc, "reason", None) or exc
                failures.append(f"  - {source} (try {attempt}): {reason}")
                if isinstance(exc, FileNotFoundError) or isinstance(reason, OSError) and "Name or service" in str(reason):
                    break  # no point retrying a missing mirror file or an unknown host
    tried = "\n".join(failures)
    raise DownloadError(
        f"Could not download the {what}.\n"
        f"Expected file: {dest}\n"
        f"Tried:\n{tried}\n"
        "What to do: check your internet connection and run again; or copy the file to the path "
        "above by hand; or ask your instructor for a classroom mirror and set TLKIT_MIRROR to its "
        "directory or URL. Run `tlkit doctor` to see what is available offline."
    )
