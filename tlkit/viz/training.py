"""Pictures of training and its results: learning curves, confusion matrix, the worst mistakes.

Example:
    >>> fig = tlkit.viz.history([h_slow, h_fast])          # doctest: +SKIP
    >>> fig = tlkit.viz.confusion(model, val_ds)           # doctest: +SKIP
    >>> fig = tlkit.viz.top_losses(model, val_ds, k=9)     # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Mapping

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter
from torch import nn
from torchvision.transforms import v2

from .._batches import gives_tensors
from .._runtime import predict_proba
from ..errors import DatasetError
from ._common import as_hwc, class_names, finish, hide_ticks, new_figure, preprocessing_of, show_input

__all__ = ["history", "confusion", "top_losses", "predictions"]


# ---------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------

def _runs(h_or_list) -> list[tuple[str, object]]:
    if isinstance(h_or_list, Mapping):
        return [(str(k), v) for k, v in h_or_list.items()]
    items = list(h_or_list) if isinstance(h_or_list, (list, tuple)) else [h_or_list]
    if not items:
        raise ValueError("history() needs at least one History")
    runs = []
    for i, h in enumerate(items):
        if not hasattr(h, "train_loss"):
            raise TypeError(f"expected a tlkit.train.History (with train_loss, val_loss, ... lists), "
                            f"got {type(h).__name__}")
        label = getattr(h, "label", None) or f"run {i + 1}"
        if label in [name for name, _ in runs]:
            label = f"{label} ({i + 1})"          # two runs with the same label: keep both apart
        runs.append((label, h))
    return runs


def history(h_or_list, *, title: str | None = None) -> Figure:
    """Loss and accuracy per epoch, training (solid) and validation (dashed), for one or several runs.

    Args:
        h_or_list: a ``History`` from ``tlkit.train.fit``, a list of them (overlaid, named by
            each ``History.label``), or ``{label: History}``.
        title: figure title.

    The best validation accuracy of each run is marked with a dot.
    ``fig.tlkit_data["runs"]`` maps each label to its curves.

    >>> fig = history([h_lr_small, h_lr_large])  # doctest: +SKIP
    """
    runs = _runs(h_or_list)
    fig = new_figure(10, 4.0)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab10"]
    data, acc_max = {}, 0.0
    for i, (label, h) in enumerate(runs):
        color = colors(i % 10)
        curves = {k: list(getattr(h, k, None) or []) for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        data[label] = curves
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in (("train", "-"), ("val", "--")):
                values = curves[f"{split}_{key}"]
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=color, marker=".", markersize=5)
        acc_max = max([acc_max, *curves["train_acc"], *curves["val_acc"]])
        if curves["val_acc"]:
            best = int(np.argmax(curves["val_acc"]))
            ax_acc.plot(best + 1, curves["val_acc"][best], "o", color=color, markersize=8, alpha=0.5)
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_acc.set_ylabel("accuracy")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(100.0 if acc_max > 1.0 else 1.0, decimals=0))
    for ax, name in ((ax_loss, "Loss"), (ax_acc, "Accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        n_epochs = max((len(c["train_loss"]) or len(c["val_loss"]) for c in data.values()), default=1)
        ax.set_xlim(0.5, max(n_epochs, 1) + 0.5)
        if n_epochs <= 12:  # few epochs: one tick per epoch (one epoch still shows a tick labelled 1)
            ax.set_xticks(range(1, n_epochs + 1))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors(i % 10), label=label) for i, (label, _) in enumerate(runs)]
    handles += [Line2D([], [], color="0.35", ls="-", label="training"),
                Line2D([], [], color="0.35", ls="--", label="validation"),
                Line2D([], [], color="0.35", ls="", marker="o", markersize=8, alpha=0.5, label="best validation")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9)
    fig.suptitle(title or ("Training curves" if len(runs) > 1 else f"Training curves: {runs[0][0]}"))
    return finish(fig, runs=data)


# ---------------------------------------------------------------------------
# Predictions on a dataset
# ---------------------------------------------------------------------------

class _Transformed:
    """A read-only view of ``(transform(image), label)`` pairs of any dataset, with ``classes`` and ``targets``."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform
        targets = getattr(dataset, "targets", None)
        if targets is None:
            targets = [dataset[i][1] for i in range(len(dataset))]
        self.targets = [int(t) for t in targets]
        self.classes = list(getattr(dataset, "classes", None) or range(max(self.targets) + 1))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image = self.dataset.load_image(i) if hasattr(self.dataset, "load_image") else self.dataset[i][0]
        return self.transform(image), self.targets[i]


def predictions(model: nn.Module, dataset, *, transform=None, batch_size: int = 64,
                device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities N×C, true labels N)`` of ``model`` on every item of ``dataset``.

    The same computation as ``tlkit.predict_proba`` (same preprocessing, same device rules:
    ``device=None`` is ``tlkit.default_device()``, and the model moves there): images get the
    backbone's own evaluation preprocessing, not the dataset's (possibly augmenting)
    transform. Pass ``transform`` to choose another. For a model tlkit did not load, the
    dataset's own tensors are used, or its images scaled to [0, 1].
    """
    if len(dataset) == 0:
        raise DatasetError("the dataset is empty: there are no images to predict")
    if transform is None and preprocessing_of(model) is None and not gives_tensors(dataset):
        transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    if transform is not None or not hasattr(dataset, "targets"):
        dataset = _Transformed(dataset, transform if transform is not None else (lambda x: x))
    probs = predict_proba(model, dataset, batch_size=batch_size, device=device, progress=False)
    return probs, torch.as_tensor(list(dataset.targets), dtype=torch.long)


def _classes(dataset, n: int) -> list[str]:
    names = getattr(dataset, "classes", None)
    if names is not None and len(names) != n:
        raise ValueError(f"the model has {n} outputs but the dataset has {len(names)} classes ({names[:5]}...). "
                         f"Give the model a head for this dataset: tlkit.replace_head(model, {len(names)}) "
                         "and fine-tune it.")
    return class_names(n, names)


def _checked(model, dataset, probs, transform, batch_size):
    if probs is None:
        return predictions(model, dataset, transform=transform, batch_size=batch_size)
    probs = torch.as_tensor(probs).float()
    if len(probs) != len(dataset):
        raise ValueError(f"probs has {len(probs)} rows for a dataset of {len(dataset)} items")
    labels = getattr(dataset, "targets", None)
    labels = torch.as_tensor(list(labels) if labels is not None else [int(dataset[i][1]) for i in range(len(dataset))])
    return probs, labels


# ---------------------------------------------------------------------------
# Confusion matrix and top losses
# ---------------------------------------------------------------------------

def confusion(model: nn.Module, dataset, *, normalize: bool = False, probs: torch.Tensor | None = None, transform=None,
              batch_size: int = 64) -> Figure:
    """Confusion matrix of ``model`` on ``dataset``: true class down, predicted class across.

    Args:
        model: a classifier whose outputs are ``dataset.classes``.
        dataset: an ``ImageDataset`` (``classes``, ``targets``, ``load_image``) or any dataset of
            ``(image, label)`` pairs.
        normalize: colour by the share of each true class instead of counts.
        probs: predicted probabilities (N×C) if you already have them (``tlkit.predict_proba``).

    ``fig.tlkit_data`` holds ``matrix`` (counts), ``classes`` and ``accuracy``.

    >>> fig = confusion(model, val_ds)  # doctest: +SKIP
    """
    from sklearn.metrics import confusion_matrix

    probs, labels = _checked(model, dataset, probs, transform, batch_size)
    names = _classes(dataset, probs.shape[1])
    predicted = probs.argmax(dim=1)
    matrix = confusion_matrix(labels.numpy(), predicted.numpy(), labels=list(range(len(names))))
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    accuracy = float((predicted == labels).float().mean())

    size = min(12.0, 3.2 + 0.45 * len(names))
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalize else "images")
    if len(names) <= 20:
        threshold = shown.max() / 2
        for (r, c), count in np.ndenumerate(matrix):
            text = f"{count}\n{shown[r, c]:.0%}" if normalize else f"{count}"
            ax.text(c, r, text, ha="center", va="center", fontsize=9 if len(names) <= 10 else 7,
                    color="white" if shown[r, c] > threshold else "black")
    long_names = max(len(n) for n in names) > 6 or len(names) > 6
    fontsize = 10 if len(names) <= 15 else 7 if len(names) <= 40 else 4
    ax.set_xticks(range(len(names)), names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  fontsize=fontsize)
    ax.set_yticks(range(len(names)), names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix: {accuracy:.1%} of {len(labels)} images correct")
    return finish(fig, matrix=matrix, classes=names, accuracy=accuracy, predicted=predicted, targets=labels)


def top_losses(model: nn.Module, dataset, k: int = 9, *, probs: torch.Tensor | None = None, transform=None,
               batch_size: int = 64) -> Figure:
    """The ``k`` images with the highest loss: what the model gets most confidently wrong.

    Each image is titled with the predicted class and its probability, the true class and
    its probability, and the loss ``-log p(true class)``.

    Args:
        model: a classifier whose outputs are ``dataset.classes``.
        dataset: an ``ImageDataset`` (``classes``, ``targets``, ``load_image``) or a dataset of ``(image, label)``.
        k: how many images.
        probs: predicted probabilities (N×C) if you already have them.

    ``fig.tlkit_data`` holds ``indices`` (into ``dataset``), ``losses``, ``predicted`` and ``targets``.

    >>> fig = top_losses(model, val_ds, k=6)  # doctest: +SKIP
    """
    probs, labels = _checked(model, dataset, probs, transform, batch_size)
    names = _classes(dataset, probs.shape[1])
    losses = -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log()
    k = min(k, len(labels))
    order = losses.argsort(descending=True)[:k]

    ncols = min(k, 3 if k <= 9 else 4)
    nrows = math.ceil(k / ncols)
    fig = new_figure(3.0 * ncols, 3.3 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, i in zip(axes.flat, order.tolist()):
        image = dataset.load_image(i) if hasattr(dataset, "load_image") else dataset[i][0]
        if isinstance(image, torch.Tensor) and image.is_floating_point():
            image = show_input(model, image)            # a preprocessed tensor: undo the normalisation
        ax.imshow(as_hwc(image))
        hide_ticks(ax)
        pred, true = int(probs[i].argmax()), int(labels[i])
        color = "firebrick" if pred != true else "darkgreen"
        ax.set_title(f"predicted {names[pred]} ({probs[i, pred]:.2f})\ntrue {names[true]} ({probs[i, true]:.2f})"
                     f", loss {losses[i]:.2f}", fontsize=8.5, color=color)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(f"The {k} highest losses of {len(labels)} images (red: wrong prediction)")
    return finish(fig, indices=order, losses=losses[order], predicted=probs[order].argmax(dim=1),
                  targets=labels[order], all_losses=losses)
