"""Stages come from the model's own description: every offered backbone and a dozen timm families,
built without weights, go through load -> list_stages -> replace_head -> freeze -> param_groups -> one step."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tlkit
from tlkit.errors import BackboneError

TORCHVISION_EXTRA = ["mobilenet_v2", "mnasnet0_5", "squeezenet1_0", "shufflenet_v2_x0_5", "regnet_x_400mf"]
TIMM_FAMILIES = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnetx_002",
                 "densenet121", "vgg11", "ghostnet_100", "rexnet_100", "mixnet_s", "repvgg_a0", "cspresnet50",
                 "dla34", "hrnet_w18_small"]
NAMES = tlkit.list_backbones() + TORCHVISION_EXTRA + [f"timm:{n}" for n in TIMM_FAMILIES]


def _input_size(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    smallest = (cfg.get("min_input_size") or (3, 64, 64))[-1]
    return max(64, smallest)


@pytest.mark.parametrize("name", NAMES)
def test_load_stages_replace_head_freeze_and_one_training_step(name):
    torch.manual_seed(0)
    model = tlkit.load_backbone(name, pretrained=False)
    stages = tlkit.list_stages(model)
    names = [s.name for s in stages]
    assert names[-1] == "head" and names[0] in {"stem", "conv1"} and len(set(names)) == len(names)
    owned = [id(p) for s in stages for m in s.modules for p in model.get_submodule(m).parameters()]
    assert sorted(owned) == sorted({id(p) for p in model.parameters()}), "every parameter in exactly one stage"
    for s in stages:
        model.get_submodule(s.output)

    tlkit.replace_head(model, num_classes=3)
    head = model.get_submodule(tlkit.stages.head_path(model))
    assert getattr(head, "out_features", None) == 3 or getattr(head, "out_channels", None) == 3
    until = names[len(names) // 2]
    tlkit.freeze(model, until=until)
    groups = tlkit.param_groups(model, lr=0.05)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters() if p.requires_grad}

    frozen_names = set(names[: names.index(until)])
    frozen_prefixes = tuple(m for s in stages if s.name in frozen_names for m in s.modules)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(groups, lr=0.05)
    model.train()
    size = _input_size(model)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)
    nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    optimizer.step()
    after = model.state_dict()

    def in_frozen(key):
        return any(key == m or key.startswith(m + ".") for m in frozen_prefixes)

    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not [k for k in moved if in_frozen(k)], "a frozen weight or BatchNorm statistic changed"
    trainable = [n for n in names[names.index(until):]]
    for stage in stages:
        if stage.name in trainable:
            keys = [k for k, _ in model.named_parameters() if any(k.startswith(m + ".") for m in stage.modules)]
            assert any(k in moved for k in keys), f"nothing in trainable stage {stage.name} moved"


@pytest.mark.parametrize("name,head", [("mobilenet_v2", "classifier.1"), ("mnasnet0_5", "classifier.1"),
                                       ("squeezenet1_0", "classifier.1"), ("timm:mobilenetv3_small_100", "classifier"),
                                       ("timm:convnext_atto", "head.fc")])
def test_replace_head_finds_the_head_these_networks_really_have(name, head):
    model = tlkit.load_backbone(name, pretrained=False, num_classes=4)
    assert tlkit.stages.head_path(model) == head
    layer = model.get_submodule(head)
    assert (layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features) == 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_timm_models_keep_their_own_num_classes_in_step():
    model = tlkit.load_backbone("timm:convnext_atto", pretrained=False, num_classes=5)
    assert model.num_classes == 5  # timm's reset_classifier ran, not a bare attribute swap


def test_stage_names_of_timm_models_come_from_their_group_matcher():
    names = [s.name for s in tlkit.list_stages(tlkit.load_backbone("timm:mobilenetv3_small_100", pretrained=False))]
    assert names == ["stem"] + [f"blocks.{i}" for i in range(6)] + ["conv_head", "head"]
    names = [s.name for s in tlkit.list_stages(tlkit.load_backbone("timm:convnext_atto", pretrained=False))]
    assert names == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]


def test_stage_outputs_follow_timm_feature_info():
    model = tlkit.load_backbone("timm:resnet18", pretrained=False)
    assert tlkit.get_stage(model, "stem").output == "act1"  # after the ReLU, as timm's feature_info says


def test_module_and_function_names_agree():
    import types

    assert isinstance(tlkit.stages, types.ModuleType) and callable(tlkit.stages.head_path)
    assert isinstance(tlkit.freezing, types.ModuleType) and tlkit.freeze is tlkit.freezing.freeze
    assert tlkit.list_stages is tlkit.stages.list_stages
    assert not hasattr(tlkit.stages, "stage_names") and "stages" not in tlkit.__all__


def test_a_transformer_is_refused_with_the_reason():
    with pytest.raises(BackboneError, match="belong to no stage.*cls_token"):
        tlkit.list_stages(tlkit.load_backbone("timm:vit_tiny_patch16_224", pretrained=False))


def test_list_stages_of_something_that_is_not_a_model():
    with pytest.raises(tlkit.ArgumentError, match="model must be a torch.nn.Module"):
        tlkit.list_stages("resnet18")


# --- the PyTorch tutorial's `model.fc = nn.Linear(...)` on a network whose head is elsewhere ----------

@pytest.mark.parametrize("name,real", [("efficientnet_b0", "model.classifier[1]"),
                                       ("timm:efficientnet_b0", "model.classifier")])
def test_a_stray_fc_beside_the_real_head_is_refused_saying_where_the_head_is(name, real):
    model = tlkit.load_backbone(name, pretrained=False)
    model.fc = nn.Linear(1280, 2)
    for call in (lambda: tlkit.freeze(model), lambda: tlkit.list_stages(model),
                 lambda: tlkit.replace_head(model, 2)):
        with pytest.raises(BackboneError) as err:
            call()
        message = str(err.value)
        assert "model.fc" in message and f"head is {real}" in message and "never uses it" in message
        assert "tlkit.replace_head(model, 2)" in message
    assert model.fc.out_features == 2 and all(p.requires_grad for p in model.parameters())  # nothing changed
    del model.fc
    assert tlkit.list_stages(model)[-1].name == "head"


def test_a_module_the_forward_pass_uses_is_not_mistaken_for_a_stray_head():
    class WithExtra(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.scale = nn.Linear(3, 3)  # registered after the head, and used

        def forward(self, x):
            return self.scale(self.fc(x.mean((2, 3))))

    assert tlkit.stages.check_added_layers(WithExtra()) is None
