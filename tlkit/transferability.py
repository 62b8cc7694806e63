"""How well will a pretrained network transfer to *your* data? Scores from frozen features.

Every function here works on plain arrays (features, source-model probabilities, labels),
so each one can be read, tested and trusted on its own; :func:`tlkit.advisor.measure`
computes the arrays from a backbone and a dataset and calls them.

* :func:`knn_accuracy`, :func:`logistic_accuracy`: cross-validated accuracy of a k-nearest-
  neighbour and a logistic-regression classifier on frozen features. The only scores here
  with an absolute meaning ("0.93 of held-out images right").
* :func:`leep` (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of
  Learned Representations"): how well the *ImageNet classifier's* outputs predict your labels.
* :func:`nce` (Tran et al. 2019, "Transferability and Hardness of Supervised Classification
  Tasks"): the same question with the classifier's hard top-1 guesses.
* :func:`leep_similarity`, :func:`nce_similarity`: the two rescaled to [0, 1] (0 = no better
  than knowing the class frequencies, 1 = the ImageNet classifier already tells the classes apart).
* :func:`logme` (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning"): the Bayesian evidence of a linear model on the features, for ranking
  backbones on the same data. Caveat: with fewer images than feature dimensions it tends
  to favour wider features; compare it only across backbones on the same dataset.

Example:
    >>> import numpy as np
    >>> x = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9], [0.2, 0.8]])
    >>> knn_accuracy(x, [0, 0, 0, 1, 1, 1], k=1, cv=3)
    1.0
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = [
    "knn_accuracy", "logistic_accuracy", "leep", "leep_similarity", "nce", "nce_similarity",
    "logme", "logme_evidence", "logme_fit", "check_labels",
]


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence of class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer class indices (0, 1, 2, ...), got non-integer values")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, found {int(y.min())}")
    return y.astype(np.int64)


def _as_features(x, n: int, what: str = "features") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (images x dimensions), got shape {x.shape}")
    if x.shape[0] != n:
        raise ValueError(f"{what} has {x.shape[0]} rows but there are {n} labels; give one row per image")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or infinite values; check the model's outputs")
    return x


def _one_thread():
    """One BLAS thread: these matrices are small, and a multi-threaded BLAS competing with
    PyTorch's threads for the same cores can be 100x slower (seen on a shared 2-core machine)."""
    return threadpool_limits(limits=1, user_api="blas")


def check_labels(labels, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels as an int array plus the present classes; errors if a score cannot be computed.

    Raises ValueError for fewer than two classes, or when a class has fewer than
    ``min_per_class`` images (cross-validation needs two per class).
    """
    y = _as_labels(labels)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"need images of at least 2 classes to measure anything, found {len(classes)} "
                         f"class(es) in {len(y)} labels")
    if counts.min() < min_per_class:
        small = ", ".join(f"class {c}: {n}" for c, n in zip(classes, counts) if n < min_per_class)
        raise ValueError(f"every class needs at least {min_per_class} images here ({small}); add images to "
                         "those classes or leave them out")
    return y, classes


def _folds(y: np.ndarray, cv: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    n_splits = int(min(cv, np.bincount(y)[np.unique(y)].min()))
    if n_splits < 2:
        raise ValueError("cross-validation needs at least 2 images of every class; pass a separate validation "
                         "set (val=...) or add images")
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)


# ---------------------------------------------------------------------------
# Accuracy of simple classifiers on frozen features
# ---------------------------------------------------------------------------

def _score(make, x, y, cv, seed, val) -> float:
    """Mean held-out accuracy: on ``val`` if given, else stratified ``cv``-fold cross-validation."""
    with _one_thread():
        if val is not None:
            xv, yv = val
            yv = _as_labels(yv)
            xv = _as_features(xv, len(yv), "validation features")
            return float(make(len(y)).fit(x, y).score(xv, yv))
        scores = [make(len(tr)).fit(x[tr], y[tr]).score(x[te], y[te]) for tr, te in _folds(y, cv, seed)]
    return float(np.mean(scores))


def knn_accuracy(features, labels, k: int = 5, cv: int = 5, seed: int = 0, val=None) -> float:
    """Accuracy of a k-nearest-neighbour classifier (cosine distance) on frozen features.

    Cross-validated with stratified ``cv`` folds (fewer if a class has fewer images), or
    trained on ``features`` and scored on ``val=(val_features, val_labels)``. ``k`` is
    lowered to the training-set size when needed.

    >>> x = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]); knn_accuracy(x, [0, 0, 1, 1], k=1, cv=2)
    1.0
    """
    from sklearn.neighbors import KNeighborsClassifier

    y, _ = check_labels(labels, 1 if val is not None else 2)
    x = _as_features(features, len(y))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return _score(lambda n: KNeighborsClassifier(n_neighbors=min(k, n), metric="cosine"), x, y, cv, seed, val)


def logistic_accuracy(features, labels, C: float = 1.0, cv: int = 5, seed: int = 0, val=None) -> float:
    """Accuracy of a logistic-regression classifier on standardised frozen features (a "linear probe").

    Same evaluation as :func:`knn_accuracy`. ``C`` is the inverse L2 strength (sklearn's).

    >>> x = np.array([[0.0], [0.2], [0.4], [2.0], [2.2], [2.4]]); logistic_accuracy(x, [0, 0, 0, 1, 1, 1], cv=3)
    1.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y, _ = check_labels(labels, 1 if val is not None else 2)
    x = _as_features(features, len(y))
    return _score(lambda n: make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)),
                  x, y, cv, seed, val)


# ---------------------------------------------------------------------------
# LEEP and NCE: what the ImageNet classifier's outputs say about your labels
# ---------------------------------------------------------------------------

def leep(source_probs, labels) -> float:
    """Log Expected Empirical Prediction (Nguyen et al. 2020), a number <= 0; higher transfers better.

    ``source_probs`` is N x Z: the source classifier's softmax over its Z classes (ImageNet:
    Z = 1000) for each of your N images; ``labels`` your N class indices. With
    theta_i = source_probs[i]:

    1. empirical joint  P(y, z) = 1/N * sum_{i: y_i = y} theta_i[z]
    2. conditional      P(y | z) = P(y, z) / sum_y' P(y', z)
    3. LEEP = 1/N * sum_i log( sum_z P(y_i | z) * theta_i[z] )

    i.e. the mean log-likelihood of a classifier that first asks the ImageNet classifier and
    then translates its ImageNet classes into yours.

    >>> p = np.array([[1.0, 0.0], [0.0, 1.0]]); leep(p, [0, 1])  # a perfect mapping
    0.0
    """
    y = _as_labels(labels)
    theta = _as_features(source_probs, len(y), "source_probs")
    if len(y) == 0:
        raise ValueError("no images: LEEP needs at least one labelled image")
    if theta.min() < 0 or not np.allclose(theta.sum(1), 1.0, atol=1e-4):
        raise ValueError("source_probs must be probabilities (each row >= 0, summing to 1): apply softmax to the "
                         "source model's logits first")
    num_classes = int(y.max()) + 1
    joint = np.zeros((num_classes, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= len(y)
    marginal = joint.sum(0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = (theta * conditional[y]).sum(1)
    return float(np.mean(np.log(np.clip(eep, 1e-300, None))))


def _label_entropy(y: np.ndarray) -> float:
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def leep_similarity(score: float, labels) -> float:
    """LEEP rescaled to [0, 1]: ``1 - LEEP / (-H(Y))``, clipped.

    H(Y) is the entropy of your class frequencies (log C for C balanced classes). A classifier
    that ignores the image and predicts the class frequencies scores LEEP = -H(Y) (-> 0); one
    that is always sure and right scores LEEP = 0 (-> 1).

    >>> round(leep_similarity(-np.log(2) / 2, [0, 1]), 3)
    0.5
    """
    y, _ = check_labels(labels)
    h = _label_entropy(y)
    return float(np.clip(1.0 - score / -h, 0.0, 1.0))


def nce(source_labels, labels) -> float:
    """Negative Conditional Entropy -H(Y | Z) (Tran et al. 2019), a number <= 0; higher transfers better.

    ``source_labels`` are the source classifier's top-1 predictions z_i (ImageNet class
    indices), ``labels`` your classes y_i. H(Y | Z) = -sum_{y,z} P(y, z) log P(y | z) with
    the empirical joint distribution of (y, z) pairs.

    >>> nce([0, 0, 1, 1], [0, 0, 1, 1])
    0.0
    """
    y = _as_labels(labels)
    z = _as_labels(source_labels)
    if len(z) != len(y):
        raise ValueError(f"{len(z)} source labels but {len(y)} labels; give one of each per image")
    if len(y) == 0:
        raise ValueError("no images: NCE needs at least one labelled image")
    joint = np.zeros((int(y.max()) + 1, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / np.where(pz > 0, pz, 1.0))[nz])).sum())


def nce_similarity(score: float, labels) -> float:
    """NCE rescaled to [0, 1]: ``1 - H(Y|Z) / H(Y)`` = I(Y; Z) / H(Y), the share of label information
    the ImageNet classifier's top-1 guess carries.

    >>> nce_similarity(0.0, [0, 1])
    1.0
    """
    y, _ = check_labels(labels)
    return float(np.clip(1.0 + score / _label_entropy(y), 0.0, 1.0))


# ---------------------------------------------------------------------------
# LogME
# ---------------------------------------------------------------------------

def logme_evidence(features, target, alpha: float, beta: float) -> float:
    """Log evidence log p(y | F, alpha, beta) / N of Bayesian linear regression, in closed form.

    Model (You et al. 2021, eq. 2-3): weights w ~ N(0, alpha^-1 I), y = F w + noise,
    noise ~ N(0, beta^-1 I). With A = alpha I + beta F^T F and m = beta A^-1 F^T y:

        log p = N/2 log beta + D/2 log alpha - N/2 log 2pi
                - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log|A|

    It equals the log density of y under N(0, F F^T / alpha + I / beta), which is how the
    tests check it. Returned divided by N, as LogME reports it.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
          - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - logdet / 2)
    return float(ev / n)


def logme_fit(features, target, max_iter: int = 100, tol: float = 1e-4) -> tuple[float, float, float]:
    """Maximise the evidence over alpha, beta for one target column; returns (evidence / N, alpha, beta).

    The fixed-point updates of You et al. 2021 (Algorithm 1), using the SVD F = U S V^T so each
    step costs O(N D) instead of a D x D inverse (sigma_i = singular values, r = their number):

        gamma = sum_i beta sigma_i^2 / (alpha + beta sigma_i^2)
        m     = V diag(beta sigma_i / (alpha + beta sigma_i^2)) U^T y
        alpha = gamma / m^T m,   beta = (N - gamma) / ||F m - y||^2

    starting from alpha = beta = 1, until alpha / beta changes by less than ``tol`` (relative).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s ** 2
    uy = u.T @ y
    y_out = float(y @ y - uy @ uy)  # part of y outside the span of F's columns
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        shrink = beta * s2 / (alpha + beta * s2)
        gamma = float(shrink.sum())
        m2 = float(np.sum((beta * s / (alpha + beta * s2) * uy) ** 2))  # m^T m (V has orthonormal columns)
        res2 = float(np.sum(((1 - shrink) * uy) ** 2) + y_out)  # ||F m - y||^2
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = max(n - gamma, 1e-12) / max(res2, 1e-12)
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    # Evidence at the final alpha, beta from the same SVD (log|A| has D - r eigenvalues equal to alpha).
    shrink = beta * s2 / (alpha + beta * s2)
    m2 = float(np.sum((beta * s / (alpha + beta * s2) * uy) ** 2))
    res2 = float(np.sum(((1 - shrink) * uy) ** 2) + y_out)
    logdet = float(np.sum(np.log(alpha + beta * s2)) + (d - len(s)) * np.log(alpha))
    ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
          - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
    return float(ev / n), float(alpha), float(beta)


def logme(features, labels) -> float:
    """LogME (You et al. 2021): mean over classes of the maximised log evidence per image.

    Each class is a regression target (its one-hot column); for each, :func:`logme_fit`
    maximises the evidence of a Bayesian linear model on the features over the prior and
    noise precisions alpha, beta. Higher is better. Features are used as given (no
    standardisation), as in the paper.

    Use it to rank backbones on the same dataset, not to compare datasets. Known caveat:
    when there are fewer images than feature dimensions, the evidence tends to favour
    wider feature vectors, so a 2048-wide backbone can outrank a 1280-wide one on a small
    dataset without transferring better. Check a ranking with the k-NN / probe accuracies.

    >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 20)
    >>> good = np.c_[y + 0.1 * rng.normal(size=40), rng.normal(size=40)]
    >>> bad = rng.normal(size=(40, 2))
    >>> logme(good, y) > logme(bad, y)
    True
    """
    y, classes = check_labels(labels)
    f = _as_features(features, len(y))
    with _one_thread():
        return float(np.mean([logme_fit(f, (y == c).astype(np.float64))[0] for c in classes]))
