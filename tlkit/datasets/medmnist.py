"""MedMNIST v2 (Yang et al. 2023, Scientific Data): small medical images as ``.npz`` files.

Each file holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images`` and ``test_labels``: images ``(N, S, S)`` (grey) or ``(N, S, S, 3)`` (RGB),
uint8, labels ``(N, 1)``. The 28 px files are ``<name>.npz``, larger ones ``<name>_64.npz``,
``_128``, ``_224``. The table below is the ``medmnist`` package's own (``info.py``, version
3.0.2): class names, images per split and md5 sums.

Example:
    >>> medmnist_file("pneumoniamnist", 64)
    'pneumoniamnist_64.npz'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..errors import DatasetError

__all__ = ["MEDMNIST", "MEDMNIST_SIZES", "medmnist_file", "medmnist_url", "read_npz"]

MEDMNIST_SIZES = (28, 64, 128, 224)
"""Image sides MedMNIST offers; 28 is the default."""

ZENODO = "https://zenodo.org/records/10519652/files/"


class _Row(NamedTuple):
    title: str
    channels: int
    classes: tuple[str, ...]
    split_sizes: dict[str, int]
    md5: dict[int, str]
    description: str


MEDMNIST: dict[str, _Row] = {
    'pathmnist': _Row('PathMNIST', 3, ('adipose', 'background', 'debris', 'lymphocytes', 'mucus', 'smooth muscle', 'normal colon mucosa', 'cancer-associated stroma', 'colorectal adenocarcinoma epithelium'),
          {'train': 89996, 'val': 10004, 'test': 7180},
          {28: 'a8b06965200029087d5bd730944a56c1', 64: '55aa9c1e0525abe5a6b9d8343a507616', 128: 'ac42d08fb904d92c244187169d1fd1d9', 224: '2c51a510bcdc9cf8ddb2af93af1eadec'},
          'Colorectal cancer histology patches (H&E stain), 9 tissue types; 28x28 RGB. train/val split 9:1 from NCT-CRC-HE-100K, test from another clinic (CRC-VAL-HE-7K).'),
    'octmnist': _Row('OCTMNIST', 1, ('choroidal neovascularization', 'diabetic macular edema', 'drusen', 'normal'),
          {'train': 97477, 'val': 10832, 'test': 1000},
          {28: 'c68d92d5b585d8d81f7112f81e2d0842', 64: 'e229e9440236b774d9f0dfef9d07bdaf', 128: '0a97e76651ace45c5d943ee3f65b63ae', 224: 'abc493b6d529d5de7569faaef2773ba3'},
          "Retinal optical coherence tomography scans, 4 diagnoses; 28x28 grey. The source's training set split 9:1 into train/val, its validation set is the test set."),
    'pneumoniamnist': _Row('PneumoniaMNIST', 1, ('normal', 'pneumonia'),
          {'train': 4708, 'val': 524, 'test': 624},
          {28: '28209eda62fecd6e6a2d98b1501bb15f', 64: '8f4eceb4ccffa70c672198ea285246c6', 128: '05b46931834c231683c68f40c47b2971', 224: 'd6a3c71de1b945ea11211b03746c1fe1'},
          "Paediatric chest X-rays, normal vs pneumonia (1214 / 3494 in train: imbalanced); 28x28 grey. The source's training set split 9:1 into train/val, its validation set is the test set."),
    'retinamnist': _Row('RetinaMNIST', 3, ('0', '1', '2', '3', '4'),
          {'train': 1080, 'val': 120, 'test': 400},
          {28: 'bd4c0672f1bba3e3a89f0e4e876791e4', 64: 'afda852cc34dcda56f86ad2b2457dbcc', 128: 'e48e916a24454daf90583d4e6efb1a18', 224: 'eae7e3b6f3fcbda4ae613ebdcbe35348'},
          'Retinal fundus photos (DeepDRiD), diabetic-retinopathy grade 0-4 (ordinal, imbalanced: 486/128/206/194/66 in train); 28x28 RGB. Source train split 9:1 into train/val, source val is test.'),
    'breastmnist': _Row('BreastMNIST', 1, ('malignant', 'normal, benign'),
          {'train': 546, 'val': 78, 'test': 156},
          {28: '750601b1f35ba3300ea97c75c52ff8f6', 64: '742edef2a1fd1524b2efff4bd7ba9364', 128: '363e4b3f8d712e9b5de15470a2aaadf1', 224: 'b56378a6eefa9fed602bb16d192d4c8b'},
          'Breast ultrasound images, malignant vs normal-or-benign; 28x28 grey; 780 images split 7:1:2 into train/val/test.'),
    'bloodmnist': _Row('BloodMNIST', 3, ('basophil', 'eosinophil', 'erythroblast', 'immature granulocytes(myelocytes, metamyelocytes and promyelocytes)', 'lymphocyte', 'monocyte', 'neutrophil', 'platelet'),
          {'train': 11959, 'val': 1712, 'test': 3421},
          {28: '7053d0359d879ad8a5505303e11de1dc', 64: '2b94928a2ae4916078ca51e05b6b800b', 128: 'adace1e0ed228fccda1f39692059dd4c', 224: 'b718ff6835fcbdb22ba9eacccd7b2601'},
          'Microscope images of normal blood cells, 8 cell types; 28x28 RGB; split 7:1:2 into train/val/test.'),
    'tissuemnist': _Row('TissueMNIST', 1, ('Collecting Duct, Connecting Tubule', 'Distal Convoluted Tubule', 'Glomerular endothelial cells', 'Interstitial endothelial cells', 'Leukocytes', 'Podocytes', 'Proximal Tubule Segments', 'Thick Ascending Limb'),
          {'train': 165466, 'val': 23640, 'test': 47280},
          {28: 'ebe78ee8b05294063de985d821c1c34b', 64: '123ece2eba09d0aa5d698fda57103344', 128: '61b955355d7425a89687b06cca3ce0c2', 224: 'b077128c4a949f0a4eb01517f9037b9c'},
          'Human kidney cortex cells (BBBC051), 8 types, maximum projection of 7 slices; 28x28 grey; split 7:1:2.'),
    'organamnist': _Row('OrganAMNIST', 1, ('bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'),
          {'train': 34561, 'val': 6491, 'test': 17778},
          {28: '68e3f8846a6bd62f0c9bf841c0d9eacc', 64: '2dcccc29b88e6da5a01161ef20cda288', 128: 'eeae80d0a227a8d099027e1b3cfd3b60', 224: '50747347e05c87dd3aaf92c49f9f3170'},
          'Axial slices of abdominal CT scans (LiTS), 11 organs; 28x28 grey; official train/val/test.'),
    'organcmnist': _Row('OrganCMNIST', 1, ('bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'),
          {'train': 12975, 'val': 2392, 'test': 8216},
          {28: 'b9ceb9546e10131b32923c5bbeaea2b1', 64: '3ce34a8724ea6f548e6db4744d03b6a9', 128: '773c1f009daa3fe5d9a2a201b2a7ed94', 224: '050f5e875dc056f6768abf94ec9995d1'},
          'Coronal slices of abdominal CT scans (LiTS), 11 organs; 28x28 grey; official train/val/test.'),
    'organsmnist': _Row('OrganSMNIST', 1, ('bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'),
          {'train': 13932, 'val': 2452, 'test': 8827},
          {28: '9ab87b696fb54e2a387ebe992d6ed5f1', 64: '53a6d115339d874c25e309a994ff46d3', 128: 'ded0c5fa01a95dc4978b956f613e9b8e', 224: 'b354719e553fbbb2513d5533f52a4cb1'},
          'Sagittal slices of abdominal CT scans (LiTS), 11 organs; 28x28 grey; official train/val/test.'),
}
"""The MedMNIST v2 2D sets that are single-label and CC BY 4.0 (DermaMNIST is CC BY-NC, ChestMNIST
multi-label: both left out)."""


def medmnist_file(name: str, size: int = 28) -> str:
    """The file name of ``name`` at ``size`` px: ``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def medmnist_url(name: str, size: int = 28) -> str:
    """The official download address (Zenodo record 10519652)."""
    return f"{ZENODO}{medmnist_file(name, size)}?download=1"


def read_npz(path: Path, name: str, size: int, splits: tuple[str, ...] = ("train", "val", "test")
             ) -> dict[str, tuple[Any, Any]]:
    """``{split: (images, labels)}`` of ``splits`` from a MedMNIST file, checked against the table.

    Checks that every key is there, and for the splits read: the image shape
    ``(N, size, size[, 3])``, uint8, the labels' range, and the number of images. Only the
    splits asked for are decompressed (a 224 px file is large). Raises :class:`DatasetError`
    naming the file and what differs.
    """
    import numpy as np

    row = MEDMNIST[name]
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
                       if f"{s}_{k}" not in keys]
            if missing:
                raise DatasetError(f"{path} is not a MedMNIST file: it lacks {missing} (it holds {sorted(keys)}).")
            arrays = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in splits}
    except DatasetError:
        raise
    except Exception as exc:  # zipfile / numpy raise many kinds for a damaged file
        raise DatasetError(f"{path} cannot be read as an .npz file ({type(exc).__name__}: {exc}).") from exc
    shape = (size, size) if row.channels == 1 else (size, size, 3)
    problems = []
    for split, (images, labels) in arrays.items():
        expected = row.split_sizes[split]
        if images.dtype != np.uint8 or images.shape[1:] != shape:
            problems.append(f"{split}_images: expected uint8 of shape (N, {', '.join(map(str, shape))}), "
                            f"found {images.dtype} {images.shape}")
        if len(images) != expected or len(labels) != expected:
            problems.append(f"{split}: expected {expected} images and labels, found {len(images)} and {len(labels)}")
        flat = labels.reshape(len(labels), -1)
        if flat.shape[1:] != (1,) or (len(flat) and not (0 <= flat.min() and flat.max() < len(row.classes))):
            problems.append(f"{split}_labels: expected shape (N, 1) with values 0..{len(row.classes) - 1}")
    if problems:
        raise DatasetError(f"{path} is not the MedMNIST file {medmnist_file(name, size)} tlkit expects:\n  - "
                           + "\n  - ".join(problems))
    return {s: (images, labels.reshape(-1).astype(int)) for s, (images, labels) in arrays.items()}
