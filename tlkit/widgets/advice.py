"""``advisor_widget``: the decision table as controls, the advice card updating live, and
'measure my dataset' (``tlkit.advisor.measure``).

Example:
    >>> aw = advisor_widget(per_class=40, num_classes=5, similarity="different")   # doctest: +SKIP
    >>> aw.advice.strategy                                                       # doctest: +SKIP
    'early_features'
"""
from __future__ import annotations

from typing import Any

import ipywidgets as W
from torch import nn

from ._base import RunStopped, _block, _display, _Explorer, _log

__all__ = ["AdvisorWidget", "advisor_widget"]


class AdvisorWidget(_Explorer):
    """The decision table as controls, with the advice updating live; and 'measure my dataset'.

    ``set(per_class=..., num_classes=..., similarity=...)`` (what the controls call) reads the
    table with ``tlkit.advisor.advise``; ``measure(dataset)`` runs ``tlkit.advisor.measure``
    and moves the controls to what it found (size, classes, measured similarity score).

    Args:
        per_class: training images per class.
        num_classes: number of classes.
        similarity: ``"similar"`` / ``"different"`` to ImageNet, or a score in [0, 1].
        backbone: backbone name (or model) the advice's stage names refer to.
        dataset, val: a dataset for the 'measure my dataset' button (else the text box's name or folder).
        measure_options: passed to ``tlkit.advisor.measure`` (e.g. ``{"stages": ["blocks.3"]}``
            to probe fewer stages, which is faster).

    >>> aw = AdvisorWidget(per_class=40, num_classes=5, similarity="different")   # doctest: +SKIP
    >>> aw.advice.strategy                                                       # doctest: +SKIP
    'early_features'
    """

    def __init__(self, per_class: float = 100, num_classes: int = 2, similarity: str | float = "similar", *,
                 backbone: Any = "efficientnet_lite0", dataset: Any = None, val: Any = None,
                 measure_options: dict | None = None) -> None:
        super().__init__()
        from .. import advisor

        self._advisor = advisor
        self.backbone = backbone
        self.measure_options = dict(measure_options or {})
        self.dataset, self.val = dataset, val
        self.measurement: Any = None
        """The last ``tlkit.advisor.Measurement`` (None until ``measure()``)."""
        self.per_class, self.num_classes, self.similarity = float(per_class), int(num_classes), similarity
        self.advice = self._advise()

    # -- the work ---------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return max(1, round(self.per_class * self.num_classes))

    def _advise(self) -> Any:
        return self._advisor.advise(self.num_images, self.num_classes, self.similarity, model=self.backbone)

    def set(self, *, per_class: float | None = None, num_classes: int | None = None,
            similarity: str | float | None = None) -> Any:
        """Change the inputs of the table and return the new ``Advice``."""
        old = (self.per_class, self.num_classes, self.similarity)
        if per_class is not None:
            if not isinstance(per_class, (int, float)) or per_class < 1:
                raise ValueError(f"per_class must be at least 1 image per class, got {per_class!r}")
            self.per_class = float(per_class)
        if num_classes is not None:
            self.num_classes = num_classes
        if similarity is not None:
            self.similarity = similarity
        try:
            self.advice = self._advise()
        except (TypeError, ValueError):
            self.per_class, self.num_classes, self.similarity = old
            raise
        self._refresh()
        return self.advice

    def measure(self, dataset: Any = None, val: Any = None, *, verbose: bool = True, **options: Any) -> Any:
        """``tlkit.advisor.measure`` on ``dataset`` (a dataset, a registered name or a folder);
        the controls then show its size, classes and measured similarity. Returns the Measurement."""
        from .. import datasets
        from ..backbones import load_backbone

        self._check_idle()
        dataset = self.dataset if dataset is None else dataset
        val = self.val if val is None else val
        if dataset is None:
            raise ValueError("no dataset to measure: pass one (a tlkit ImageDataset, a registered name such as "
                             "'hymenoptera', or a folder of class sub-folders)")
        if isinstance(dataset, str) or hasattr(dataset, "__fspath__"):
            self._say(f"loading {dataset}…")
            dataset = datasets.load(dataset, "train", progress=False)
        model = self.backbone if isinstance(self.backbone, nn.Module) else load_backbone(self.backbone)
        hook = model.register_forward_pre_hook(self._stop_hook())
        self._say(f"measuring {getattr(dataset, 'name', 'the dataset')} ({len(dataset)} images)…")
        try:
            m = self._advisor.measure(model, dataset, val, **{**self.measure_options, **options})
        except RunStopped:
            self._say("measurement stopped")
            return None
        finally:
            hook.remove()
        self.measurement = m
        _log(verbose, str(m))
        # One rounding, to the 2 decimals every view shows (status line, card, LEEP row, label):
        # rounding twice (to 3, then to 2 for display) made 0.7849 read 0.78 here and 0.79 on the card.
        score = round(m.similarity, 2)
        self.set(per_class=m.num_images / m.num_classes, num_classes=m.num_classes, similarity=score)
        self._say(f"measured {m.dataset}: {m.num_images} images, {m.num_classes} classes, similarity score "
                  f"{score:.2f} ({m.seconds:.1f} s)")
        return m

    def show(self) -> None:
        """The static view (no widgets): the advice card, and the measurement when there is one."""
        _display(*(x for x in (self.advice, self.measurement) if x is not None))

    def __repr__(self) -> str:
        return (f"AdvisorWidget({self.per_class:.0f} images per class, {self.num_classes} classes, "
                f"{self.similarity})\n{self.advice}")

    def _static_html(self) -> str:
        return self.advice._repr_html_()

    # -- the view ----------------------------------------------------------------
    def _build_widget(self) -> W.Widget:
        style = {"description_width": "120px"}
        self.per_class_slider = W.FloatLogSlider(value=self.per_class, base=10, min=0, max=4.5, step=0.05,
                                                 description="images per class", readout_format=".0f",
                                                 continuous_update=False, style=style,
                                                 layout=W.Layout(width="420px")).add_class("tlkit-advisor-size")
        self.classes_box = W.BoundedIntText(value=self.num_classes, min=2, max=100_000, description="classes",
                                            style=style, layout=W.Layout(width="220px"))
        self.similarity_buttons = W.ToggleButtons(options=["similar", "different"], style={"button_width": "90px"},
                                                  tooltips=["photos of everyday objects, animals, scenes",
                                                            "medical, satellite, microscopy, drawings, ..."])
        self.similarity_label = W.HTML(layout=W.Layout(width="128px")).add_class("tlkit-advisor-similarity")
        self.card = W.HTML().add_class("tlkit-advisor-card")
        self.source = W.Text(value=getattr(self.dataset, "name", "") or "", placeholder="dataset name or folder",
                             description="my data", style={"description_width": "60px"},
                             layout=W.Layout(width="320px"))
        self.measure_button = W.Button(description="measure my dataset", icon="flask", button_style="info",
                                       layout=W.Layout(width="170px"),
                                       tooltip="tlkit.advisor.measure: probes of frozen features, LEEP, NCE")
        self.measurement_view = W.HTML().add_class("tlkit-advisor-measurement")
        self.per_class_slider.observe(lambda ch: self._from_controls(per_class=ch["new"]), "value")
        self.classes_box.observe(lambda ch: self._from_controls(num_classes=ch["new"]), "value")
        self.similarity_buttons.observe(lambda ch: self._from_controls(similarity=ch["new"]), "value")
        self.measure_button.on_click(self._on_measure)
        self._syncing = False
        self._refresh()
        measure_row = W.HBox([self.source, self.measure_button, self.stop_button],
                             layout=W.Layout(align_items="center", flex_flow="row wrap"))
        similarity = W.HBox([self.similarity_label, self.similarity_buttons], layout=W.Layout(align_items="center"))
        return W.VBox([self.per_class_slider, W.HBox([self.classes_box]), similarity, self.card,
                       measure_row, self._status_row(), self.measurement_view],
                      layout=W.Layout(max_width="900px")).add_class("tlkit-advisor-widget")

    def _from_controls(self, **change: Any) -> None:
        if self._syncing:
            return
        try:
            self.set(**change)
        except (TypeError, ValueError) as e:
            self._say(str(e), error=True)

    def _on_measure(self, _button: Any) -> None:
        source = self.source.value.strip()
        dataset = self.dataset if self.dataset is not None and source == getattr(self.dataset, "name", "") else (
            source or None)
        self._start("measuring…", lambda: self.measure(dataset, verbose=False), [self.measure_button])

    def _refresh(self) -> None:
        if not hasattr(self, "card"):
            return
        self._syncing = True
        try:
            self.per_class_slider.value = self.per_class
            self.classes_box.value = self.num_classes
            self.similarity_buttons.value = self.advice.similarity
        finally:
            self._syncing = False
        score = self.advice.similarity_score
        label = "like ImageNet?" if score is None else f"measured: {score:.2f}"
        self.similarity_label.value = f"<div style='text-align:right;padding-right:8px'>{label}</div>"
        self.card.value = _block(self.advice._repr_html_())
        if self.measurement is not None:
            self.measurement_view.value = _block(self.measurement._repr_html_())


def advisor_widget(per_class: float = 100, num_classes: int = 2, similarity: str | float = "similar", *,
                   backbone: Any = "efficientnet_lite0", dataset: Any = None, val: Any = None,
                   measure_options: dict | None = None) -> AdvisorWidget:
    """An :class:`AdvisorWidget`: the decision table as controls and the live advice card.

    Without widgets, pass the numbers and print it (or look at ``.advice``):

    >>> print(advisor_widget(per_class=40, num_classes=5, similarity="different"))   # doctest: +SKIP
    """
    return AdvisorWidget(per_class, num_classes, similarity, backbone=backbone, dataset=dataset, val=val,
                         measure_options=measure_options)
