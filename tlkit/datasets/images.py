"""``ImageDataset``: the one dataset class tlkit hands out, and the places its images come from.

A plain ``torch.utils.data.Dataset`` of ``(image, label)`` pairs with ``classes``, ``targets``
and a ``key`` that names its exact content (used to cache features). Its images are read
lazily from files, held in memory (digits, MedMNIST), or taken from a torchvision dataset.

Example:
    >>> ds = ImageDataset.from_images([Image.new("L", (8, 8))] * 2, [0, 1], ["a", "b"])
    >>> len(ds), ds.classes
    (2, ['a', 'b'])
"""
from __future__ import annotations

import copy
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ArgumentError, DatasetError
from .folders import open_rgb, to_rgb

__all__ = ["ImageDataset"]


class _FileImages:
    """Images read lazily from files."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            return open_rgb(path)
        except Exception as exc:
            raise DatasetError(f"Cannot read image {path}: {exc}. Replace or remove this file and load again.") from exc


class _MemoryImages:
    """Images held in memory as uint8 arrays (H x W grey or H x W x 3), optionally upscaled.

    ``arrays`` is a sequence of arrays or one ``(N, H, W[, 3])`` array (kept as it is, not copied).
    """

    def __init__(self, arrays: Sequence[Any], size: int | None = None):
        import numpy as np

        if isinstance(arrays, np.ndarray) and arrays.dtype == np.uint8 and arrays.ndim in (3, 4):
            self.arrays = arrays
        else:
            self.arrays = [np.asarray(to_rgb(a) if isinstance(a, Image.Image) else a, dtype=np.uint8)
                           for a in arrays]
        self.size = size

    def __call__(self, i: int) -> Image.Image:
        img = Image.fromarray(self.arrays[i])
        if self.size is not None:
            img = img.resize((self.size, self.size), Image.Resampling.NEAREST)
        return img.convert("RGB")

    def digest(self) -> str:
        import numpy as np

        h = hashlib.sha1(str(self.size).encode())
        if isinstance(self.arrays, np.ndarray):
            h.update(str(self.arrays.shape).encode())
            h.update(np.ascontiguousarray(self.arrays).data)
        else:
            for a in self.arrays:
                h.update(a.tobytes())
        return h.hexdigest()


class _TorchvisionImages:
    """Images from a torchvision dataset (built with no transform, so it returns PIL images)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __call__(self, i: int) -> Image.Image:
        return self.dataset[i][0].convert("RGB")


class ImageDataset(Dataset):
    """A labelled image dataset: ``ds[i]`` is ``(transform(image), label)``.

    Attributes:
        name: dataset name (registry name or folder name).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        classes: class names; label ``k`` is ``classes[k]``.
        targets: the label of every item, in order.
        transform: applied to the PIL image in ``__getitem__`` (None: the PIL image itself).
        root: the folder the images are read from (None for in-memory data).
        paths: the image file of every item (None for in-memory or torchvision data).
        key: names the exact content (dataset, split, files, subset indices); used to cache features.

    >>> ds = ImageDataset.from_images([Image.new("L", (8, 8))] * 2, [0, 1], ["a", "b"])
    >>> ds[1][1], ds.load_image(0).mode
    (1, 'RGB')
    """

    def __init__(self, name: str, split: str, classes: Sequence[str], targets: Sequence[int],
                 images: Callable[[int], Image.Image], *, content: str, transform: Callable | None = None,
                 root: Path | None = None, paths: Sequence[Path] | None = None,
                 indices: Sequence[int] | None = None):
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.transform = transform
        self.root = root
        self._images = images
        self._all_targets = [int(t) for t in targets]
        self._all_paths = list(paths) if paths is not None else None
        self._content = content
        self._indices = list(indices) if indices is not None else None
        self.targets = [self._all_targets[i] for i in self._positions()]

    @classmethod
    def from_images(cls, images: Sequence[Any], targets: Sequence[int], classes: Sequence[str], *,
                    name: str = "images", split: str = "train", size: int | None = None) -> "ImageDataset":
        """A dataset of in-memory images (PIL images or uint8 arrays, grey or RGB)."""
        if len(images) != len(targets):
            raise ArgumentError(f"{len(images)} images but {len(targets)} targets")
        bad = [t for t in targets if not 0 <= int(t) < len(classes)]
        if bad:
            raise ArgumentError(f"targets must be in 0..{len(classes) - 1} (one per class name); got {bad[:5]}")
        source = _MemoryImages(images, size)
        return cls(name, split, classes, targets, source, content=source.digest()[:16])

    @property
    def key(self) -> str:
        """``name/split/content-digest``, plus ``/subset-<digest>`` for a subset."""
        key = f"{self.name}/{self.split}/{self._content}"
        if self._indices is not None:
            key += "/subset-" + hashlib.sha1(",".join(map(str, self._indices)).encode()).hexdigest()[:12]
        return key

    @property
    def paths(self) -> list[Path] | None:
        """The image file of every item, in order (None for in-memory and torchvision data)."""
        if self._all_paths is None:
            return None
        return [self._all_paths[i] for i in self._positions()]

    def _positions(self) -> Sequence[int]:
        return self._indices if self._indices is not None else range(len(self._all_targets))

    def __len__(self) -> int:
        return len(self.targets)

    def _position(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        return self._indices[i] if self._indices is not None else i

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image, without the transform."""
        return self._images(self._position(i))

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        """The same images and labels with another transform (a shallow copy)."""
        new = copy.copy(self)
        new.transform = transform
        return new

    def _subset(self, positions: Sequence[int]) -> "ImageDataset":
        new = copy.copy(self)
        new._indices = [self._position(i) for i in positions]
        new.targets = [self._all_targets[i] for i in new._indices]
        return new

    def counts(self) -> dict[str, int]:
        """Number of images per class, in class order."""
        found = Counter(self.targets)
        return {c: found.get(k, 0) for k, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in list(self.counts().items())[:8])
        more = ", ..." if len(self.classes) > 8 else ""
        lines = [f"ImageDataset {self.name!r} ({self.split}): {len(self)} images, {len(self.classes)} classes",
                 f"  {counts}{more}"]
        if self.root is not None:
            lines.append(f"  from {self.root}")
        if self._indices is not None:
            lines.append("  (a subset)")
        return "\n".join(lines)

    def plot(self, n: int = 8, seed: int = 0, ncols: int = 8):
        """A figure of ``n`` random images with their class names (closed in pyplot: show it by returning it)."""
        import matplotlib.pyplot as plt

        g = torch.Generator().manual_seed(seed)
        picks = torch.randperm(len(self), generator=g)[:n].tolist()
        ncols = min(ncols, len(picks))
        nrows = -(-len(picks) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, picks):
            ax.imshow(self.load_image(i))
            ax.set_title(self.classes[self.targets[i]], fontsize=8)
        fig.suptitle(f"{self.name} ({self.split})", fontsize=10)
        fig.tight_layout()
        plt.close(fig)  # returned, not left open: a notebook shows it once (as the cell's value)
        return fig
