"""What the explorers share: display helpers and ``_Explorer``, a widget with a background job.

A job (a training run, an lr_find sweep, a measurement) runs in a thread, so the notebook
stays responsive; the status line says what is running and for how long (it ticks every
second, so a long epoch never looks frozen); Stop ends the job at the next batch through
a forward pre-hook on the model being trained.
"""
from __future__ import annotations

import copy
import html
import io
import threading
import time
from typing import Any, Callable, Sequence

import ipywidgets as W
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ..backbones import replace_head
from ..stages import head_path

__all__ = ["RunStopped"]


class RunStopped(Exception):
    """Raised inside a training run when its Stop button (or ``explorer.stop()``) is pressed."""


def _count(n: int) -> str:
    """1234567 -> '1.2M', 5300 -> '5.3k'."""
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _png(fig: Figure, dpi: int = 96) -> bytes:
    """A matplotlib figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _block(content: str) -> str:
    """HTML for an ``ipywidgets.HTML``: its default line height (28 px, a control's height) spreads text apart."""
    return f"<div style='line-height:1.45'>{content}</div>"


def _pil_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def _display(*objs: Any) -> None:
    """Show objects in a notebook; print them elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is not None:
        display(*objs)
    else:
        for obj in objs:
            print(obj)


def _check_dataset(ds: Any, what: str) -> None:
    if ds is None:
        return
    if not hasattr(ds, "classes") or not hasattr(ds, "__len__"):
        raise TypeError(f"{what} must be a tlkit ImageDataset (from tlkit.datasets.load), got {type(ds).__name__}")
    if len(ds) == 0:
        raise ValueError(f"{what} is empty: it holds no images")


def _copy_for(backbone: nn.Module, num_classes: int | None) -> nn.Module:
    """A fresh copy of ``backbone`` with a head of ``num_classes`` outputs (the original is never trained)."""
    model = copy.deepcopy(backbone)
    if num_classes is not None and model.get_submodule(head_path(model)).out_features != num_classes:
        replace_head(model, num_classes)
    return model


class _Explorer:
    """What every explorer shares: a job in a background thread with a Stop button, a status
    line that says what is running and for how long, and display as a widget.

    Subclasses build ``self._build_widget()`` and call ``self._start(label, fn)`` from a button.
    """

    def __init__(self) -> None:
        self._widget: W.Widget | None = None
        self._job: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._status_text = ""
        self._status_error = False
        self._started_at: float | None = None
        self.error: BaseException | None = None
        # Controls every explorer with a background job uses; subclasses put them in their layout.
        self.status = W.HTML(layout=W.Layout(min_height="1.6em")).add_class("tlkit-status")
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="160px", display="none"))
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True, layout=W.Layout(width="90px"),
                                    tooltip="Stop the run at the next batch")
        self.stop_button.on_click(lambda _: self.stop())

    # -- display ---------------------------------------------------------------
    @property
    def widget(self) -> W.Widget:
        """The ipywidgets view of this explorer (built on first use)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self) -> W.Widget:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _static_html(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        # The widget for JupyterLab; an HTML/text account of the same state for viewers without widgets.
        bundle = self.widget._repr_mimebundle_()
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = self._static_html()
        return bundle

    # -- background jobs ---------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a job started from the widget is running."""
        return self._job is not None and self._job.is_alive()

    def stop(self) -> None:
        """Ask the running job to stop (at the next batch of training)."""
        if self.running:
            self._stop_event.set()
            self._say("stopping…")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the job started from the widget has finished; re-raise its error, if any."""
        if self._job is not None:
            self._job.join(timeout)
            if self._job.is_alive():
                raise TimeoutError(f"the run is still going after {timeout} s")
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _start(self, label: str, fn: Callable[[], Any], buttons: Sequence[W.Button] = ()) -> None:
        if self.running:
            self._say("a run is already going: wait for it or press Stop", error=True)
            return
        self._stop_event.clear()
        self.error = None
        self._started_at = time.perf_counter()
        for b in buttons:
            b.disabled = True
        self.stop_button.disabled = False
        self._say(label)

        def job() -> None:
            try:
                fn()
            except RunStopped:
                pass
            except Exception as e:  # shown in the widget, re-raised by wait()
                self.error = e
                self._say(f"{type(e).__name__}: {e}", error=True)
            finally:
                self._started_at = None
                self._render_status()
                self.stop_button.disabled = True
                self.progress.layout.display = "none"
                for b in buttons:
                    b.disabled = False

        def heartbeat() -> None:  # the elapsed time ticks while an epoch runs, so a long epoch never looks frozen
            while self._job is not None and self._job.is_alive():
                self._render_status()
                time.sleep(1.0)

        self._job = threading.Thread(target=job, name="tlkit-explorer", daemon=True)
        self._job.start()
        threading.Thread(target=heartbeat, name="tlkit-heartbeat", daemon=True).start()

    def _check_idle(self) -> None:
        """Refuse a second run while one started from the widget is still going."""
        if self.running and threading.current_thread() is not self._job:
            raise RuntimeError("a run started from the widget is still going: wait for it (explorer.wait()) "
                               "or stop it (explorer.stop()) first")

    def _status_row(self) -> W.HBox:
        return W.HBox([self.progress, self.status], layout=W.Layout(align_items="center"))

    def _stop_hook(self) -> Callable:
        """A forward pre-hook for the model being trained: raises ``RunStopped`` once Stop is pressed,
        so even a long epoch ends at the next batch. (A plain closure, not a method: a model
        carrying it can be deep-copied, as ``lr_find`` does, without copying the explorer.)"""
        event = self._stop_event

        def check_stop(module: nn.Module, args: Any) -> None:
            if event.is_set():
                raise RunStopped("stopped")

        return check_stop

    def _batch_progress(self, batches_per_epoch: int, epochs: int) -> Callable:
        """A forward pre-hook that moves the progress bar one step per training batch, so the bar
        advances during an epoch, not only when one ends. Forward passes in eval mode
        (validation) are not counted. ``_epoch_progress`` then puts it at each epoch's end."""
        bar = self.progress
        self._batches_per_epoch = max(1, batches_per_epoch)
        bar.max, bar.value = self._batches_per_epoch * max(1, epochs), 0
        bar.layout.display = None

        def count_batch(module: nn.Module, args: Any) -> None:
            if module.training and bar.value < bar.max:
                bar.value += 1

        return count_batch

    def _say(self, text: str, error: bool = False) -> None:
        self._status_text = text
        self._status_error = error
        self._render_status()

    def _render_status(self) -> None:
        text = html.escape(self._status_text)
        if self._started_at is not None and not self._status_error:
            text += f" <span style='color:#777'>({time.perf_counter() - self._started_at:.0f} s)</span>"
        color = "#b00020" if self._status_error else "inherit"
        self.status.value = _block(f"<span style='color:{color}'>{text}</span>")

    def _epoch_progress(self, epoch: int, epochs: int) -> None:
        """The bar at the end of ``epoch`` (in batches when ``_batch_progress`` counts them)."""
        per_epoch = getattr(self, "_batches_per_epoch", None) or 1
        self.progress.max = max(1, epochs) * per_epoch
        self.progress.value = min(epoch, epochs) * per_epoch
        self.progress.layout.display = None


def _log(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


def _percent(x: float | None) -> str:
    """An accuracy (a fraction, as ``History`` keeps it) as a percentage."""
    return "–" if x is None else f"{100 * x:.1f}%"
