"""tlkit.grading: every check passes on a right answer and fails, specifically, on blank and typical wrong ones.

Each wrong answer below is one a learner really writes (the ImageNet head left in place, ImageNet
statistics on the Lite backbone, requires_grad off but BatchNorm left in train mode, the optimizer
made before the head was replaced...). Messages must name the mistake and must not contain the
expected values.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision import transforms as v1
from torchvision.transforms import v2

import tlkit
from tlkit import grading
from tlkit.grading import CheckFailed
from tlkit.train import LRFinderResult

BLANKS = [None, NotImplemented, Ellipsis]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The checks run tiny batches: one thread is faster, and immune to a busy machine's contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite():
    """efficientnet_lite0 with random weights (the checks do not depend on the weights)."""
    torch.manual_seed(0)
    return tlkit.load_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def model(lite):
    return copy.deepcopy(lite)


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same_state(m, state):
    return all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def _fails(check, *args, match: str, absent: tuple[str, ...] = ()) -> str:
    with pytest.raises(CheckFailed, match=match) as info:
        check(*args)
    message = str(info.value)
    for text in absent:
        assert text not in message, f"the message gives away {text!r}: {message}"
    return message


def test_check_failed_is_an_assertion_error():
    assert issubclass(CheckFailed, AssertionError)
    assert set(grading.__all__) >= {"check_head", "check_frozen", "check_optimizer", "check_normalization",
                                    "check_training_step", "check_features", "check_lr", "CheckFailed"}


# --------------------------------------------------------------------------- check_head

def test_head_passes_for_a_new_head_and_confirms(model, capsys):
    tlkit.replace_head(model, 2)
    grading.check_head(model, 2)
    assert capsys.readouterr().out.strip() == "✓ head: 2 outputs for 2 classes"


def test_head_fails_for_the_imagenet_head(model):
    _fails(grading.check_head, model, 2, match="your head has 1000 outputs, the dataset has 2 classes")


@pytest.mark.parametrize("blank", BLANKS)
def test_head_fails_for_blank_answers(blank):
    _fails(grading.check_head, blank, 2, match="not written yet")


def test_head_fails_for_a_head_of_the_wrong_width_without_giving_the_width(model):
    model.classifier = nn.Linear(512, 2)
    message = _fails(grading.check_head, model, 2, match="expects 512 input features", absent=("1280",))
    assert "read the width from the layer you are replacing" in message


def test_head_fails_when_the_new_head_is_frozen(model):
    tlkit.replace_head(model, 2)
    tlkit.freeze(model, include_head=True)
    _fails(grading.check_head, model, 2, match="is frozen")


def test_head_accepts_a_sequential_head_a_bare_linear_and_a_dataset(model, capsys):
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 3))
    grading.check_head(model, SimpleNamespace(classes=["a", "b", "c"]))
    grading.check_head(nn.Linear(1280, 3), 3)
    _fails(grading.check_head, nn.Linear(1280, 1000), 3, match="1000 outputs, the dataset has 3 classes")
    assert capsys.readouterr().out.count("✓") == 2


def test_head_check_leaves_the_model_as_it_was(model):
    tlkit.replace_head(model, 2)
    model.train()
    state = _state(model)
    grading.check_head(model, 2)
    assert model.training and all(m.training for m in model.modules())
    assert _same_state(model, state)


def test_head_rejects_a_nonsense_class_count(model):
    with pytest.raises(ValueError, match="positive integer"):
        grading.check_head(model, 0)


# --------------------------------------------------------------------------- check_frozen

def test_frozen_passes_after_tlkit_freeze(model, capsys):
    tlkit.replace_head(model, 2)
    tlkit.freeze(model)
    grading.check_frozen(model)
    out = capsys.readouterr().out
    assert out.startswith("✓ frozen: stem, blocks.0 … conv_head") and "trainable: head (2,562 parameters)" in out
    tlkit.freeze(model, until="blocks.5")
    grading.check_frozen(model, until="blocks.5")


def test_frozen_fails_when_nothing_is_frozen(model):
    message = _fails(grading.check_frozen, model, None, match="nothing is frozen")
    assert f"all {sum(p.numel() for p in model.parameters()):,} parameters are trainable" in message


def test_frozen_names_the_stages_that_should_be_frozen(model):
    tlkit.freeze(model, until="blocks.5")
    _fails(grading.check_frozen, model, None, match=r"blocks\.5, blocks\.6, conv_head should be frozen")


def test_frozen_names_the_stages_that_should_train(model):
    tlkit.freeze(model)
    _fails(grading.check_frozen, model, "blocks.5", match=r"blocks\.5, blocks\.6, conv_head should be trainable")
    tlkit.freeze(model, include_head=True)
    _fails(grading.check_frozen, model, None, match="the head is frozen")


@pytest.mark.parametrize("blank", BLANKS)
def test_frozen_fails_for_blank_answers(blank):
    _fails(grading.check_frozen, blank, None, match="not written yet")


def test_frozen_catches_batchnorm_left_in_train_mode_and_restores_the_model(model):
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier"))  # requires_grad off by hand, BatchNorm untouched
    model.train()
    state = _state(model)
    _fails(grading.check_frozen, model, None, match="BatchNorm layers in the frozen stages still run in training mode")
    assert _same_state(model, state) and model.training


def test_frozen_rejects_an_unknown_stage(model):
    with pytest.raises(ValueError, match="Valid stages"):
        grading.check_frozen(model, until="layer3")


# --------------------------------------------------------------------------- check_optimizer

def _head_only(model):
    tlkit.replace_head(model, 2)
    return tlkit.freeze(model)


def test_optimizer_passes_with_exactly_the_trainable_parameters(model, capsys):
    _head_only(model)
    grading.check_optimizer(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1), model)
    tlkit.freeze(model, until="blocks.6")
    grading.check_optimizer(torch.optim.AdamW(tlkit.param_groups(model, lr=1e-3)), model)
    out = capsys.readouterr().out
    assert "✓ optimizer: holds exactly the 2 trainable parameter tensors (2,562 values, in head)" in out


def test_optimizer_checks_the_rates_and_class_an_exercise_states(model, capsys):
    tlkit.replace_head(model, 2)
    tlkit.freeze(model, until="blocks.5")
    groups = tlkit.param_groups(model, lr=1e-3, body_lr=1e-4)  # blocks.5 1e-4 ... head 1e-3, geometric
    optimizer = torch.optim.AdamW(groups)
    grading.check_optimizer(optimizer, model, lr={"blocks.5": 1e-4, "head": 1e-3}, kind=torch.optim.AdamW)
    assert "✓ optimizer" in capsys.readouterr().out
    _fails(lambda: grading.check_optimizer(optimizer, model, lr={"blocks.6": 1e-4}), match=r"blocks\.6 trains at lr "
           r"0\.000\d+; the exercise asks for 0\.0001")
    _fails(lambda: grading.check_optimizer(optimizer, model, lr=1e-3), match="blocks.5 trains at lr 0.0001; the "
           "exercise asks for 0.001")
    _fails(lambda: grading.check_optimizer(optimizer, model, kind=torch.optim.SGD),
           match="the optimizer is AdamW; the exercise asks for torch.optim.SGD")


def test_optimizer_counts_the_frozen_parameters_it_holds(model):
    _head_only(model)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    message = _fails(grading.check_optimizer, torch.optim.SGD(model.parameters(), lr=0.1), model,
                     match=f"the optimizer holds {len(frozen)} frozen parameter tensors")
    assert f"{sum(p.numel() for p in frozen):,} values" in message


def test_optimizer_made_before_the_head_was_replaced(model):
    tlkit.freeze(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    tlkit.replace_head(model, 2)
    message = _fails(grading.check_optimizer, optimizer, model, match="the new head is not in the optimizer")
    assert "2 tensors (1,281,000 values) that are not part of this model" in message
    assert "made before the head was replaced" in message


def test_optimizer_missing_trainable_body_stages(model):
    _head_only(model)
    tlkit.freeze(model, until="blocks.6")
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    _fails(grading.check_optimizer, optimizer, model, match=r"trainable parameter tensors .* in blocks\.6, conv_head\) "
           "are not in the optimizer")


@pytest.mark.parametrize("answer,match", [(None, "not written yet"), (NotImplemented, "not written yet"),
                                          ("list", "not an optimizer"), ("generator", "not an optimizer"),
                                          ("lr0", "learning rate 0")])
def test_optimizer_fails_for_blank_and_non_optimizers(model, answer, match):
    _head_only(model)
    head = list(model.classifier.parameters())
    answer = {"list": head, "generator": model.classifier.parameters(),
              "lr0": torch.optim.SGD(head, lr=0.0)}.get(answer, answer) if isinstance(answer, str) else answer
    _fails(grading.check_optimizer, answer, model, match=match)


# --------------------------------------------------------------------------- check_normalization

LITE_VALUES = ("0.5",)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _v2(mean, std, scale=True, extra=()):
    return v2.Compose([v2.ToImage(), v2.Resize(256), v2.CenterCrop(224), *extra,
                       v2.ToDtype(torch.float32, scale=scale), v2.Normalize(mean, std)])


def test_normalization_passes_for_the_backbones_own_transforms(model, capsys):
    grading.check_normalization(tlkit.preprocess(model), model)
    grading.check_normalization(tlkit.preprocess("efficientnet_lite0", train=True), "efficientnet_lite0")
    grading.check_normalization(_v2([0.5] * 3, [0.5] * 3, extra=[v2.ColorJitter(0.4, 0.4)]), model)
    v1_pipeline = v1.Compose([v1.Resize(256), v1.CenterCrop(224), v1.ToTensor(), v1.Normalize([0.5] * 3, [0.5] * 3)])
    grading.check_normalization(v1_pipeline, model)
    grading.check_normalization(SimpleNamespace(transform=v1_pipeline), model)  # a dataset's transform
    by_hand = v2.Compose([v2.ToImage(), v2.Resize(224), v2.ToDtype(torch.float32, scale=True),
                          v2.Lambda(lambda x: (x - 0.5) / 0.5)])
    grading.check_normalization(by_hand, model)
    assert capsys.readouterr().out.count("✓ normalization: the same as efficientnet_lite0 was trained with") == 6


def test_normalization_imagenet_statistics_on_the_lite_backbone(model):
    message = _fails(grading.check_normalization, _v2(*IMAGENET), model,
                     match="different normalization than ImageNet's", absent=LITE_VALUES)
    assert "tlkit.preprocess(model)" in message


def test_normalization_lite_statistics_on_an_imagenet_backbone():
    resnet = tlkit.load_backbone("resnet18", pretrained=False)
    _fails(grading.check_normalization, _v2([0.5] * 3, [0.5] * 3), resnet, match="trained with ImageNet's normalization",
           absent=("0.485", "0.229"))


@pytest.mark.parametrize("transform,match", [
    (v2.Compose([v2.ToImage(), v2.Resize(224), v2.ToDtype(torch.float32, scale=True)]), "found no Normalize step"),
    (_v2([0.5] * 3, [0.5] * 3, scale=False), r"not scaled to \[0, 1\]"),
    (v2.Compose([_v2([0.5] * 3, [0.5] * 3), v2.Normalize([0.5] * 3, [0.5] * 3)]), "normalises 2 times"),
    (_v2([0.4, 0.4, 0.4], [0.6, 0.6, 0.6]), r"mean=\(0.4, 0.4, 0.4\), std=\(0.6, 0.6, 0.6\), which is not"),
    (v2.Compose([v2.ToImage(), v2.Resize(224)]), "uint8 tensor"),
])
def test_normalization_typical_wrong_pipelines(model, transform, match):
    _fails(grading.check_normalization, transform, model, match=match, absent=LITE_VALUES)


@pytest.mark.parametrize("blank", BLANKS)
def test_normalization_fails_for_blank_answers(model, blank):
    _fails(grading.check_normalization, blank, model, match="not written yet")


# --------------------------------------------------------------------------- check_training_step

def _batch(n=4, size=64):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=gen), torch.tensor([0, 1] * (n // 2))


def _step_with(optimizer):
    def step(model, batch):
        x, y = batch
        model.train()
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def test_training_step_passes_and_restores_the_model(model, capsys):
    _head_only(model)
    tlkit.freeze(model, until="blocks.6")
    optimizer = torch.optim.SGD(tlkit.param_groups(model, lr=0.1), lr=0.1)
    state = _state(model)
    grading.check_training_step(model, _step_with(optimizer), _batch())
    out = capsys.readouterr().out
    frozen = sum(not p.requires_grad for p in model.parameters())
    assert out.startswith("✓ training step: the trainable part (blocks.6, conv_head, head) changed; "
                          f"{frozen} frozen tensors") and "(loss " in out
    assert _same_state(model, state) and not model.training
    assert all(p.grad is None for p in model.parameters())


def test_training_step_not_written_yet(model):
    _head_only(model)

    def step(model, batch):
        # YOUR CODE HERE
        raise NotImplementedError()

    _fails(grading.check_training_step, model, step, _batch(), match="not written yet")


@pytest.mark.parametrize("blank", BLANKS)
def test_training_step_fails_for_blank_answers(model, blank):
    _head_only(model)
    _fails(grading.check_training_step, model, blank, _batch(), match="not written yet")


def test_training_step_that_never_calls_the_optimizer(model):
    _head_only(model)

    def step(model, batch):
        x, y = batch
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    _fails(grading.check_training_step, model, step, _batch(), match="none of the 2 trainable parameter tensors changed")


def test_training_step_moving_frozen_batchnorm_statistics(model):
    tlkit.replace_head(model, 2)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier"))  # frozen by hand: BatchNorm still follows train()
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    state = _state(model)
    _fails(grading.check_training_step, model, _step_with(optimizer), _batch(),
           match="running statistics of .* frozen BatchNorm layers changed")
    assert _same_state(model, state)


def test_training_step_with_part_of_the_trainable_model_missing_from_the_optimizer(model):
    _head_only(model)
    tlkit.freeze(model, until="conv_head")
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    _fails(grading.check_training_step, model, _step_with(optimizer), _batch(),
           match=r"nothing changed in conv_head \(3 trainable parameter tensors\), though the rest of the model moved")


def test_training_step_that_unfreezes_moves_frozen_weights(model):
    _head_only(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(model, batch):
        tlkit.unfreeze(model)
        return _step_with(optimizer)(model, batch)

    _fails(grading.check_training_step, model, step, _batch(), match="frozen parameter tensors changed")
    assert sum(p.requires_grad for p in model.parameters()) == 2  # the check restored the freeze


def test_training_step_errors_and_nan_losses_are_reported(model):
    _head_only(model)
    _fails(grading.check_training_step, model, lambda m, b: m(b), _batch(), match="raised AttributeError")
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    nan_step = lambda m, b: _step_with(optimizer)(m, b) * math.nan  # noqa: E731
    _fails(grading.check_training_step, model, nan_step, _batch(), match="returned a loss of nan")


# --------------------------------------------------------------------------- check_features

@pytest.fixture
def images():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def test_features_pass_for_correct_extractors(model, images, capsys):
    body = nn.Sequential(*list(model.children())[:-1]).eval()
    grading.check_features(body, model, images)
    grading.check_features(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), model, images)
    grading.check_features(lambda x: model.forward_features(x).mean(dim=(2, 3), keepdim=True), model, images)
    out = capsys.readouterr().out
    assert out.count("✓ features: 3 images × 1280 features, the same as the reference") == 3


def test_features_class_scores_and_feature_maps(model, images):
    _fails(grading.check_features, model, model, images, match="those are the head's outputs")
    _fails(grading.check_features, model.forward_features, model, images, match=r"feature maps of shape \(3, 1280, 2, 2\)")
    _fails(grading.check_features, lambda x: x.flatten(1), model, images, match="the head reads a different number",
           absent=("1280",))


def test_features_in_training_mode_are_caught_and_statistics_restored(model, images):
    body = nn.Sequential(*list(model.children())[:-1]).train()
    state = _state(model)
    _fails(grading.check_features, body, model, images, match="in training mode")
    assert _same_state(model, state) and body.training


def test_features_from_other_weights_differ(model, images):
    other = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    _fails(grading.check_features, nn.Sequential(*list(other.children())[:-1]).eval(), model, images,
           match="your features differ from the reference")


@pytest.mark.parametrize("blank", BLANKS)
def test_features_fail_for_blank_answers(model, images, blank):
    _fails(grading.check_features, blank, model, images, match="not written yet")


def test_features_not_written_yet(model, images):
    def extract(x):
        raise NotImplementedError()

    _fails(grading.check_features, extract, model, images, match="not written yet")


# --------------------------------------------------------------------------- check_lr

@pytest.fixture
def finder():
    """An LR-finder curve: flat, a steep fall, a minimum near 5.6e-3, then divergence to inf."""
    lrs = [10 ** (-6 + i / 4) for i in range(25)]
    losses = [2.0] * 8 + [2.0 - 0.2 * i for i in range(1, 9)] + [0.5, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf,
                                                                   math.nan]
    return LRFinderResult(lrs, losses, losses, suggestion=lrs[12])  # 1e-3, in the steep part


def test_lr_range_is_a_tenth_of_the_suggestion_up_to_the_minimum(finder):
    low, high = grading.lr_range(finder)
    assert low == pytest.approx(1e-4)
    assert high == pytest.approx(finder.lrs[15])  # the smoothed minimum, below 10 × the suggestion


@pytest.mark.parametrize("lr", [1e-3, 3e-3, 2e-4, torch.tensor(1e-3)])
def test_lr_passes_inside_the_supported_range(finder, lr, capsys):
    grading.check_lr(lr, finder)
    assert "in the range the LR finder supports" in capsys.readouterr().out


@pytest.mark.parametrize("lr,match", [
    (None, "not written yet"), (NotImplemented, "not written yet"), (0, "positive number"), (-0.5, "positive number"),
    (math.nan, "positive number"), ("1e-3", "should be a number"), (True, "should be a number"),
    (0.01, "already at its lowest"), (0.1, "already at its lowest"), (5e-5, "hardly started to fall"),
    (10.0, "outside the range the finder tried"), (1e-7, "outside the range the finder tried"),
])
def test_lr_fails_outside_the_range_without_giving_the_answer(finder, lr, match):
    _fails(grading.check_lr, lr, finder, match=match, absent=("0.001", "1e-03", "0.0001", "0.00562"))


def test_lr_without_a_finder_result(finder):
    _fails(grading.check_lr, 1e-3, None, match="run the learning-rate finder first")
    _fails(grading.check_lr, 1e-3, [1e-3], match="should be what tlkit.train.lr_find returns")


def test_lr_without_a_suggestion_uses_the_falling_part_of_the_curve(finder):
    finder.suggestion = None
    low, high = grading.lr_range(finder)
    assert finder.lrs[8] <= low <= finder.lrs[10] and high == pytest.approx(finder.lrs[15])


def test_lr_suggestion_is_always_accepted_even_at_the_minimum(finder, capsys):
    finder.suggestion = finder.lrs[15]  # the smoothed minimum itself
    grading.check_lr(finder.suggestion, finder)
    assert "✓" in capsys.readouterr().out


def test_lr_on_a_real_lr_finder_result():
    from tlkit import datasets, train

    ds = datasets.subset(datasets.load("digits", "train", progress=False), per_class=1)
    model = tlkit.freeze(tlkit.load_backbone("efficientnet_lite0", num_classes=len(ds.classes)))
    result = train.lr_find(model, ds, start=1e-5, end=10, steps=30, batch_size=4, progress=False)
    grading.check_lr(result.suggestion, result)
    low, high = grading.lr_range(result)
    assert result.lrs[0] <= low < result.suggestion < high <= result.lrs[-1]
    _fails(grading.check_lr, high, result, match="already at its lowest")
    _fails(grading.check_lr, low * 0.9, result, match="hardly started to fall|outside the range")


def test_claim_prints_the_evidence_when_it_holds(capsys):
    grading.check_claim(0.9 > 0.5, "the probe beats scratch", "90% vs 50%")
    assert capsys.readouterr().out.strip() == "✓ shown on this run: the probe beats scratch (90% vs 50%)"


def test_claim_that_does_not_hold_raises_with_claim_evidence_and_what_to_do():
    with pytest.raises(grading.ClaimNotShown, match=r"not shown on this run: the probe beats scratch \(40% vs 50%\)") as info:
        grading.check_claim(0.4 > 0.5, "the probe beats scratch", "40% vs 50%")
    assert "SEED" in str(info.value) and isinstance(info.value, AssertionError)
