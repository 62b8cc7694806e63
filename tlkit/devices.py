"""Which device tlkit trains on, and why.

Example:
    >>> from tlkit.devices import default_device
    >>> device, reason = default_device()
"""
from __future__ import annotations

import os

import torch

__all__ = ["default_device", "device"]


def default_device() -> tuple[torch.device, str]:
    """The device tlkit will use, with the reason in plain words.

    ``TLKIT_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) overrides the choice.
    """
    forced = os.environ.get("TLKIT_DEVICE")
    if forced:
        return torch.device(forced), f"TLKIT_DEVICE={forced} is set"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return torch.device("cuda"), f"CUDA GPU found: {name}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), "Apple GPU (MPS) found"
    why = "no CUDA GPU"
    if torch.version.cuda is None:
        why += " (this torch is a CPU build)"
    return torch.device("cpu"), f"{why}; using the CPU with {torch.get_num_threads()} threads"


def device() -> torch.device:
    """Just the device of :func:`default_device`."""
    return default_device()[0]
