"""What a layer responds to: its feature maps for an image, and the pattern that excites a channel most.

Example:
    >>> import tlkit
    >>> model = tlkit.load_backbone("efficientnet_lite0")
    >>> ant = "/work/shared/datasets/hymenoptera_data/val/ants/10308379_1b6c72e180.jpg"
    >>> fig = tlkit.viz.feature_maps(model, ant, "blocks.2")         # doctest: +SKIP
    >>> fig = tlkit.viz.activation_maximization(model, "blocks.1", [0, 1, 2, 3])  # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ._common import (ImageLike, eval_mode, finish, hide_ticks, new_figure, preprocessing_of, resolve_layer,
                      run_until, show_input, stage_names, to_input)

__all__ = ["feature_maps", "activation_maximization"]


def _feature_tensor(output, layer: str, model: nn.Module) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() != 4:
        raise ValueError(f"{layer!r} outputs a tensor of shape {tuple(output.shape)}, not feature maps "
                         f"(batch × channels × height × width). Pick a convolutional stage: "
                         f"{', '.join(stage_names(model)[:-1])}.")
    return output


def feature_maps(model: nn.Module, image: ImageLike, layer: str, *, n: int = 16, shared_scale: bool = False,
                 transform=None) -> Figure:
    """The activations of one stage (or module) for one image: its ``n`` most active channels.

    Args:
        model: a backbone from ``tlkit.load_backbone`` (or any CNN).
        image: a PIL image or an image path (preprocessed with ``tlkit.preprocess(model)``,
            or ``transform``), or an already preprocessed 3×H×W tensor.
        layer: a stage name, as for ``tlkit.freeze`` (``"stem"``, ``"blocks.3"``, ``"layer2"``),
            or a dotted module path.
        n: how many channels to show, the most active first (by mean activation).
        shared_scale: draw all maps on one colour scale (strong and weak channels compare);
            by default each map is scaled to its own range (its pattern shows best).
        transform: preprocessing for a PIL image or path (default: the backbone's own).

    ``fig.tlkit_data`` holds ``activations`` (C×h×w), the ``channels`` shown and their ``scores``.

    >>> import tlkit
    >>> fig = feature_maps(tlkit.load_backbone("resnet18", pretrained=False), torch.rand(3, 64, 64), "layer2")
    >>> fig.tlkit_data["activations"].shape[0]
    128
    """
    x = to_input(model, image, transform)
    path, module = resolve_layer(model, layer)
    with eval_mode(model), torch.no_grad():
        outputs, _ = run_until(model, {path: module}, x)
    act = _feature_tensor(outputs[path], layer, model)[0].float().cpu()
    scores = act.mean(dim=(1, 2))
    top = scores.argsort(descending=True)[:n]
    maps = act[top]

    ncols = math.ceil(math.sqrt(len(top)))
    nrows = math.ceil(len(top) / ncols)
    fig = new_figure(11, 5.2)
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.5], wspace=0.02)
    ax = left.add_subplot()
    ax.imshow(show_input(model, x).permute(1, 2, 0).numpy())
    hide_ticks(ax)
    ax.set_title(f"input ({x.shape[-1]}×{x.shape[-2]} px)")
    axes = right.subplots(nrows, ncols, squeeze=False)
    if shared_scale:
        lo, hi = maps.amin(), maps.amax()
    else:  # each map from its own minimum to its own maximum
        lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    scaled = (maps - lo) / (hi - lo + 1e-8)
    for i, a in enumerate(axes.flat):
        hide_ticks(a)
        if i >= len(top):
            a.axis("off")
            continue
        shown = a.imshow(scaled[i].numpy(), cmap="viridis", vmin=0, vmax=1)
        a.set_title(f"ch {int(top[i])}", fontsize=8, pad=2)
    bar = right.colorbar(shown, ax=axes, shrink=0.8)
    if shared_scale:
        ticks = torch.linspace(0, 1, 5)
        bar.set_ticks(ticks.tolist(), labels=[f"{float(lo + t * (hi - lo)):.3g}" for t in ticks])
        bar.set_label("activation")
    else:
        bar.set_ticks([0, 1], labels=["min", "max"])
        bar.set_label("activation, each map scaled to its own range")
    right.suptitle(f"{len(top)} most active of {act.shape[0]} channels ({act.shape[1]}×{act.shape[2]} each)",
                   fontsize=10)
    where = layer if path == layer else f"{layer} ({path})"
    fig.suptitle(f"Feature maps of {where}")
    return finish(fig, layer=layer, module=path, activations=act, channels=top, scores=scores[top])


def activation_maximization(model: nn.Module, layer: str, channel: int | Sequence[int] = 0, *, size: int = 64,
                            steps: int = 40, lr: float = 0.05, jitter: int = 4, blur_every: int = 4,
                            blur_sigma: float = 0.5, seed: int = 0) -> Figure:
    """The input pattern that excites a channel most, found by gradient ascent on the image.

    Args:
        model: a backbone from ``tlkit.load_backbone`` (or any CNN).
        layer: a stage name (``"stem"``, ``"blocks.1"``, ``"layer1"``) or a dotted module path.
        channel: one channel of that layer's output, or several (optimised together, one image each).
        size: image size in pixels. Early layers see small patterns: 64-96 px is plenty.
        steps: gradient-ascent steps; lr: step size in pixel units (images live in [0, 1]).
        jitter: shift the image by up to this many pixels before each step, and
        blur_every / blur_sigma: blur it now and then, so the pattern does not collapse
            into high-frequency noise.
        seed: the starting noise and the jitter are seeded: same arguments, same picture.

    The objective is the channel's mean activation over its feature map, for the image
    normalised with the backbone's own mean and std. ``fig.tlkit_data`` holds ``images``
    (k×3×size×size in [0, 1]), ``channels`` and ``objective`` (steps+1 × k).

    >>> import tlkit
    >>> fig = activation_maximization(tlkit.load_backbone("efficientnet_lite0"), "blocks.1", [0, 1], steps=5)
    >>> fig.tlkit_data["images"].shape
    torch.Size([2, 3, 64, 64])
    """
    channels = [int(channel)] if isinstance(channel, int) else [int(c) for c in channel]
    if not channels:
        raise ValueError("channel: give one channel index or a non-empty list of them")
    path, module = resolve_layer(model, layer)
    device = next(model.parameters()).device
    pre = preprocessing_of(model)
    mean = torch.tensor(pre.mean if pre else (0.0, 0.0, 0.0), device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std if pre else (1.0, 1.0, 1.0), device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    img = (0.5 + 0.02 * torch.randn(len(channels), 3, size, size, generator=gen)).to(device).requires_grad_(True)
    index = torch.arange(len(channels))

    def objective(image: torch.Tensor) -> torch.Tensor:
        outputs, _ = run_until(model, {path: module}, (image - mean) / std)
        act = _feature_tensor(outputs[path], layer, model)
        if max(channels) >= act.shape[1]:
            raise ValueError(f"{layer!r} has {act.shape[1]} channels (0..{act.shape[1] - 1}); got channel "
                             f"{max(channels)}")
        return act[index, channels].mean(dim=(1, 2))

    history = []
    with eval_mode(model):
        for step in range(steps):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            shifted = torch.roll(img, shifts=(dy, dx), dims=(2, 3))
            value = objective(shifted)
            history.append(value.detach().cpu())
            (grad,) = torch.autograd.grad(value.sum(), img)
            with torch.no_grad():
                img += lr * grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
                if blur_every and (step + 1) % blur_every == 0:
                    img.copy_(gaussian_blur(img, kernel_size=3, sigma=blur_sigma))
                img.clamp_(0, 1)
        with torch.no_grad():
            history.append(objective(img).cpu())
    images = img.detach().cpu()
    curve = torch.stack(history)

    k = len(channels)
    ncols = min(k, 8)
    nrows = math.ceil(k / ncols)
    fig = new_figure(7.5, 3.4) if k == 1 else new_figure(max(3.2, 1.55 * ncols), 1.75 * nrows + 0.7)
    if k == 1:
        ax_img, ax_curve = fig.subplots(1, 2, width_ratios=[1, 1.3])
        axes = [ax_img]
        ax_curve.plot(range(len(curve)), curve[:, 0].numpy())
        ax_curve.set_xlabel("step")
        ax_curve.set_ylabel("mean activation")
        ax_curve.set_title("objective", fontsize=10)
    else:
        axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for i, ax in enumerate(axes):
        hide_ticks(ax)
        if i >= k:
            ax.axis("off")
            continue
        # Stretch the contrast of each pattern for display (the optimisation stays in [0, 1]).
        pattern = images[i]
        lo, hi = pattern.quantile(0.01), pattern.quantile(0.99)
        ax.imshow(((pattern - lo) / (hi - lo + 1e-8)).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"ch {channels[i]}: {curve[0, i]:.2g} → {curve[-1, i]:.2g}", fontsize=8)
    where = layer if path == layer else f"{layer} ({path})"
    fig.suptitle(f"What excites {where}: {steps} steps of gradient ascent at {size} px", fontsize=10)
    return finish(fig, layer=layer, module=path, channels=channels, images=images, objective=curve)
