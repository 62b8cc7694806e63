"""The registry of real datasets: what each one is, where it comes from, how it is split.

Every entry is a :class:`DatasetInfo`; ``list_datasets()`` names them, ``info(name)`` describes
one, ``status(name)`` says where it would load from now, ``register(entry)`` adds your own.
Every registered dataset offers the splits ``train``, ``val`` and ``test``: the source's own
where it has them, otherwise a documented, deterministic, stratified split (each entry's
description says which). Loading lives in :mod:`tlkit.datasets.loading`.

This module is mostly data (the entries and their descriptions), hence its length.

Example:
    >>> info("pneumoniamnist").classes
    ('normal', 'pneumonia')
    >>> "flowers" in list_datasets()
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..download import cache_dir, data_homes, mirror
from ..errors import ArgumentError
from .medmnist import MEDMNIST, MEDMNIST_SIZES, medmnist_file, medmnist_url

__all__ = ["DatasetInfo", "DATASETS", "SIMILARITY", "list_datasets", "info", "register", "status", "registry_name"]

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
        splits: the split names ``load`` accepts; every registered dataset offers ``train``,
            ``val`` and ``test``.
        split_dirs: the archive has ``train/`` and ``val/`` folders. Where the source has no
            ``test`` folder, ``test_fraction`` of each class of its ``train`` folder becomes
            ``test`` (stratified, seeded by ``seed``; the rest stays ``train``, and ``val`` is
            the source's own val folder, whole).
        val_fraction, test_fraction: for a source without split folders, the share of each
            class that goes to ``val`` and to ``test`` (the rest is ``train``; ``"all"`` gives
            everything); both drawn by :func:`tlkit.datasets.stratified_split` with ``seed``.
        seed: the fixed seed of those splits (the same split on every machine).
        num_images: total number of images, where documented; checked after unpacking.
        counts: expected images per split and class, where counted from the real data; checked.
        mirrors: other addresses of the same archive, tried after ``url``.
        torchvision: the ``torchvision.datasets`` class, for ``source="torchvision"``.
        split_map: tlkit split name -> torchvision's split name.
        resources: (url, path in the data cache) of the files torchvision needs; tlkit fetches
            them first (mirror, atomic writes, retries) and torchvision then unpacks them.
        homepage: where the dataset is described.
        licence: the licence of the images.
        sizes: image sides offered (``load(..., size=...)``), for MedMNIST; the first is the default.
        md5: expected md5 of the downloaded file per size (MedMNIST; checked on download).
        split_sizes: expected number of images per split (MedMNIST; checked on every load).
    """

    name: str
    title: str
    description: str
    similarity: str
    classes: tuple[str, ...]
    source: str = "archive"
    url: str | None = None
    folder: str | None = None
    splits: tuple[str, ...] = ("train", "val", "test", "all")
    split_dirs: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    num_images: int | None = None
    counts: Mapping[str, Mapping[str, int]] | None = field(default=None, repr=False)
    mirrors: tuple[str, ...] = field(default=(), repr=False)
    torchvision: str | None = None
    split_map: Mapping[str, str] = field(default_factory=dict, repr=False)
    resources: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    homepage: str = ""
    licence: str = ""
    sizes: tuple[int, ...] = ()
    md5: Mapping[int, str] = field(default_factory=dict, repr=False)
    split_sizes: Mapping[str, int] | None = field(default=None, repr=False)

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
                 "'ant' and 'bee' classes, so this is as close to ImageNet as a dataset gets (the photos are "
                 "taken from ImageNet). Splits: 'val' is the tutorial's val folder (153); 20 % of each class of "
                 "its train folder (seed 0) is held out as 'test' (49), the rest is 'train' (195)."),
    similarity="similar",
    classes=("ants", "bees"),
    url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    folder="hymenoptera_data",
    splits=("train", "val", "test"),
    split_dirs=True,
    test_fraction=0.2,  # of the train folder: the source has no test split
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
                 "ImageNet's (which has a 'daisy' class, none of the other four). No official split: tlkit "
                 "splits every class 70/15/15 into train/val/test with a fixed seed (2568/551/551)."),
    similarity="similar",
    classes=("daisy", "dandelion", "roses", "sunflowers", "tulips"),
    url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    folder="flower_photos",
    num_images=3670,
    # Counted from the unpacked flower_photos.tgz (the classroom mirror holds the same files).
    counts={"all": {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}},
    licence="CC BY 2.0",
    homepage="https://www.tensorflow.org/tutorials/load_data/images",
)

_EUROSAT = DatasetInfo(
    name="eurosat",
    title="EuroSAT (RGB)",
    description=("27000 Sentinel-2 satellite image patches, 64x64 px at 10 m per pixel, in 10 land-use classes "
                 "(crops, forest, highway, river, ...). Seen from straight above, small and with textures rather "
                 "than objects: very different from ImageNet. No official split: tlkit splits every class "
                 "70/15/15 into train/val/test with a fixed seed."),
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
                 "very different from ImageNet photos. No official split: tlkit splits every class "
                 "70/15/15 into train/val/test with a fixed seed."),
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

def _medmnist_entries() -> list[DatasetInfo]:
    """The MedMNIST v2 2D sets under a licence that allows use here (CC BY 4.0; single-label).

    Left out: DermaMNIST (CC BY-NC 4.0) and ChestMNIST (multi-label). Addresses and md5 sums
    are the ``medmnist`` package's own (``medmnist/info.py``, version 3.0.2).
    """
    entries = []
    for name, row in MEDMNIST.items():
        urls = {s: medmnist_url(name, s) for s in MEDMNIST_SIZES}
        entries.append(DatasetInfo(
            name=name, title=f"{row.title} (MedMNIST v2)", description=row.description, similarity="different",
            classes=row.classes, source="medmnist", url=urls[28], splits=("train", "val", "test"),
            num_images=sum(row.split_sizes.values()), split_sizes=dict(row.split_sizes),
            mirrors=(), sizes=MEDMNIST_SIZES, md5=dict(row.md5), licence="CC BY 4.0",
            homepage="https://medmnist.com/",
        ))
    return entries


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (_HYMENOPTERA, _FLOWERS, _EUROSAT, _DIGITS,
                                                        *_torchvision_entries(), *_medmnist_entries())}
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
    key = registry_name(name)
    if key is None:
        raise ArgumentError(f"Unknown dataset {name!r}. Registered datasets: {', '.join(DATASETS)}.")
    return DATASETS[key]


def register(entry: DatasetInfo, overwrite: bool = False) -> DatasetInfo:
    """Add a dataset to the registry (e.g. an instructor's own archive); returns it."""
    if not isinstance(entry, DatasetInfo):
        raise ArgumentError(f"register() takes a DatasetInfo, got {type(entry).__name__}.")
    if entry.similarity not in SIMILARITY:
        raise ArgumentError(f"similarity must be one of {SIMILARITY}, got {entry.similarity!r}")
    if entry.name in DATASETS and not overwrite:
        raise ArgumentError(f"A dataset named {entry.name!r} is already registered; pass overwrite=True to replace it.")
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
    if entry.source == "medmnist":
        file = medmnist_file(entry.name, entry.sizes[0])
        if any((home / file).is_file() for home in data_homes("medmnist")):
            return "cached"
        return "mirror" if base is not None and (base / "medmnist" / file).is_file() else "needs download"
    if entry.source == "torchvision":
        top = entry.resources[0][1].split("/", 1)[0]  # the folder torchvision unpacks into
        if (cache_dir("data") / top).is_dir():
            return "cached"
        return "mirror" if base is not None and (base / top).is_dir() else "needs download"
    if any((home / entry.folder).is_dir() for home in data_homes(entry.name)):
        return "cached"
    if base is not None and any(p.exists() for p in (base / entry.folder, base / entry.name / entry.folder,
                                                        base / entry.url.rsplit("/", 1)[-1])):
        return "mirror"
    return "needs download"


def registry_name(name: Any) -> str | None:
    """The registry key for ``name`` (case, ``-`` and ``_`` ignored), or None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("-", "_")
    return key if key in DATASETS else None


