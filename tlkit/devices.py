"""Which device tlkit trains on, and why.

By default: the CUDA GPU if there is one, else Apple's GPU (MPS), else the CPU.
``TLKIT_DEVICE`` overrides the choice: ``cpu``, ``cuda``, ``cuda:<index>``, ``mps`` or ``auto``.
A device this machine does not have (``cuda`` on a CPU-only machine) falls back to the
automatic choice with a warning; a value that names no device (``gpu``) is an error that
lists the valid ones.

Example:
    >>> from tlkit.devices import default_device
    >>> device, reason = default_device()
"""
from __future__ import annotations

import os
import re
import warnings

import torch

from .errors import ArgumentError

__all__ = ["default_device", "device", "VALID_DEVICES"]

VALID_DEVICES = ("auto", "cpu", "cuda", "cuda:<index>", "mps")
"""What ``TLKIT_DEVICE`` accepts."""


def _automatic() -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return torch.device("cuda"), f"CUDA GPU found: {name}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), "Apple GPU (MPS) found"
    why = "no CUDA GPU"
    if torch.version.cuda is None:
        why += " (this torch is a CPU build)"
    return torch.device("cpu"), f"{why}; using the CPU with {torch.get_num_threads()} threads"


def _unavailable(forced: str) -> str | None:
    """Why the device ``forced`` cannot be used here, or None if it can."""
    if forced.startswith("cuda"):
        if not torch.cuda.is_available():
            build = " (this torch is a CPU build)" if torch.version.cuda is None else ""
            return f"no CUDA GPU is available{build}"
        index = int(forced.split(":")[1]) if ":" in forced else 0
        if index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
    if forced == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        return "no Apple GPU (MPS) is available"
    return None


def default_device() -> tuple[torch.device, str]:
    """The device tlkit will use, with the reason in plain words.

    Raises:
        ArgumentError: ``TLKIT_DEVICE`` names no device (the message lists the valid values).
    """
    forced = os.environ.get("TLKIT_DEVICE", "").strip().lower()
    if not forced or forced == "auto":
        return _automatic()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", forced):
        raise ArgumentError(f"TLKIT_DEVICE={os.environ['TLKIT_DEVICE']!r} names no device. Valid values: "
                            f"{', '.join(VALID_DEVICES)}. Unset it to let tlkit choose.")
    why_not = _unavailable(forced)
    if why_not is None:
        return torch.device(forced), f"TLKIT_DEVICE={forced} is set"
    chosen, why = _automatic()
    message = f"TLKIT_DEVICE={forced} is set, but {why_not}: using {chosen} instead ({why})."
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return chosen, message


def device() -> torch.device:
    """Just the device of :func:`default_device`."""
    return default_device()[0]
