"""Freezing that really freezes.

``freeze(model, until="layer3")`` does two things, and the second is the one people forget:

1. ``requires_grad = False`` on every parameter of the stages before ``until``, so the
   optimizer cannot change them;
2. the layers in those stages that behave differently in training keep their eval
   behaviour, even after ``model.train()``. A frozen BatchNorm layer in train mode would
   still normalise with batch statistics and overwrite its ImageNet running mean and
   variance; a frozen Dropout or stochastic-depth layer (``DropPath``, ``StochasticDepth``)
   would still zero random activations or whole blocks: either way the "frozen" features
   would change from one batch to the next. tlkit installs a forward pre-hook on each such
   frozen layer that puts it back into eval mode before every forward pass.

Example:
    >>> import tlkit
    >>> m = tlkit.load_backbone("resnet18", pretrained=False, num_classes=2)
    >>> _ = tlkit.freeze(m, until="layer4")
    >>> print(tlkit.trainable_summary(m))  # doctest: +SKIP
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import math
import numbers

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .errors import ArgumentError

from .stages import Stage, get_stage, list_stages

__all__ = ["freeze", "unfreeze", "is_frozen_bn", "is_frozen", "trainable_summary", "TrainableSummary",
           "param_groups"]


def _random_layer_types() -> tuple[type, ...]:
    """Layers that are random in training: Dropout, and stochastic depth (torchvision's and timm's)."""
    kinds: list[type] = [_DropoutNd, nn.AlphaDropout]
    try:
        from torchvision.ops import StochasticDepth

        kinds.append(StochasticDepth)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    try:
        from timm.layers import DropBlock2d, DropPath

        kinds += [DropPath, DropBlock2d]
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return tuple(kinds)


_RANDOM_LAYERS = _random_layer_types()


def _behaves_differently_in_training(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, *_RANDOM_LAYERS))


def _keep_eval(module: nn.Module, args) -> None:
    """Forward pre-hook: a frozen BatchNorm, Dropout or stochastic-depth layer always runs in eval mode."""
    if getattr(module, "tlkit_frozen", False):
        module.training = False


def _set_frozen(layer: nn.Module, frozen: bool) -> None:
    if not getattr(layer, "tlkit_hooked", False):
        layer.register_forward_pre_hook(_keep_eval)
        layer.tlkit_hooked = True
    layer.tlkit_frozen = frozen
    if frozen:
        layer.eval()


def is_frozen(module: nn.Module) -> bool:
    """True for a BatchNorm, Dropout or stochastic-depth layer that ``freeze`` keeps in eval mode."""
    return _behaves_differently_in_training(module) and getattr(module, "tlkit_frozen", False)


def is_frozen_bn(module: nn.Module) -> bool:
    """True for a BatchNorm layer that ``freeze`` keeps in eval mode."""
    return isinstance(module, _BatchNorm) and getattr(module, "tlkit_frozen", False)


def _modules_of(model: nn.Module, stage: Stage):
    for path in stage.modules:
        yield from model.get_submodule(path).modules()


def freeze(model: nn.Module, until: str | None = None, *, include_head: bool = False) -> nn.Module:
    """Freeze every stage before ``until``; everything from ``until`` on stays trainable.

    Args:
        model: a model whose stages tlkit knows (see :func:`tlkit.list_stages`).
        until: first stage that stays trainable. ``None`` freezes the whole body (every
            stage but the head): the "fixed feature extractor" set-up.
        include_head: also freeze the head (the whole model becomes frozen).

    Stages from ``until`` on are made trainable again, so calling ``freeze`` with a later
    or earlier freeze point simply moves it. Returns the model.

    >>> import tlkit
    >>> m = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    >>> _ = tlkit.freeze(m)          # train only the new head
    >>> _ = tlkit.freeze(m, until="blocks.5")   # also fine-tune the last blocks
    """
    if until is not None and not isinstance(until, str):
        raise ArgumentError(f"until must be a stage name such as 'layer3' (see tlkit.list_stages(model)) or None; "
                            f"got {until!r} ({type(until).__name__}).")
    all_stages = list_stages(model)
    stop = len(all_stages) - 1 if until is None else [s.name for s in all_stages].index(get_stage(model, until).name)
    for i, stage in enumerate(all_stages):
        frozen = i < stop or (include_head and stage.name == "head")
        for module in _modules_of(model, stage):
            for p in module.parameters(recurse=False):
                p.requires_grad_(not frozen)
            if _behaves_differently_in_training(module):
                _set_frozen(module, frozen)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable and let every BatchNorm, Dropout and stochastic-depth layer follow
    ``model.train()`` again."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        if getattr(module, "tlkit_hooked", False):
            module.tlkit_frozen = False
            module.training = model.training
    return model


@dataclass
class TrainableSummary:
    """Per stage: parameters trainable and frozen, and how its BatchNorm layers behave.

    ``rows`` holds ``(stage, params, trainable, frozen, bn)`` tuples. Prints as a text table;
    shows as an HTML table in a notebook.
    """

    model_name: str
    rows: list[tuple[str, int, int, int, str]]

    @property
    def trainable(self) -> int:
        return sum(r[2] for r in self.rows)

    @property
    def frozen(self) -> int:
        return sum(r[3] for r in self.rows)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def stage(self, name: str) -> tuple[str, int, int, int, str]:
        """The row of one stage."""
        for row in self.rows:
            if row[0] == name:
                return row
        raise KeyError(f"no stage {name!r}; stages: {[r[0] for r in self.rows]}")

    def __str__(self) -> str:
        header = ("stage", "params", "trainable", "frozen", "BatchNorm")
        body = [(r[0], f"{r[1]:,}", f"{r[2]:,}", f"{r[3]:,}", r[4]) for r in self.rows]
        body.append(("total", f"{self.total:,}", f"{self.trainable:,}", f"{self.frozen:,}", ""))
        widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(5)]
        line = lambda cells: "  ".join(str(c).ljust(w) if i in (0, 4) else str(c).rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([f"{self.model_name}: {self.trainable:,} of {self.total:,} parameters trainable",
                          line(header), rule, *map(line, body[:-1]), rule, line(body[-1])])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        cells = []
        for name, n, t, f, bn in self.rows:
            color = "#e8f4ea" if t and not f else ("#eeeeee" if f and not t else "#fff7e0")
            cells.append(f"<tr style='background:{color}'><td>{html.escape(name)}</td><td>{n:,}</td>"
                         f"<td>{t:,}</td><td>{f:,}</td><td>{html.escape(bn)}</td></tr>")
        return (f"<p><b>{html.escape(self.model_name)}</b>: {self.trainable:,} of {self.total:,} parameters "
                f"trainable</p><table><tr><th>stage</th><th>params</th><th>trainable</th><th>frozen</th>"
                f"<th>BatchNorm</th></tr>{''.join(cells)}</table>")


def trainable_summary(model: nn.Module) -> TrainableSummary:
    """A per-stage table of trainable and frozen parameters and BatchNorm modes.

    >>> import tlkit
    >>> m = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False))
    >>> trainable_summary(m).stage("head")[2] == m.fc.weight.numel() + m.fc.bias.numel()
    True
    """
    rows = []
    for stage in list_stages(model):
        params = [p for path in stage.modules for p in model.get_submodule(path).parameters()]
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        bns = [m for path in stage.modules for m in model.get_submodule(path).modules() if isinstance(m, _BatchNorm)]
        n_frozen_bn = sum(is_frozen_bn(m) for m in bns)
        if not bns:
            bn = "-"
        elif n_frozen_bn == len(bns):
            bn = "eval (frozen stats)"
        elif n_frozen_bn == 0:
            bn = "follows train()"
        else:
            bn = f"{n_frozen_bn}/{len(bns)} frozen"
        rows.append((stage.name, trainable + frozen, trainable, frozen, bn))
    name = getattr(getattr(model, "tlkit_backbone", None), "name", type(model).__name__)
    return TrainableSummary(name, rows)


def _check_rate(name: str, value, *, zero_ok: bool) -> float:
    """A learning rate or weight decay: a real, finite number, positive (or zero where allowed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        expected = "a number >= 0" if zero_ok else "a positive number such as 1e-3"
        raise ArgumentError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).")
    return float(value)


def param_groups(model: nn.Module, lr: float, *, body_lr: float | None = None, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups for discriminative fine-tuning.

    The head trains at ``lr``. Trainable body stages get learning rates spaced
    geometrically from ``body_lr`` (the earliest trainable stage; default ``lr / 10``)
    up towards ``lr``: earlier, more general stages move less. Frozen parameters are left
    out, so the optimizer holds exactly the trainable ones. Each group carries its stage
    name under ``"name"``.

    ``body_lr=0`` gives every trainable body stage a learning rate of 0 (the limit of the
    spacing as ``body_lr`` shrinks): their weights stay put while only the head learns. It
    does not freeze them: their gradients are still computed and their BatchNorm statistics
    still follow ``model.train()``. To keep the body truly fixed, use :func:`freeze`.

    >>> import torch, tlkit
    >>> m = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False), until="layer3")
    >>> groups = param_groups(m, lr=1e-3)
    >>> [(g["name"], round(g["lr"], 6)) for g in groups]
    [('layer3', 0.0001), ('layer4', 0.000316), ('head', 0.001)]
    >>> opt = torch.optim.AdamW(groups)
    """
    lr = _check_rate("lr", lr, zero_ok=False)
    body_lr = lr / 10 if body_lr is None else _check_rate("body_lr", body_lr, zero_ok=True)
    weight_decay = _check_rate("weight_decay", weight_decay, zero_ok=True)
    groups = []
    for stage in list_stages(model):
        params = [p for path in stage.modules for p in model.get_submodule(path).parameters() if p.requires_grad]
        if params:
            groups.append({"name": stage.name, "params": params, "weight_decay": weight_decay})
    if not groups:
        raise ArgumentError("every parameter is frozen: there is nothing to optimise. Call tlkit.freeze(model) "
                            "without include_head=True, or tlkit.unfreeze(model).")
    body = [g for g in groups if g["name"] != "head"]
    for i, group in enumerate(body):
        group["lr"] = 0.0 if body_lr == 0 else body_lr * (lr / body_lr) ** (i / len(body))
    for group in groups:
        group.setdefault("lr", lr)
    return groups
