"""One naming scheme for the parts of a network: its *stages*.

A stage is a run of layers you would freeze, probe or visualise together: the stem,
each block group, the head. Every tlkit helper (``freeze``, ``viz``, ``advisor``, the
widgets) names layers by these stage names.

The stages come from the model's own description, never from its class name:

* a timm model describes itself: ``group_matcher()`` says which parameters form the stem
  and each block group (timm uses it for layer-wise learning rates), ``get_classifier()``
  names the head and ``feature_info`` the layers whose outputs are the stage outputs;
* a torchvision model (or any plain network) by its module structure: the head is its
  ``fc``/``classifier``/``head`` module, the body is the block container (``features``,
  ``layers``, ``trunk_output``) or the top-level children, one stage per block.

The rules are below, in :func:`list_stages`. Every parameter belongs to exactly one stage;
a model that cannot be cut that way gets a :class:`~tlkit.errors.BackboneError`.

Example:
    >>> import tlkit
    >>> m = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    >>> [s.name for s in tlkit.list_stages(m)][:3]
    ['stem', 'blocks.0', 'blocks.1']
    >>> tlkit.stages.head_path(m)
    'classifier'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from .errors import ArgumentError, BackboneError

__all__ = ["Stage", "list_stages", "get_stage", "head_path", "num_features", "check_added_layers"]

HEAD_NAMES = ("fc", "classifier", "head", "heads")
"""Names torchvision gives a network's classification head (the first one present is the head)."""

BODY_CONTAINERS = ("features", "layers", "trunk_output")
"""Names of containers whose children are the blocks of a torchvision body."""

_FLAT_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout)


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


def _display(path: str) -> str:
    """``classifier.1`` -> ``model.classifier[1]``: how a learner would write it."""
    return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split("."))


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_timm(model: nn.Module) -> bool:
    return callable(getattr(model, "group_matcher", None)) and callable(getattr(model, "get_classifier", None))


# ---------------------------------------------------------------------------
# The head, and the check that it is the head the forward pass really uses
# ---------------------------------------------------------------------------

def _head_container(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first top-level child named like a head (``fc``, ``classifier``, ...) that has parameters."""
    for name, child in model.named_children():
        if name in HEAD_NAMES and _has_params(child):
            return name, child
    return None


def _last_layer(module: nn.Module, prefix: str) -> str | None:
    """Path of the last layer with parameters of its own inside ``module`` (registration order)."""
    last = None
    for path, sub in module.named_modules(prefix=prefix):
        if next(sub.parameters(recurse=False), None) is not None:
            last = path
    return last


def _head(model: nn.Module) -> str:
    """Dotted path of the classification layer, from the model's own description."""
    if _is_timm(model):
        classifier = model.get_classifier()
        path = next((p for p, m in model.named_modules() if m is classifier and p), None)
        if path is None or not isinstance(classifier, nn.Module) or not _has_params(classifier):
            raise BackboneError(f"This {type(model).__name__} has no classifier (timm's get_classifier() gives "
                                f"{type(classifier).__name__}). Create it with num_classes > 0, or call "
                                "tlkit.replace_head(model, num_classes).")
        inner = _last_layer(classifier, path)
        return inner if inner is not None else path
    found = _head_container(model)
    if found is not None:
        path = _last_layer(found[1], found[0])
    else:
        path = _last_layer(model, "")
    if not path:
        raise BackboneError(f"{type(model).__name__} has no layer with parameters, so it has no head.")
    layer = model.get_submodule(path)
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        raise BackboneError(f"tlkit expected the head of this {type(model).__name__}, {_display(path)}, to be a "
                            f"Linear or a Conv2d layer, found {type(layer).__name__}.")
    return path


def _called(model: nn.Module, paths: list[str]) -> set[str]:
    """Which of ``paths`` one eval-mode forward pass of a small dummy image calls."""
    called: set[str] = set()
    handles = [model.get_submodule(p).register_forward_hook(lambda *_, p=p: called.add(p)) for p in paths]
    modes = {m: m.training for m in model.modules()}
    first = next(model.parameters())
    info = getattr(model, "tlkit_backbone", None)
    size = info.preprocessing.size if info is not None else 224
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=first.device, dtype=first.dtype))
    except Exception:  # noqa: BLE001 - a model that cannot run a dummy image: give it the benefit of the doubt
        called = set(paths)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return called


def check_added_layers(model: nn.Module) -> None:
    """Refuse a model with a layer added beside its real head (the tutorial's ``model.fc = nn.Linear(...)``).

    The PyTorch tutorial replaces a ResNet's head with ``model.fc = nn.Linear(...)``. On a network
    whose head is elsewhere (EfficientNet's is ``model.classifier[1]``) that line adds a new,
    unused layer: the model still outputs 1000 ImageNet scores and the new layer never trains.
    tlkit's functions call this check (through :func:`list_stages`) and say where the head is.

    >>> import tlkit, torch
    >>> m = tlkit.load_backbone("efficientnet_b0", pretrained=False)
    >>> m.fc = torch.nn.Linear(1280, 2)
    >>> tlkit.stages.check_added_layers(m)
    Traceback (most recent call last):
    ...
    tlkit.errors.BackboneError: model.fc (Linear(in_features=1280, out_features=2, bias=True)) was added to ...
    """
    _checked_added_layers(model)


def _checked_added_layers(model: nn.Module) -> str:
    """:func:`check_added_layers`, returning the head's path."""
    head = _head(model)
    top = head.split(".")[0]
    names = [n for n, _ in model.named_children()]
    after = [n for n in names[names.index(top) + 1:] if _has_params(model.get_submodule(n))]
    if not after:
        return head
    unused = [n for n in after if n not in _called(model, after)]
    if not unused:
        return head
    extra = unused[0]
    layer = model.get_submodule(head)
    outputs = getattr(layer, "out_features", getattr(layer, "out_channels", "?"))
    added = model.get_submodule(extra)
    wanted = getattr(added, "out_features", None) or outputs
    raise BackboneError(
        f"{_display(extra)} ({added}) was added to this {type(model).__name__}, but its forward pass never "
        f"uses it: the network's classification head is {_display(head)} ({type(layer).__name__} with "
        f"{outputs} outputs), so the model still predicts {outputs} classes and {_display(extra)} would never "
        f"train. `model.fc = nn.Linear(...)` is the PyTorch tutorial's recipe for ResNet, whose head is "
        f"model.fc.\nWhat to do: `del {_display(extra)}`, then tlkit.replace_head(model, {wanted}) (it finds "
        f"the head of any backbone), or assign the new layer to {_display(head)}."
    )


# ---------------------------------------------------------------------------
# timm: group_matcher + get_classifier + feature_info
# ---------------------------------------------------------------------------

def _whole_modules(model: nn.Module, groups: list[set[str]]) -> list[list[str]]:
    """For each group of parameter names: the largest modules whose parameters all lie in it, in order."""
    group_of = {n: g for g, names in enumerate(groups) for n in names}
    below: dict[str, set[int]] = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        for i in range(1, len(parts)):
            below.setdefault(".".join(parts[:i]), set()).add(group_of.get(name, -1))
    chosen: list[list[str]] = [[] for _ in groups]
    for path, _ in model.named_modules():
        inside = below.get(path)
        if not path or inside is None or len(inside) != 1 or -1 in inside:
            continue
        parent = path.rpartition(".")[0]
        if parent and below.get(parent) == inside:
            continue  # its parent is already whole
        chosen[next(iter(inside))].append(path)
    return chosen


def _timm_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(group key, parameter names) in timm's order, without merging ``MATCH_PREV_GROUP`` groups."""
    matcher = model.group_matcher(coarse=True)
    names = [n for n, _ in model.named_parameters()]
    if not isinstance(matcher, dict):
        from timm.models import group_with_matcher

        groups = group_with_matcher(model.named_parameters(), matcher)
        return [(f"group{k}", v) for k, v in sorted(groups.items())]
    keys = list(matcher)
    compiled = []
    for ordinal, (key, spec) in enumerate(matcher.items()):
        if spec is None:
            continue
        specs = spec if isinstance(spec, (list, tuple)) else [(spec, None)]
        compiled += [(re.compile(regex), (ordinal,), suffix) for regex, suffix in specs]

    def order(name: str) -> tuple[float, ...]:
        for regex, prefix, suffix in compiled:  # timm's own rule (timm.models._manipulate.group_with_matcher)
            found = regex.match(name)
            if found:
                return tuple(map(float, chain.from_iterable(filter(None, (prefix, found.groups(), suffix)))))
        return (float("inf"),)

    grouped: dict[tuple[float, ...], list[str]] = {}
    for n in names:
        grouped.setdefault(order(n), []).append(n)
    return [(keys[int(k[0])] if k[0] != float("inf") else "", grouped[k]) for k in sorted(grouped)]


def _timm_stages(model: nn.Module, head: str) -> list[tuple[str, tuple[str, ...]]]:
    head_params = {f"{head}.{n}" for n, _ in model.get_submodule(head).named_parameters()}
    out: list[tuple[str, tuple[str, ...]]] = []
    head_extra: list[str] = []
    grouped = [(key, set(params) - head_params) for key, params in _timm_groups(model)]
    grouped = [(key, rest) for key, rest in grouped if rest]
    whole = _whole_modules(model, [rest for _, rest in grouped])
    for (key, rest), modules in zip(grouped, whole):
        if not modules:
            raise BackboneError(f"tlkit cannot cut this {type(model).__name__} into stages: parameters such as "
                                f"{sorted(rest)[0]} do not sit in whole modules.")
        unmatched = key == ""
        if unmatched and all(p.ndim <= 1 for n, p in model.named_parameters() if n in rest):
            head_extra += modules  # a norm layer before the classifier (ConvNeXt's head.norm) trains with it
            continue
        name = "stem" if key == "stem" and not any(s[0] == "stem" for s in out) else modules[0]
        out.append((name, tuple(modules)))
    order = {p: i for i, (p, _) in enumerate(model.named_modules())}
    out.append(("head", tuple(sorted(head_extra + [head], key=order.__getitem__))))
    return out


def _timm_outputs(model: nn.Module, stages: list[tuple[str, tuple[str, ...]]], head: str) -> list[str]:
    """Each stage's output: the ``feature_info`` layer in or just after the stage, else its last module."""
    paths = [p for p, _ in model.named_modules()]
    index = {p: i for i, p in enumerate(paths)}
    info = [f.get("module") for f in (getattr(model, "feature_info", None) or []) if isinstance(f, dict)]
    info = [m for m in info if m in index]
    starts = [index[mods[0]] for _, mods in stages] + [len(paths)]
    owner = {}
    for k, (_, mods) in enumerate(stages):
        for m in mods:
            owner[m] = k
    outputs = []
    for k, (name, mods) in enumerate(stages):
        if name == "head":
            outputs.append(head)
            continue
        candidates = []
        for m in info:
            inside = next((owner[o] for o in owner if m == o or m.startswith(o + ".")), None)
            if inside == k or (inside is None and starts[k] <= index[m] < starts[k + 1]):
                candidates.append(m)
        outputs.append(max(candidates, key=index.__getitem__) if candidates else max(mods, key=index.__getitem__))
    return outputs


# ---------------------------------------------------------------------------
# torchvision (and plain networks): the module structure
# ---------------------------------------------------------------------------

def _conv_stack(units: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Split a flat stack of plain layers (VGG, AlexNet) into conv1..convN.

    VGG's blocks end at each max-pool (conv1_1, conv1_2, pool -> "conv1"). A stack of at most
    five convolutions (AlexNet) has too few to group: each convolution starts a stage.
    """
    per_conv = sum(isinstance(m, nn.Conv2d) for _, m in units) <= 5
    blocks, current = [], []
    for path, layer in units:
        if per_conv and isinstance(layer, nn.Conv2d) and current:
            blocks.append(current)
            current = []
        current.append((path, layer))
        if not per_conv and isinstance(layer, nn.MaxPool2d):
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _is_pointwise_head(units: list[tuple[str, nn.Module]]) -> bool:
    """A last body stage that only projects to the feature width with a 1x1 convolution."""
    convs = [m for _, u in units for m in u.modules() if isinstance(m, nn.Conv2d)]
    others = [m for _, u in units for m in u.modules() if isinstance(m, nn.Linear)]
    return len(convs) == 1 and convs[0].kernel_size == (1, 1) and not others


def _structural_stages(model: nn.Module, head: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Stages of a torchvision (or plain) network, read from its module structure.

    The body is every top-level child before the head, with block containers (``features``,
    ``layers``, ``trunk_output``) opened up. Each block is a stage; consecutive plain layers form
    one (the stem, MNASNet's last 1x1 convolution). The first stage is ``"stem"``, a last stage
    that only projects with a 1x1 convolution is ``"conv_head"``, the others keep their module
    path (``"layer2"``, ``"features.3"``). A body of plain layers only (VGG, AlexNet) is cut into
    ``conv1``..``convN``. A stage's output moves past a max-pool that follows it. Hidden linear
    layers inside the head container are ``"fc"``; the rest of it is ``"head"``.
    """
    top = head.split(".")[0]
    children = list(model.named_children())
    body = children[: [n for n, _ in children].index(top)]
    units: list[tuple[str, nn.Module]] = []
    for name, child in body:
        if name in BODY_CONTAINERS and len(list(child.children())) > 0:
            units += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            units.append((name, child))

    def short(path: str) -> str:
        parent, _, last = path.rpartition(".")
        return path if not parent or last.isdigit() else last

    # Group: each block (a module with children) is a stage; consecutive plain layers form one.
    groups: list[list[tuple[str, nn.Module]]] = []
    plain: list[tuple[str, nn.Module]] = []
    for path, unit in units:
        if len(list(unit.children())) == 0:
            plain.append((path, unit))
            continue
        if plain:
            groups.append(plain)
            plain = []
        groups.append([(path, unit)])
    if plain:
        groups.append(plain)
    flat = len(groups) == 1 and all(len(list(u.children())) == 0 for _, u in groups[0])
    if flat:
        groups = _conv_stack(groups[0])

    stages: list[tuple[str, list[tuple[str, nn.Module]], str]] = []  # (name, units, output)
    for group in groups:
        spatial = [p for p, u in group if not isinstance(u, _FLAT_POOLS)]  # layers that keep a feature map
        if not any(_has_params(u) for _, u in group):  # a pooling layer between blocks ends the stage before
            if stages and spatial:
                stages[-1] = (stages[-1][0], stages[-1][1], spatial[-1])
            continue
        norm_only = all(not isinstance(m, (nn.Conv2d, nn.Linear)) for _, u in group for m in u.modules())
        joins = stages and (norm_only or short(group[0][0]).startswith("transition"))
        end = spatial[-1] if spatial else group[-1][0]
        if joins:  # DenseNet: a transition or the final norm belongs to the block before it
            name, us, _ = stages[-1]
            stages[-1] = (name, us + group, end)
            continue
        name = f"conv{len(stages) + 1}" if flat else ("stem" if not stages else short(group[0][0]))
        stages.append((name, group, end))
    if not flat and len(stages) > 1 and _is_pointwise_head(stages[-1][1]):
        stages[-1] = ("conv_head", *stages[-1][1:])

    out = [(name, tuple(p for p, u in us if _has_params(u)), output) for name, us, output in stages]
    container = model.get_submodule(top)
    hidden = [p for p, m in container.named_modules(prefix=top)
              if isinstance(m, nn.Linear) and p != head and not p.startswith(head + ".")]
    if hidden:  # VGG's and MobileNetV3's hidden fully connected layers
        out.append(("fc", tuple(hidden), hidden[-1]))
    rest = [p for p, m in container.named_children() if _has_params(m) and p not in {h.rsplit(".", 1)[-1] for h in hidden}]
    head_modules = tuple(f"{top}.{p}" for p in rest) if top != head else (head,)
    out.append(("head", head_modules or (head,), head))
    return out


# ---------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------

def list_stages(model: nn.Module) -> list[Stage]:
    """The model's freeze points, in forward order, with parameter counts.

    Works for every backbone ``load_backbone`` returns, any ``"timm:<name>"`` CNN and
    torchvision's classification CNNs. The last stage is always ``"head"``, the first is
    ``"stem"`` (``"conv1"`` for VGG and AlexNet). Every parameter is in exactly one stage.

    >>> import tlkit
    >>> [s.name for s in tlkit.list_stages(tlkit.load_backbone("resnet18", pretrained=False))]
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module (from tlkit.load_backbone), got {type(model).__name__}.")
    head = _checked_added_layers(model)
    if _is_timm(model):
        raw = _timm_stages(model, head)
        described = [(n, mods, out) for (n, mods), out in zip(raw, _timm_outputs(model, raw, head))]
    else:
        described = _structural_stages(model, head)
    result, seen = [], {}
    for name, modules, output in described:
        params = [p for m in modules for p in model.get_submodule(m).parameters()]
        for p in params:
            if id(p) in seen:
                raise BackboneError(f"tlkit cut this {type(model).__name__} badly: a parameter is in stages "
                                    f"{seen[id(p)]!r} and {name!r}. Please report it with the model's name.")
            seen[id(p)] = name
        result.append(Stage(name, tuple(modules), output, sum(p.numel() for p in params)))
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise BackboneError(
            f"tlkit cannot cut this {type(model).__name__} into stages: {len(missing)} parameters belong to no "
            f"stage ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). tlkit's stages cover "
            "convolutional networks whose parameters sit in whole blocks (timm and torchvision CNNs); "
            "vision transformers keep tokens on the model itself."
        )
    return result


def get_stage(model: nn.Module, name: str) -> Stage:
    """The stage called ``name``; a clear error listing the valid names otherwise.

    >>> import tlkit
    >>> get_stage(tlkit.load_backbone("resnet18", pretrained=False), "layer3").output
    'layer3'
    """
    all_stages = list_stages(model)
    for s in all_stages:
        if s.name == name:
            return s
    valid = ", ".join(repr(s.name) for s in all_stages)
    raise BackboneError(f"{type(model).__name__} has no stage {name!r}. Valid stages, in order: {valid}.")


def head_path(model: nn.Module) -> str:
    """Dotted path of the final classification layer (an ``nn.Linear``, or SqueezeNet's ``nn.Conv2d``).

    >>> import tlkit
    >>> head_path(tlkit.load_backbone("vgg16", pretrained=False))
    'classifier.6'
    """
    return list_stages(model)[-1].output


def num_features(model: nn.Module) -> int:
    """Width of the features the head reads (its ``in_features``, or ``in_channels`` for a conv head)."""
    head = model.get_submodule(head_path(model))
    return head.in_features if isinstance(head, nn.Linear) else head.in_channels
