"""``lr_explorer``: learning rates for the head and the body, Run, overlaid curves, lr_find.

Example:
    >>> lx = lr_explorer(model, train, val, epochs=3)       # doctest: +SKIP
    >>> lx                      # the widget: two log-scale sliders, Run/Stop, lr_find      # doctest: +SKIP
    >>> lx.run(head_lr=1e-2); lx.run(head_lr=1e-4)   # what Run does, as plain calls        # doctest: +SKIP
    >>> lx.plot()               # the runs' learning curves, overlaid (tlkit.viz.history)   # doctest: +SKIP
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import ipywidgets as W
from matplotlib.figure import Figure
from torch import nn

from ..freezing import freeze, param_groups
from ..stages import list_stages
from ._base import RunStopped, _check_dataset, _copy_for, _display, _Explorer, _percent, _png

# A run has diverged when a loss is not finite or above this many times the loss of guessing
# (ln of the number of classes): its curve is marked and left off the loss axis's range.
DIVERGED_FACTOR = 4.0

__all__ = ["LRExplorer", "LRRun", "lr_explorer"]


def _lr(x: float | None) -> str:
    """A learning rate, short: 0.001 -> '1e-3', 0.00178 -> '1.8e-3'."""
    if x is None:
        return "–"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


@dataclass
class LRRun:
    """One training run of an :class:`LRExplorer`.

    Attributes:
        head_lr: learning rate of the new head.
        body_lr: learning rate of the earliest trainable body stage (later stages are spaced
            geometrically up to ``head_lr``, as ``tlkit.param_groups`` does); None when only
            the head trains.
        until: the freeze point of the run.
        val_acc, best_val_acc: validation accuracy after the last epoch and at its best.
        seconds: training time; epochs: epochs completed; stopped: stopped early.
        history: the ``tlkit.train.History``.
    """

    head_lr: float
    body_lr: float | None
    until: str
    val_acc: float | None
    best_val_acc: float | None
    seconds: float
    epochs: int
    stopped: bool = False
    history: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"head {_lr(self.head_lr)}" + ("" if self.body_lr is None else f", body {_lr(self.body_lr)}")

    def __repr__(self) -> str:
        stop = ", stopped" if self.stopped else ""
        return (f"LRRun({self.label}, from {self.until!r}: val_acc={_percent(self.val_acc)}, "
                f"{self.epochs} epoch{'s' * (self.epochs != 1)}, {self.seconds:.1f} s{stop})")


class LRExplorer(_Explorer):
    """Try learning rates for the head and the body, and overlay the learning curves.

    Every run trains a fresh copy of the backbone, frozen before ``until``, with
    ``tlkit.param_groups(model, lr=head_lr, body_lr=body_lr)`` (the earliest trainable body
    stage at ``body_lr``, later ones spaced up towards ``head_lr``). ``find_lr()`` runs
    ``tlkit.train.lr_find`` on the same set-up and shows its curve beside the runs.

    Args:
        backbone: a model from ``tlkit.load_backbone``.
        train, val: ``ImageDataset`` s.
        epochs: epochs per run.
        until: freeze point (default: the last two body stages and the head train).
        head_lr, body_lr: the starting values of the two sliders.
        batch_size, augment, schedule, seed, device: passed to ``tlkit.train.fit``.

    >>> lx = LRExplorer(model, train, val, epochs=3)        # doctest: +SKIP
    >>> lx.run(head_lr=1e-2); lx.run(head_lr=1e-4); lx.plot()   # doctest: +SKIP
    """

    def __init__(self, backbone: nn.Module, train: Any, val: Any = None, *, epochs: int = 3,
                 until: str | None = None, head_lr: float = 1e-3, body_lr: float = 1e-4, batch_size: int = 32,
                 augment: Any = "light", schedule: str | None = None, seed: int = 0, device: Any = None,
                 lr_find_steps: int = 40) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch model (from tlkit.load_backbone), got {type(backbone).__name__}")
        if train is None:
            raise ValueError("LRExplorer needs a training set: lr_explorer(model, train, val).")
        _check_dataset(train, "train")
        _check_dataset(val, "val")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self.backbone, self.train, self.val = backbone, train, val
        self.epochs, self.batch_size, self.augment = epochs, batch_size, augment
        self.schedule, self.seed, self.device = schedule, seed, device
        self.lr_find_steps = lr_find_steps
        self.points = [s.name for s in list_stages(backbone)]
        self.until = self._check_point(until if until is not None else self.points[max(0, len(self.points) - 3)])
        self.head_lr = self._check_lr(head_lr, "head_lr")
        self.body_lr = self._check_lr(body_lr, "body_lr")
        self.runs: list[LRRun] = []
        self.lr_finder: Any = None
        """The last ``tlkit.train.LRFinderResult`` (None until ``find_lr()``)."""
        self._current: Any = None  # the history of the run in progress, drawn epoch by epoch

    def _check_point(self, until: str) -> str:
        if until not in self.points:
            raise ValueError(f"{until!r} is not a freeze point of this backbone. Freeze points, in order: "
                             f"{', '.join(self.points)}.")
        return until

    @staticmethod
    def _check_lr(lr: float, what: str) -> float:
        if not isinstance(lr, (int, float)) or not 0 < lr < 10:
            raise ValueError(f"{what} must be a positive learning rate such as 1e-3, got {lr!r}")
        return float(lr)

    def _model(self, until: str) -> nn.Module:
        model = _copy_for(self.backbone, len(self.train.classes))
        return freeze(model, until=until)

    # -- the work ---------------------------------------------------------------
    def run(self, head_lr: float | None = None, body_lr: float | None = None, *, until: str | None = None,
            epochs: int | None = None, verbose: bool = True) -> LRRun | None:
        """Train a copy with these learning rates; record and return the :class:`LRRun`.

        Returns None when stopped before the first epoch ended.
        """
        from ..train import fit

        self._check_idle()
        head_lr = self._check_lr(self.head_lr if head_lr is None else head_lr, "head_lr")
        body_lr = self._check_lr(self.body_lr if body_lr is None else body_lr, "body_lr")
        until = self._check_point(until or self.until)
        epochs = epochs or self.epochs
        model = self._model(until)
        groups = param_groups(model, lr=head_lr, body_lr=body_lr)
        used_body = body_lr if any(g["name"] != "head" for g in groups) else None
        label = f"head {_lr(head_lr)}" + ("" if used_body is None else f", body {_lr(used_body)}")
        last: dict[str, Any] = {}

        def callback(epoch: int, history: Any) -> bool:
            last["history"] = self._current = history
            acc = (history.val_acc or [None])[-1]
            self._epoch_progress(epoch, epochs)
            self._say(f"{label}: epoch {epoch}/{epochs} done, val accuracy {_percent(acc)}")
            self._refresh_curves()
            self._refresh_results()
            return not self._stop_event.is_set()

        self._epoch_progress(0, epochs)
        self._say(f"{label}: epoch 1/{epochs}…")
        hook = model.register_forward_pre_hook(self._stop_hook())
        try:
            history = fit(model, self.train, self.val, epochs=epochs, lr=head_lr, param_groups=groups,
                          batch_size=self.batch_size, schedule=self.schedule, augment=self.augment, seed=self.seed,
                          device=self.device, progress=verbose, label=label, callback=callback)
        except RunStopped:
            history = last.get("history")
        finally:
            hook.remove()
            self._current = None
        done = history.epochs if history is not None else 0
        if done == 0:
            self._say(f"{label}: stopped before the first epoch ended, no curve added")
            self._refresh_curves()
            return None
        val_acc = list(history.val_acc)
        result = LRRun(head_lr, used_body, until, val_acc[-1] if val_acc else None, max(val_acc) if val_acc else None,
                       sum(history.train_time), done, done < epochs, history)
        self.runs.append(result)
        self._refresh_curves()
        self._refresh_results()
        self._say(f"{label}: val accuracy {_percent(result.val_acc)} after {done} epoch{'s' * (done != 1)}"
                  + (" (stopped)" if result.stopped else ""))
        return result

    def find_lr(self, *, until: str | None = None, verbose: bool = True) -> Any:
        """``tlkit.train.lr_find`` on a copy frozen at ``until``; shown beside the curves.

        Returns the ``LRFinderResult``; its ``suggestion`` is a good head learning rate.
        """
        from ..train import lr_find

        self._check_idle()
        until = self._check_point(until or self.until)
        model = self._model(until)
        hook = model.register_forward_pre_hook(self._stop_hook())  # lr_find's copy keeps it: Stop works
        self._say(f"lr_find from {until}: {self.lr_find_steps} steps…")
        try:
            result = lr_find(model, self.train, steps=self.lr_find_steps, batch_size=self.batch_size,
                             augment=self.augment, seed=self.seed, device=self.device, progress=verbose)
        except RunStopped:
            self._say("lr_find stopped")
            return None
        finally:
            hook.remove()
        self.lr_finder = result
        self._refresh_finder()
        self._say(f"lr_find: suggested head learning rate {result.suggestion:.1e}")
        return result

    def use_suggestion(self) -> float:
        """Set the head learning rate to lr_find's suggestion (and the body's to a tenth of it)."""
        if self.lr_finder is None:
            raise ValueError("no lr_find result yet: call find_lr() (or press 'lr_find') first")
        head = float(min(max(self.lr_finder.suggestion, 1e-6), 1.0))
        self.head_lr, self.body_lr = head, head / 10
        if hasattr(self, "head_slider"):
            self.head_slider.value, self.body_slider.value = self.head_lr, self.body_lr
        return head

    def diverged(self, history: Any) -> bool:
        """True when a run's loss went non-finite or above ``DIVERGED_FACTOR`` times the loss of guessing."""
        limit = DIVERGED_FACTOR * max(math.log(max(2, len(self.train.classes))), 0.5)
        return any(not math.isfinite(x) or x > limit for x in list(history.train_loss) + list(history.val_loss))

    def plot(self) -> Figure:
        """The learning curves of every run (and of the run in progress), overlaid: ``tlkit.viz.history``.

        A diverged run (see :meth:`diverged`) is named so in the legend, and the loss axis is
        clipped to the other runs' range, so one exploding loss does not flatten every curve.
        """
        from ..viz import history as plot_history

        histories = [(r.label, r.history) for r in self.runs]
        if self._current is not None and self._current.epochs:
            histories.append((self._current.label or "running", self._current))
        if not histories:
            raise ValueError("no runs yet: call run(head_lr=...) (or press Run) first")
        named: dict[str, Any] = {}
        for label, h in histories:
            label = label + (" (diverged: loss off the chart)" if self.diverged(h) else "")
            unique, k = label, 2
            while unique in named:
                unique, k = f"{label} #{k}", k + 1
            named[unique] = h
        fig = plot_history(named, title=f"{len(histories)} run{'s' * (len(histories) != 1)}, "
                                        f"trained from {self.until}")
        kept = [h for _, h in histories if not self.diverged(h)]
        if len(kept) < len(histories):
            losses = [x for h in kept for x in list(h.train_loss) + list(h.val_loss) if math.isfinite(x)]
            top = 1.15 * max(losses) if losses else DIVERGED_FACTOR * math.log(max(2, len(self.train.classes)))
            for ax in fig.axes:
                if "loss" in ax.get_ylabel():
                    ax.set_ylim(0, top)
                    ax.text(0.98, 0.97, "diverged runs: above the top", transform=ax.transAxes, ha="right",
                            va="top", fontsize=8, color="#b00020")
        return fig

    def table(self) -> str:
        if not self.runs:
            return "no runs yet"
        lines = [f"{'head lr':>8}{'body lr':>9}  {'from':<11}{'val acc':>8}{'best':>8}{'epochs':>7}{'time':>8}"]
        for r in self.runs:
            lines.append(f"{_lr(r.head_lr):>8}{_lr(r.body_lr):>9}  {r.until:<11}{_percent(r.val_acc):>8}"
                         f"{_percent(r.best_val_acc):>8}{r.epochs:>7}{r.seconds:>7.1f}s{'*' if r.stopped else ''}"
                         + ("  diverged" if r.history is not None and self.diverged(r.history) else ""))
        if any(r.stopped for r in self.runs):
            lines.append("* stopped before its last epoch (Stop pressed)")
        return "\n".join(lines)

    def show(self) -> None:
        """The static view (no widgets): the runs as a table, the curves, and the lr_find curve."""
        objs: list[Any] = [self.table()]
        if self.runs:
            objs.append(self.plot())
        if self.lr_finder is not None:
            objs.append(self.lr_finder.plot())
        _display(*objs)

    def __repr__(self) -> str:
        return (f"LRExplorer(train from {self.until!r}, head lr {_lr(self.head_lr)}, body lr {_lr(self.body_lr)}, "
                f"{len(self.runs)} run{'s' * (len(self.runs) != 1)})\n{self.table()}")

    # -- the view ----------------------------------------------------------------
    def _build_widget(self) -> W.Widget:
        wide = {"description_width": "60px"}
        self.head_slider = W.FloatLogSlider(value=self.head_lr, base=10, min=-6, max=0, step=0.25,
                                            description="head lr", readout_format=".1e", continuous_update=False,
                                            style=wide, layout=W.Layout(width="360px")).add_class("tlkit-head-lr")
        self.body_slider = W.FloatLogSlider(value=self.body_lr, base=10, min=-7, max=-1, step=0.25,
                                            description="body lr", readout_format=".1e", continuous_update=False,
                                            style=wide, layout=W.Layout(width="360px")).add_class("tlkit-body-lr")
        self.body_slider.tooltip = ("learning rate of the earliest trainable body stage; "
                                    "later stages step up to the head's")
        self.point = W.Dropdown(options=self.points, value=self.until, description="train from",
                                style={"description_width": "72px"}, layout=W.Layout(width="240px"))
        self.epochs_box = W.BoundedIntText(value=self.epochs, min=1, max=100, description="epochs",
                                           layout=W.Layout(width="130px"), style={"description_width": "50px"})
        self.run_button = W.Button(description="Run", icon="play", button_style="primary",
                                   layout=W.Layout(width="90px"),
                                   tooltip="Train a copy of the backbone with these learning rates")
        self.find_button = W.Button(description="lr_find", icon="search", layout=W.Layout(width="100px"),
                                    tooltip="Sweep the learning rate (tlkit.train.lr_find) and show the loss curve")
        self.suggest_button = W.Button(description="use suggestion", disabled=True, layout=W.Layout(width="130px"),
                                       tooltip="Set the head lr to lr_find's suggestion, the body lr to a tenth")
        self.clear_button = W.Button(description="Clear", icon="trash", layout=W.Layout(width="90px"),
                                     tooltip="Forget the runs so far")
        self.curves = W.Image(format="png", layout=W.Layout(width="820px", max_width="100%", display="none")
                              ).add_class("tlkit-lr-curves")
        self.finder = W.Image(format="png", layout=W.Layout(width="440px", max_width="100%", display="none")
                              ).add_class("tlkit-lr-finder")
        self.results = W.HTML().add_class("tlkit-lr-results")

        self.head_slider.observe(lambda ch: setattr(self, "head_lr", ch["new"]), "value")
        self.body_slider.observe(lambda ch: setattr(self, "body_lr", ch["new"]), "value")
        self.point.observe(self._on_point, "value")
        self.run_button.on_click(self._on_run)
        self.find_button.on_click(self._on_find)
        self.suggest_button.on_click(lambda _: self.use_suggestion())
        self.clear_button.on_click(lambda _: self.clear())
        self._on_point({"new": self.until})
        self._refresh_results()
        self._refresh_finder()
        self._refresh_curves()
        buttons = W.HBox([self.point, self.epochs_box, self.run_button, self.stop_button, self.find_button,
                          self.suggest_button, self.clear_button], layout=W.Layout(flex_flow="row wrap"))
        # side by side where the notebook is wide enough, the lr_find curve below the runs where not
        pictures = W.HBox([self.curves, self.finder], layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))
        return W.VBox([W.HBox([self.head_slider, self.body_slider], layout=W.Layout(flex_flow="row wrap")),
                       buttons, self._status_row(), pictures, self.results],
                      layout=W.Layout(max_width="1300px")).add_class("tlkit-lr-explorer")

    def clear(self) -> None:
        """Forget the runs so far (the lr_find result stays)."""
        self.runs.clear()
        self._refresh_curves()
        self._refresh_results()

    def _on_point(self, change: dict) -> None:
        self.until = change["new"]
        head_only = self.until == "head"
        self.body_slider.disabled = head_only
        self.body_slider.description = "body lr" + (" (frozen)" if head_only else "")

    def _buttons(self) -> list[W.Button]:
        return [self.run_button, self.find_button, self.clear_button]

    def _on_run(self, _button: Any) -> None:
        head, body, until, epochs = self.head_lr, self.body_lr, self.until, self.epochs_box.value
        self._start(f"head {_lr(head)}: starting…", lambda: self.run(head, body, until=until, epochs=epochs,
                                                                     verbose=False), self._buttons())

    def _on_find(self, _button: Any) -> None:
        until = self.until
        self._start("lr_find…", lambda: self.find_lr(until=until, verbose=False), self._buttons())

    def _refresh_curves(self) -> None:
        if not hasattr(self, "curves"):
            return
        if self.runs or (self._current is not None and self._current.epochs):
            self.curves.value = _png(self.plot(), dpi=80)
            self.curves.layout.display = None
        else:
            self.curves.layout.display = "none"

    def _refresh_finder(self) -> None:
        if not hasattr(self, "finder") or self.lr_finder is None:
            return
        import matplotlib.pyplot as plt

        fig = self.lr_finder.plot()
        plt.close(fig)  # rendered here, never shown a second time by the notebook
        self.finder.value = _png(fig, dpi=80)
        self.finder.layout.display = None
        self.suggest_button.disabled = False
        self.suggest_button.description = f"use {_lr(self.lr_finder.suggestion)}"
        self._refresh_curves()

    def _refresh_results(self) -> None:
        if not hasattr(self, "results"):
            return
        current = self._current
        if self.runs:
            self.results.value = f"<pre style='font-size:11px;margin:0'>{html.escape(self.table())}</pre>"
        elif current is not None and current.epochs:  # the first run's curve is on the chart already
            self.results.value = (f"<i style='color:#666'>{html.escape(current.label or 'the first run')}: "
                                  f"{current.epochs} epoch{'s' * (current.epochs != 1)} done; its row appears "
                                  "here when it ends.</i>")
        else:
            self.results.value = "<i style='color:#666'>No runs yet: set the learning rates and press Run.</i>"


def lr_explorer(backbone: nn.Module, train: Any, val: Any = None, *, epochs: int = 3,
                lrs: Sequence[float | tuple[float, float]] | None = None, **options: Any) -> LRExplorer:
    """An :class:`LRExplorer`: learning-rate sliders for head and body, Run, overlaid curves, lr_find.

    ``lrs`` trains those settings right away (a head lr, or a ``(head_lr, body_lr)`` pair
    each) — the way to use it without widgets:

    >>> lx = lr_explorer(model, train, val, lrs=[1e-2, 1e-3, (1e-3, 1e-5)])   # doctest: +SKIP
    >>> lx.plot()                                                              # doctest: +SKIP
    """
    explorer = LRExplorer(backbone, train, val, epochs=epochs, **options)
    for lr in lrs or []:
        head, body = lr if isinstance(lr, tuple) else (lr, None)
        explorer.run(head, body)
    return explorer
