"""Pictures of the weights themselves: convolution filters, and how fine-tuning moved them.

Example:
    >>> import copy, tlkit
    >>> model = tlkit.load_backbone("efficientnet_lite0")
    >>> fig = tlkit.viz.filters(model)                  # the 32 RGB filters of the stem
    >>> before = copy.deepcopy(model)
    >>> # ... fine-tune model ...
    >>> tlkit.viz.weight_drift(before, model)["stem"]   # 0.0 if the stem was frozen
    0.0
"""
from __future__ import annotations

import math
from typing import Mapping

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from torch import nn
from torchvision.utils import make_grid

from ..stages import list_stages as stages
from ._common import finish, find_conv, hide_ticks, new_figure, title

__all__ = ["filters", "filter_drift", "weight_drift", "stage_drift"]

_MAX_SLICES = 16  # deeper layers: at most 16 filters × 16 input channels


# ---------------------------------------------------------------------------
# Filter grids
# ---------------------------------------------------------------------------

def _scale_per_filter(*weights: torch.Tensor) -> list[torch.Tensor]:
    """Scale each filter to [0, 1] by its own min and max (shared across ``weights``, to compare them)."""
    stacked = torch.stack([w.flatten(1) for w in weights])                 # (k, N, C·h·w)
    lo = stacked.amin(dim=(0, 2)).view(-1, 1, 1, 1)
    hi = stacked.amax(dim=(0, 2)).view(-1, 1, 1, 1)
    return [(w - lo) / (hi - lo + 1e-8) for w in weights]


def _grid(tiles: torch.Tensor, nrow: int, pad_value: float) -> torch.Tensor:
    """torchvision's ``make_grid`` with a one-pixel border; returns C×H×W (1 or 3 channels)."""
    grid = make_grid(tiles, nrow=nrow, padding=1, pad_value=pad_value)
    return grid if tiles.shape[1] == 3 else grid[:1]


def _slices(weight: torch.Tensor) -> torch.Tensor:
    """(filters·channels)×1×h×w tiles: row = output filter, column = input channel."""
    rows, cols = min(weight.shape[0], _MAX_SLICES), min(weight.shape[1], _MAX_SLICES)
    return weight[:rows, :cols].reshape(rows * cols, 1, *weight.shape[2:]), rows, cols


def _layout(weight: torch.Tensor) -> str:
    """How to draw a conv weight: RGB filters, one 2-D slice per filter/channel, or a 1×1 matrix."""
    if weight.shape[1] == 3:
        return "rgb"
    if weight.shape[2:] == (1, 1):
        return "matrix"
    return "depthwise" if weight.shape[1] == 1 else "slices"


def _weight_image(weight: torch.Tensor, max_filters: int) -> dict:
    """The picture of a conv weight tensor (out × in × h × w) as an image plus how to draw it."""
    mode = _layout(weight)
    if mode == "rgb":
        tiles = _scale_per_filter(weight[:max_filters])[0]
        return {"mode": mode, "grid": _grid(tiles, 8, 1.0), "nrow": 8, "shown": tiles.shape[0]}
    if mode == "matrix":
        matrix = weight[:max_filters, :max_filters, 0, 0]
        return {"mode": mode, "grid": matrix.unsqueeze(0), "shown": matrix.shape[0]}
    if mode == "depthwise":
        tiles = weight[:max_filters]
        nrow = math.ceil(math.sqrt(tiles.shape[0]))
        return {"mode": mode, "grid": _grid(tiles, nrow, float("nan")), "nrow": nrow, "shown": tiles.shape[0]}
    tiles, rows, cols = _slices(weight)
    return {"mode": mode, "grid": _grid(tiles, cols, float("nan")), "nrow": cols, "shown": rows, "cols": cols}


def _draw(ax, image: dict, weight_shape, vmax: float | None = None, cmap: str = "RdBu_r"):
    """Draw a ``_weight_image`` on ``ax``; returns the AxesImage (for a colorbar) or None for RGB."""
    grid = image["grid"]
    if image["mode"] == "rgb" and grid.shape[0] == 3:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        hide_ticks(ax)
        return None
    data = grid[0].numpy()
    vmax = vmax if vmax is not None else float(np.nanmax(np.abs(data))) or 1.0
    vmin = 0.0 if cmap != "RdBu_r" else -vmax
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    shown = ax.imshow(data, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    k = weight_shape[-1]
    if image["mode"] == "matrix":
        ax.set_xlabel("input channel")
        ax.set_ylabel("output filter")
    elif image["mode"] == "slices":
        step = k + 1
        ax.set_xticks([1 + step * i + (k - 1) / 2 for i in range(image["cols"])], range(image["cols"]), fontsize=7)
        ax.set_yticks([1 + step * i + (k - 1) / 2 for i in range(image["shown"])], range(image["shown"]), fontsize=7)
        ax.set_xlabel("input channel")
        ax.set_ylabel("output filter")
        ax.tick_params(length=0)
    else:
        hide_ticks(ax)
    return shown


def _describe(path: str, weight: torch.Tensor, image: dict) -> str:
    n, c, h, w = weight.shape
    count = f"{n} filters" if image["shown"] == n else f"first {image['shown']} of {n} filters"
    if image["mode"] == "rgb":
        return f"{path}: {count}, {h}×{w}×3 (RGB), each scaled to its own range"
    if image["mode"] == "depthwise":
        return f"{path}: {count}, {h}×{w} depthwise (one channel each)"
    if image["mode"] == "matrix":
        rows, cols = image["grid"].shape[1:]
        size = f"{n} filters × {c} input channels" if (rows, cols) == (n, c) else \
            f"first {rows} of {n} filters × first {cols} of {c} input channels"
        return f"{path}: 1×1 convolution (mixes channels, no spatial pattern), {size}"
    cols = image["cols"]
    return f"{path}: {count} × {'first ' + str(cols) + ' of ' if cols < c else ''}{c} input channels, {h}×{w} each"


def filters(model: nn.Module, layer: str | None = None, *, max_filters: int = 64) -> Figure:
    """The filters of a convolution, as pictures.

    Args:
        model: any backbone tlkit loads (or any model with an ``nn.Conv2d``).
        layer: ``None`` for the first convolution (the stem); else a stage name
            (``"layer2"``, ``"blocks.3"``) or a dotted module path: its first ``nn.Conv2d`` is shown.
        max_filters: at most this many filters (16 for the per-channel view of deeper layers).

    The first convolution reads RGB pixels, so each filter is drawn as a small colour image
    (scaled per filter). A deeper convolution reads feature channels: it is drawn as a grid of
    2-D slices (row = filter, column = input channel) on a shared blue-white-red scale.
    ``fig.tlkit_data`` holds ``layer``, ``weight`` and the ``grid`` image.

    >>> import tlkit
    >>> fig = filters(tlkit.load_backbone("efficientnet_lite0"))
    >>> fig.tlkit_data["weight"].shape
    torch.Size([32, 3, 3, 3])
    """
    path, conv = find_conv(model, layer)
    weight = conv.weight.detach().float().cpu()
    image = _weight_image(weight, max_filters)
    grid = image["grid"]
    aspect = grid.shape[1] / grid.shape[2]
    fig = new_figure(6.4 if aspect <= 1.2 else 5.0, min(8.0, max(2.4, 5.6 * aspect + 0.8)))
    ax = fig.add_subplot()
    shown = _draw(ax, image, weight.shape)
    if shown is not None:
        fig.colorbar(shown, ax=ax, shrink=0.8, label="weight")
    where = path if layer is None or layer == path else f"{layer} → {path}"
    title(fig, _describe(where, weight, image))
    return finish(fig, layer=path, weight=weight, grid=grid, mode=image["mode"])


# ---------------------------------------------------------------------------
# Drift: what fine-tuning changed
# ---------------------------------------------------------------------------

def _state(before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module) -> Mapping[str, torch.Tensor]:
    if before is after:
        raise ValueError("before and after are the same model object. Snapshot the model before training: "
                         "before = copy.deepcopy(model).")
    state = before.state_dict() if isinstance(before, nn.Module) else before
    shared = [k for k, p in after.named_parameters() if k in state and state[k].data_ptr() == p.data_ptr()]
    if shared:
        raise ValueError(f"'before' shares memory with 'after' (e.g. {shared[0]}): model.state_dict() returns the "
                         "live tensors. Snapshot with copy.deepcopy(model) or {k: v.clone() for k, v in "
                         "model.state_dict().items()}.")
    return state


def weight_drift(before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module) -> dict[str, float]:
    """How far each stage's weights moved: ``‖w_after − w_before‖ / ‖w_before‖`` per tlkit stage.

    Args:
        before: a copy of the model taken before training (``copy.deepcopy(model)``) or a
            cloned state dict.
        after: the trained model.

    Only parameters count (not BatchNorm running statistics). A frozen stage gives exactly
    0.0; a stage whose shapes changed (a replaced head) gives ``nan``.

    >>> import copy, tlkit
    >>> m = tlkit.load_backbone("resnet18", pretrained=False)
    >>> weight_drift(copy.deepcopy(m), m)["layer1"]
    0.0
    """
    state = _state(before, after)
    drift = {}
    for stage in stages(after):
        change = norm = 0.0
        replaced = False
        for path in stage.modules:
            for name, p in after.get_submodule(path).named_parameters():
                key = f"{path}.{name}"
                if key not in state:
                    raise KeyError(f"{key} is missing from 'before': are before and after the same architecture?")
                old = state[key].detach().to(p.device, torch.float64)
                if old.shape != p.shape:
                    replaced = True
                    continue
                change += float((p.detach().double() - old).pow(2).sum())
                norm += float(old.pow(2).sum())
        if replaced:
            drift[stage.name] = float("nan")
        elif norm == 0.0:
            drift[stage.name] = 0.0 if change == 0.0 else float("inf")
        else:
            drift[stage.name] = math.sqrt(change) / math.sqrt(norm)
    return drift


def _is_frozen(model: nn.Module, stage) -> bool:
    params = [p for path in stage.modules for p in model.get_submodule(path).parameters()]
    return bool(params) and not any(p.requires_grad for p in params)


def stage_drift(before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module | Mapping[str, nn.Module],
                *, log: bool = False) -> Figure:
    """A bar chart of :func:`weight_drift`: how much each stage moved in fine-tuning.

    Args:
        before: the model before training (``copy.deepcopy(model)``) or a cloned state dict.
        after: the trained model, or ``{label: trained model}`` to compare several runs
            (e.g. learning rates) started from the same ``before``.
        log: symmetric-log y axis, to see small and large changes together.

    Stages that are frozen in ``after`` are marked "frozen" (their drift is exactly 0).
    ``fig.tlkit_data["drift"]`` maps each run label to its ``weight_drift`` dict.

    >>> fig = stage_drift(before, {"lr=1e-3": slow, "lr=1e-1": fast})  # doctest: +SKIP
    """
    runs = dict(after) if isinstance(after, Mapping) and not isinstance(after, nn.Module) else {"after": after}
    if not runs:
        raise ValueError("'after' is an empty dict: pass a trained model or {label: model}")
    drift = {label: weight_drift(before, model) for label, model in runs.items()}
    names = [s.name for s in stages(next(iter(runs.values())))]
    frozen = {label: [_is_frozen(model, s) for s in stages(model)] for label, model in runs.items()}

    fig = new_figure(max(6.0, 0.55 * len(names) * max(1, len(runs) ** 0.5) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(drift.items()):
        heights = [0.0 if math.isnan(values[n]) else values[n] for n in names]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label)
        texts = []
        for name, is_frozen in zip(names, frozen[label]):
            v = values[name]
            texts.append("new" if math.isnan(v) else "frozen" if is_frozen and v == 0 else
                         "0" if v == 0 else f"{v:.1%}" if v >= 0.001 else f"{v:.0e}")
        ax.bar_label(bars, texts, fontsize=7, padding=2, rotation=90 if len(runs) > 1 else 0)
    top = max([v for d in drift.values() for v in d.values() if math.isfinite(v)] + [1e-3])
    for xi, *per_run in zip(x, *frozen.values()):
        if all(per_run):
            ax.axvspan(xi - 0.45, xi + 0.45, color="0.93", zorder=0)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_xlabel("stage (input → output)")
    ax.set_ylabel("relative change  ‖Δw‖ / ‖w‖")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    if log:
        ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(0, top * (1.3 if not log else 5))
    if len(runs) > 1:
        fig.legend(title="run", loc="outside right upper")
    any_frozen = any(all(col) for col in zip(*frozen.values()))
    ax.set_title("How much fine-tuning moved each stage's weights" + (" (grey: frozen)" if any_frozen else ""))
    return finish(fig, drift=drift, stages=names, frozen={k: dict(zip(names, v)) for k, v in frozen.items()})


def filter_drift(before: nn.Module | Mapping[str, torch.Tensor], after: nn.Module, layer: str | None = None,
                 *, max_filters: int = 32) -> Figure:
    """A convolution's filters before and after fine-tuning, side by side, and their difference.

    Args:
        before: the model before training (``copy.deepcopy(model)``) or a cloned state dict.
        after: the trained model.
        layer: ``None`` for the first convolution; else a stage name or module path (see :func:`filters`).
        max_filters: at most this many filters.

    Before and after are scaled together per filter, so a change in contrast shows; the
    third panel is the size of the change ``|w_after − w_before|`` on one scale.
    ``fig.tlkit_data`` holds ``before``, ``after`` and per-filter ``relative_change``.

    >>> fig = filter_drift(before, model)  # doctest: +SKIP
    """
    state = _state(before, after)
    path, conv = find_conv(after, layer)
    new = conv.weight.detach().float().cpu()[:max_filters]
    if f"{path}.weight" not in state:
        raise KeyError(f"{path}.weight is missing from 'before': are before and after the same architecture?")
    old = state[f"{path}.weight"].detach().float().cpu()[:max_filters]
    if old.shape != new.shape:
        raise ValueError(f"{path} changed shape from {tuple(old.shape)} to {tuple(new.shape)}: nothing to compare")
    delta = (new - old).abs()
    relative = (new - old).flatten(1).norm(dim=1) / (old.flatten(1).norm(dim=1) + 1e-12)

    if new.shape[1] == 3:
        a, b = _scale_per_filter(old, new)
        panels = [{"mode": "rgb", "grid": _grid(a, 8, 1.0), "shown": len(a)},
                  {"mode": "rgb", "grid": _grid(b, 8, 1.0), "shown": len(b)}]
        diff = {"mode": "depthwise", "grid": _grid(delta.sum(1, keepdim=True), 8, float("nan")), "shown": len(a)}
        vmax = None
    else:
        panels = [_weight_image(old, max_filters), _weight_image(new, max_filters)]
        diff = _weight_image(delta, max_filters)
        vmax = float(max(old.abs().max(), new.abs().max()))
    aspect = panels[0]["grid"].shape[1] / panels[0]["grid"].shape[2]
    fig = new_figure(11, max(2.6, 3.3 * aspect + 1.0))
    axes = fig.subplots(1, 3)
    for ax, panel, title in zip(axes[:2], panels, ["before", "after"]):
        shown = _draw(ax, panel, new.shape, vmax=vmax)
        ax.set_title(title)
    if panels[0]["mode"] != "rgb":
        fig.colorbar(shown, ax=axes[:2], shrink=0.8, label="weight")
    changed = _draw(axes[2], diff, new.shape, vmax=float(delta.max()) or 1e-8, cmap="magma")
    fig.colorbar(changed, ax=axes[2], shrink=0.8, label="|after − before|" + (" (sum over RGB)" if
                                                                               new.shape[1] == 3 else ""))
    axes[2].set_title("change")
    overall = float((new - old).norm() / (old.norm() + 1e-12))
    fig.suptitle(f"{path}: filters before and after fine-tuning (relative change {overall:.2%})")
    return finish(fig, layer=path, before=old, after=new, relative_change=relative, overall=overall)
