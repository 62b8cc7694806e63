"""Save a fine-tuned model and load it back, with its preprocessing and class names.

PyTorch offers two ways, and both work on a model from :func:`tlkit.load_backbone`:

* ``torch.save(model.state_dict(), path)``: the weights only; to use them, rebuild the same
  architecture (``tlkit.load_backbone(name, pretrained=False, num_classes=n)``) and call
  ``model.load_state_dict(torch.load(path))``;
* ``torch.save(model, path)``: the whole object, loaded with ``torch.load(path, weights_only=False)``,
  which runs code from the file: only for files you made yourself.

:func:`save_model` and :func:`load_model` do the first, and keep what the weights need around
them: the backbone's name, the input preprocessing (``image_size=`` included) and, if you
give them, the class names. The file holds only tensors, strings and numbers, so loading it
never runs code from it (``weights_only=True``).

Example:
    >>> import tlkit
    >>> model = tlkit.load_backbone("efficientnet_lite0", num_classes=2, image_size=64)
    >>> tlkit.save_model(model, "/tmp/bees.pt", classes=["ants", "bees"])  # doctest: +SKIP
    >>> again = tlkit.load_model("/tmp/bees.pt")                          # doctest: +SKIP
    >>> again.tlkit_classes, tlkit.preprocess(again).transforms[2].size    # doctest: +SKIP
    (('ants', 'bees'), [64])
"""
from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .backbones import Preprocessing, backbone_info, load_backbone
from .errors import ArgumentError
from .stages import head_path

__all__ = ["save_model", "load_model"]

FORMAT = "tlkit-model-1"


def save_model(model: nn.Module, path: str | os.PathLike, *, classes: Sequence[str] | None = None) -> Path:
    """Write ``model``'s weights, backbone name, preprocessing and class names to ``path``.

    ``classes`` defaults to ``model.tlkit_classes`` (set by :func:`load_model`). The file is
    written beside its final name and then renamed, so an interrupted save never leaves a
    half-written model behind. Returns the path.
    """
    info = backbone_info(model)  # a clear error for a model tlkit did not make
    head = model.get_submodule(head_path(model))
    num_classes = getattr(head, "out_features", None) or head.out_channels
    classes = getattr(model, "tlkit_classes", None) if classes is None else classes
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise ArgumentError(f"classes must be a list of class names (strings); got {classes!r}.")
        if len(classes) != num_classes:
            raise ArgumentError(f"classes has {len(classes)} names but the model's head has {num_classes} outputs.")
    path = Path(path)
    payload = {
        "format": FORMAT,
        "backbone": info.name,
        "preprocessing": asdict(info.preprocessing),
        "num_classes": int(num_classes),
        "classes": list(classes) if classes is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    part = path.with_name(path.name + ".part")
    try:
        torch.save(payload, part)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return path


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """A model saved by :func:`save_model`, in eval mode, on ``device``.

    The model has its preprocessing record (``tlkit.preprocess(model)`` works as before saving)
    and its class names in ``model.tlkit_classes`` (``None`` if none were saved). Freezing is
    not saved: call :func:`tlkit.freeze` again to continue fine-tuning.
    """
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"{path}: no such file. save_model(model, path) writes one.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles of whole models, corrupt files, ...
        raise ArgumentError(f"{path} is not a file written by tlkit.save_model ({type(exc).__name__}: {exc}). "
                            "A whole model saved with torch.save(model, path) loads with "
                            "torch.load(path, weights_only=False), for files you trust.") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArgumentError(f"{path} is not a file written by tlkit.save_model (a plain state_dict? load it into "
                            "tlkit.load_backbone(name, pretrained=False, num_classes=n) with load_state_dict).")
    model = load_backbone(payload["backbone"], pretrained=False, num_classes=payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    saved = dict(payload["preprocessing"], mean=tuple(payload["preprocessing"]["mean"]),
                 std=tuple(payload["preprocessing"]["std"]))
    model.tlkit_backbone = replace(backbone_info(payload["backbone"]), preprocessing=Preprocessing(**saved))
    model.tlkit_pretrained = True
    model.tlkit_classes = tuple(payload["classes"]) if payload["classes"] is not None else None
    return model.to(device).eval()
