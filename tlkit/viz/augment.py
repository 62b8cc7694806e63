"""One image under several random draws of an augmentation pipeline.

Example:
    >>> import tlkit
    >>> dataset = tlkit.datasets.load("hymenoptera", "train")              # doctest: +SKIP
    >>> fig = tlkit.viz.augmentations(dataset, tlkit.datasets.augmentation("strong"))  # doctest: +SKIP
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms import v2

from ._common import finish, hide_ticks, load_image, new_figure, to_display

__all__ = ["augmentations"]


def _find_normalize(transform):
    """The ``Normalize`` step inside a (possibly nested) Compose, or None."""
    if type(transform).__name__ == "Normalize":
        return transform
    for inner in getattr(transform, "transforms", []) or []:
        found = _find_normalize(inner)
        if found is not None:
            return found
    return None


def _as_image_tensor(out, transform) -> torch.Tensor:
    """Whatever a transform returned, as a 3×H×W float image in [0, 1]."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, Image.Image):
        out = v2.functional.to_image(out.convert("RGB"))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the transform returned {type(out).__name__}; expected a PIL image or an image tensor")
    if out.dtype == torch.uint8:
        return out.float() / 255
    norm = _find_normalize(transform)
    if norm is not None:
        return to_display(out, norm.mean, norm.std)
    return to_display(out)


def augmentations(dataset, augment, n: int = 8, index: int = 0, *, seed: int = 0) -> Figure:
    """The image ``dataset[index]`` as loaded, then under ``n`` random draws of ``augment``.

    Args:
        dataset: an ``ImageDataset`` (its untransformed ``load_image(index)`` is used), a PIL image
            or an image path.
        augment: the augmentation pipeline (``tlkit.datasets.augmentation("standard")``,
            a torchvision transform, any callable), or a preset name for
            ``tlkit.datasets.augmentation``. A pipeline that normalises is shown unnormalised.
        n: number of random draws.
        index: which image of ``dataset``.
        seed: the draws are seeded (the global random state is left as it was).

    ``fig.tlkit_data["images"]`` holds the ``n`` augmented images (3×H×W in [0, 1]).

    >>> from PIL import Image
    >>> from torchvision.transforms import v2
    >>> fig = augmentations(Image.new("RGB", (64, 48)), v2.RandomHorizontalFlip(), n=4)
    >>> len(fig.tlkit_data["images"])
    4
    """
    if isinstance(dataset, (Image.Image, str, Path)):
        original, name = load_image(dataset), ""
    elif hasattr(dataset, "load_image"):
        if not 0 <= index < len(dataset):
            raise IndexError(f"index {index} is out of range for a dataset of {len(dataset)} images")
        original = dataset.load_image(index)
        classes, targets = getattr(dataset, "classes", None), getattr(dataset, "targets", None)
        name = f" ({classes[targets[index]]})" if classes is not None and targets is not None else ""
    else:
        raise TypeError(f"expected an ImageDataset (with load_image), a PIL image or a path, "
                        f"got {type(dataset).__name__}")
    what = "the augmentation"
    if isinstance(augment, str):
        from .. import datasets

        what = f"the {augment!r} augmentation"
        augment = datasets.augmentation(augment)
    if not callable(augment):
        raise TypeError(f"augment must be a preset name or a callable (a torchvision transform), "
                        f"got {type(augment).__name__}")

    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            images = [_as_image_tensor(augment(original), augment) for _ in range(n)]
        finally:
            random.setstate(python_state)

    ncols = math.ceil(math.sqrt(n + 1))
    nrows = math.ceil((n + 1) / ncols)
    fig = new_figure(2.6 * ncols, 2.6 * nrows + 0.5)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    tiles = [(_as_image_tensor(original, None), "original")]
    tiles += [(img, f"draw {i + 1}") for i, img in enumerate(images)]
    for ax, (img, title) in zip(axes, tiles):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(f"{title} ({img.shape[2]}×{img.shape[1]})", fontsize=9)
        hide_ticks(ax)
    for ax in axes[len(tiles):]:
        ax.axis("off")
    where = f"Image {index}{name}" if hasattr(dataset, "load_image") else "The image"
    fig.suptitle(f"{where} under {n} random draws of {what} (seed {seed})")
    return finish(fig, images=images, original=tiles[0][0])
