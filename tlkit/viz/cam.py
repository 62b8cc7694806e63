"""Grad-CAM: where in the image the evidence for a class is.

Grad-CAM (Selvaraju et al., 2017) weighs each feature map of a late convolutional layer
by how much the class score grows with it (the spatial mean of the gradient), adds the
weighted maps up and keeps the positive part. Upsampled to the image, that is a heatmap
of the regions that raised the score.

Example:
    >>> import tlkit
    >>> model = tlkit.load_backbone("efficientnet_lite0")
    >>> ant = "/work/shared/datasets/hymenoptera_data/val/ants/10308379_1b6c72e180.jpg"
    >>> cam = tlkit.viz.gradcam(model, ant, target="ant")        # doctest: +SKIP
    >>> fig = tlkit.viz.class_activation_map(model, ant)          # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from ..stages import list_stages as stages
from ._common import (ImageLike, class_index, class_names, eval_mode, finish, hide_ticks, new_figure,
                      resolve_layer, run_until, show_input, to_input)

__all__ = ["GradCAM", "gradcam", "class_activation_map", "default_cam_layer"]


@dataclass
class GradCAM:
    """A Grad-CAM result.

    Attributes:
        heatmap: H×W tensor in [0, 1], the size of the model input.
        target: the class index explained; label: its name; probability: the model's
            softmax probability for it.
        layer: the stage (or module path) whose feature maps were used.
        image: the model input as a displayable 3×H×W image in [0, 1].
    """

    heatmap: torch.Tensor = field(repr=False)
    target: int
    label: str
    probability: float
    layer: str
    image: torch.Tensor = field(repr=False)

    def __repr__(self) -> str:
        h, w = self.heatmap.shape
        return (f"GradCAM(target={self.target} {self.label!r}, probability={self.probability:.3f}, "
                f"layer={self.layer!r}, heatmap {h}×{w})")

    def plot(self) -> Figure:
        """The image, the heatmap over it, and a colorbar."""
        return _plot(self)


def default_cam_layer(model: nn.Module, x: torch.Tensor | None = None) -> str:
    """The last stage before the head whose output is a 4-D feature map.

    ``conv_head`` for EfficientNet, ``layer4`` for ResNet, ``conv5`` for VGG and AlexNet.
    """
    body = [s for s in stages(model) if s.name != "head"]
    if x is None:
        x = torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device)
    modules = {s.name: model.get_submodule(s.output) for s in body}
    with eval_mode(model), torch.no_grad():
        outputs, _ = run_until(model, modules, x)
    for s in reversed(body):
        out = outputs[s.name]
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            return s.name
    raise ValueError(f"no stage of {type(model).__name__} outputs feature maps; pass layer= a convolutional module")


def gradcam(model: nn.Module, image: ImageLike, target: int | str | None = None, *, layer: str | None = None,
            classes: Sequence[str] | None = None, transform=None) -> GradCAM:
    """Grad-CAM heatmap of ``image`` for the predicted class, or for ``target``.

    Args:
        model: a classifier (a backbone from ``tlkit.load_backbone``, or any CNN).
        image: a PIL image or a path (preprocessed with ``tlkit.preprocess(model)`` or
            ``transform``), or an already preprocessed 3×H×W tensor.
        target: ``None`` for the predicted class, a class index, or a class name (ImageNet
            names for a 1000-way head, see ``tlkit.imagenet_classes()``; else ``classes``).
        layer: stage name or module path of the feature maps; default
            :func:`default_cam_layer` (the last convolutional stage).
        classes: names of the model's outputs, for a fine-tuned head.

    The gradient of the class score with respect to the feature maps is taken with
    ``torch.autograd.grad``: like a tensor hook, but it leaves the parameters' ``.grad`` alone.

    >>> import tlkit
    >>> m = tlkit.load_backbone("resnet18", pretrained=False)
    >>> gradcam(m, torch.rand(3, 64, 64), target=1).heatmap.shape
    torch.Size([64, 64])
    """
    x = to_input(model, image, transform)
    layer = layer or default_cam_layer(model, x)
    path, module = resolve_layer(model, layer)
    with eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)        # so every activation is part of the graph, frozen or not
        outputs, logits = run_until(model, {path: module}, x, stop=False)
        maps = outputs[path][0] if isinstance(outputs[path], (tuple, list)) else outputs[path]
        if maps.dim() != 4:
            raise ValueError(f"Grad-CAM needs feature maps; {layer!r} outputs shape {tuple(maps.shape)}. "
                             f"Try layer={default_cam_layer(model, x.detach())!r}.")
        names = class_names(logits.shape[1], classes)
        index = int(logits[0].argmax()) if target is None else class_index(target, names)
        (grad,) = torch.autograd.grad(logits[0, index], maps)
    weights = grad.mean(dim=(2, 3), keepdim=True)                 # one weight per channel
    cam = F.relu((weights * maps.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    probability = float(logits.detach().softmax(dim=1)[0, index])
    return GradCAM(cam.cpu(), index, names[index], probability, layer, show_input(model, x))


def _plot(cam: GradCAM) -> Figure:
    fig = new_figure(8.6, 4.0)
    ax_img, ax_cam = fig.subplots(1, 2)
    image = cam.image.permute(1, 2, 0).numpy()
    ax_img.imshow(image)
    ax_img.set_title("input")
    ax_cam.imshow(image)
    shown = ax_cam.imshow(cam.heatmap.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax_cam.set_title(f"Grad-CAM for {cam.label!r} (p = {cam.probability:.2f})")
    for ax in (ax_img, ax_cam):
        hide_ticks(ax)
    fig.colorbar(shown, ax=ax_cam, shrink=0.85, label="relative importance")
    fig.suptitle(f"Where the evidence for {cam.label!r} is (feature maps of {cam.layer})", fontsize=10)
    return finish(fig, cam=cam, heatmap=cam.heatmap, target=cam.target, label=cam.label,
                  probability=cam.probability, layer=cam.layer)


def class_activation_map(model: nn.Module, image: ImageLike, target: int | str | None = None, *,
                         layer: str | None = None, classes: Sequence[str] | None = None, transform=None) -> Figure:
    """The Grad-CAM heatmap over the image, for the predicted class or ``target``.

    Same arguments as :func:`gradcam`; ``fig.tlkit_data`` holds the :class:`GradCAM` (``cam``)
    and its ``heatmap``, ``target``, ``label`` and ``probability``.

    >>> fig = class_activation_map(model, "ant.jpg", target="ant")  # doctest: +SKIP
    """
    return _plot(gradcam(model, image, target, layer=layer, classes=classes, transform=transform))
