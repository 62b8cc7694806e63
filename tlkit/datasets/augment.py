"""Augmentation: presets, their settings, and the training and evaluation transforms.

``PRESET_SETTINGS`` holds the numbers of every preset, once; ``augmentation(augment, size)``
turns one into a torchvision pipeline, ``train_transform(model, augment)`` adds the
backbone's own size and normalisation, ``eval_transform(model)`` is the backbone's own
preprocessing. The batched GPU version (``tlkit/_batches.py``) and the augmentation widget
read the same settings.

Example:
    >>> augmentation("light", size=64)(Image.new("RGB", (100, 80))).size
    (64, 64)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ..backbones import backbone_info, preprocess
from ..errors import ArgumentError

__all__ = ["PRESETS", "PRESET_SETTINGS", "Augmentation", "augmentation", "train_transform", "eval_transform"]

PRESET_SETTINGS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"crop_scale": 0.7, "hflip": 0.5},
    "standard": {"crop_scale": 0.35, "hflip": 0.5, "rotation": 10, "brightness": 0.2, "contrast": 0.2,
                 "saturation": 0.2, "hue": 0.02},
    "strong": {"crop_scale": 0.1, "hflip": 0.5, "rotation": 25, "brightness": 0.4, "contrast": 0.4,
               "saturation": 0.4, "hue": 0.1, "grayscale": 0.1},
}
"""The numbers behind each preset, the one place they are written: ``augmentation`` here, the
batched GPU version in ``tlkit/_batches.py``, the augmentation widget and the descriptions in
``PRESETS`` all read them.
``crop_scale``: smallest random-crop area (1.0: no random crop); ``hflip``/``grayscale``:
probabilities; ``rotation``: degrees either way; the rest are ``ColorJitter`` strengths."""


def _describe(settings: dict[str, float]) -> str:
    """A preset's settings in words, e.g. "random crop (35-100%), flip, rotation up to 10 degrees"."""
    if not settings:
        return "resize and centre crop only: what evaluation sees"
    parts = []
    if settings.get("crop_scale", 1.0) < 1.0:
        parts.append(f"random crop ({settings['crop_scale']:.0%}-100% of the image)")
    if settings.get("hflip"):
        parts.append("horizontal flip" + ("" if settings["hflip"] == 0.5 else f" ({settings['hflip']:.0%})"))
    if settings.get("rotation"):
        parts.append(f"rotation up to {settings['rotation']:g} degrees")
    jitter = [f"{k} {settings[k]:g}" for k in ("brightness", "contrast", "saturation", "hue") if settings.get(k)]
    if jitter:
        parts.append("colour jitter (" + ", ".join(jitter) + ")")
    if settings.get("grayscale"):
        parts.append(f"{settings['grayscale']:.0%} greyscale")
    return ", ".join(parts)


PRESETS: dict[str, str] = {name: _describe(settings) for name, settings in PRESET_SETTINGS.items()}
"""Augmentation presets and what each does (written from ``PRESET_SETTINGS``)."""


class Augmentation(v2.Compose):
    """A ``v2.Compose`` that draws fresh random parameters for every image of a batch.

    Plain v2 transforms apply the same crop and flip to a whole ``(B, C, H, W)`` batch; this
    one loops over the batch, so a batch on the GPU is augmented like images one by one.
    """

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
            return torch.stack([super(Augmentation, self).forward(x) for x in inputs[0].as_subclass(torch.Tensor)])
        return super().forward(*inputs)


def augmentation(augment: str | Callable | None = "standard", size: int = 224, *, resize: int | None = None,
                 interpolation: str = "bilinear") -> v2.Compose:
    """Geometry and colour augmentation, producing ``size`` x ``size`` images (no normalisation).

    Works on PIL images and on uint8 tensors, single ``(C, H, W)`` or batches ``(B, C, H, W)``
    (each image of a batch gets its own random parameters). RandomErasing is deliberately not
    in any preset: it works on tensors only and belongs after normalisation (erasing to 0 then
    means "mean colour"); append ``v2.RandomErasing()`` to ``train_transform(...)`` to use it.

    Args:
        augment: ``"none"``, ``"light"``, ``"standard"`` or ``"strong"`` (see ``PRESETS``); None means
            ``"none"``; a callable is returned unchanged.
        size: output side in pixels.
        resize: shorter side before the centre crop of ``"none"`` (default ``size * 8 / 7``, as 256/224).
        interpolation: ``"bilinear"``, ``"bicubic"``, ...

    >>> augmentation("light", size=64)(Image.new("RGB", (100, 80))).size
    (64, 64)
    """
    if augment is None:
        augment = "none"
    if callable(augment):
        return augment
    if not isinstance(augment, str) or augment not in PRESETS:
        raise ArgumentError(f"Unknown augmentation preset {augment!r}. Presets: "
                            + "; ".join(f"{k!r} ({v})" for k, v in PRESETS.items()) + "; or pass a callable.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArgumentError(f"size must be a positive integer (pixels), got {size!r}.")
    mode = InterpolationMode(interpolation)
    p = PRESET_SETTINGS[augment]
    if p.get("crop_scale", 1.0) < 1.0:
        ops = [v2.RandomResizedCrop(size, scale=(p["crop_scale"], 1.0), interpolation=mode, antialias=True)]
    else:
        ops = [v2.Resize(resize or round(size * 8 / 7), interpolation=mode, antialias=True), v2.CenterCrop(size)]
    if p.get("hflip"):
        ops.append(v2.RandomHorizontalFlip(p=p["hflip"]))
    if p.get("rotation"):
        ops.append(v2.RandomRotation(p["rotation"], interpolation=InterpolationMode.BILINEAR))
    jitter = {k: p[k] for k in ("brightness", "contrast", "saturation", "hue") if p.get(k)}
    if jitter:
        ops.append(v2.ColorJitter(**jitter))
    if p.get("grayscale"):
        ops.append(v2.RandomGrayscale(p=p["grayscale"]))
    return Augmentation(ops)


def train_transform(model: Any = "efficientnet_lite0", augment: str | Callable | None = "standard"
                    ) -> v2.Compose:
    """Training transform: the augmentation at the backbone's input size, then its own normalisation.

    ``augment`` is a preset name or a callable (applied to the image, then the result is
    centre-cropped to the backbone's input size if it is larger, so a custom callable never
    hands the model images of the wrong size).

    >>> train_transform("efficientnet_lite0").transforms[-1]
    Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=False)
    """
    pre = backbone_info(model).preprocessing
    aug = augmentation(augment, pre.size, resize=pre.resize, interpolation=pre.interpolation)
    if isinstance(aug, v2.Compose):
        ops = aug.transforms
    else:  # a custom callable: bring its output to the backbone's size, as the presets do
        ops = [aug, v2.Resize(pre.size, interpolation=InterpolationMode(pre.interpolation), antialias=True),
               v2.CenterCrop(pre.size)]
    return Augmentation([v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])


def eval_transform(model: Any = "efficientnet_lite0") -> v2.Compose:
    """Evaluation transform: exactly ``tlkit.preprocess(model)`` (resize, centre crop, normalise)."""
    return preprocess(model)
