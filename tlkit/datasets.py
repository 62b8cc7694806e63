"""Image-classification datasets: a small registry of real ones, your own folders, subsets and augmentation.

Every dataset comes back as an :class:`ImageDataset`: a plain ``torch.utils.data.Dataset``
of ``(image, label)`` pairs with ``classes``, ``targets`` and a ``key`` that names its exact
content (used to cache features).

* Registered datasets (``list_datasets()``, ``info(name)``) are downloaded once into the data
  cache (``TLKIT_DATA``), unpacked atomically and checked (images per class, every image
  decodes). A classroom mirror (``TLKIT_MIRROR``) may hold either the archive or the
  already-unpacked folder; an unpacked folder there is used in place, read-only.
* ``load("path/to/folder")`` reads your own images in ``ImageFolder`` layout.
* ``subset(ds, per_class=10)`` draws a small stratified sample, reproducibly.
* ``augmentation(preset)`` and ``train_transform(model)`` give the training transforms;
  ``eval_transform(model)`` is the backbone's own preprocessing.

Example:
    >>> from tlkit import datasets
    >>> train = datasets.load("hymenoptera", "train")  # doctest: +SKIP
    >>> train.classes  # doctest: +SKIP
    ['ants', 'bees']
    >>> small = datasets.subset(train, per_class=10)  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from ._imagefolder import (
    ArchiveError,
    DatasetError,
    ClassFolders,
    extract,
    fingerprint,
    scan,
    split_by_class,
    split_folders,
    verify_images,
)
from .backbones import backbone_info, preprocess
from .download import DownloadError, cache_dir, fetch, mirror

__all__ = [
    "DatasetInfo", "DATASETS", "ImageDataset", "DatasetError", "PRESETS", "PRESET_SETTINGS",
    "list_datasets", "info", "register", "status", "load", "subset",
    "augmentation", "train_transform", "eval_transform", "Augmentation",
]

SIMILARITY = ("similar", "different")


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInfo:
    """What tlkit knows about one image-classification dataset.

    Attributes:
        name: the name ``load`` accepts.
        title: a human name.
        description: the domain, the size and what the images look like.
        similarity: ``"similar"`` or ``"different"``: how close the images are to ImageNet's
            photos of everyday objects (the advisor uses it to pick a strategy).
        classes: class names, in label order.
        source: ``"archive"`` (downloaded by tlkit), ``"sklearn"`` or ``"torchvision"``.
        url: canonical download address (None when the data ships with a package).
        folder: the top folder inside the archive.
        splits: the split names ``load`` accepts.
        split_dirs: the archive has ``train/`` and ``val/`` folders; otherwise tlkit splits
            every class ``val_fraction`` / rest with a fixed ``seed`` (``"all"`` gives everything).
        num_images: total number of images, where documented; checked after unpacking.
        counts: expected images per split and class, where counted from the real data; checked.
        mirrors: other addresses of the same archive, tried after ``url``.
        torchvision: the ``torchvision.datasets`` class, for ``source="torchvision"``.
        split_map: tlkit split name -> torchvision's split name.
        resources: (url, path in the data cache) of the files torchvision needs; tlkit fetches
            them first (mirror, atomic writes, retries) and torchvision then unpacks them.
        homepage: where the dataset is described.
    """

    name: str
    title: str
    description: str
    similarity: str
    classes: tuple[str, ...]
    source: str = "archive"
    url: str | None = None
    folder: str | None = None
    splits: tuple[str, ...] = ("train", "val", "all")
    split_dirs: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    num_images: int | None = None
    counts: Mapping[str, Mapping[str, int]] | None = field(default=None, repr=False)
    mirrors: tuple[str, ...] = field(default=(), repr=False)
    torchvision: str | None = None
    split_map: Mapping[str, str] = field(default_factory=dict, repr=False)
    resources: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        names = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
        where = f"torchvision.datasets.{self.torchvision}" if self.torchvision else (self.url or self.source)
        size = f"{self.num_images} images, " if self.num_images else ""
        return "\n".join([
            f"DatasetInfo({self.name!r}): {self.title}",
            f"  {size}{self.num_classes} classes ({names}); splits: {', '.join(self.splits)}",
            f"  similarity to ImageNet: {self.similarity}",
            f"  {self.description}",
            f"  source: {where}",
        ])


# No checksums below: none could be computed from the real archives here (no internet), and
# tlkit only pins a checksum it computed itself. Instead every unpacked dataset is checked:
# class folders, images per class where known, and every image must decode.

_HYMENOPTERA = DatasetInfo(
    name="hymenoptera",
    title="Hymenoptera: ants and bees",
    description=("Photos of ants and bees from the PyTorch transfer-learning tutorial (a subset of ImageNet-style "
                 "web photos): 244 training and 153 validation images of varied sizes. ImageNet itself has "
                 "'ant' and 'bee' classes, so this is as close to ImageNet as a dataset gets."),
    similarity="similar",
    classes=("ants", "bees"),
    url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    folder="hymenoptera_data",
    splits=("train", "val"),
    split_dirs=True,
    num_images=397,
    # Counted from the unpacked archive (the .jpg/.jpeg files; train/ants also holds one .gif, not read).
    counts={"train": {"ants": 123, "bees": 121}, "val": {"ants": 70, "bees": 83}},
    homepage="https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html",
)

_FLOWERS = DatasetInfo(
    name="flowers",
    title="Flower photos (TensorFlow)",
    description=("3670 Flickr photos of five kinds of flowers (daisy, dandelion, roses, sunflowers, tulips), "
                 "about 320x240 px, from TensorFlow's tutorials. Everyday photographs of plants, close to "
                 "ImageNet's (which has a 'daisy' class). No official split: tlkit keeps 20% of each class "
                 "for validation, with a fixed seed."),
    similarity="similar",
    classes=("daisy", "dandelion", "roses", "sunflowers", "tulips"),
    url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    folder="flower_photos",
    num_images=3670,
    homepage="https://www.tensorflow.org/tutorials/load_data/images",
)

_EUROSAT = DatasetInfo(
    name="eurosat",
    title="EuroSAT (RGB)",
    description=("27000 Sentinel-2 satellite image patches, 64x64 px at 10 m per pixel, in 10 land-use classes "
                 "(crops, forest, highway, river, ...). Seen from straight above, small and with textures rather "
                 "than objects: very different from ImageNet. No official split: tlkit keeps 20% of each class "
                 "for validation, with a fixed seed."),
    similarity="different",
    classes=("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
             "PermanentCrop", "Residential", "River", "SeaLake"),
    url="https://madm.dfki.de/files/sentinel/EuroSAT.zip",
    # torchvision's copy of the same archive, used when the canonical server is down.
    mirrors=("https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
             "EuroSAT.zip",),
    folder="2750",
    num_images=27000,
    homepage="https://github.com/phelber/eurosat",
)

_DIGITS = DatasetInfo(
    name="digits",
    title="Handwritten digits (scikit-learn)",
    description=("1797 handwritten digits 0-9 as tiny 8x8 grey images (scikit-learn's load_digits, from UCI), "
                 "shown here as 32x32 RGB. Ships with scikit-learn, so it works offline. Blocky, grey, tiny: "
                 "very different from ImageNet photos. tlkit keeps 20% of each class for validation."),
    similarity="different",
    classes=tuple(str(d) for d in range(10)),
    source="sklearn",
    num_images=1797,
    homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
)


def _torchvision_entry(name: str, cls: str, resources: list[tuple[str, str]], split_map: dict[str, str],
                       classes: Sequence[str], **kwargs: Any) -> DatasetInfo:
    return DatasetInfo(name=name, source="torchvision", torchvision=cls, url=resources[0][0],
                       resources=tuple(resources), split_map=split_map, splits=tuple(split_map),
                       classes=tuple(classes), **kwargs)


def _torchvision_entries() -> list[DatasetInfo]:
    """torchvision datasets; addresses and class lists are read from torchvision itself."""
    from torchvision import datasets as tvd

    flowers = tvd.Flowers102
    pets = tvd.OxfordIIITPet
    fashion = tvd.FashionMNIST
    return [
        _torchvision_entry(
            "flowers102", "Flowers102",
            [(flowers._download_url_prefix + f, f"flowers-102/{f}") for f, _ in flowers._file_dict.values()],
            {"train": "train", "val": "val", "test": "test"}, flowers.classes,
            title="Oxford 102 Flowers",
            description=("8189 photos of 102 flower species common in the UK; only 10 training and 10 validation "
                         "images per class (6149 for test). Photographs close to ImageNet's, but a fine-grained "
                         "task with very few examples."),
            similarity="similar", num_images=8189,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        ),
        _torchvision_entry(
            "pets", "OxfordIIITPet",
            [(url, f"oxford-iiit-pet/{url.rsplit('/', 1)[-1]}") for url, _ in pets._RESOURCES],
            {"train": "trainval", "val": "test", "test": "test"}, _PET_BREEDS,
            title="Oxford-IIIT Pet",
            description=("7349 photos of 37 cat and dog breeds, about 200 per breed. ImageNet has many of these "
                         "breeds among its classes: similar. 'train' is the official trainval split (3680), "
                         "'val' and 'test' are both the official test split (3669)."),
            similarity="similar", num_images=7349,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ),
        _torchvision_entry(
            "dtd", "DTD",
            [(tvd.DTD._URL, f"dtd/{tvd.DTD._URL.rsplit('/', 1)[-1]}")],
            {"train": "train", "val": "val", "test": "test"}, _DTD_TEXTURES,
            title="Describable Textures (DTD)",
            description=("5640 close-up photos of 47 textures (banded, bubbly, cracked, ...), 40 per class in each "
                         "of train, val and test (partition 1). Photographs, but the labels describe surfaces, "
                         "not objects: different from ImageNet's task."),
            similarity="different", num_images=5640,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        ),
        _torchvision_entry(
            "fashion_mnist", "FashionMNIST",
            [(fashion.mirrors[0] + f, f"FashionMNIST/raw/{f}") for f, _ in fashion.resources],
            {"train": "train", "val": "test", "test": "test"}, fashion.classes,
            title="Fashion-MNIST",
            description=("70000 grey 28x28 pictures of clothes in 10 classes (T-shirt, trouser, sneaker, ...), "
                         "from Zalando's catalogue. Tiny, grey and centred on black: different from ImageNet. "
                         "'val' and 'test' are both the official test split (10000)."),
            similarity="different", num_images=70000,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        ),
    ]


# torchvision reads these two lists from the downloaded files; they are written out here so that
# info() can answer before any download. load() uses torchvision's own lists.
_PET_BREEDS = (
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel",
    "English Setter", "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond",
    "Leonberger", "Maine Coon", "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll",
    "Russian Blue", "Saint Bernard", "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx",
    "Staffordshire Bull Terrier", "Wheaten Terrier", "Yorkshire Terrier",
)
_DTD_TEXTURES = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
    "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
    "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
    "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
)

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (_HYMENOPTERA, _FLOWERS, _EUROSAT, _DIGITS,
                                                        *_torchvision_entries())}
"""Registered datasets by name."""


def list_datasets() -> list[str]:
    """Names ``load`` accepts (besides a folder path).

    >>> list_datasets()[:4]
    ['hymenoptera', 'flowers', 'eurosat', 'digits']
    """
    return list(DATASETS)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset.

    >>> info("eurosat").similarity
    'different'
    """
    key = _registry_name(name)
    if key is None:
        raise ValueError(f"Unknown dataset {name!r}. Registered datasets: {', '.join(DATASETS)}.")
    return DATASETS[key]


def register(entry: DatasetInfo, overwrite: bool = False) -> DatasetInfo:
    """Add a dataset to the registry (e.g. an instructor's own archive); returns it."""
    if entry.similarity not in SIMILARITY:
        raise ValueError(f"similarity must be one of {SIMILARITY}, got {entry.similarity!r}")
    if entry.name in DATASETS and not overwrite:
        raise ValueError(f"A dataset named {entry.name!r} is already registered; pass overwrite=True to replace it.")
    DATASETS[entry.name] = entry
    return entry


def status(name: str) -> str:
    """Where a registered dataset would load from now, without downloading anything.

    One of ``"bundled"`` (ships with a package), ``"cached"``, ``"mirror"`` (an unpacked copy or
    the archive in the ``TLKIT_MIRROR`` folder) or ``"needs download"``.

    >>> status("digits")
    'bundled'
    """
    entry = info(name)
    if entry.source == "sklearn":
        return "bundled"
    source = mirror()
    base = Path(source).expanduser() if source and "://" not in source else None
    if entry.source == "torchvision":
        top = entry.resources[0][1].split("/", 1)[0]  # the folder torchvision unpacks into
        if (cache_dir("data") / top).is_dir():
            return "cached"
        return "mirror" if base is not None and (base / top).is_dir() else "needs download"
    if (cache_dir("data") / entry.name / entry.folder).is_dir():
        return "cached"
    if base is not None and any(p.exists() for p in (base / entry.folder, base / entry.name / entry.folder,
                                                        base / entry.url.rsplit("/", 1)[-1])):
        return "mirror"
    return "needs download"


def _registry_name(name: str) -> str | None:
    key = name.strip().lower().replace("-", "_")
    return key if key in DATASETS else None


# ---------------------------------------------------------------------------
# ImageDataset and where its images come from
# ---------------------------------------------------------------------------

class _FileImages:
    """Images read lazily from files."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as exc:
            raise DatasetError(f"Cannot read image {path}: {exc}. Replace or remove this file and load again.") from exc


class _MemoryImages:
    """Images held in memory as uint8 arrays (H x W grey or H x W x 3), optionally upscaled."""

    def __init__(self, arrays: Sequence[Any], size: int | None = None):
        import numpy as np

        self.arrays = [np.asarray(a, dtype=np.uint8) for a in arrays]
        self.size = size

    def __call__(self, i: int) -> Image.Image:
        img = Image.fromarray(self.arrays[i])
        if self.size is not None:
            img = img.resize((self.size, self.size), Image.Resampling.NEAREST)
        return img.convert("RGB")

    def digest(self) -> str:
        h = hashlib.sha1(str(self.size).encode())
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
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        bad = [t for t in targets if not 0 <= int(t) < len(classes)]
        if bad:
            raise ValueError(f"targets must be in 0..{len(classes) - 1} (one per class name); got {bad[:5]}")
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
        """A figure of ``n`` random images with their class names."""
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
        return fig


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------

_SPLIT_ALIASES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}


def load(name_or_path: str | os.PathLike, split: str = "train", transform: Callable | None = None,
         download: bool = True, *, verify: bool = True, progress: bool = True) -> ImageDataset:
    """Load a registered dataset by name, or your own folder of images.

    Args:
        name_or_path: a name from ``list_datasets()``, or a folder laid out as
            ``<folder>/<class>/<image>`` or ``<folder>/{train,val}/<class>/<image>``.
        split: ``"train"``, ``"val"`` (``"test"`` where the data has it; ``"all"`` for data
            without split folders, which tlkit otherwise splits 80/20 per class, seeded).
        transform: applied to each PIL image (e.g. ``tlkit.preprocess(model)``).
        download: download a registered dataset if it is not in the cache or the mirror yet.
        verify: decode every image once to find broken files (remembered in the data cache).
        progress: show progress bars for downloads and checks.

    >>> ds = load("digits", "val")
    >>> len(ds.classes), ds.load_image(0).size
    (10, (32, 32))
    """
    split = _SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    key = _registry_name(name_or_path) if isinstance(name_or_path, str) else None
    if key is not None:
        entry = DATASETS[key]
        if split not in entry.splits:
            raise ValueError(f"Dataset {key!r} has splits {', '.join(entry.splits)}; got split={split!r}.")
        if entry.source == "sklearn":
            ds = _load_digits(entry, split)
        elif entry.source == "torchvision":
            ds = _load_torchvision(entry, split, download, progress)
        else:
            root = _archive_folder(entry, download, verify, progress)
            ds = _from_folder(root, split, entry.name, verify=False, progress=progress,
                              val_fraction=entry.val_fraction, seed=entry.seed)
        return ds.with_transform(transform)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        hint = ""
        if isinstance(name_or_path, str) and os.sep not in name_or_path and "/" not in name_or_path:
            hint = f" It is not a registered dataset either; those are: {', '.join(DATASETS)}."
        raise FileNotFoundError(f"No folder {path.resolve()}.{hint} Give the path of a folder of images. "
                                f"{_LAYOUT_HELP}")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder. If it is an archive, unpack it first and load the "
                           f"folder it contains. {_LAYOUT_HELP}")
    return _from_folder(path, split, path.resolve().name, verify=verify, progress=progress).with_transform(transform)


_LAYOUT_HELP = ("Expected layout: <folder>/<class>/<image> (tlkit splits it 80/20 into 'train' and 'val'), or "
                "<folder>/train/<class>/<image> plus <folder>/val/<class>/<image>.")


def _stamps() -> Path:
    return cache_dir("data") / ".verified"


def _class_folders(root: Path) -> dict[str, ClassFolders]:
    """Scan a folder: ``{split: ClassFolders}`` for split layout, ``{"all": ...}`` otherwise."""
    splits = split_folders(root)
    if not splits:
        return {"all": scan(root)}
    others = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
              and p not in splits.values()]
    if others:
        raise DatasetError(
            f"{root} mixes split folders ({', '.join(p.name for p in splits.values())}) with other folders "
            f"({', '.join(sorted(others))}). Move the other folders out, or put every class folder inside "
            f"the split folders. {_LAYOUT_HELP}"
        )
    scans = {s: scan(p) for s, p in splits.items()}
    names = list(scans)
    for other in names[1:]:
        a, b = scans[names[0]].classes, scans[other].classes
        if a != b:
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            raise DatasetError(
                f"The split folders of {root} have different classes:\n"
                f"  {splits[names[0]].name}: {a}\n  {splits[other].name}: {b}\n"
                f"Only in {splits[names[0]].name}: {only_a}; only in {splits[other].name}: {only_b}.\n"
                "Every split needs the same class folders (with the same names): add or rename folders so they match."
            )
    return scans


def _from_folder(root: Path, split: str, name: str, *, verify: bool, progress: bool,
                 val_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    scans = _class_folders(root)
    if "all" in scans:  # no split folders: split every class deterministically
        folders = scans["all"]
        if split == "all":
            positions = list(range(len(folders.paths)))
        elif split in ("train", "val"):
            train, val = split_by_class(folders.targets, folders.classes, val_fraction, seed)
            positions = train if split == "train" else val
        else:
            raise DatasetError(
                f"{root} has no split folders, so it has no {split!r} split. Use split='train' or split='val' "
                f"(tlkit keeps {val_fraction:.0%} of each class for 'val', seeded) or split='all'; or make "
                f"folders {root / 'train'}, {root / 'val'} and {root / split}, each with the class folders."
            )
        paths = [folders.paths[i] for i in positions]
        targets = [folders.targets[i] for i in positions]
    else:
        if split not in scans:
            have = ", ".join(repr(s) for s in scans)
            raise DatasetError(
                f"{root} has no {split!r} folder; its splits are {have}. Use one of those, or add a folder "
                f"{root / split} with the same class folders."
            )
        folders = scans[split]
        paths, targets = folders.paths, folders.targets
    if verify:
        verify_images(paths, root, _stamps(), progress=progress, what=f"images in {root}")
    content = fingerprint(paths, root)[:16]
    return ImageDataset(name, split, folders.classes, targets, _FileImages(paths), content=content,
                        root=folders.root, paths=paths)


# -- registered archives ----------------------------------------------------------------------

def _check_registry_folder(entry: DatasetInfo, root: Path, verify: bool, progress: bool) -> None:
    """Raise DatasetError unless ``root`` holds exactly the dataset ``entry`` describes."""
    scans = _class_folders(root)
    wanted = [s for s in entry.splits if s != "all"] if entry.split_dirs else ["all"]
    missing = [s for s in wanted if s not in scans]
    if missing:
        raise DatasetError(f"{root} lacks the split folders {missing} (found: {list(scans)}).")
    total = 0
    for s in wanted:
        found = scans[s]
        if found.classes != list(entry.classes):
            raise DatasetError(f"{found.root}: expected the classes {list(entry.classes)}, found {found.classes}.")
        expected = (entry.counts or {}).get(s)
        if expected and found.counts() != dict(expected):
            raise DatasetError(f"{found.root}: expected {dict(expected)} images per class, found {found.counts()}.")
        total += len(found.paths)
    if entry.num_images is not None and total != entry.num_images:
        raise DatasetError(f"{root}: expected {entry.num_images} images in all, found {total}.")
    if verify:
        for s in wanted:
            verify_images(scans[s].paths, root, _stamps(), progress=progress, what=f"{entry.name} images")


def _archive_folder(entry: DatasetInfo, download: bool, verify: bool, progress: bool) -> Path:
    """The checked, unpacked folder of a registered archive: cache, else mirror, else download."""
    home = cache_dir("data") / entry.name
    local = home / entry.folder
    if local.is_dir():
        try:
            _check_registry_folder(entry, local, verify, progress)
        except DatasetError as exc:
            raise DatasetError(f"The cached copy of {entry.name!r} is damaged: {exc}\nWhat to do: delete the folder "
                               f"{local} and load again to download a fresh copy.") from None
        return local
    source = mirror()
    if source and "://" not in source:
        base = Path(source).expanduser()
        for candidate in (base / entry.folder, base / entry.name / entry.folder):
            if candidate.is_dir():
                try:
                    _check_registry_folder(entry, candidate, verify, progress)
                except DatasetError as exc:
                    raise DatasetError(
                        f"The classroom mirror's copy of {entry.name!r} at {candidate} is not usable: {exc}\n"
                        "What to do: tell your instructor; or unset TLKIT_MIRROR to download the dataset instead."
                    ) from None
                return candidate  # used in place, read-only
    if not download:
        raise DatasetError(f"Dataset {entry.name!r} is not downloaded yet (looked in {home}"
                           f"{' and the mirror ' + source if source else ''}). Call load({entry.name!r}) with "
                           "download=True, or set TLKIT_MIRROR to a folder holding it.")
    home.mkdir(parents=True, exist_ok=True)
    archive = home / entry.url.rsplit("/", 1)[-1]
    for attempt in (1, 2):
        _fetch_archive(entry, archive, progress)
        try:
            root = extract(archive, home, entry.folder,
                           check=lambda folder: _check_registry_folder(entry, folder, verify, progress))
        except ArchiveError as exc:
            archive.unlink(missing_ok=True)  # a broken download: remove it, download once more
            if attempt == 1:
                continue
            raise DownloadError(
                f"The archive of dataset {entry.name!r} was broken twice in a row: {exc}\n"
                f"The broken file was removed and nothing was unpacked into {home}.\n"
                f"What to do: run again later; if it keeps failing, its source (TLKIT_MIRROR={source or 'not set'}, "
                f"then {entry.url}) holds a broken copy: tell your instructor"
                f"{' or unset TLKIT_MIRROR' if source else ''}, "
                f"or download {entry.url} in a browser and save it as {archive}."
            ) from exc
        except DatasetError as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"The archive of dataset {entry.name!r} unpacked, but its contents are not as expected: {exc}\n"
                f"The archive was removed and nothing was kept in {home}. The source may hold a different "
                "version of the dataset: tell your instructor or report it to the tlkit maintainers."
            ) from exc
        archive.unlink(missing_ok=True)  # unpacked and checked: the archive is no longer needed
        return root
    raise AssertionError("unreachable")


def _fetch_archive(entry: DatasetInfo, archive: Path, progress: bool) -> Path:
    errors = []
    for url in (entry.url, *entry.mirrors):
        try:
            return fetch(url, archive, mirror_name=archive.name, what=f"dataset {entry.name!r} ({archive.name})",
                         progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("\n\n".join(errors))


# -- scikit-learn digits and torchvision ----------------------------------------------------

@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Any, list[int]]:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 ink -> 0..255, white on black
    return images, digits.target.tolist()


def _load_digits(entry: DatasetInfo, split: str) -> ImageDataset:
    images, targets = _digits_arrays()
    if split == "all":
        positions = list(range(len(targets)))
    else:
        train, val = split_by_class(targets, list(entry.classes), entry.val_fraction, entry.seed)
        positions = train if split == "train" else val
    source = _MemoryImages([images[i] for i in positions], size=32)
    return ImageDataset(entry.name, split, entry.classes, [targets[i] for i in positions], source,
                        content=source.digest()[:16])


def _torchvision_dataset(entry: DatasetInfo, root: Path, split: str, download: bool) -> Dataset:
    from torchvision import datasets as tvd

    cls = getattr(tvd, entry.torchvision)
    native = entry.split_map[split]
    kwargs = {"train": native == "train"} if entry.torchvision == "FashionMNIST" else {"split": native}
    return cls(str(root), download=download, **kwargs)


def _load_torchvision(entry: DatasetInfo, split: str, download: bool, progress: bool) -> ImageDataset:
    roots = [cache_dir("data")]
    source = mirror()
    if source and "://" not in source:
        roots.insert(0, Path(source).expanduser())  # an unpacked copy in the mirror, used read-only
    dataset = None
    for root in roots:
        try:
            dataset = _torchvision_dataset(entry, root, split, download=False)
            break
        except (RuntimeError, FileNotFoundError, OSError):
            continue
    if dataset is None:
        if not download:
            raise DatasetError(f"Dataset {entry.name!r} is not downloaded yet (looked in "
                               f"{', '.join(map(str, roots))}). Call load({entry.name!r}) with download=True.")
        home = cache_dir("data")
        for url, rel in entry.resources:  # mirror first, atomic, retried; torchvision then finds them
            fetch(url, home / rel, mirror_name=rel.rsplit("/", 1)[-1], what=f"dataset {entry.name!r} ({rel})",
                  progress=progress)
        try:
            dataset = _torchvision_dataset(entry, home, split, download=True)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, ...
            raise DownloadError(
                f"torchvision could not prepare dataset {entry.name!r} in {home}: {exc}\n"
                "What to do: check your internet connection and run again, or ask your instructor for a "
                "classroom mirror (TLKIT_MIRROR)."
            ) from exc
    targets = dataset.targets if hasattr(dataset, "targets") else dataset._labels
    targets = targets.tolist() if isinstance(targets, torch.Tensor) else list(targets)
    classes = list(getattr(dataset, "classes", entry.classes))
    content = hashlib.sha1(f"{entry.torchvision}:{split}:{targets}".encode()).hexdigest()[:16]
    return ImageDataset(entry.name, split, classes, targets, _TorchvisionImages(dataset), content=content)


# ---------------------------------------------------------------------------
# subset
# ---------------------------------------------------------------------------

def subset(ds: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """``per_class`` images of every class, drawn at random but reproducibly (same seed, same images).

    The result keeps the original order and has its own ``key``.

    >>> small = subset(load("digits"), per_class=5)
    >>> len(small), small.counts()["7"]
    (50, 5)
    """
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for k, name in enumerate(ds.classes):
        members = [i for i, t in enumerate(ds.targets) if t == k]
        if len(members) < per_class:
            fewest = min(ds.counts().values())
            advice = f"Use per_class={fewest} or less." if fewest else "Drop that class or use another split."
            raise ValueError(
                f"Class {name!r} has only {len(members)} images in {ds.name!r} ({ds.split}), fewer than "
                f"per_class={per_class}. {advice}"
            )
        order = torch.randperm(len(members), generator=g)[:per_class].tolist()
        chosen += [members[j] for j in order]
    return ds._subset(sorted(chosen))


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

PRESETS = {
    "none": "resize and centre crop only: what evaluation sees",
    "light": "horizontal flip and a mild random crop (70-100% of the image)",
    "standard": "random crop (35-100%), flip, rotation up to 10 degrees, mild colour jitter",
    "strong": "random crop (10-100%), flip, rotation up to 25 degrees, strong colour jitter, 10% greyscale",
}
"""Augmentation presets and what each does."""

PRESET_SETTINGS: dict[str, dict[str, float]] = {
    "none": {},
    "light": {"crop_scale": 0.7, "hflip": 0.5},
    "standard": {"crop_scale": 0.35, "hflip": 0.5, "rotation": 10, "brightness": 0.2, "contrast": 0.2,
                 "saturation": 0.2, "hue": 0.02},
    "strong": {"crop_scale": 0.1, "hflip": 0.5, "rotation": 25, "brightness": 0.4, "contrast": 0.4,
               "saturation": 0.4, "hue": 0.1, "grayscale": 0.1},
}
"""The numbers behind each preset, the one place they are written: ``augmentation`` here, the
batched GPU version in ``tlkit/_batches.py`` and the augmentation widget all read them.
``crop_scale``: smallest random-crop area (1.0: no random crop); ``hflip``/``grayscale``:
probabilities; ``rotation``: degrees either way; the rest are ``ColorJitter`` strengths."""


class Augmentation(v2.Compose):
    """A ``v2.Compose`` that draws fresh random parameters for every image of a batch.

    Plain v2 transforms apply the same crop and flip to a whole ``(B, C, H, W)`` batch; this
    one loops over the batch, so a batch on the GPU is augmented like images one by one.
    """

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
            return torch.stack([super(Augmentation, self).forward(x) for x in inputs[0].as_subclass(torch.Tensor)])
        return super().forward(*inputs)


def augmentation(preset: str | Callable | None = "standard", size: int = 224, *, resize: int | None = None,
                 interpolation: str = "bilinear") -> v2.Compose:
    """Geometry and colour augmentation, producing ``size`` x ``size`` images (no normalisation).

    Works on PIL images and on uint8 tensors, single ``(C, H, W)`` or batches ``(B, C, H, W)``
    (each image of a batch gets its own random parameters). RandomErasing is deliberately not
    in any preset: it works on tensors only and belongs after normalisation (erasing to 0 then
    means "mean colour"); append ``v2.RandomErasing()`` to ``train_transform(...)`` to use it.

    Args:
        preset: ``"none"``, ``"light"``, ``"standard"`` or ``"strong"`` (see ``PRESETS``); None means
            ``"none"``; a callable is returned unchanged.
        size: output side in pixels.
        resize: shorter side before the centre crop of ``"none"`` (default ``size * 8 / 7``, as 256/224).
        interpolation: ``"bilinear"``, ``"bicubic"``, ...

    >>> augmentation("light", size=64)(Image.new("RGB", (100, 80))).size
    (64, 64)
    """
    if preset is None:
        preset = "none"
    if callable(preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"Unknown augmentation preset {preset!r}. Presets: "
                         + "; ".join(f"{k!r} ({v})" for k, v in PRESETS.items()))
    mode = InterpolationMode(interpolation)
    p = PRESET_SETTINGS[preset]
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


def train_transform(model_or_name: Any = "efficientnet_lite0", preset: str | Callable | None = "standard"
                    ) -> v2.Compose:
    """Training transform: the preset's augmentation at the backbone's input size, then its own normalisation.

    >>> train_transform("efficientnet_lite0").transforms[-1]
    Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=False)
    """
    pre = backbone_info(model_or_name).preprocessing
    aug = augmentation(preset, pre.size, resize=pre.resize, interpolation=pre.interpolation)
    ops = aug.transforms if isinstance(aug, v2.Compose) else [aug]
    return Augmentation([v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])


def eval_transform(model_or_name: Any = "efficientnet_lite0") -> v2.Compose:
    """Evaluation transform: exactly ``tlkit.preprocess(model_or_name)`` (resize, centre crop, normalise)."""
    return preprocess(model_or_name)
