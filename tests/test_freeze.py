"""Freezing really freezes: parameters, BatchNorm statistics, and the optimizer's view."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import tlkit


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _owner(model, key):
    """Stage name of a state_dict entry."""
    for stage in tlkit.list_stages(model):
        if any(key == m or key.startswith(m + ".") for m in stage.modules):
            return stage.name
    raise KeyError(key)


def _train_step(model, num_classes, size=64, lr=0.1):
    torch.manual_seed(0)
    opt = torch.optim.SGD(tlkit.param_groups(model, lr=lr, body_lr=lr), lr=lr, momentum=0.9)
    model.train()
    x = torch.randn(8, 3, size, size)
    y = torch.randint(0, num_classes, (8,))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name,until", [("efficientnet_lite0", "blocks.5"), ("resnet18", "layer3"),
                                        ("efficientnet_lite0", None), ("vgg16", "conv5")])
def test_one_training_step_moves_only_what_is_trainable(name, until):
    model = tlkit.load_backbone(name, pretrained=False, num_classes=3)
    tlkit.freeze(model, until=until)
    names = [s.name for s in tlkit.list_stages(model)]
    first_trainable = names.index(until) if until else len(names) - 1
    before = _snapshot(model)
    _train_step(model, 3, size=64)
    after = model.state_dict()
    for key, old in before.items():
        stage = _owner(model, key)
        frozen = names.index(stage) < first_trainable
        changed = not torch.equal(old, after[key])
        if frozen:
            assert not changed, f"{key} in frozen stage {stage} changed"
        elif key.endswith(("weight", "running_mean")) and old.dtype.is_floating_point:
            assert changed, f"{key} in trainable stage {stage} did not change"


def test_frozen_batchnorm_stays_in_eval_after_train():
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer4")
    model.train()
    bn_frozen = model.layer1[0].bn1
    bn_trainable = model.layer4[0].bn1
    x = torch.randn(4, 3, 64, 64)
    mean_before = bn_frozen.running_mean.clone()
    model(x)
    assert not bn_frozen.training and tlkit.freeze.__module__  # the hook put it back in eval
    assert torch.equal(bn_frozen.running_mean, mean_before)
    assert bn_trainable.training


def test_unfreeze_restores_everything():
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    tlkit.freeze(model, until="blocks.3")
    tlkit.unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    model(torch.randn(2, 3, 64, 64))
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert tlkit.trainable_summary(model).frozen == 0


def test_moving_the_freeze_point_both_ways():
    model = tlkit.load_backbone("resnet18", pretrained=False, num_classes=2)
    tlkit.freeze(model, until="layer2")
    assert model.layer2[0].conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    tlkit.freeze(model, until="layer4")
    assert not model.layer2[0].conv1.weight.requires_grad and model.fc.weight.requires_grad
    tlkit.freeze(model, until="stem")
    assert all(p.requires_grad for p in model.parameters())


def test_include_head_freezes_everything():
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False), include_head=True)
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="nothing to optimise"):
        tlkit.param_groups(model, lr=1e-3)


def test_bad_stage_name_lists_the_valid_ones():
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    with pytest.raises(ValueError) as err:
        tlkit.freeze(model, until="layer3")
    assert "'blocks.4'" in str(err.value) and "'conv_head'" in str(err.value)


def test_trainable_summary_matches_requires_grad():
    model = tlkit.freeze(tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=2), until="blocks.6")
    summary = tlkit.trainable_summary(model)
    assert summary.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert summary.stage("blocks.5")[4] == "eval (frozen stats)"
    assert summary.stage("blocks.6")[4] == "follows train()"
    text, html = str(summary), summary._repr_html_()
    assert "blocks.5" in text and f"{summary.trainable:,}" in text
    assert "<table>" in html and "conv_head" in html


def test_param_groups_hold_exactly_the_trainable_parameters_with_smaller_lrs_early():
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer2")
    groups = tlkit.param_groups(model, lr=1e-3)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    lrs = [g["lr"] for g in groups]
    assert [g["name"] for g in groups] == ["layer2", "layer3", "layer4", "head"]
    assert lrs == sorted(lrs) and lrs[-1] == 1e-3 and lrs[0] == pytest.approx(1e-4)


def test_frozen_model_survives_deepcopy():
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer4")
    clone = copy.deepcopy(model)
    clone.train()
    mean = clone.layer1[0].bn1.running_mean.clone()
    clone(torch.randn(2, 3, 64, 64))
    assert torch.equal(clone.layer1[0].bn1.running_mean, mean)


# --- Dropout and stochastic depth in frozen stages --------------------------------------------

@pytest.mark.parametrize("name,until", [("efficientnet_b0", "features.6"), ("convnext_tiny", "features.7")])
def test_frozen_dropout_and_stochastic_depth_stay_in_eval_mode(name, until):
    from torchvision.ops import StochasticDepth

    model = tlkit.load_backbone(name, pretrained=False, num_classes=2)
    tlkit.freeze(model, until=until)
    stages = {s.name: s for s in tlkit.list_stages(model)}
    frozen = [m for s in list(stages)[: list(stages).index(until)]
              for path in stages[s].modules for m in model.get_submodule(path).modules()
              if isinstance(m, (StochasticDepth, torch.nn.Dropout))]
    trainable = [m for path in stages[until].modules for m in model.get_submodule(path).modules()
                 if isinstance(m, StochasticDepth)]
    ran = set()
    for m in frozen + trainable:
        m.register_forward_hook(lambda module, *_: ran.add(module))
    model.train()
    model(torch.randn(2, 3, 32, 32))
    assert len(frozen) >= 10 and all(tlkit.freezing.is_frozen(m) for m in frozen)
    assert len(ran.intersection(frozen)) >= 5 and not any(m.training for m in ran.intersection(frozen))
    assert trainable and all(m.training for m in trainable)
    # a frozen body computes the same features twice in train mode: nothing random is left in it
    body = model.features[: int(until.split(".")[1])]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(body(x), body(x))
    tlkit.unfreeze(model)
    model.train()
    model(x)
    assert all(m.training for m in frozen)


def test_frozen_timm_droppath_stays_in_eval_mode():
    from timm.layers import DropPath

    model = tlkit.load_backbone("timm:convnext_atto", pretrained=False, num_classes=2)
    model = type(model)(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), drop_path_rate=0.5, num_classes=2)
    model.tlkit_backbone = tlkit.backbone_info("timm:convnext_atto")
    tlkit.freeze(model, until="stages.3")
    model.train()
    model(torch.randn(2, 3, 64, 64))
    drop = [m for m in model.stages[:3].modules() if isinstance(m, DropPath)]
    assert drop and not any(m.training for m in drop)
    assert all(m.training for m in model.stages[3].modules() if isinstance(m, DropPath))


# --- learning rates ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"lr": 0}, "lr must be a positive number such as 1e-3; got 0 (int)"),
    ({"lr": -1e-3}, "lr must be a positive number such as 1e-3; got -0.001"),
    ({"lr": float("nan")}, "lr must be a positive number such as 1e-3; got nan"),
    ({"lr": 1e-3j}, "lr must be a positive number such as 1e-3; got 0.001j (complex)"),
    ({"lr": "1e-3"}, "lr must be a positive number such as 1e-3; got '1e-3' (str)"),
    ({"lr": 1e-3, "body_lr": -1e-4}, "body_lr must be a number >= 0; got -0.0001"),
    ({"lr": 1e-3, "body_lr": float("inf")}, "body_lr must be a number >= 0; got inf"),
    ({"lr": 1e-3, "weight_decay": -0.1}, "weight_decay must be a number >= 0; got -0.1"),
])
def test_param_groups_refuse_bad_learning_rates(kwargs, message):
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer3")
    with pytest.raises(tlkit.ArgumentError) as err:
        tlkit.param_groups(model, **kwargs)
    assert message in str(err.value)


def test_body_lr_zero_keeps_the_body_where_it_is_and_trains_the_head():
    model = tlkit.freeze(tlkit.load_backbone("resnet18", pretrained=False, num_classes=2), until="layer3")
    groups = tlkit.param_groups(model, lr=1e-2, body_lr=0)
    assert [(g["name"], g["lr"]) for g in groups] == [("layer3", 0.0), ("layer4", 0.0), ("head", 1e-2)]
    before = model.layer3[0].conv1.weight.clone()
    head = model.fc.weight.clone()
    _opt = torch.optim.AdamW(groups)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1])).backward()
    _opt.step()
    assert torch.equal(model.layer3[0].conv1.weight, before) and not torch.equal(model.fc.weight, head)


def test_freeze_refuses_a_stage_that_is_not_a_name():
    model = tlkit.load_backbone("resnet18", pretrained=False)
    with pytest.raises(tlkit.ArgumentError, match="until must be a stage name such as 'layer3'.*got 3 .int."):
        tlkit.freeze(model, until=3)
    assert all(p.requires_grad for p in model.parameters())
