"""Feature vectors projected to 2-D: do the classes separate in a backbone's feature space?

Example:
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> digits = load_digits()
    >>> fig = embedding(digits.data, digits.target, method="pca")
    >>> fig.tlkit_data["points"].shape
    (1797, 2)
"""
from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from ._common import finish, new_figure

__all__ = ["embedding", "project"]


def _as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def project(features, method: str = "pca", *, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, str]:
    """``features`` (N×D) projected to N×2 with sklearn's PCA or t-SNE; also returns the axis-name prefix."""
    x = _as_array(features).reshape(len(features), -1).astype(np.float64)
    if len(x) < 3:
        raise ValueError(f"need at least 3 feature vectors to project, got {len(x)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        points = pca.fit_transform(x)
        ratio = pca.explained_variance_ratio_
        return points, [f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)"]
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca", random_state=seed)
        return tsne.fit_transform(x), ["t-SNE 1", "t-SNE 2"]
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def embedding(features, labels=None, method: str = "pca", classes: Sequence[str] | None = None, *,
              seed: int = 0, perplexity: float = 30.0) -> Figure:
    """Feature vectors as points in 2-D, coloured by class, with a legend of class names.

    Args:
        features: an N×D tensor or array, or a ``tlkit.train.Features`` (anything with
            ``x``, ``y`` and ``classes``), e.g. from ``extract_features(model, ds)``.
        labels: N class indices (taken from ``features.y`` when not given).
        method: ``"pca"`` (fast, linear; axes show the share of variance) or ``"tsne"``
            (non-linear; shows clusters, distances between clusters mean little).
        classes: class names for the legend (taken from ``features.classes`` when not given).
        seed: for t-SNE (and PCA's randomized solver): same seed, same picture.

    ``fig.tlkit_data`` holds ``points`` (N×2), ``labels`` and ``classes``.

    >>> import torch
    >>> fig = embedding(torch.randn(50, 8), torch.arange(50) % 2, classes=["ants", "bees"])
    """
    stage = None
    if hasattr(features, "x") and not isinstance(features, (torch.Tensor, np.ndarray)):
        stage = getattr(features, "stage", None)
        labels = getattr(features, "y", None) if labels is None else labels
        classes = getattr(features, "classes", None) if classes is None else classes
        features = features.x
    x = _as_array(features)
    if x.ndim < 2:
        raise ValueError(f"features must be N×D (one row per example), got shape {x.shape}")
    y = None if labels is None else _as_array(labels).astype(int).reshape(-1)
    if y is not None and len(y) != len(x):
        raise ValueError(f"{len(x)} feature vectors but {len(y)} labels")
    points, axis_names = project(x, method, seed=seed, perplexity=perplexity)

    fig = new_figure(6.8, 5.2)
    ax = fig.add_subplot()
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=12, alpha=0.7)
    else:
        num_classes = int(max(y.max() + 1, len(classes) if classes is not None else 0))
        names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(num_classes)]
        cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        for c in np.unique(y):
            pick = y == c
            ax.scatter(points[pick, 0], points[pick, 1], s=14, alpha=0.75, color=cmap(c % cmap.N),
                       label=f"{names[c] if c < len(names) else c} ({pick.sum()})")
        fig.legend(title="class", loc="outside right upper", fontsize=8, markerscale=1.5,
                   ncols=1 if num_classes <= 20 else 2)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if method == "tsne":
        ax.set_xticks([])
        ax.set_yticks([])
    where = f", stage {stage}" if stage else ""
    ax.set_title(f"{'PCA' if method == 'pca' else 't-SNE'} of {len(x)} feature vectors ({x.shape[1]}-D{where})")
    return finish(fig, points=points, labels=y, classes=None if classes is None else list(classes), method=method)
