"""Every error tlkit raises on purpose, under one base class.

A course (or a grader) can catch them all with ``except tlkit.TlkitError``; each one also
derives from the built-in exception a Python programmer would expect (``ValueError`` for
bad input, ``RuntimeError`` for a download that failed, ``AssertionError`` for a failed
exercise check, which is what nbgrader counts as a failed test). Every message says
which file or argument is wrong, what was expected, and what to do.

Example:
    >>> import tlkit
    >>> try:
    ...     tlkit.load_backbone("no_such_net")
    ... except tlkit.TlkitError as e:
    ...     print(type(e).__name__)
    BackboneError
"""
from __future__ import annotations

__all__ = [
    "TlkitError", "ArgumentError", "BackboneError", "WeightsUnavailableError", "DatasetError",
    "ArchiveError", "DownloadError", "CheckFailed", "ClaimNotShown",
]


class TlkitError(Exception):
    """Base class of every error tlkit raises on purpose."""


class ArgumentError(TlkitError, ValueError, TypeError):
    """An argument has the wrong type or value (``num_classes=True``, ``image_size=64.5``, ``lr=-1``)."""


class BackboneError(TlkitError, ValueError):
    """A backbone name is unknown, or a model's stages or head cannot be found."""


class WeightsUnavailableError(TlkitError, RuntimeError):
    """Pretrained weights could not be found or downloaded."""


class DatasetError(TlkitError, ValueError):
    """Images on disk are not laid out or not readable as expected; the message says what to do."""


class ArchiveError(DatasetError):
    """A downloaded archive cannot be unpacked: corrupt, truncated, or not an archive at all."""


class DownloadError(TlkitError, RuntimeError):
    """A file could not be obtained from the mirror or the canonical URL."""


class CheckFailed(TlkitError, AssertionError):
    """An exercise check failed; the message says what is wrong (nbgrader counts it as a failed test)."""


class ClaimNotShown(TlkitError, AssertionError):
    """A lesson's experiment did not show what the lesson's text says it shows."""
