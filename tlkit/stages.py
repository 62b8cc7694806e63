"""One naming scheme for the parts of a network: its *stages*.

A stage is a run of layers you would freeze, probe or visualise together: the stem,
each block group, the head. Every tlkit helper (``freeze``, ``viz``, ``advisor``, the
widgets) names layers by these stage names, in the spirit of timm's ``feature_info``.

Each architecture family describes its stages once, here, as a list of
``(name, parameter modules, output module)``. The *output module* is the layer whose
output is the stage's output (where feature maps and per-stage probes are read).

Example:
    >>> import tlkit
    >>> m = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    >>> [s.name for s in tlkit.stages(m)][:3]
    ['stem', 'blocks.0', 'blocks.1']
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["Stage", "stages", "stage_names", "get_stage", "head_path", "num_features"]


@dataclass(frozen=True)
class Stage:
    """A freeze point: a named group of modules of a model, in forward order.

    Attributes:
        name: the stage name used everywhere in tlkit (``"layer3"``, ``"blocks.4"``, ``"head"``).
        modules: dotted paths of the modules whose parameters belong to the stage.
        output: dotted path of the module whose output is the stage's output.
        params: number of parameters in the stage.
    """

    name: str
    modules: tuple[str, ...]
    output: str
    params: int = 0

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, params={self.params:,})"


# ---------------------------------------------------------------------------
# Family stage maps: model -> [(name, modules, output)] and the head's module path.
# ---------------------------------------------------------------------------

def _timm_efficientnet(model: nn.Module):
    n_blocks = len(model.blocks)
    out = [("stem", ("conv_stem", "bn1"), "bn1")]
    out += [(f"blocks.{i}", (f"blocks.{i}",), f"blocks.{i}") for i in range(n_blocks)]
    out += [("conv_head", ("conv_head", "bn2"), "bn2"), ("head", ("classifier",), "classifier")]
    return out


def _resnet(model: nn.Module):
    out = [("stem", ("conv1", "bn1"), "maxpool")]
    out += [(f"layer{i}", (f"layer{i}",), f"layer{i}") for i in range(1, 5)]
    out += [("head", ("fc",), "fc")]
    return out


def _conv_blocks(features: nn.Sequential, prefix: str, per_conv: bool):
    """Split a VGG/AlexNet ``features`` Sequential into conv1..convN.

    VGG's blocks end at each max-pool (conv1_1, conv1_2, pool -> "conv1"); AlexNet's five
    convolutions are its five stages, so there a block starts at every ``Conv2d``.
    """
    blocks, current = [], []
    for i, layer in enumerate(features):
        if per_conv and isinstance(layer, nn.Conv2d) and current:
            blocks.append(current)
            current = []
        current.append(f"{prefix}.{i}")
        if not per_conv and isinstance(layer, nn.MaxPool2d):
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return [(f"conv{k + 1}", tuple(b), b[-1]) for k, b in enumerate(blocks)]


def _vgg_like(model: nn.Module):
    out = _conv_blocks(model.features, "features", per_conv=type(model).__name__ == "AlexNet")
    linears = [i for i, layer in enumerate(model.classifier) if isinstance(layer, nn.Linear)]
    hidden = tuple(f"classifier.{i}" for i in linears[:-1])
    if hidden:
        out.append(("fc", hidden, hidden[-1]))
    last = f"classifier.{linears[-1]}"
    out.append(("head", (last,), last))
    return out


def _mobilenet_v3(model: nn.Module):
    n = len(model.features)
    out = [("stem", ("features.0",), "features.0")]
    out += [(f"features.{i}", (f"features.{i}",), f"features.{i}") for i in range(1, n - 1)]
    out += [("conv_head", (f"features.{n - 1}",), f"features.{n - 1}")]
    out += [("fc", ("classifier.0",), "classifier.0"), ("head", ("classifier.3",), "classifier.3")]
    return out


def _tv_efficientnet(model: nn.Module):
    n = len(model.features)
    out = [("stem", ("features.0",), "features.0")]
    out += [(f"features.{i}", (f"features.{i}",), f"features.{i}") for i in range(1, n - 1)]
    out += [("conv_head", (f"features.{n - 1}",), f"features.{n - 1}"), ("head", ("classifier.1",), "classifier.1")]
    return out


def _densenet(model: nn.Module):
    out = [("stem", ("features.conv0", "features.norm0"), "features.pool0")]
    for i in range(1, 5):
        mods = [f"features.denseblock{i}"] + ([f"features.transition{i}"] if i < 4 else ["features.norm5"])
        out.append((f"denseblock{i}", tuple(mods), mods[-1]))
    out.append(("head", ("classifier",), "classifier"))
    return out


def _convnext(model: nn.Module):
    n = len(model.features)
    out = [("stem", ("features.0",), "features.0")]
    out += [(f"features.{i}", (f"features.{i}",), f"features.{i}") for i in range(1, n)]
    out += [("head", ("classifier",), "classifier.2")]
    return out


def _generic(model: nn.Module):
    """Fallback: top-level children with parameters, expanding block containers."""
    out = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and name in {"blocks", "layers", "features", "stages"}:
            for sub, _ in child.named_children():
                out.append((f"{name}.{sub}", (f"{name}.{sub}",), f"{name}.{sub}"))
        else:
            out.append((name, (name,), name))
    if out:
        last_name, mods, output = out[-1]
        out[-1] = ("head", mods, output)
    return out


def _family(model: nn.Module) -> str:
    cls = type(model).__name__
    module = type(model).__module__
    if cls == "EfficientNet" and module.startswith("timm"):
        return "timm_efficientnet"
    if cls == "EfficientNet" and module.startswith("torchvision"):
        return "tv_efficientnet"
    return {
        "ResNet": "resnet",
        "VGG": "vgg",
        "AlexNet": "vgg",
        "MobileNetV3": "mobilenet_v3",
        "DenseNet": "densenet",
        "ConvNeXt": "convnext",
    }.get(cls, "generic")


_FAMILIES = {
    "timm_efficientnet": _timm_efficientnet,
    "resnet": _resnet,
    "vgg": _vgg_like,
    "mobilenet_v3": _mobilenet_v3,
    "tv_efficientnet": _tv_efficientnet,
    "densenet": _densenet,
    "convnext": _convnext,
    "generic": _generic,
}


def stages(model: nn.Module) -> list[Stage]:
    """The model's freeze points, in forward order, with parameter counts.

    Works for every backbone ``load_backbone`` returns (EfficientNet-Lite, torchvision's
    ResNet/VGG/AlexNet/MobileNetV3/EfficientNet/DenseNet/ConvNeXt) and, by a generic rule,
    for other models. The last stage is always called ``"head"``.

    >>> import tlkit
    >>> [s.name for s in tlkit.stages(tlkit.load_backbone("resnet18", pretrained=False))]
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
    """
    result = []
    for name, modules, output in _FAMILIES[_family(model)](model):
        n = sum(p.numel() for m in modules for p in model.get_submodule(m).parameters())
        result.append(Stage(name, tuple(modules), output, n))
    return result


def stage_names(model: nn.Module) -> list[str]:
    """Just the names of ``stages(model)``."""
    return [s.name for s in stages(model)]


def get_stage(model: nn.Module, name: str) -> Stage:
    """The stage called ``name``; a clear error listing the valid names otherwise."""
    all_stages = stages(model)
    for s in all_stages:
        if s.name == name:
            return s
    valid = ", ".join(repr(s.name) for s in all_stages)
    raise ValueError(f"{type(model).__name__} has no stage {name!r}. Valid stages, in order: {valid}.")


def head_path(model: nn.Module) -> str:
    """Dotted path of the final classification layer (an ``nn.Linear``)."""
    return stages(model)[-1].output


def num_features(model: nn.Module) -> int:
    """Width of the features the head reads (its ``in_features``)."""
    head = model.get_submodule(head_path(model))
    if not isinstance(head, nn.Linear):
        raise TypeError(f"expected the head {head_path(model)!r} to be nn.Linear, found {type(head).__name__}")
    return head.in_features
