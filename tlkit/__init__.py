"""tlkit: transfer learning with convolutional networks, by experiment.

The public API, by lesson:

* backbones: :func:`load_backbone`, :func:`preprocess`, :func:`stages`,
  :func:`replace_head`, :func:`imagenet_classes`
* freezing: :func:`freeze`, :func:`unfreeze`, :func:`trainable_summary`, :func:`param_groups`
* data: :mod:`tlkit.datasets`; training: :mod:`tlkit.train`; pictures: :mod:`tlkit.viz`;
  strategy: :mod:`tlkit.advisor`; widgets: :mod:`tlkit.widgets`; exercise checks: :mod:`tlkit.grading`
"""
__version__ = "0.1.0"

from .backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    Preprocessing,
    backbone_info,
    imagenet_classes,
    list_backbones,
    load_backbone,
    preprocess,
    replace_head,
)
from .devices import default_device
from .errors import (
    ArchiveError, ArgumentError, BackboneError, CheckFailed, ClaimNotShown, DatasetError, DownloadError,
    TlkitError, WeightsUnavailableError,
)
from .freeze import freeze, param_groups, trainable_summary, unfreeze
from .stages import Stage, get_stage, num_features, stages
from . import viz
from . import datasets
from . import advisor
from . import transferability
from . import widgets
from . import grading
from .train import History, LRFinderResult, evaluate, fit, lr_find, predict_proba
from .features import Features, ProbeResult, extract_features, linear_probe, train_head

__all__ = [
    "TlkitError", "ArgumentError", "BackboneError", "DatasetError", "ArchiveError", "CheckFailed", "ClaimNotShown",
    "DEFAULT_BACKBONE", "Backbone", "Preprocessing", "WeightsUnavailableError", "DownloadError", "Stage",
    "backbone_info", "default_device", "freeze", "get_stage", "imagenet_classes", "list_backbones",
    "load_backbone", "num_features", "param_groups", "preprocess", "replace_head", "stages",
    "trainable_summary", "unfreeze",
]
__all__ += ["History", "LRFinderResult", "evaluate", "fit", "lr_find", "predict_proba",
            "Features", "ProbeResult", "extract_features", "linear_probe", "train_head"]
