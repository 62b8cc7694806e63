"""Explorers: move the freeze point, the learning rate and the augmentation, and see what happens.

Each explorer is a small class that holds its state (the runs so far, the current settings)
and has plain methods that do the work: ``FreezeExplorer.run(until=...)``,
``LRExplorer.run(head_lr=..., body_lr=...)``, ``AugmentationExplorer.set(rotation=...)``.
The buttons and sliders of its widget (``explorer.widget``, shown when the explorer is the
value of a notebook cell) call those same methods, so a learner who cannot run widgets (a
static viewer, a plain Python console) gets the same results by calling them and looking at
``explorer.plot()`` / ``explorer.show()``.

One module per explorer: :mod:`.freeze`, :mod:`.lr`, :mod:`.augment`, :mod:`.advice`; what
they share (the background job, Stop, the status line) is in :mod:`._base`.

Training runs in a background thread, so the notebook stays responsive: the widget shows
which epoch is running and for how long, and its Stop button ends the run at the next batch.

Example:
    >>> import tlkit
    >>> from tlkit import datasets, widgets
    >>> model = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    >>> train = datasets.subset(datasets.load("hymenoptera", "train"), per_class=20)
    >>> val = datasets.load("hymenoptera", "val")
    >>> fe = widgets.freeze_explorer(model, train, val, epochs=2)   # doctest: +SKIP
    >>> fe                       # the widget, in JupyterLab            # doctest: +SKIP
    >>> fe.run(until="blocks.5")   # the same as choosing blocks.5 and pressing Run  # doctest: +SKIP
    >>> fe.plot()                  # freeze point vs validation accuracy and time   # doctest: +SKIP
"""
from ._base import RunStopped
from .advice import AdvisorWidget, advisor_widget
from .augment import AugmentationExplorer, AugmentationSettings, augmentation_explorer
from .freeze import FreezeExplorer, FreezeRun, freeze_explorer
from .lr import LRExplorer, LRRun, lr_explorer

__all__ = [
    "FreezeExplorer", "FreezeRun", "freeze_explorer",
    "LRExplorer", "LRRun", "lr_explorer",
    "AugmentationExplorer", "AugmentationSettings", "augmentation_explorer",
    "AdvisorWidget", "advisor_widget",
    "RunStopped",
]
