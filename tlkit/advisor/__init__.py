"""Which transfer-learning strategy fits your data? The table, a measurement, and a race.

Every transfer-learning guide ends with the same table (CS231n's transfer-learning notes;
the layer-by-layer experiments of Yosinski et al. 2014, "How transferable are features in
deep neural networks?"). It asks two questions: how many images do you have, and how
similar are they to ImageNet?

=================  ======================================  ===========================================
images per class   similar to ImageNet                     different from ImageNet
=================  ======================================  ===========================================
small  (< 200)     feature extraction: a linear classifier  early features: a linear classifier on an
                   on the frozen penultimate features       earlier stage's features (more general)
medium (200-999)   fine-tune the top stages                 fine-tune from a middle stage on
large  (>= 1000)   fine-tune everything, body at lr / 10    retrain everything from the ImageNet weights
=================  ======================================  ===========================================

Four functions use it, from rule of thumb to evidence:

* :func:`advise` reads the table for sizes you give it -> :class:`Advice`;
* :func:`measure` measures where *your* data falls, from frozen features, in seconds
  -> :class:`Measurement` (k-NN / linear-probe accuracy, a probe at every stage, LEEP,
  NCE, LogME; the formulas live in :mod:`tlkit.transferability`);
* :func:`recommend` = measure + advise, saying which signals decided;
* :func:`race` runs the candidate strategies for the same number of epochs and reports
  which actually won -> :class:`RaceResult`, and says so when that is not the advice.

Why 200 and 1000 images per class. Data size matters per class: a linear classifier on
frozen features has (features x classes) weights and needs enough images of every class
to place each class's boundary, and fine-tuning millions of body weights overfits a
handful of images per class. Kornblith et al. 2019 ("Do Better ImageNet Models Transfer
Better?") found a logistic-regression classifier on frozen features within a point or two
of full fine-tuning on datasets with roughly 20-100 images per class (Flowers, Pets,
Caltech-101), and fine-tuning clearly ahead on datasets with hundreds to thousands per
class (Food-101, CIFAR) and on fine-grained data unlike ImageNet's classes (cars,
aircraft). The PyTorch tutorial's ants-and-bees set (~120 per class) is the classic case
where the fixed feature extractor does about as well as fine-tuning. We call < 200 per class "small" and >= 1000 "large"; between them
the table fine-tunes only the top stages. These are rules of thumb: :func:`race` checks them.

One module per idea, each named so that it does not hide a function:
:mod:`~tlkit.advisor.decision_table` (the table, :func:`advise`), :mod:`~tlkit.advisor.measurement`
(:func:`measure`), :mod:`~tlkit.advisor.recommendation` (:func:`recommend`) and
:mod:`~tlkit.advisor.strategy_race` (:func:`race`); every name is also here, as ``tlkit.advisor.<name>``.

Example:
    >>> from tlkit.advisor import advise
    >>> a = advise(num_images=240, num_classes=2, similarity="similar")
    >>> a.strategy, a.freeze_until
    ('feature_extraction', 'head')
"""
from .measurement import Measurement, measure, stage_features
from .strategy_race import RaceEntry, RaceResult, race
from .recommendation import measured_similarity, recommend
from .decision_table import (
    LARGE_PER_CLASS, PENULTIMATE, SIMILARITY_THRESHOLD, SIZES, SMALL_PER_CLASS, STRATEGIES, TABLE, Advice, advise,
    size_band, table, table_html,
)

__all__ = [
    "SMALL_PER_CLASS", "LARGE_PER_CLASS", "SIMILARITY_THRESHOLD", "STRATEGIES", "TABLE", "SIZES", "PENULTIMATE",
    "Advice", "advise", "table", "table_html", "size_band", "Measurement", "measure", "stage_features",
    "measured_similarity", "recommend", "RaceEntry", "RaceResult", "race",
]
