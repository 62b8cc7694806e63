"""tlkit.advisor and tlkit.transferability: the decision table, the metrics against hand-computed
cases, and the measurement / recommendation / race on small real data."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import tlkit
from tlkit import advisor, transferability as tm
from tlkit.advisor import advise
from tlkit.train import History

LITE0_STAGES = ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "head"]


# ---------------------------------------------------------------------------
# The decision table
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("num_images, num_classes, similarity, strategy, size", [
    (244, 2, "similar", "feature_extraction", "small"),
    (1437, 10, "different", "early_features", "small"),
    (2000, 4, "similar", "fine_tune_top", "medium"),
    (2000, 4, "different", "fine_tune_top", "medium"),
    (50_000, 10, "similar", "fine_tune_all", "large"),
    (50_000, 10, "different", "retrain_all", "large"),
])
def test_every_quadrant(num_images, num_classes, similarity, strategy, size):
    a = advise(num_images, num_classes, similarity)
    assert (a.strategy, a.size, a.similarity) == (strategy, size, similarity)
    assert a.freeze_until in LITE0_STAGES
    assert a.feature_stage is None or a.feature_stage in LITE0_STAGES
    assert f"'{size} data, {similarity} {'to' if similarity == 'similar' else 'from'} ImageNet'" in a.rationale
    assert a.per_class == pytest.approx(num_images / num_classes)


def test_freeze_points_follow_the_strategy():
    fe = advise(100, 2, "similar")
    assert (fe.freeze_until, fe.feature_stage, fe.body_lr, fe.augment) == ("head", None, None, "none")
    early = advise(100, 2, "different")
    assert early.freeze_until == "head" and early.feature_stage == "blocks.4" and early.body_lr is None
    top = advise(1000, 2, "similar")
    assert top.freeze_until == "blocks.6" and top.body_lr == pytest.approx(top.head_lr / 10)
    assert top.augment == "standard" and top.uses_augmentation
    middle = advise(1000, 2, "different")
    assert middle.freeze_until == "blocks.4"  # different data: unfreeze from further down
    everything = advise(10_000, 2, "similar")
    assert everything.freeze_until == "stem" and everything.body_lr < everything.head_lr
    retrain = advise(10_000, 2, "different")
    assert retrain.freeze_until == "stem" and retrain.body_lr == retrain.head_lr


def test_size_is_per_class_with_documented_thresholds():
    s, big = advisor.SMALL_PER_CLASS, advisor.LARGE_PER_CLASS
    assert advise(s * 10 - 1, 10, "similar").size == "small"
    assert advise(s * 10, 10, "similar").size == "medium"
    assert advise(big * 10 - 1, 10, "similar").size == "medium"
    assert advise(big * 10, 10, "similar").size == "large"
    # the same 5000 images are large for 2 classes and small for 100 classes
    assert advise(5000, 2, "similar").size == "large"
    assert advise(5000, 100, "similar").size == "small"


def test_similarity_as_a_score():
    t = advisor.SIMILARITY_THRESHOLD
    assert advise(100, 2, t).similarity == "similar"
    assert advise(100, 2, t - 0.01).similarity == "different"
    assert advise(100, 2, 0.0).strategy == "early_features"
    assert advise(100, 2, 1).strategy == "feature_extraction"
    assert advise(100, 2, 0.8).similarity_score == pytest.approx(0.8)
    assert advise(100, 2, " Different ").similarity == "different"


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(num_images=0, num_classes=2), ValueError, "no training images"),
    (dict(num_images=10, num_classes=1), ValueError, "at least 2 classes"),
    (dict(num_images=10, num_classes=0), ValueError, "at least 2 classes"),
    (dict(num_images=3, num_classes=5), ValueError, "fewer than num_classes=5"),
    (dict(num_images=-1, num_classes=2), ValueError, "at least 0"),
    (dict(num_images=10.5, num_classes=2), TypeError, "whole number"),
    (dict(num_images=True, num_classes=2), TypeError, "whole number"),
])
def test_bad_sizes_give_clear_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        advise(similarity="similar", **kwargs)


@pytest.mark.parametrize("similarity", ["alike", 1.5, -0.1, float("nan"), None, True])
def test_bad_similarity_gives_clear_error(similarity):
    with pytest.raises(ValueError, match="'similar', 'different' or a number in \\[0, 1\\]"):
        advise(100, 2, similarity)


def test_one_image_per_class_is_allowed_with_a_warning():
    a = advise(5, 5, "similar")
    assert a.strategy == "feature_extraction"
    assert any("one-shot" in n for n in a.notes)
    assert any("noisy" in n for n in advise(12, 2, "similar").notes)


def test_freeze_point_is_a_stage_of_the_given_backbone():
    a = advise(1000, 2, "similar", model="resnet18")
    assert a.freeze_until == "layer4" and a.backbone == "resnet18"
    assert advise(100, 2, "different", model="resnet18").feature_stage == "layer3"
    model = tlkit.load_backbone("resnet18", pretrained=False)
    assert advise(10_000, 2, "different", model=model).freeze_until == "stem"
    # the advice can be carried out as it stands: freeze at that point, then the optimizer groups
    tlkit.freeze(model, until=a.freeze_until)
    groups = tlkit.param_groups(model, a.head_lr, body_lr=a.body_lr)
    assert [g["name"] for g in groups] == ["layer4", "head"]
    with pytest.raises(ValueError, match="Unknown backbone"):
        advise(100, 2, "similar", model="not_a_net")


def test_advice_renders_as_text_and_html():
    a = advise(244, 2, "similar")
    text = str(a)
    assert "feature_extraction" in text and "122 per class" in text and "Table row" in text
    page = a._repr_html_()
    assert page.startswith("<div") and "<table" in page and "feature extraction" in page
    assert "extract_features" in a.code()
    assert "tlkit.freeze(model, until='blocks.6')" in advise(1000, 2, "similar").code()
    assert "retrain_all" in advisor.table() and "small (< 200)" in advisor.table()


# ---------------------------------------------------------------------------
# Metrics against hand-computed cases
# ---------------------------------------------------------------------------

def test_leep_on_a_2x2_toy_computed_by_hand():
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    y = [0, 0, 1, 1]
    # joint P(y, z) = 1/4 sum of theta rows per label: y=0 -> (1.4, 0.6)/4, y=1 -> (0.4, 1.6)/4
    # P(z=0) = 0.45, P(z=1) = 0.55; P(0|z0) = 7/9, P(1|z0) = 2/9, P(0|z1) = 3/11, P(1|z1) = 8/11
    eep = [0.8 * 7 / 9 + 0.2 * 3 / 11, 0.6 * 7 / 9 + 0.4 * 3 / 11,
           0.3 * 2 / 9 + 0.7 * 8 / 11, 0.1 * 2 / 9 + 0.9 * 8 / 11]
    expected = np.mean(np.log(eep))
    assert tm.leep(theta, y) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(-0.4712, abs=1e-4)


def test_leep_extremes_and_normalisation():
    y = [0, 1, 0, 1]
    uninformative = np.full((4, 3), 1 / 3)  # the same output for every image: only class frequencies remain
    assert tm.leep(uninformative, y) == pytest.approx(math.log(0.5))
    assert tm.leep_similarity(tm.leep(uninformative, y), y) == pytest.approx(0.0)
    perfect = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    assert tm.leep(perfect, y) == pytest.approx(0.0)
    assert tm.leep_similarity(0.0, y) == 1.0
    with pytest.raises(ValueError, match="softmax"):
        tm.leep(np.array([[2.0, -1.0]] * 4), y)
    with pytest.raises(ValueError, match="one row per image"):
        tm.leep(perfect[:3], y)


def test_nce_by_hand():
    z = [0, 0, 1, 1, 1]
    y = [0, 0, 1, 1, 0]
    # P(y,z): (0,0)=2/5, (1,1)=2/5, (0,1)=1/5; P(y|z): 1, 2/3, 1/3
    expected = 2 / 5 * math.log(1) + 2 / 5 * math.log(2 / 3) + 1 / 5 * math.log(1 / 3)
    assert tm.nce(z, y) == pytest.approx(expected)
    h = -(3 / 5 * math.log(3 / 5) + 2 / 5 * math.log(2 / 5))
    assert tm.nce_similarity(expected, y) == pytest.approx(1 + expected / h)
    assert tm.nce_similarity(tm.nce([7, 7, 7, 7], [0, 1, 0, 1]), [0, 1, 0, 1]) == pytest.approx(0.0)


@pytest.mark.parametrize("n, d", [(12, 4), (6, 10)])  # more images than dims, and fewer
def test_logme_evidence_equals_the_gaussian_marginal_likelihood(n, d):
    rng = np.random.default_rng(n)
    f, y = rng.normal(size=(n, d)), rng.normal(size=n)
    for alpha, beta in [(1.0, 1.0), (0.3, 4.0), (5.0, 0.2)]:
        cov = f @ f.T / alpha + np.eye(n) / beta  # y ~ N(0, F F^T / alpha + I / beta)
        direct = multivariate_normal(np.zeros(n), cov).logpdf(y) / n
        assert tm.logme_evidence(f, y, alpha, beta) == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("n, d", [(30, 5), (8, 20)])
def test_logme_fixed_point_finds_the_maximum_evidence(n, d):
    rng = np.random.default_rng(d)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) * 0.5 + rng.normal(size=n)

    def neg(log_ab):
        a, b = np.exp(log_ab)
        return -multivariate_normal(np.zeros(n), f @ f.T / a + np.eye(n) / b).logpdf(y) / n

    best = minimize(neg, x0=[0.0, 0.0], method="Nelder-Mead", options=dict(xatol=1e-8, fatol=1e-12, maxiter=4000))
    evidence, alpha, beta = tm.logme_fit(f, y, tol=1e-8, max_iter=1000)
    assert evidence == pytest.approx(-best.fun, abs=1e-5)
    assert tm.logme_evidence(f, y, alpha, beta) == pytest.approx(evidence, rel=1e-7)


def test_logme_ranks_informative_features_higher():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    informative = np.eye(3)[y] + 0.2 * rng.normal(size=(60, 3))
    noise = rng.normal(size=(60, 3))
    assert tm.logme(informative, y) > tm.logme(noise, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        tm.logme(noise, np.zeros(60, int))


def test_knn_and_logistic_on_separable_and_random_points():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    centres = np.array([[5.0, 0.0], [0.0, 5.0]])
    x = centres[y] + 0.3 * rng.normal(size=(60, 2))
    assert tm.knn_accuracy(x, y) == 1.0
    assert tm.logistic_accuracy(x, y) == 1.0
    noise_labels = rng.permutation(y)
    assert 0.25 < tm.knn_accuracy(x, noise_labels) < 0.75
    # with a validation set instead of cross-validation
    xv = centres[[0, 1, 1]] + 0.1
    assert tm.knn_accuracy(x, y, val=(xv, [0, 1, 1])) == 1.0
    assert tm.logistic_accuracy(x, y, val=(xv, [1, 0, 0])) == 0.0


def test_metric_input_errors():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        tm.knn_accuracy(x, [0, 1, 1, 1])  # class 0 has one image: no cross-validation possible
    with pytest.raises(ValueError, match="2-D array"):
        tm.knn_accuracy(np.zeros(4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        tm.logistic_accuracy(np.full((4, 2), np.nan), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="integer class indices"):
        tm.nce([0, 1], [0.5, 1.0])


# ---------------------------------------------------------------------------
# recommend and race on hand-made measurements (no model needed)
# ---------------------------------------------------------------------------

class _Data:
    """Just what recommend reads from a dataset: targets and classes."""

    def __init__(self, per_class, num_classes):
        self.classes = [str(c) for c in range(num_classes)]
        self.targets = [c for c in range(num_classes) for _ in range(per_class)]
        self.name = "toy"


def _measurement(stage_accuracy, leep_similarity, n_eval=200, num_classes=2, per_class=100):
    acc = dict(stage_accuracy)
    return advisor.Measurement(
        backbone="efficientnet_lite0", dataset="toy", num_images=num_classes * per_class, num_classes=num_classes,
        per_class=per_class, evaluation="test", chance=1 / num_classes, knn_accuracy=acc["penultimate"],
        logistic_accuracy=acc["penultimate"], stage_accuracy=acc, stage_dims={s: 8 for s in acc},
        leep=-0.1, leep_similarity=leep_similarity, nce=-0.1, nce_similarity=0.5, logme=0.0, feature_dim=8,
        imagenet_top={"0": ("ant", 0.8)}, n_eval=n_eval)


SIMILAR_PROFILE = {"blocks.3": 0.80, "blocks.4": 0.85, "blocks.5": 0.91, "blocks.6": 0.95, "penultimate": 0.96}
DIFFERENT_PROFILE = {"blocks.3": 0.87, "blocks.4": 0.93, "blocks.5": 0.925, "blocks.6": 0.91, "penultimate": 0.89}


def test_recommend_similar_profile_is_feature_extraction():
    m = _measurement(SIMILAR_PROFILE, 0.78, n_eval=244)
    a = advisor.recommend("efficientnet_lite0", _Data(122, 2), measurement=m)
    assert a.strategy == "feature_extraction" and a.feature_stage is None
    assert a.signals["leep_similarity"] == 0.78 and a.signals["best_stage"] == "penultimate"
    assert "LEEP similarity 0.78" in a.rationale and a.measurement is m


def test_recommend_different_profile_reads_an_earlier_stage():
    m = _measurement(DIFFERENT_PROFILE, 0.04, n_eval=1400, num_classes=10, per_class=140)
    assert m.best_stage == "blocks.5"  # within one standard error of blocks.4's 0.93: the later one is chosen
    a = advisor.recommend("efficientnet_lite0", _Data(140, 10), measurement=m)
    assert (a.strategy, a.feature_stage, a.similarity) == ("early_features", "blocks.5", "different")
    assert "peaks at blocks.5" in a.rationale
    # with more data per class the same profile means: fine-tune from the stage after the peak
    big = advisor.recommend("efficientnet_lite0", _Data(400, 10), measurement=m)
    assert (big.strategy, big.freeze_until) == ("fine_tune_top", "blocks.6")
    assert "fine-tuning starts at blocks.6" in big.rationale


def test_stage_profile_overrules_a_similar_score_only_beyond_the_noise():
    m = _measurement(DIFFERENT_PROFILE, 0.9, n_eval=1400)  # drop 0.04 >> noise 0.007
    a = advisor.recommend("efficientnet_lite0", _Data(100, 2), measurement=m)
    assert a.similarity == "different" and "but the linear probe peaks" in a.rationale
    noisy = _measurement(DIFFERENT_PROFILE, 0.9, n_eval=30)  # same drop, noise +-0.047: not enough evidence
    assert advisor.recommend("efficientnet_lite0", _Data(100, 2), measurement=noisy).strategy == "feature_extraction"


def test_different_score_but_best_penultimate_keeps_penultimate_features():
    m = _measurement(SIMILAR_PROFILE, 0.1)
    a = advisor.recommend("efficientnet_lite0", _Data(100, 2), measurement=m)
    assert a.similarity == "different" and a.strategy == "feature_extraction" and a.feature_stage is None
    assert "the probe is best at penultimate" in a.rationale


def test_measurement_card_text_html_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    m = _measurement(DIFFERENT_PROFILE, 0.04, n_eval=1400)
    text = str(m)
    assert "LEEP" in text and "LogME" in text and "favours wide features" in text and "<- best" in text
    assert "blocks.5" in m._repr_html_() and "<table" in m._repr_html_()
    fig = m.plot()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(DIFFERENT_PROFILE)
    assert list(ax.lines[0].get_ydata()) == list(DIFFERENT_PROFILE.values())


def _race(accs, recommended, n_val=153):
    entries = [advisor.RaceEntry(s, a, a, 1.0, 10, "setting", History(val_acc=[a])) for s, a in accs.items()]
    advice = advise(244, 2, "similar")
    advice.strategy = recommended
    return advisor.RaceResult("efficientnet_lite0", "toy", entries, 3, n_val, advice)


def test_race_result_says_when_it_disagrees():
    agree = _race({"feature_extraction": 0.95, "fine_tune_top": 0.94, "fine_tune_all": 0.90}, "feature_extraction")
    assert agree.winner == "feature_extraction" and agree.agrees and "AGREES" in agree.verdict
    tie = _race({"feature_extraction": 0.94, "fine_tune_top": 0.95}, "feature_extraction")
    assert tie.winner == "fine_tune_top" and tie.tied == ["feature_extraction", "fine_tune_top"] and tie.agrees
    lose = _race({"early_features": 0.90, "fine_tune_top": 0.97}, "early_features", n_val=359)
    assert lose.agrees is False
    assert "DISAGREES" in lose.verdict and "0.070 below the winner" in lose.verdict
    assert "DISAGREES" in str(lose) and "#b71c1c" in lose._repr_html_()
    assert len(lose.plot().axes) == 2
    assert lose.test_accuracy is None and "test split" not in lose.verdict  # no test split given


def test_race_reports_the_winner_on_the_test_split_and_refuses_other_classes():
    entries = [advisor.RaceEntry(s, a, a, 1.0, 10, "setting", History(val_acc=[a]), t)
               for s, a, t in (("feature_extraction", 0.95, 0.90), ("fine_tune_top", 0.93, 0.97))]
    result = advisor.RaceResult("efficientnet_lite0", "toy", entries, 3, 153, None, n_test=49)
    # the winner is the validation winner, whatever the test split says
    assert result.winner == "feature_extraction" and result.test_accuracy == 0.90
    assert "on the test split (49 images, not used to choose) it scores 0.900" in result.verdict

    class Split(list):
        classes = ["ants", "bees"]

    other = Split()
    other.classes = ["cats", "dogs"]
    with pytest.raises(tlkit.ArgumentError, match="pass the test split of the same dataset"):
        advisor.race("efficientnet_lite0", Split([0]), Split([0]), test=other, progress=False)


# ---------------------------------------------------------------------------
# Real data: small subsets of hymenoptera (similar) and digits (different)
# ---------------------------------------------------------------------------

def _find_mirror():
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("TLKIT_MIRROR"), os.path.join(here, "..", "..", "shared", "datasets")):
        if candidate and os.path.isdir(os.path.join(candidate, "hymenoptera_data", "train")):
            return os.path.abspath(candidate)
    return None


MIRROR = _find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="hymenoptera_data not found; set TLKIT_MIRROR")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The bundled ImageNet backbone and an empty feature cache, shared by the real-data tests."""
    from tlkit import features

    keys = ("TLKIT_MIRROR", "TLKIT_CACHE", "TLKIT_DATA")
    old = {k: os.environ.get(k) for k in keys}
    if MIRROR:
        os.environ["TLKIT_MIRROR"] = MIRROR
    os.environ["TLKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["TLKIT_DATA"] = str(tmp_path_factory.mktemp("data"))
    features.clear_memory_cache()
    yield tlkit.load_backbone("efficientnet_lite0")
    features.clear_memory_cache()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slow
def test_stage_features_match_extract_features(real):
    from tlkit import datasets

    ds = datasets.subset(datasets.load("digits", "val"), per_class=1)
    pen, by_stage = advisor.stage_features(real, ds, ["blocks.2", "blocks.5"], progress=False)
    for stage in ("blocks.2", "blocks.5"):
        reference = tlkit.extract_features(real, ds, stage=stage, progress=False)
        assert by_stage[stage].shape == reference.x.shape
        assert torch_allclose(by_stage[stage], reference.x)
    assert pen.x.shape == (10, 1280)


def torch_allclose(a, b):
    import torch

    return torch.allclose(a, b, atol=1e-5)


def test_measure_errors_are_clear(real):
    from tlkit import datasets

    ds = datasets.subset(datasets.load("digits", "val"), per_class=2)
    with pytest.raises(ValueError, match="body stages are: stem, blocks.0"):
        advisor.measure(real, ds, stages=["layer3"])
    one = datasets.subset(datasets.load("digits", "val"), per_class=1)
    with pytest.raises(ValueError, match="at least 2 images"):
        advisor.measure(real, one)  # one image per class: cross-validation is impossible


@pytest.mark.slow
@needs_mirror
def test_hymenoptera_is_similar_and_digits_different(real):
    """The acceptance story on 20 images per class: ants and bees -> feature extraction; digits -> earlier features."""
    from tlkit import datasets

    hym = datasets.subset(datasets.load("hymenoptera", "train"), per_class=20)
    dig = datasets.subset(datasets.load("digits", "train"), per_class=20)
    m_hym = advisor.measure(real, hym, progress=False)
    m_dig = advisor.measure(real, dig, progress=False)
    # the ImageNet head names ants and bees correctly, and calls every digit the same thing
    assert m_hym.imagenet_top["ants"][0] == "ant" and m_hym.imagenet_top["bees"][0] == "bee"
    assert m_hym.leep_similarity > 0.5 > m_dig.leep_similarity
    assert m_hym.nce_similarity > 0.5 > m_dig.nce_similarity
    # frozen features separate ants from bees well; the digits' last features are worse than middle ones
    assert m_hym.logistic_accuracy > 0.8 and m_hym.best_stage == "penultimate"
    assert m_dig.best_stage in ("blocks.3", "blocks.4", "blocks.5", "blocks.6")  # not the penultimate features
    assert m_dig.penultimate_drop > 2 * m_dig.standard_error
    a_hym = advisor.recommend(real, hym, measurement=m_hym)
    a_dig = advisor.recommend(real, dig, measurement=m_dig)
    assert a_hym.strategy == "feature_extraction"
    assert a_dig.strategy == "early_features" and a_dig.feature_stage == m_dig.best_stage
    assert "LEEP similarity" in a_dig.rationale and a_dig.signals["best_stage"] == m_dig.best_stage


@pytest.mark.slow
@needs_mirror
def test_race_runs_every_strategy_and_checks_the_advice(real):
    from tlkit import datasets

    train = datasets.subset(datasets.load("hymenoptera", "train"), per_class=4)
    val = datasets.subset(datasets.load("hymenoptera", "val"), per_class=4)
    test = datasets.subset(datasets.load("hymenoptera", "test"), per_class=3)
    before = {k: v.clone() for k, v in real.state_dict().items()}
    advice = advise(len(train), 2, "similar")
    result = advisor.race(real, train, val, strategies=("feature_extraction", "fine_tune_top"), budget=1,
                          test=test, advice=advice, batch_size=4, progress=False)
    # chosen on val, reported on test: every strategy is scored on the 6 test images
    assert result.n_test == 6 and all(e.test_acc in {i / 6 for i in range(7)} for e in result.entries)
    assert result.test_accuracy == next(e.test_acc for e in result.entries if e.strategy == result.winner)
    assert f"on the test split (6 images, not used to choose) it scores {result.test_accuracy:.3f}" in result.verdict
    assert "test acc" in str(result) and "<th>test acc</th>" in result._repr_html_()
    assert [e.strategy for e in result.entries] == ["feature_extraction", "fine_tune_top"]
    for e in result.entries:
        assert 0.0 <= e.val_acc <= 1.0 and e.history.val_acc[-1] == e.val_acc
    top = result.entries[1]
    assert top.trainable == sum(p.numel() for n, p in tlkit.load_backbone(num_classes=2).named_parameters()
                                if n.startswith(("blocks.6", "conv_head", "bn2", "classifier")))
    assert result.n_val == 8 and result.winner in result.tied and result.agrees is not None
    assert ("AGREES" in result.verdict) == result.agrees
    # the backbone it was given is untouched (each strategy trains its own copy)
    assert all(torch_allclose(before[k].float(), v.float()) for k, v in real.state_dict().items())


# ---------------------------------------------------------------------------
# 0.2: one module per idea, one name per argument, figures shown once, the model's own input size
# ---------------------------------------------------------------------------

def test_one_module_per_idea_and_every_name_still_in_advisor():
    import importlib
    import inspect
    from pathlib import Path

    for module, names in (("decision_table", ["Advice", "advise", "table", "table_html", "size_band"]),
                          ("measurement", ["Measurement", "measure"]), ("recommendation", ["recommend"]),
                          ("strategy_race", ["RaceEntry", "RaceResult", "race"])):
        mod = importlib.import_module(f"tlkit.advisor.{module}")
        for name in names:
            assert getattr(advisor, name) is getattr(mod, name), name
        assert len(Path(mod.__file__).read_text().splitlines()) < 500
    assert callable(advisor.table) and callable(advisor.measure)  # module names never hide the functions
    assert list(inspect.signature(advise).parameters)[:4] == ["num_images", "num_classes", "similarity", "model"]
    for fn in (advisor.measure, advisor.recommend, advisor.race):
        assert list(inspect.signature(fn).parameters)[:3] == ["model", "dataset", "val"], fn.__name__
    with pytest.raises(tlkit.ArgumentError, match="model must be a backbone name"):
        advise(100, 2, "similar", model=3)


def test_plots_are_closed_so_notebooks_show_them_once():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    m = _measurement(SIMILAR_PROFILE, 0.78)
    fig = m.plot()
    assert fig.axes and fig.number not in plt.get_fignums()
    h = History(label="x", train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[1.0, 0.6], val_acc=[0.5, 0.7])
    race = advisor.RaceResult("efficientnet_lite0", "toy", [
        advisor.RaceEntry("feature_extraction", 0.9, 0.9, 1.0, 10, "probe", History(val_acc=[0.9])),
        advisor.RaceEntry("fine_tune_top", 0.7, 0.7, 5.0, 100, "fit", h)], budget=2, n_val=50)
    assert race.plot().number not in plt.get_fignums()
    assert h.plot().number not in plt.get_fignums()
    assert plt.get_fignums() == []
    # on an axis of yours, your figure stays yours
    mine, ax = plt.subplots()
    assert m.plot(ax=ax) is mine and mine.number in plt.get_fignums()
    plt.close(mine)


def test_measure_uses_the_model_input_size_for_leep_too(real, monkeypatch):
    """A model loaded with image_size=32 (and a new head) is measured at 32 px everywhere, LEEP included."""
    from tlkit import datasets
    from tlkit.advisor import measurement

    sizes = []
    real_extract = measurement.extract_features

    def spy(model, dataset, *args, **kwargs):
        sizes.append(tlkit.backbone_info(model).preprocessing.size)
        return real_extract(model, dataset, *args, **kwargs)

    monkeypatch.setattr(measurement, "extract_features", spy)
    ds = datasets.subset(datasets.load("digits", "val"), per_class=3)
    small = tlkit.load_backbone("efficientnet_lite0", num_classes=10, image_size=32)
    m = advisor.measure(small, ds, stages=["blocks.2"], cv=2, progress=False)
    assert len(sizes) >= 2, "one pass for the probes, one for the ImageNet head's LEEP"
    assert set(sizes) == {32}
    assert -10 < m.leep <= 0
