"""A fine-tuned model saves and loads: whole (torch.save), as a state_dict, and with save_model/load_model."""
from __future__ import annotations

import pickle

import pytest
import torch

import tlkit


@pytest.fixture
def tuned():
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=3, image_size=64)
    tlkit.freeze(model, until="blocks.5")
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # stands for fine-tuning: the weights differ from a fresh head
    return model


def test_the_backbone_record_pickles(tuned):
    record = pickle.loads(pickle.dumps(tuned.tlkit_backbone))
    assert record == tuned.tlkit_backbone and record.build().__class__.__name__ == "EfficientNet"
    for name in ("resnet18", "timm:convnext_atto"):
        info = tlkit.backbone_info(name)
        assert pickle.loads(pickle.dumps(info)).name == name


def test_torch_save_of_the_whole_fine_tuned_model(tuned, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(tuned, path)
    again = torch.load(path, weights_only=False)
    assert torch.equal(again.classifier.weight, tuned.classifier.weight)
    assert again.tlkit_backbone.preprocessing.size == 64
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(again.eval()(x), tuned.eval()(x))
    again.train()(x)  # the frozen stages' BatchNorm layers still go back to eval mode after loading
    assert not again.blocks[0][0].bn1.training and again.blocks[6][0].bn1.training


def test_state_dict_round_trip(tuned, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tuned.state_dict(), path)
    fresh = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=3)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh.classifier.weight, tuned.classifier.weight)


def test_save_model_and_load_model_keep_preprocessing_and_classes(tuned, tmp_path):
    path = tlkit.save_model(tuned, tmp_path / "bees.pt", classes=["ants", "bees", "wasps"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bees.pt"]  # no .part file left behind
    again = tlkit.load_model(path)
    assert again.tlkit_classes == ("ants", "bees", "wasps")
    assert again.tlkit_backbone.preprocessing == tuned.tlkit_backbone.preprocessing
    assert tlkit.preprocess(again).transforms[1].size == [64]
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(again(x), tuned.eval()(x)) and not again.training


def test_save_model_refuses_class_names_that_do_not_match_the_head(tuned, tmp_path):
    with pytest.raises(tlkit.ArgumentError, match="classes has 2 names but the model's head has 3 outputs"):
        tlkit.save_model(tuned, tmp_path / "m.pt", classes=["ants", "bees"])
    assert not list(tmp_path.iterdir())


def test_load_model_of_a_plain_state_dict_says_what_to_do(tuned, tmp_path):
    torch.save(tuned.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(tlkit.ArgumentError, match="not a file written by tlkit.save_model .a plain state_dict"):
        tlkit.load_model(tmp_path / "sd.pt")
    with pytest.raises(tlkit.ArgumentError, match="no such file"):
        tlkit.load_model(tmp_path / "missing.pt")
