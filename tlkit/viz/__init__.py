"""Pictures of what a network has learned, and of what fine-tuning changes.

Every function returns a matplotlib ``Figure`` (shown when it is the value of a notebook
cell) with the numbers behind it in ``fig.tlkit_data``.

* weights: :func:`filters`, :func:`filter_drift`, :func:`stage_drift`, :func:`weight_drift` (numbers)
* activations: :func:`feature_maps`, :func:`activation_maximization`
* evidence: :func:`class_activation_map` (and :func:`gradcam`, its numbers)
* features: :func:`embedding`
* training: :func:`history`, :func:`confusion`, :func:`top_losses`
* data: :func:`augmentations`

Example:
    >>> import tlkit
    >>> model = tlkit.load_backbone()
    >>> fig = tlkit.viz.filters(model)
    >>> fig.savefig("stem_filters.png")  # doctest: +SKIP
"""
from .activations import activation_maximization, feature_maps
from .augment import augmentations
from .cam import GradCAM, class_activation_map, default_cam_layer, gradcam
from .projection import embedding, project
from .training import confusion, history, predictions, top_losses
from .weights import filter_drift, filters, stage_drift, weight_drift

__all__ = [
    "GradCAM", "activation_maximization", "augmentations", "class_activation_map", "confusion",
    "default_cam_layer", "embedding", "feature_maps", "filter_drift", "filters", "gradcam", "history",
    "predictions", "project", "stage_drift", "top_losses", "weight_drift",
]
