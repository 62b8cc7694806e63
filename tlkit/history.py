"""The record of a training run: :class:`History`, what ``fit`` and ``train_head`` return.

Example:
    >>> h = History(label="demo", train_loss=[0.9, 0.5], train_acc=[0.6, 0.8])
    >>> h.epochs
    2
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["History"]


@dataclass
class History:
    """What happened in each epoch of a training run.

    Attributes:
        label: a name for the run (legends of ``plot`` and ``tlkit.viz.history``).
        train_loss, train_acc: mean loss and accuracy over the epoch's training batches
            (measured on augmented images, while the weights were still changing).
        val_loss, val_acc: on the validation set after the epoch (empty without one).
        lr: learning rate of the head (the largest) at the start of each epoch.
        epoch_time: seconds per epoch, training plus validation.
        train_time: seconds per epoch spent in the training steps only.
        setup_time: seconds before the first epoch (decoding the images, moving the model).
        images_per_epoch: training images seen per epoch.
        device: where it ran, e.g. ``"cpu (float32)"``.
        interrupted: True when training was stopped by Ctrl-C (``KeyboardInterrupt``): the
            lists hold the epochs that finished.
    """

    label: str = ""
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    train_time: list[float] = field(default_factory=list)
    setup_time: float = 0.0
    images_per_epoch: int = 0
    device: str = ""
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def best_val_acc(self) -> float | None:
        """The highest validation accuracy of any epoch (None without validation)."""
        return max(self.val_acc) if self.val_acc else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch (counting from 1) with the highest validation accuracy."""
        return int(np.argmax(self.val_acc)) + 1 if self.val_acc else None

    def __repr__(self) -> str:
        title = f"History {self.label!r}" if self.label else "History"
        where = f" on {self.device}" if self.device else ""
        best = (f", best val acc {self.best_val_acc:.3f} (epoch {self.best_epoch})"
                if self.val_acc else "")
        stopped = " (interrupted)" if self.interrupted else ""
        lines = [f"{title}{where}: {self.epochs} epochs{stopped}{best}",
                 "epoch  train loss  train acc  val loss  val acc        lr    time"]
        for i in range(self.epochs):
            val = (f"{self.val_loss[i]:8.4f}  {self.val_acc[i]:7.3f}" if i < len(self.val_acc)
                   else f"{'-':>8}  {'-':>7}")
            lr = f"{self.lr[i]:9.2e}" if i < len(self.lr) else f"{'-':>9}"
            t = f"{self.epoch_time[i]:6.1f}s" if i < len(self.epoch_time) else ""
            lines.append(f"{i + 1:5d}  {self.train_loss[i]:10.4f}  {self.train_acc[i]:9.3f}  {val}  {lr}  {t}")
        return "\n".join(lines)

    def plot(self, title: str | None = None):
        """A figure with two panels, loss and accuracy per epoch, training vs validation.

        The same picture as ``tlkit.viz.history(history)``, which also overlays several runs.
        The figure is closed in pyplot and returned, so a notebook shows it once.
        """
        from .viz.training import history as plot_history

        return plot_history(self, title=title)

    def keep_epochs(self, n: int) -> "History":
        """Drop what was recorded of any epoch after the first ``n`` (an epoch cut short)."""
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "train_time"):
            del getattr(self, name)[n:]
        return self
