"""Batches of images as tensors: decode once, augment and normalise on the device.

``fit``, ``evaluate``, ``predict``, ``lr_find`` and ``extract_features`` all read images the
same way:

1. Every image is resized (shorter side to the backbone's ``preprocessing.resize``) and
   centre-cropped to a ``resize`` x ``resize`` square of uint8 pixels. For a small dataset this
   happens once: the squares stay in memory (on the GPU when there is one), keyed by the
   dataset's ``key``, so a second ``fit`` in the same notebook decodes nothing. A dataset too
   big for that (``FAST_PATH_MAX_BYTES``) is decoded by a ``DataLoader`` every epoch instead.
2. Training batches are augmented all at once on the device: one random affine warp per
   image (crop, aspect, flip, rotation: ``grid_sample``) and batched colour jitter.
   Evaluation batches take the centre ``size`` x ``size`` crop of the square, which is exactly
   what ``tlkit.preprocess(model)`` computes (resize, then centre crop).
3. Pixels are scaled to [0, 1] and normalised with the backbone's own mean and std.

Example:
    >>> batches = Batches(ds, tlkit.backbone_info(model).preprocessing, batch_size=32,
    ...                   device=torch.device("cpu"), train=True, augment="light")  # doctest: +SKIP
    >>> for x, y in batches: ...  # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from ._cache import LRUCache, content_key
from ._progress import Progress
from .backbones import Preprocessing
from .datasets import PRESET_SETTINGS
from .errors import ArgumentError, DatasetError

__all__ = ["Batches", "BatchAugment", "AUGMENTS", "cached_images", "clear_image_cache", "gives_tensors",
           "FAST_PATH_MAX_BYTES", "IMAGE_CACHE"]

FAST_PATH_MAX_BYTES = 2 * 1024**3
"""Datasets whose decoded squares would take more bytes than this go through a DataLoader."""

CACHE_MAX_BYTES = 4 * 1024**3
"""The memory cache of decoded datasets drops the least recently used ones beyond this."""

IMAGE_CACHE = LRUCache(max_items=16, max_bytes=CACHE_MAX_BYTES, size=lambda t: t.numel() * t.element_size())
"""Decoded datasets, by content, resize and device (least recently used dropped first; thread-safe)."""


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

def square_transform(pre: Preprocessing) -> v2.Compose:
    """PIL image -> uint8 tensor (3, resize, resize): the backbone's resize, then a centre square."""
    mode = InterpolationMode(pre.interpolation)
    return v2.Compose([v2.ToImage(), v2.Resize(pre.resize, interpolation=mode, antialias=True),
                       v2.CenterCrop(pre.resize)])


def gives_tensors(dataset: Any) -> bool:
    """True when the dataset's items are already float tensors (it carries its own transform).

    tlkit datasets (with ``load_image``) are always read as raw images; any other dataset is
    asked for its first item.
    """
    if hasattr(dataset, "load_image"):
        return False
    x = dataset[0][0]
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def load_image(ds: Any, i: int):
    """Image ``i`` without the dataset's own transform (``ds.load_image``, else ``ds[i][0]``)."""
    return ds.load_image(i) if hasattr(ds, "load_image") else ds[i][0]


class _Decoded(Dataset):
    """``(uint8 square, label)`` pairs, for the DataLoader path."""

    def __init__(self, ds: Any, transform: Callable):
        self.ds, self.transform, self.targets = ds, transform, list(ds.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.ds, i)).as_subclass(torch.Tensor), self.targets[i]


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode(ds: Any, pre: Preprocessing, progress: bool = False) -> torch.Tensor:
    """All images of ``ds`` as one uint8 tensor (N, 3, resize, resize), decoded with a few threads."""
    transform = square_transform(pre)
    out = torch.empty((len(ds), 3, pre.resize, pre.resize), dtype=torch.uint8)
    bar = Progress(len(ds), desc="decoding images (once)", enabled=progress, unit="img")

    def work(i: int) -> None:
        out[i] = transform(load_image(ds, i))
        bar.update()

    try:
        with ThreadPoolExecutor(_threads()) as pool:
            list(pool.map(work, range(len(ds))))
    finally:
        bar.close()
    return out


CGROUP_MEMORY_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
"""(limit, usage) files of a container's memory limit: cgroup v2, then v1."""


def _available_memory() -> int | None:
    """Bytes of RAM still available, within a container's limit where there is one (Linux only)."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file, usage_file in CGROUP_MEMORY_FILES:
        try:
            with open(limit_file) as f:
                limit = int(f.read().strip())
            with open(usage_file) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):  # no such cgroup, or "max"
            continue
        available = min(available, max(0, limit - used))
    return available


def _fast_path_limit(device: torch.device) -> int:
    """Most bytes of decoded images to keep: a quarter of the free (GPU or container) memory, at most 2 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(FAST_PATH_MAX_BYTES, free // 4)
    available = _available_memory()
    return FAST_PATH_MAX_BYTES if available is None else min(FAST_PATH_MAX_BYTES, available // 4)


def cached_images(ds: Any, pre: Preprocessing, device: torch.device, progress: bool = False
                  ) -> torch.Tensor | None:
    """The decoded squares of ``ds`` on ``device``, from the memory cache when possible.

    Returns None when the dataset is too big to keep (the caller then uses a DataLoader).
    """
    nbytes = len(ds) * 3 * pre.resize * pre.resize
    if nbytes > _fast_path_limit(device):
        return None
    ds_key = content_key(ds)
    key = (ds_key, pre.resize, pre.interpolation, str(device))
    if ds_key is not None:
        found = IMAGE_CACHE.get(key)
        if found is not None:
            return found
    start = time.perf_counter()
    images = decode(ds, pre, progress=progress and len(ds) >= 500).to(device)
    if progress and len(ds) >= 500:
        print(f"decoded {len(ds)} images in {time.perf_counter() - start:.1f}s; kept on {device} "
              f"({nbytes / 2**20:.0f} MB) for the next epochs and fits", flush=True)
    if ds_key is not None:
        IMAGE_CACHE.put(key, images)
    return images


def clear_image_cache() -> None:
    """Forget every decoded dataset kept in memory."""
    IMAGE_CACHE.clear()


# ---------------------------------------------------------------------------
# Batched augmentation
# ---------------------------------------------------------------------------

def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


@dataclass(frozen=True)
class BatchAugment:
    """Random augmentation of a whole batch at once, with its own random parameters per image.

    One affine warp per image (``F.affine_grid`` + ``F.grid_sample``) does the random crop
    (``scale``: fraction of the square's area; ``ratio``: aspect), the horizontal flip and the
    rotation (``degrees``); then brightness, contrast, saturation and hue jitter and random
    greyscale work on the whole batch. ``scale=None`` means the centre crop only.
    """

    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    degrees: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0

    def __call__(self, x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        """``x``: float (B, 3, S, S) in [0, 1] -> float (B, 3, size, size) in [0, 1]."""
        b, device = x.shape[0], x.device
        u = torch.rand(b, 6, generator=generator).to(device)  # always drawn: same stream whatever is on
        c = torch.rand(b, 5, generator=generator).to(device)
        if self.scale is None:
            x = center_crop(x, size)
        else:
            lo, hi = self.scale
            area = lo + (hi - lo) * u[:, 0]
            log_r0, log_r1 = math.log(self.ratio[0]), math.log(self.ratio[1])
            ratio = torch.exp(log_r0 + (log_r1 - log_r0) * u[:, 1])
            w = torch.sqrt(area * ratio).clamp(max=1.0)  # half-width, in units of the half-side
            h = torch.sqrt(area / ratio).clamp(max=1.0)
            cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
            flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.flip else torch.ones_like(w)
            angle = torch.deg2rad(self.degrees * (2 * u[:, 5] - 1))
            cos, sin = torch.cos(angle), torch.sin(angle)
            # input point = centre + rotation @ diag(w * flip, h) @ output point
            theta = torch.stack([torch.stack([w * flip * cos, -h * sin, cx], 1),
                                 torch.stack([w * flip * sin, h * cos, cy], 1)], 1)
            grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.brightness:
            x = (x * (1 + self.brightness * (2 * c[:, 0] - 1)).view(-1, 1, 1, 1)).clamp(0, 1)
        if self.contrast:
            mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * (1 + self.contrast * (2 * c[:, 1] - 1)).view(-1, 1, 1, 1) + mean).clamp(0, 1)
        if self.saturation:
            grey = _grey(x)
            x = ((x - grey) * (1 + self.saturation * (2 * c[:, 2] - 1)).view(-1, 1, 1, 1) + grey).clamp(0, 1)
        if self.hue:
            # rotate colours about the grey axis (1, 1, 1) by up to hue * 360 degrees
            a = 2 * math.pi * self.hue * (2 * c[:, 3] - 1)
            k = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=device) / math.sqrt(3)
            eye, third = torch.eye(3, device=device), torch.full((3, 3), 1 / 3, device=device)
            cos, sin = torch.cos(a).view(-1, 1, 1), torch.sin(a).view(-1, 1, 1)
            m = cos * eye + sin * k + (1 - cos) * third
            x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
        if self.grayscale:
            x = torch.where((c[:, 4] < self.grayscale).view(-1, 1, 1, 1), _grey(x).expand_as(x), x)
        return x


def _batch_augment(p: dict) -> BatchAugment:
    """A ``BatchAugment`` from one entry of ``tlkit.datasets.PRESET_SETTINGS``."""
    crop = p.get("crop_scale", 1.0)
    return BatchAugment(scale=(crop, 1.0) if crop < 1.0 else None, flip=p.get("hflip", 0.0) > 0,
                        degrees=p.get("rotation", 0.0), brightness=p.get("brightness", 0.0),
                        contrast=p.get("contrast", 0.0), saturation=p.get("saturation", 0.0),
                        hue=p.get("hue", 0.0), grayscale=p.get("grayscale", 0.0))


AUGMENTS = {name: _batch_augment(p) for name, p in PRESET_SETTINGS.items()}
"""The presets of ``tlkit.datasets.augmentation`` (same ranges), done on batches on the device."""


def resolve_augment(augment: str | Callable | None) -> BatchAugment | Callable:
    if augment is None:
        return AUGMENTS["none"]
    if isinstance(augment, str):
        if augment not in AUGMENTS:
            raise ArgumentError(f"Unknown augment={augment!r}. Use one of {', '.join(map(repr, AUGMENTS))}, None, "
                                "or a callable that takes a uint8 batch (B, 3, H, W) and returns a batch.")
        return AUGMENTS[augment]
    if callable(augment):
        return augment
    raise ArgumentError(f"augment must be a preset name, None or a callable, not {type(augment).__name__}")


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of a batch, with ``v2.CenterCrop``'s rounding."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------

class Batches:
    """Normalised ``(x, y)`` batches of a dataset on ``device``, ready for the model.

    ``train=True``: shuffled (seeded), augmented, and without the ragged last batch (every
    batch has the same shape). ``train=False``: in order, centre crop, every image.

    A dataset whose items are already float tensors (its own transform, e.g.
    ``ImageFolder(root, transform=tlkit.preprocess(model))``) is used as it is, for
    evaluation only (``pre`` may then be None); training needs raw images.
    """

    def __init__(self, ds: Any, pre: Preprocessing | None, *, batch_size: int, device: torch.device,
                 train: bool = False, augment: str | Callable | None = None, seed: int = 0,
                 progress: bool = False, num_workers: int | None = None):
        if len(ds) == 0:
            raise DatasetError("the dataset is empty: there are no images to read")
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be at least 1, got {batch_size}")
        self.ds, self.pre, self.device, self.train = ds, pre, device, train
        self.n = len(ds)
        self.tensors = gives_tensors(ds)
        if self.tensors and train:
            raise DatasetError("this dataset gives float tensors (its own transform already preprocessed them); "
                               "training needs raw images: pass it with transform=None.")
        self.batch_size = min(batch_size, self.n) if train else batch_size
        self.augment = resolve_augment(augment) if train else None
        self.targets = torch.as_tensor(list(ds.targets), dtype=torch.long)
        self.images = None if self.tensors else cached_images(ds, pre, device, progress=progress)
        self.num_workers = _threads() if num_workers is None else num_workers
        self._order = torch.Generator().manual_seed(seed)
        self._aug = torch.Generator().manual_seed(seed + 1)
        if pre is not None:
            self.mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
            self.std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)

    @property
    def fast(self) -> bool:
        """True when the decoded images are kept in memory (no decoding per epoch)."""
        return self.images is not None

    def __len__(self) -> int:
        return self.n // self.batch_size if self.train else math.ceil(self.n / self.batch_size)

    def _index_batches(self) -> list[torch.Tensor]:
        if self.train:
            order = torch.randperm(self.n, generator=self._order)
            return list(order[: len(self) * self.batch_size].view(len(self), self.batch_size))
        return list(torch.arange(self.n).split(self.batch_size))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._index_batches()
        if self.images is not None:
            targets = self.targets.to(self.device)
            order = torch.cat(batches).to(self.device)
            for chunk in order.split([len(b) for b in batches]):
                yield self.prepare(self.images[chunk]), targets[chunk]
            return
        if self.tensors:  # the dataset's own tensors, as they are
            loader = DataLoader(self.ds, batch_sampler=[b.tolist() for b in batches], num_workers=0)
            for x, y in loader:
                x = x.to(self.device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
                yield x, torch.as_tensor(y).to(self.device, non_blocking=True)
            return
        loader = DataLoader(_Decoded(self.ds, square_transform(self.pre)), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield self.prepare(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 squares (B, 3, R, R) on the device -> normalised float batch for the model.

        A callable ``augment`` gets the uint8 squares; what it returns is brought to the model's
        input size: centre-cropped when it kept the square's size (as evaluation does),
        resized otherwise.
        """
        size = self.pre.size
        if self.augment is None:
            x = center_crop(x, size).float().div_(255)
        elif isinstance(self.augment, BatchAugment):
            x = self.augment(x.float().div_(255), size, self._aug)
        else:
            x = self.augment(x)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
            if tuple(x.shape[-2:]) != (size, size):
                if tuple(x.shape[-2:]) == (self.pre.resize, self.pre.resize):
                    x = center_crop(x, size)
                else:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)
