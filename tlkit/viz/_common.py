"""Small helpers shared by the tlkit.viz modules: figures, input images, layers, class names.

Device, eval mode, stage names and the forward hooks that read a layer's output come from
``tlkit._runtime``, which training and feature extraction use too.
"""
from __future__ import annotations

import difflib
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .. import _runtime
from .._runtime import device_of, eval_mode, list_stages, run_until, stage_names  # noqa: F401 (used by viz modules)

ImageLike = Image.Image | torch.Tensor | str | Path


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

def new_figure(width: float, height: float) -> Figure:
    """A figure laid out by matplotlib's constrained layout, so titles and labels never overlap."""
    return plt.figure(figsize=(width, height), layout="constrained")


def finish(fig: Figure, **data: Any) -> Figure:
    """Attach the numbers behind a picture as ``fig.tlkit_data`` and hand the figure back.

    The figure is closed in pyplot, so a notebook shows it once: as the value of the cell
    (or with ``display(fig)``), not a second time when the cell ends.
    """
    fig.tlkit_data = data
    plt.close(fig)
    return fig


def title(fig: Figure, text: str, fontsize: float = 10) -> None:
    """A figure title, wrapped to the figure's width (constrained layout does not wrap text)."""
    chars = max(30, int(fig.get_figwidth() * 120 / fontsize))
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def preprocessing_of(model: nn.Module):
    """The backbone's :class:`tlkit.Preprocessing`, or None for a model tlkit did not load."""
    return _runtime.preprocessing_of(model, required=False)


def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """``(dotted path, module)`` for a stage name (its output module) or a dotted module path."""
    for stage in list_stages(model):
        if stage.name == layer:
            return stage.output, model.get_submodule(stage.output)
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        pass
    names = stage_names(model)
    close = difflib.get_close_matches(layer, names + [n for n, _ in model.named_modules() if n], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"{type(model).__name__} has no stage or module {layer!r}.{hint} Stages, in order: "
        f"{', '.join(map(repr, names))}; any dotted module path from model.named_modules() works too."
    )


def find_conv(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Conv2d]:
    """The first ``nn.Conv2d`` of the model, of a stage, or of a module (or the module itself)."""
    if layer is None:
        roots = [""]
    else:
        by_name = {s.name: s for s in list_stages(model)}
        roots = list(by_name[layer].modules) if layer in by_name else [resolve_layer(model, layer)[0]]
    for root in roots:
        module = model.get_submodule(root) if root else model
        for name, sub in module.named_modules():
            if isinstance(sub, nn.Conv2d):
                return ".".join(p for p in (root, name) if p), sub
    where = "the model" if layer is None else f"{layer!r}"
    raise ValueError(f"no nn.Conv2d in {where}; pick a stage with convolutions: {', '.join(stage_names(model))}")


def class_names(n: int, classes: Sequence[str] | None = None) -> list[str]:
    """Names for ``n`` outputs: the given ones, ImageNet's for a 1000-way head, else ``"0"``, ``"1"``..."""
    if classes is not None:
        if len(classes) != n:
            raise ValueError(f"got {len(classes)} class names for a model with {n} outputs")
        return [str(c) for c in classes]
    if n == 1000:
        from ..backbones import imagenet_classes

        return list(imagenet_classes())
    return [str(i) for i in range(n)]


def class_index(target: int | str, names: Sequence[str]) -> int:
    """Index of a class given by index or by name, with a helpful error."""
    if isinstance(target, str):
        if target in names:
            return list(names).index(target)
        close = difflib.get_close_matches(target, names, n=3)
        hint = f" Close names: {', '.join(map(repr, close))}." if close else ""
        raise ValueError(f"no class called {target!r}.{hint} Pass a class index or one of the model's class names.")
    index = int(target)
    if not 0 <= index < len(names):
        raise ValueError(f"class index {index} is out of range: the model has {len(names)} outputs")
    return index


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

def load_image(image: ImageLike) -> Image.Image | torch.Tensor:
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        return Image.open(path).convert("RGB")
    return image


def to_input(model: nn.Module, image: ImageLike, transform=None) -> torch.Tensor:
    """A ``1×3×H×W`` batch for ``model``.

    A path or PIL image goes through ``transform``, by default the backbone's own
    preprocessing (``tlkit.preprocess(model)``), or, for a model tlkit did not load, a plain
    conversion to [0, 1]. A tensor is taken as already preprocessed.
    """
    image = load_image(image)
    if isinstance(image, Image.Image) or (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
        if transform is None:
            pre = preprocessing_of(model)
            transform = pre.transform() if pre is not None else v2.Compose(
                [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        image = transform(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image, an image path or a tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (3×H×W or 1×3×H×W), got a tensor of shape {tuple(image.shape)}")
    return image.float().to(device_of(model))


def to_display(x: torch.Tensor, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> torch.Tensor:
    """A 3×H×W image in [0, 1] for ``imshow``: undoes ``Normalize(mean, std)``, or rescales if unknown."""
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    elif x.min() < 0 or x.max() > 1:
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return x.clamp(0, 1)


def show_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model input ``x`` as a displayable image, unnormalised with the backbone's mean and std."""
    pre = preprocessing_of(model)
    return to_display(x, pre.mean, pre.std) if pre is not None else to_display(x)


def as_hwc(img: Image.Image | torch.Tensor) -> Any:
    """Something ``imshow`` draws: a PIL image as is, a C×H×W tensor as an H×W×C array."""
    if isinstance(img, Image.Image):
        return img
    img = img.detach().cpu()
    if img.dtype == torch.uint8:
        img = img.float() / 255
    return img.permute(1, 2, 0).squeeze(-1).numpy() if img.dim() == 3 else img.numpy()
