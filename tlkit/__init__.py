"""tlkit: transfer learning with convolutional networks, by experiment.

The public API, by lesson:

* backbones (:mod:`tlkit.backbones`): :func:`load_backbone`, :func:`preprocess`, :func:`replace_head`,
  :func:`imagenet_classes`, :func:`list_backbones`; saving: :func:`save_model`, :func:`load_model`
* stages (:mod:`tlkit.stages`): :func:`list_stages`, :func:`get_stage`, :func:`num_features`
* freezing (:mod:`tlkit.freezing`): :func:`freeze`, :func:`unfreeze`, :func:`trainable_summary`,
  :func:`param_groups`
* errors (:mod:`tlkit.errors`): :class:`TlkitError` and the specific errors under it
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
from .freezing import freeze, param_groups, trainable_summary, unfreeze
from .stages import Stage, get_stage, list_stages, num_features
from . import stages, freezing
from .saving import load_model, save_model
from . import viz
from . import datasets
from . import advisor
from . import transferability
from . import widgets
from . import grading
from .train import History, LRFinderResult, evaluate, fit, lr_find, predict_proba, schedule_factor
from .features import Features, ProbeResult, extract_features, linear_probe, train_head

__all__ = [
    "TlkitError", "ArgumentError", "BackboneError", "DatasetError", "ArchiveError", "CheckFailed", "ClaimNotShown",
    "DEFAULT_BACKBONE", "Backbone", "Preprocessing", "WeightsUnavailableError", "DownloadError", "Stage",
    "backbone_info", "default_device", "freeze", "get_stage", "imagenet_classes", "list_backbones",
    "list_stages", "load_backbone", "load_model", "save_model", "num_features", "param_groups", "preprocess", "replace_head",
    "trainable_summary", "unfreeze",
]
__all__ += ["History", "LRFinderResult", "evaluate", "fit", "lr_find", "predict_proba", "schedule_factor",
            "Features", "ProbeResult", "extract_features", "linear_probe", "train_head"]
