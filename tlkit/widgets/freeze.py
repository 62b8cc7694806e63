"""``freeze_explorer``: pick a freeze point, see what it freezes, train briefly, compare.

Example:
    >>> fe = freeze_explorer(model, train, val, epochs=1)   # doctest: +SKIP
    >>> fe                      # the widget: a dropdown of stages, a diagram, Run/Stop, a chart  # doctest: +SKIP
    >>> fe.run("blocks.5")      # what Run does, as a plain call                                   # doctest: +SKIP
    >>> fe.plot()               # freeze point vs validation accuracy and training time            # doctest: +SKIP
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ipywidgets as W
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import nn

from ..freezing import TrainableSummary, freeze, trainable_summary
from ..stages import list_stages
from ._base import RunStopped, _block, _check_dataset, _copy_for, _count, _display, _Explorer, _log, _percent, _png

__all__ = ["FreezeExplorer", "FreezeRun", "freeze_explorer"]


@dataclass
class FreezeRun:
    """One training run of a :class:`FreezeExplorer`.

    Attributes:
        until: the freeze point (first trainable stage; ``"head"``: only the head trains).
        trainable: trainable parameters.
        total: all parameters.
        val_acc: validation accuracy after the last epoch (None without a validation set).
        best_val_acc: best validation accuracy over the epochs.
        seconds: wall time of the run, what the learner waited: copying the model, decoding
            the images (the first run only; later runs reuse them), training, validating.
        train_seconds: the part of it spent in the training steps (``sum(history.train_time)``).
        epochs: epochs completed.
        stopped: the run was stopped before its last epoch.
        history: the ``tlkit.train.History`` of the run.
    """

    until: str
    trainable: int
    total: int
    val_acc: float | None
    best_val_acc: float | None
    seconds: float
    epochs: int
    stopped: bool = False
    history: Any = field(default=None, repr=False)
    train_seconds: float | None = None

    def __repr__(self) -> str:
        stop = ", stopped" if self.stopped else ""
        return (f"FreezeRun(until={self.until!r}, trainable={self.trainable:,}, val_acc={_percent(self.val_acc)}, "
                f"{self.seconds:.1f} s, {self.epochs} epoch{'s' if self.epochs != 1 else ''}{stop})")


class FreezeExplorer(_Explorer):
    """Pick a freeze point, see what it freezes, train briefly and compare.

    The backbone you pass is never changed: every run trains a fresh copy of it (with a new
    head for the dataset's classes) frozen with ``tlkit.freeze(copy, until=...)`` and trained
    with ``tlkit.train.fit``. Each run adds one point to the chart of freeze point vs
    validation accuracy and training time (``runs`` keeps them all).

    Args:
        backbone: a model from ``tlkit.load_backbone``.
        train, val: ``ImageDataset`` s (``val`` may be None: no accuracy then).
        epochs, lr, batch_size, augment, seed, device: passed to ``tlkit.train.fit``.
        until: the freeze point shown first (default ``"head"``: only the head trains).
        fit_kwargs: any other ``fit`` options, e.g. ``{"schedule": "cosine"}``.

    >>> fe = FreezeExplorer(model, train, val, epochs=1)    # doctest: +SKIP
    >>> fe.summary("blocks.5").trainable                    # doctest: +SKIP
    >>> fe.run("blocks.5"); fe.run("head"); fe.plot()       # doctest: +SKIP
    """

    def __init__(self, backbone: nn.Module, train: Any = None, val: Any = None, *, epochs: int = 1,
                 lr: float = 1e-3, batch_size: int = 32, augment: Any = "light", seed: int = 0,
                 device: Any = None, until: str | None = None, fit_kwargs: dict | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch model (from tlkit.load_backbone), got {type(backbone).__name__}")
        _check_dataset(train, "train")
        _check_dataset(val, "val")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self.backbone = backbone
        self.train, self.val = train, val
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.augment, self.seed, self.device = augment, seed, device
        self.fit_kwargs = dict(fit_kwargs or {})
        self.points: list[str] = [s.name for s in list_stages(backbone)]
        """The freeze points, in forward order: every stage name (``points[-1] == "head"``)."""
        self.runs: list[FreezeRun] = []
        num_classes = len(train.classes) if train is not None else None
        self._preview = _copy_for(backbone, num_classes)  # frozen and re-frozen to show each choice; never trained
        self.until = self._check_point(until or "head")

    # -- the work ---------------------------------------------------------------
    def _check_point(self, until: str | None) -> str:
        until = "head" if until is None else until
        if until not in self.points:
            raise ValueError(f"{until!r} is not a freeze point of this backbone. Freeze points, in order: "
                             f"{', '.join(self.points)}.")
        return until

    def summary(self, until: str | None = None) -> TrainableSummary:
        """``tlkit.trainable_summary`` of the backbone frozen at ``until`` (default: the current choice)."""
        return trainable_summary(freeze(self._preview, until=self._check_point(until or self.until)))

    def select(self, until: str) -> TrainableSummary:
        """Choose the freeze point (as the dropdown does) and return its summary."""
        self.until = self._check_point(until)
        if self._widget is not None and self.point.value != self.until:
            self.point.value = self.until   # the observer refreshes the view
        else:
            self._refresh_choice()
        return self.summary()

    def run(self, until: str | None = None, *, epochs: int | None = None, verbose: bool = True) -> FreezeRun | None:
        """Train a copy of the backbone frozen at ``until`` and record the result.

        Returns the :class:`FreezeRun` (also appended to ``runs``), or None when the run was
        stopped before its first epoch ended.
        """
        from ..train import fit

        self._check_idle()
        if self.train is None:
            raise ValueError("FreezeExplorer has no training set: create it as freeze_explorer(model, train, val).")
        until = self._check_point(until or self.until)
        epochs = epochs or self.epochs
        started = time.perf_counter()  # the whole wait: copy, decode (first run), train, validate
        model = _copy_for(self.backbone, len(self.train.classes))
        freeze(model, until=until)
        counts = trainable_summary(model)
        last: dict[str, Any] = {}

        def callback(epoch: int, history: Any) -> bool:  # fit calls it after every epoch
            last["history"] = history
            acc = history.val_acc[-1] if history.val_acc else None
            self._epoch_progress(epoch, epochs)
            self._say(f"training from {until}: epoch {epoch}/{epochs} done, val accuracy {_percent(acc)}")
            return not self._stop_event.is_set()  # False ends training

        self._say(f"training from {until}: epoch 1/{epochs}…")
        hook = model.register_forward_pre_hook(self._stop_hook())
        count = model.register_forward_pre_hook(
            self._batch_progress(math.ceil(len(self.train) / self.batch_size), epochs))
        try:
            history = fit(model, self.train, self.val, epochs=epochs, lr=self.lr, batch_size=self.batch_size,
                          augment=self.augment, seed=self.seed, device=self.device, progress=verbose,
                          label=until, callback=callback, **self.fit_kwargs)
        except RunStopped:
            history = last.get("history")
        finally:
            hook.remove()
            count.remove()
            self._batches_per_epoch = None
        done = history.epochs if history is not None else 0
        if done == 0:
            self._say(f"stopped before the first epoch of {until} ended: no point added")
            _log(verbose, f"{until}: stopped before the first epoch ended")
            return None
        # The wall time: what the learner waited (the first run also decodes the images once).
        seconds = time.perf_counter() - started
        val_acc = history.val_acc
        result = FreezeRun(until, counts.trainable, counts.total, val_acc[-1] if val_acc else None,
                           max(val_acc) if val_acc else None, seconds, done, done < epochs, history,
                           train_seconds=sum(history.train_time))
        self.runs.append(result)
        self._refresh_results()
        self._say(f"{until}: val accuracy {_percent(result.val_acc)} after {done} epoch{'s' * (done != 1)} "
                  f"in {seconds:.1f} s (wall time)" + (" (stopped)" if result.stopped else ""))
        return result

    def plot(self) -> Figure:
        """Freeze point vs validation accuracy (left) and wall time (right), one point per run.

        The legend below says what the marks mean: the latest run is red, earlier runs blue, a
        hollow marker is a run stopped before its last epoch, and the grey line joins the mean of
        the runs at each freeze point.
        """
        fig = Figure(figsize=(9.5, 3.9), layout="constrained")
        ax_acc, ax_time = fig.subplots(1, 2)
        pos = {p: i for i, p in enumerate(self.points)}
        for ax, key, label in ((ax_acc, "val_acc", "validation accuracy (%)"),
                               (ax_time, "seconds", "wall time of the run (s)")):
            means: dict[int, list[float]] = {}
            for i, r in enumerate(self.runs):
                y = getattr(r, key)
                if y is None:
                    continue
                y = 100 * y if key == "val_acc" else y
                x = pos[r.until]
                latest = i == len(self.runs) - 1
                ax.plot(x, y, "o", color="#1f77b4" if not latest else "#d62728", markersize=8 if latest else 6,
                        markerfacecolor="none" if r.stopped else None, alpha=0.9, zorder=3)
                means.setdefault(x, []).append(y)
            if means:
                xs = sorted(means)
                ax.plot(xs, [sum(means[x]) / len(means[x]) for x in xs], "-", color="0.6", lw=1, zorder=2)
            ax.set_xticks(range(len(self.points)), self.points, rotation=45, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(self.points) - 0.5)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.set_xlabel("first trainable stage  (← fine-tune more · freeze more →)", fontsize=8)
            if means and key == "val_acc":
                values = [y for ys in means.values() for y in ys]
                lo, hi = min(values), max(values)
                pad = max(2.0, (10 - (hi - lo)) / 2)  # show at least a 10-point range
                ax.set_ylim(max(0, lo - pad), min(100, hi + pad) + 0.5)
            elif key == "seconds":
                ax.set_ylim(bottom=0)
        if not self.runs:
            ax_acc.text(0.5, 0.5, "no runs yet", transform=ax_acc.transAxes, ha="center", color="0.5")
        ax_acc.set_title("Accuracy after the last epoch", fontsize=10)
        ax_time.set_title("Time you waited (copy, decode images, train, validate)", fontsize=10)
        handles = [Line2D([], [], marker="o", ls="", color="#d62728", markersize=8, label="latest run"),
                   Line2D([], [], marker="o", ls="", color="#1f77b4", label="earlier runs"),
                   Line2D([], [], marker="o", ls="", color="#1f77b4", markerfacecolor="none",
                          label="stopped before its last epoch"),
                   Line2D([], [], ls="-", color="0.6", label="mean at each freeze point")]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
        fig.tlkit_data = {"runs": list(self.runs)}
        return fig

    def table(self) -> str:
        """The runs so far as a text table."""
        if not self.runs:
            return "no runs yet"
        lines = [f"{'freeze point':<14}{'trainable':>12}{'val acc':>9}{'best':>8}{'wall time':>11}{'epochs':>8}"]
        for r in self.runs:
            lines.append(f"{r.until:<14}{r.trainable:>12,}{_percent(r.val_acc):>9}{_percent(r.best_val_acc):>8}"
                         f"{r.seconds:>10.1f}s{r.epochs:>7}{'*' if r.stopped else ''}")
        lines.append("wall time: what you waited (copy the model, decode the images on the first run, train, validate)")
        if any(r.stopped for r in self.runs):
            lines.append("* stopped before its last epoch (Stop pressed): fewer epochs than asked")
        return "\n".join(lines)

    def show(self) -> None:
        """The static view (no widgets): the current choice, its diagram, the runs and the chart."""
        _display(self.summary(), self.table(), self.plot())

    def __repr__(self) -> str:
        s = self.summary()
        return (f"FreezeExplorer({s.model_name}, train from {self.until!r}: {s.trainable:,} of {s.total:,} "
                f"parameters trainable, {len(self.runs)} run{'s' * (len(self.runs) != 1)})\n{self.table()}")

    def _static_html(self) -> str:
        return self._diagram_html() + f"<pre>{html.escape(self.table())}</pre>"

    # -- the view ----------------------------------------------------------------
    def _headline(self) -> str:
        s = self.summary()
        i = self.points.index(self.until)
        what = ("only the new head trains: the backbone is a fixed feature extractor" if self.until == "head"
                else "every stage trains: full fine-tuning" if i == 0
                else f"{i} stage{'s' * (i != 1)} frozen, {self.until} and later train")
        return (f"<b>{s.trainable:,}</b> of {s.total:,} parameters trainable "
                f"(<b>{100 * s.trainable / max(1, s.total):.1f}%</b>): {what}."
                + (" <span style='color:#666'>Frozen stages keep their ImageNet weights and BatchNorm "
                   "statistics.</span>" if i else ""))

    def _diagram_html(self) -> str:
        """The network as a row of boxes, one per stage: frozen ones shaded, trainable ones green."""
        boxes = []
        for name, n, trainable, frozen, _bn in self.summary().rows:
            is_frozen = frozen > 0 and trainable == 0
            look = ("background:repeating-linear-gradient(135deg,#e6e6e6 0 5px,#d4d4d4 5px 10px);color:#555;"
                    "border:1px solid #aaa" if is_frozen else
                    "background:#d8f0dc;color:#1b4d2a;border:1px solid #5aa469")
            ring = "outline:2px solid #d62728;outline-offset:1px;" if name == self.until else ""
            boxes.append(f"<div class='tlkit-stage' data-stage='{html.escape(name)}' data-frozen='{int(is_frozen)}' "
                         f"title='{html.escape(name)}: {n:,} parameters' style='{look};{ring}flex:1 1 0;"
                         f"min-width:0;max-width:110px;border-radius:4px;padding:2px;text-align:center;"
                         f"font-size:10.5px;line-height:1.35;overflow:hidden;white-space:nowrap'>"
                         f"<b>{html.escape(name)}</b><br>{_count(n)}<br>"
                         f"{'❄ frozen' if is_frozen else '✎ trains'}</div>")
        return ("<div class='tlkit-diagram' style='display:flex;gap:3px;margin:6px 0 2px 0;align-items:stretch'>"
                "<div style='align-self:center;color:#777;font-size:10.5px'>input →</div>"
                + "".join(boxes) + "<div style='align-self:center;color:#777;font-size:10.5px'>→ classes</div></div>")

    def _build_widget(self) -> W.Widget:
        options = []
        for i, p in enumerate(self.points):
            note = " (train everything)" if i == 0 else " (train the head only)" if p == "head" else ""
            options.append((p + note, p))
        self.point = W.Dropdown(options=options, value=self.until, description="train from",
                                style={"description_width": "initial"},
                                layout=W.Layout(width="320px")).add_class("tlkit-freeze-point")
        self.epochs_box = W.BoundedIntText(value=self.epochs, min=1, max=100, description="epochs",
                                           layout=W.Layout(width="140px"), style={"description_width": "50px"})
        self.run_button = W.Button(description="Run", icon="play", button_style="primary",
                                   tooltip="Train a copy of the backbone frozen at this point",
                                   layout=W.Layout(width="90px"), disabled=self.train is None)
        self.headline = W.HTML().add_class("tlkit-freeze-headline")
        self.diagram = W.HTML().add_class("tlkit-freeze-diagram")
        self.details = W.Output()
        self.chart = W.Image(format="png", layout=W.Layout(max_width="100%")).add_class("tlkit-freeze-chart")
        self.results = W.HTML().add_class("tlkit-freeze-results")

        self.point.observe(self._on_point, "value")
        self.run_button.on_click(self._on_run)
        self._refresh_choice()
        self._refresh_results()
        if self.train is None:
            self._say("No training set given: freeze_explorer(model, train, val) enables Run.")
        table = W.Accordion(children=[self.details], titles=("per-stage table (tlkit.trainable_summary)",))
        table.selected_index = None
        controls = W.HBox([self.point, self.epochs_box, self.run_button, self.stop_button],
                          layout=W.Layout(align_items="center", flex_flow="row wrap"))
        return W.VBox([controls, self.headline, self.diagram, table, self._status_row(), self.chart, self.results],
                      layout=W.Layout(max_width="1000px")).add_class("tlkit-freeze-explorer")

    def _on_point(self, change: dict) -> None:
        self.until = change["new"]
        self._refresh_choice()

    def _on_run(self, _button: Any) -> None:
        until, epochs = self.until, self.epochs_box.value
        self._start(f"training from {until}…", lambda: self.run(until, epochs=epochs, verbose=False),
                    buttons=[self.run_button])

    def _refresh_choice(self) -> None:
        if not hasattr(self, "headline"):  # the widget was never built
            return
        self.headline.value = _block(self._headline())
        self.diagram.value = self._diagram_html()
        self.details.outputs = ({"output_type": "display_data", "data": {"text/plain": str(self.summary()),
                                 "text/html": self.summary()._repr_html_()}, "metadata": {}},)

    def _refresh_results(self) -> None:
        if not hasattr(self, "chart"):
            return
        if self.runs:
            self.chart.value = _png(self.plot())
            self.chart.layout.display = None
            self.results.value = f"<pre style='font-size:11px;margin:0'>{html.escape(self.table())}</pre>"
        else:
            self.chart.layout.display = "none"
            self.results.value = "<i style='color:#666'>No runs yet: pick a freeze point and press Run.</i>"


def freeze_explorer(backbone: nn.Module, train: Any = None, val: Any = None, *, epochs: int = 1,
                    lr: float = 1e-3, until: str | Sequence[str] | None = None, **options: Any) -> FreezeExplorer:
    """A :class:`FreezeExplorer`: choose a freeze point, see what it freezes, press Run to train.

    ``until`` picks the freeze point shown first; a list of freeze points trains each of them
    right away (printing progress) — the way to use the explorer without widgets:

    >>> fe = freeze_explorer(model, train, val, until=["head", "blocks.5", "stem"])  # doctest: +SKIP
    >>> fe.plot()                                                                     # doctest: +SKIP
    """
    points = [until] if isinstance(until, str) or until is None else list(until)
    explorer = FreezeExplorer(backbone, train, val, epochs=epochs, lr=lr, until=points[0] if points else None,
                              **options)
    if not isinstance(until, str) and until is not None:
        for p in points:
            explorer.run(p)
    return explorer
