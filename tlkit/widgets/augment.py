"""``augmentation_explorer``: toggles and sliders for an augmentation pipeline, a live grid of
what it does to the same images, and the pipeline as code to copy.

Example:
    >>> ax = augmentation_explorer(train, augment="light", rotation=15)   # doctest: +SKIP
    >>> ax                      # the widget                              # doctest: +SKIP
    >>> print(ax.code)          # the pipeline as Python                  # doctest: +SKIP
    >>> fit(model, train, val, augment=ax.pipeline)                       # doctest: +SKIP
"""
from __future__ import annotations

import html
import math
import random
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import ipywidgets as W
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode, v2

from ._base import _block, _display, _pil_png
from ..datasets import PRESET_SETTINGS

__all__ = ["AugmentationExplorer", "AugmentationSettings", "augmentation_explorer"]


@dataclass
class AugmentationSettings:
    """The knobs of an augmentation pipeline; ``transforms()`` builds it, ``code()`` writes it out.

    Attributes:
        size: output side in pixels (the backbone's input size, 224 for most).
        crop_scale: smallest share of the image's area a random crop keeps (``RandomResizedCrop``);
            1.0 means no random crop: resize and centre crop, as evaluation does.
        hflip, vflip: probability of a horizontal / vertical flip.
        rotation: largest rotation, in degrees, either way.
        brightness, contrast, saturation, hue: colour jitter strengths (``ColorJitter``).
        grayscale: probability of turning the image grey.
        blur: largest Gaussian blur sigma, in pixels (0: no blur).
        interpolation: resampling for crops and rotations.
    """

    size: int = 224
    crop_scale: float = 1.0
    hflip: float = 0.0
    vflip: float = 0.0
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    interpolation: str = "bilinear"

    PRESETS = PRESET_SETTINGS
    """The presets of ``tlkit.datasets.augmentation``, as settings (a test keeps them equal)."""

    @classmethod
    def preset(cls, name: str, size: int = 224, interpolation: str = "bilinear") -> "AugmentationSettings":
        """The settings of ``tlkit.datasets.augmentation(name, size)``."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown augmentation preset {name!r}: use one of {', '.join(cls.PRESETS)}")
        return cls(size=size, interpolation=interpolation, **cls.PRESETS[name])

    def preset_name(self) -> str | None:
        """The preset these settings equal, or None."""
        for name in self.PRESETS:
            if self == self.preset(name, self.size, self.interpolation):
                return name
        return None

    def validate(self) -> "AugmentationSettings":
        checks = [("size", self.size, 8, 2048), ("crop_scale", self.crop_scale, 0.01, 1.0),
                  ("hflip", self.hflip, 0, 1), ("vflip", self.vflip, 0, 1), ("rotation", self.rotation, 0, 180),
                  ("brightness", self.brightness, 0, 1), ("contrast", self.contrast, 0, 1),
                  ("saturation", self.saturation, 0, 1), ("hue", self.hue, 0, 0.5), ("grayscale", self.grayscale, 0, 1),
                  ("blur", self.blur, 0, 20)]
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number from {lo} to {hi}, got {value!r}")
        InterpolationMode(self.interpolation)  # a clear ValueError for an unknown mode
        return self

    def _steps(self) -> list[tuple[str, tuple, dict]]:
        """(v2 class name, args, kwargs) of each step, in order: both transforms() and code() read this.

        Arguments equal to torchvision's defaults (bilinear resampling, antialias) are left out,
        so the code stays short; the objects are the same either way.
        """
        mode = InterpolationMode(self.interpolation)
        resample = {} if mode == InterpolationMode.BILINEAR else {"interpolation": mode}
        steps: list[tuple[str, tuple, dict]] = []
        if self.crop_scale < 1.0:
            steps.append(("RandomResizedCrop", (self.size,), {"scale": (float(self.crop_scale), 1.0), **resample}))
        else:
            steps.append(("Resize", (round(self.size * 8 / 7),), resample))
            steps.append(("CenterCrop", (self.size,), {}))
        if self.hflip:
            steps.append(("RandomHorizontalFlip", (), {"p": float(self.hflip)}))
        if self.vflip:
            steps.append(("RandomVerticalFlip", (), {"p": float(self.vflip)}))
        if self.rotation:
            steps.append(("RandomRotation", (self.rotation,), {"interpolation": InterpolationMode.BILINEAR}))
        jitter = {k: getattr(self, k) for k in ("brightness", "contrast", "saturation", "hue") if getattr(self, k)}
        if jitter:
            steps.append(("ColorJitter", (), jitter))
        if self.grayscale:
            steps.append(("RandomGrayscale", (), {"p": float(self.grayscale)}))
        if self.blur:
            kernel = 2 * math.ceil(2 * self.blur) + 1  # covers +-2 sigma
            steps.append(("GaussianBlur", (kernel,), {"sigma": (0.1, float(self.blur))}))
        return steps

    def transforms(self) -> list[v2.Transform]:
        return [getattr(v2, name)(*args, **kwargs) for name, args, kwargs in self.validate()._steps()]

    def pipeline(self) -> v2.Compose:
        """The pipeline: a ``tlkit.datasets.Augmentation``, i.e. a ``v2.Compose`` that also draws fresh
        random parameters for every image of a batch (so ``fit(..., augment=pipeline)`` works)."""
        from ..datasets import Augmentation

        return Augmentation(self.transforms())

    def code(self) -> str:
        """Python that builds the same pipeline, to copy into a notebook."""
        def literal(v: Any) -> str:
            if isinstance(v, InterpolationMode):
                return f"InterpolationMode.{v.name}"
            if isinstance(v, float):
                return repr(round(v, 4))
            if isinstance(v, tuple):
                return "(" + ", ".join(literal(x) for x in v) + ")"
            return repr(v)

        lines = []
        for name, args, kwargs in self.validate()._steps():
            params = [literal(a) for a in args] + [f"{k}={literal(v)}" for k, v in kwargs.items()]
            lines.append(f"    v2.{name}({', '.join(params)}),")
        uses_mode = any("InterpolationMode." in line for line in lines)
        return "\n".join([
            f"from torchvision.transforms import {'InterpolationMode, ' if uses_mode else ''}v2",
            "from tlkit.datasets import Augmentation  # a v2.Compose that draws per image",
            "",
            "augment = Augmentation([",
            *lines,
            "])",
            "# train with it:  tlkit.train.fit(model, train, val, augment=augment)",
        ])


class AugmentationExplorer:
    """Toggles and sliders for an augmentation pipeline, a live grid of what it does to the same
    images, and the pipeline as code to copy.

    ``pipeline`` is the current pipeline object, ``code`` the Python that builds it,
    ``settings`` the knobs; ``set(rotation=15, ...)`` changes them (the widget's controls call
    it too) and ``grid()`` draws the images.

    Args:
        dataset: an ``ImageDataset`` (its untransformed images are used).
        indices: which images to show (default: one from each of the first classes).
        num_images: how many images when ``indices`` is not given.
        n_draws: random draws per image.
        augment: the preset to start from: ``"none"``, ``"light"``, ``"standard"``, ``"strong"``.
        size: output size (default: the backbone's, when ``backbone`` is given; else 224).
        backbone: a model or backbone name, for its input size and interpolation.
        seed: the draws are seeded; ``new_draws()`` moves to the next seed.
        **settings: any field of :class:`AugmentationSettings`, on top of the preset.

    >>> ax = AugmentationExplorer(train, augment="light", rotation=20)   # doctest: +SKIP
    >>> ax.grid()                  # the images and 5 draws of each       # doctest: +SKIP
    >>> print(ax.code)                                                    # doctest: +SKIP
    """

    def __init__(self, dataset: Any, *, indices: Sequence[int] | None = None, num_images: int = 3, n_draws: int = 5,
                 augment: str = "standard", size: int | None = None, backbone: Any = None, seed: int = 0,
                 tile: int = 104, **settings: Any) -> None:
        if not hasattr(dataset, "load_image"):
            raise TypeError(f"dataset must be a tlkit ImageDataset (from tlkit.datasets.load), got "
                            f"{type(dataset).__name__}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty: it holds no images")
        interpolation = "bilinear"
        if backbone is not None:
            from ..backbones import backbone_info

            pre = backbone_info(backbone).preprocessing
            size, interpolation = size or pre.size, pre.interpolation
        unknown = set(settings) - {f.name for f in fields(AugmentationSettings)}
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; settings are: "
                            f"{', '.join(f.name for f in fields(AugmentationSettings))}")
        self.settings = replace(AugmentationSettings.preset(augment, size or 224, interpolation), **settings).validate()
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else self._default_indices(dataset, num_images)
        for i in self.indices:
            if not -len(dataset) <= i < len(dataset):
                raise IndexError(f"index {i} is out of range for a dataset of {len(dataset)} images")
        self.n_draws, self.seed, self.tile = n_draws, seed, tile
        self._images = [self._shrink(dataset.load_image(i), self.settings.size) for i in self.indices]
        self._widget: W.Widget | None = None
        self._syncing = False

    @staticmethod
    def _default_indices(ds: Any, n: int) -> list[int]:
        """One image of each class in turn (the first of class 0, of class 1, ...), up to ``n``."""
        targets = list(getattr(ds, "targets", range(len(ds))))
        by_class: dict[int, list[int]] = {}
        for i, t in enumerate(targets):
            by_class.setdefault(t, []).append(i)
        order, k = [], 0
        while len(order) < min(n, len(ds)):
            for members in by_class.values():
                if k < len(members) and len(order) < n:
                    order.append(members[k])
            k += 1
        return order

    # -- the work ---------------------------------------------------------------
    @property
    def pipeline(self) -> v2.Compose:
        """The augmentation pipeline for the current settings (see ``AugmentationSettings.pipeline``)."""
        return self.settings.pipeline()

    @property
    def code(self) -> str:
        """Python that builds ``pipeline``."""
        return self.settings.code()

    def set(self, **changes: Any) -> AugmentationSettings:
        """Change settings (``set(rotation=15, hflip=0.5)``) or load a preset (``set(augment="strong")``)."""
        preset = changes.pop("augment", None)
        base = self.settings if preset is None else AugmentationSettings.preset(
            preset, self.settings.size, self.settings.interpolation)
        unknown = set(changes) - {f.name for f in fields(AugmentationSettings)}
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; settings are: "
                            f"{', '.join(f.name for f in fields(AugmentationSettings))}")
        self.settings = replace(base, **changes).validate()
        self._refresh()
        return self.settings

    def new_draws(self) -> None:
        """Draw again (the next seed)."""
        self.seed += 1
        self._refresh()

    def draws(self, seed: int | None = None) -> list[list[Image.Image]]:
        """For every shown image, ``n_draws`` augmented versions (PIL images), drawn with ``seed``."""
        pipeline = self.pipeline
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            random.seed(self.seed if seed is None else seed)
            try:
                out = [[self._as_pil(pipeline(img)) for _ in range(self.n_draws)] for img in self._images]
            finally:
                random.setstate(state)
        return out

    @staticmethod
    def _shrink(img: Image.Image, size: int) -> Image.Image:
        """Shorter side to ``size * 8 / 7`` (256 for 224), as tlkit's training batches see the image;
        augmenting a few hundred pixels instead of a photo's thousands keeps the grid live."""
        side = round(size * 8 / 7)
        w, h = img.size
        if min(w, h) <= side:
            return img.convert("RGB")
        scale = side / min(w, h)
        return img.convert("RGB").resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)

    @staticmethod
    def _as_pil(x: Any) -> Image.Image:
        if isinstance(x, Image.Image):
            return x.convert("RGB")
        return v2.functional.to_pil_image(x)

    def grid(self, seed: int | None = None) -> Image.Image:
        """One row per image: the original (whole, letterboxed), then its random draws."""
        t, gap, sep = self.tile, 4, 14
        rows = self.draws(seed)
        cols = 1 + self.n_draws
        canvas = Image.new("RGB", (cols * t + (cols - 2) * gap + sep, len(rows) * t + (len(rows) - 1) * gap),
                           "white")
        for r, (original, draws) in enumerate(zip(self._images, rows)):
            y = r * (t + gap)
            canvas.paste(ImageOps.pad(original.convert("RGB"), (t, t), color=(235, 235, 235)), (0, y))
            for c, img in enumerate(draws):
                canvas.paste(img.resize((t, t), Image.BILINEAR), (t + sep + c * (t + gap), y))
        return canvas

    def show(self) -> None:
        """The static view (no widgets): the grid and the code."""
        _display(self.grid(), self.code)

    def __repr__(self) -> str:
        preset = self.settings.preset_name()
        return (f"AugmentationExplorer({len(self.indices)} images x {self.n_draws} draws, "
                f"{'preset ' + repr(preset) if preset else 'custom settings'})\n{self.code}")

    @property
    def widget(self) -> W.Widget:
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = self.widget._repr_mimebundle_()
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = f"<pre>{html.escape(self.code)}</pre>"
        return bundle

    # -- the view ----------------------------------------------------------------
    def _build_widget(self) -> W.Widget:
        s = self.settings
        style = {"description_width": "104px"}
        lay = W.Layout(width="330px")

        def slider(name: str, lo: float, hi: float, step: float, label: str, fmt: str = ".2f") -> W.FloatSlider:
            return W.FloatSlider(value=getattr(s, name), min=lo, max=hi, step=step, description=label,
                                 readout_format=fmt, continuous_update=False, style=style, layout=lay)

        self.controls: dict[str, W.Widget] = {
            "crop_scale": slider("crop_scale", 0.05, 1.0, 0.05, "crop (min area)"),
            "hflip": W.Checkbox(value=bool(s.hflip), description="horizontal flip", indent=False),
            "vflip": W.Checkbox(value=bool(s.vflip), description="vertical flip", indent=False),
            "rotation": W.IntSlider(value=int(s.rotation), min=0, max=180, step=5, description="rotation (°)",
                                    continuous_update=False, style=style, layout=lay),
            "brightness": slider("brightness", 0, 1, 0.05, "brightness"),
            "contrast": slider("contrast", 0, 1, 0.05, "contrast"),
            "saturation": slider("saturation", 0, 1, 0.05, "saturation"),
            "hue": slider("hue", 0, 0.5, 0.01, "hue"),
            "grayscale": slider("grayscale", 0, 1, 0.05, "greyscale (p)"),
            "blur": slider("blur", 0, 5, 0.25, "blur (σ max)"),
        }
        self.controls["crop_scale"].tooltip = "1.0: no random crop (resize + centre crop, as evaluation does)"
        self.preset = W.Dropdown(options=[*AugmentationSettings.PRESETS, "custom"], value=s.preset_name() or "custom",
                                 description="preset", style=style, layout=lay).add_class("tlkit-aug-preset")
        self.draw_button = W.Button(description="New draws", icon="refresh", layout=W.Layout(width="120px"))
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%")).add_class("tlkit-aug-grid")
        self.code_view = W.HTML().add_class("tlkit-aug-code")
        for name, control in self.controls.items():
            control.observe(lambda ch, name=name: self._on_control(name, ch["new"]), "value")
        self.preset.observe(self._on_preset, "value")
        self.draw_button.on_click(lambda _: self.new_draws())
        flips = W.HBox([self.controls["hflip"], self.controls["vflip"]], layout=W.Layout(padding="0 0 0 108px"))
        left = W.VBox([self.preset, self.controls["crop_scale"], flips,
                       *[self.controls[k] for k in ("rotation", "brightness", "contrast", "saturation", "hue",
                                                    "grayscale", "blur")], self.draw_button],
                      layout=W.Layout(width="340px", flex="0 0 auto"))
        caption = W.HTML(_block(f"<span style='color:#666;font-size:11px'>left: the image as loaded; right: "
                                f"{self.n_draws} random draws of the pipeline (seeded: they change when a setting "
                                f"changes or you press New draws)</span>"))
        right = W.VBox([caption, self.image, self.code_view], layout=W.Layout(flex="1 1 0%", min_width="380px"))
        box = W.HBox([left, right], layout=W.Layout(flex_flow="row wrap", max_width="1100px"))
        self._widget = box.add_class("tlkit-augmentation-explorer")
        self._refresh()
        return self._widget

    def _on_control(self, name: str, value: Any) -> None:
        if self._syncing:
            return
        if name in ("hflip", "vflip"):
            value = 0.5 if value else 0.0
        self.set(**{name: value})

    def _on_preset(self, change: dict) -> None:
        if self._syncing or change["new"] == "custom":
            return
        self.set(augment=change["new"])

    def _refresh(self) -> None:
        if self._widget is None:
            return
        s = self.settings
        self._syncing = True  # move the controls to the settings without triggering their observers
        try:
            for name, control in self.controls.items():
                value = getattr(s, name)
                control.value = bool(value) if name in ("hflip", "vflip") else (
                    int(value) if name == "rotation" else value)
            self.preset.value = s.preset_name() or "custom"
        finally:
            self._syncing = False
        self.image.value = _pil_png(self.grid())
        self.code_view.value = (f"<pre style='font-size:11px;line-height:1.4;white-space:pre;overflow-x:auto;"
                                f"background:var(--jp-layout-color2,#f5f5f5);padding:6px;margin:4px 0'>"
                                f"{html.escape(self.code)}</pre>")


def augmentation_explorer(dataset: Any, **options: Any) -> AugmentationExplorer:
    """An :class:`AugmentationExplorer`: augmentation controls, a live grid of draws, the pipeline as code.

    Keyword options are those of :class:`AugmentationExplorer` and any setting of
    :class:`AugmentationSettings`; without widgets, set them here and call ``.show()``:

    >>> ax = augmentation_explorer(train, augment="light", rotation=15)   # doctest: +SKIP
    >>> ax.show()                # the grid, and the code                # doctest: +SKIP
    >>> fit(model, train, val, augment=ax.pipeline)                      # doctest: +SKIP
    """
    return AugmentationExplorer(dataset, **options)
