"""tlkit.viz: the numbers behind every picture, and a few pictures against PNG baselines.

Image comparison: the baselines in tests/baseline/ were rendered on CPU with fixed seeds.
Regenerate them after an intended change with

    TLKIT_REGEN_BASELINES=1 .venv/bin/python -m pytest tests/test_viz.py -k image
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.testing.compare import compare_images  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

import tlkit  # noqa: E402
from tlkit import viz  # noqa: E402

BASELINE = Path(__file__).parent / "baseline"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts" / "viz"
REGENERATE = os.environ.get("TLKIT_REGEN_BASELINES") == "1"
HYMENOPTERA = Path(os.environ.get("TLKIT_MIRROR", "/work/shared/datasets")) / "hymenoptera_data"


# ---------------------------------------------------------------------------
# Fixtures: a pretrained backbone, random-weight families, a tiny trained CNN
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0():
    return tlkit.load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def family():
    torch.manual_seed(0)
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tlkit.load_backbone(name, pretrained=False)
        return cache[name]
    return get


class SquareNet(nn.Module):
    """Two convolutions and a linear head: class 1 = "there is a bright square" (a bar is always there)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        return self.classifier(self.features(x).amax(dim=(2, 3)))


def square_images(n: int, g: torch.Generator, size: int = 32):
    """Noise, a bright 2×16 bar in every image (a distractor), a bright 6×6 square in class 1."""
    x = 0.3 * torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        r, c = int(torch.randint(0, size - 2, (1,), generator=g)), int(torch.randint(0, size - 16, (1,), generator=g))
        if torch.rand(1, generator=g) < 0.5:
            x[i, :, r:r + 2, c:c + 16] = 1.0
        else:
            x[i, :, c:c + 16, r:r + 2] = 1.0
        if y[i] == 1:
            r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
            x[i, :, r:r + 6, c:c + 6] = 1.0
    return x, y


@pytest.fixture(scope="module")
def square_net():
    """Trained in ~1-3 s on CPU; reaches ~100% on fresh images."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = SquareNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = square_images(256, g)
    for _ in range(100):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = square_images(100, g)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.9, "the tiny CNN did not learn the task"
    return model


class FakeDataset(torch.utils.data.Dataset):
    """What viz needs of a tlkit ImageDataset: classes, targets, load_image, (PIL image, label) items."""

    def __init__(self, images, targets, classes):
        self.images = list(images)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)

    def __len__(self):
        return len(self.images)

    def load_image(self, i):
        return self.images[i]

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


@pytest.fixture(scope="module")
def square_ds():
    g = torch.Generator().manual_seed(1)
    x, y = square_images(40, g)
    # Round-trip through 8-bit images, as the model will see them.
    images = [v2.functional.to_pil_image(img) for img in x]
    return FakeDataset(images, y, ["bar only", "square"])


def to_tensor(img):
    return v2.functional.to_dtype(v2.functional.to_image(img), torch.float32, scale=True)


# ---------------------------------------------------------------------------
# Image comparison against PNG baselines (a small pytest-mpl)
# ---------------------------------------------------------------------------

def check_image(fig: Figure, name: str, tol: float = 2.0) -> None:
    """Render ``fig`` and compare it with tests/baseline/<name>.png (RMS tolerance ``tol`` on 0-255)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    actual = ARTIFACTS / f"{name}.png"
    fig.savefig(actual, dpi=50)
    expected = BASELINE / f"{name}.png"
    if REGENERATE:
        BASELINE.mkdir(exist_ok=True)
        shutil.copyfile(actual, expected)
        return
    if not expected.exists():
        pytest.fail(f"no baseline image {expected}. Create it with: TLKIT_REGEN_BASELINES=1 "
                    ".venv/bin/python -m pytest tests/test_viz.py -k image")
    error = compare_images(str(expected), str(actual), tol=tol)
    assert error is None, f"{name}: the picture changed (see {ARTIFACTS}): {error}"


@pytest.fixture
def default_style():
    with plt.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        yield


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,n,k", [("efficientnet_lite0", 32, 3), ("resnet18", 64, 7), ("vgg16", 64, 3),
                                      ("alexnet", 64, 11)])
def test_filters_first_conv_grid_matches_the_layer(name, n, k, lite0, family):
    model = lite0 if name == "efficientnet_lite0" else family(name)
    fig = viz.filters(model)
    data = fig.tlkit_data
    assert isinstance(fig, Figure) and data["mode"] == "rgb"
    assert tuple(data["weight"].shape) == (n, 3, k, k)
    conv = model.get_submodule(data["layer"])
    assert torch.equal(data["weight"], conv.weight.detach())
    rows = (n + 7) // 8
    assert tuple(data["grid"].shape) == (3, rows * (k + 1) + 1, 8 * (k + 1) + 1)
    # Each tile is its filter, scaled to [0, 1] by its own min and max.
    for i in (0, n - 1):
        r, c = divmod(i, 8)
        tile = data["grid"][:, 1 + r * (k + 1):1 + r * (k + 1) + k, 1 + c * (k + 1):1 + c * (k + 1) + k]
        w = conv.weight.detach()[i]
        assert torch.allclose(tile, (w - w.min()) / (w.max() - w.min() + 1e-8), atol=1e-6)


def test_filters_deeper_layers(lite0, family):
    resnet = family("resnet18")
    data = viz.filters(resnet, "layer2").tlkit_data          # a stage: its first Conv2d
    assert data["layer"] == "layer2.0.conv1" and data["mode"] == "slices"
    assert tuple(data["grid"].shape) == (1, 16 * 4 + 1, 16 * 4 + 1)     # 16 filters × 16 input channels, 3×3
    w = resnet.layer2[0].conv1.weight.detach()
    r, c = 5, 11
    assert torch.allclose(data["grid"][0, 1 + 4 * r:4 + 4 * r, 1 + 4 * c:4 + 4 * c], w[r, c])

    depthwise = viz.filters(lite0, "blocks.1.0.conv_dw").tlkit_data   # a dotted module path
    assert depthwise["mode"] == "depthwise" and tuple(depthwise["weight"].shape) == (96, 1, 3, 3)
    pointwise = viz.filters(lite0, "blocks.3").tlkit_data             # EfficientNet blocks start with a 1×1
    assert pointwise["mode"] == "matrix"
    assert torch.equal(pointwise["grid"][0], lite0.blocks[3][0].conv_pw.weight.detach()[:64, :64, 0, 0])

    with pytest.raises(ValueError, match="layer4"):
        viz.filters(resnet, "layer9")


# ---------------------------------------------------------------------------
# feature_maps
# ---------------------------------------------------------------------------

def test_feature_maps_are_the_stage_output(lite0):
    image = next((HYMENOPTERA / "val" / "ants").glob("*.jpg"), None)
    if image is None:
        pytest.skip(f"no images under {HYMENOPTERA}")
    fig = viz.feature_maps(lite0, image, "blocks.2", n=12)
    data = fig.tlkit_data
    x = tlkit.preprocess(lite0)(Image.open(image).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        h = lite0.bn1(lite0.conv_stem(x))
        for i in range(3):
            h = lite0.blocks[i](h)
    assert data["activations"].shape == (40, 28, 28) == h.shape[1:]
    assert torch.allclose(data["activations"], h[0], atol=1e-4)
    means = h[0].mean(dim=(1, 2))
    assert data["channels"].tolist() == means.argsort(descending=True)[:12].tolist()
    assert len(fig.axes) >= 13          # the input, 12 maps (and a colorbar)


def test_feature_maps_other_family_and_errors(family):
    resnet = family("resnet18")
    data = viz.feature_maps(resnet, torch.rand(3, 64, 64), "layer2").tlkit_data
    assert data["activations"].shape == (128, 8, 8) and len(data["channels"]) == 16
    with pytest.raises(ValueError, match="not feature maps"):
        viz.feature_maps(resnet, torch.rand(3, 64, 64), "head")
    with pytest.raises(ValueError, match="Stages, in order"):
        viz.feature_maps(resnet, torch.rand(3, 64, 64), "block7")


# ---------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------

def test_gradcam_finds_the_square_not_the_distractor(square_net):
    g = torch.Generator().manual_seed(5)
    for (r, c) in [(20, 4), (3, 22), (13, 13)]:
        image = 0.3 * torch.rand(3, 32, 32, generator=g)
        image[:, r:r + 6, c:c + 6] = 1.0                                   # the object
        bar_r = 28 if r < 16 else 2
        image[:, bar_r:bar_r + 2, 8:24] = 1.0                               # the distractor
        cam = viz.gradcam(square_net, image, target="square", classes=["bar only", "square"])
        assert cam.target == 1 and cam.label == "square" and cam.probability > 0.9
        heat = cam.heatmap
        assert heat.shape == (32, 32) and float(heat.max()) == pytest.approx(1.0)
        peak_r, peak_c = divmod(int(heat.argmax()), 32)
        assert r - 1 <= peak_r <= r + 6 and c - 1 <= peak_c <= c + 6, (peak_r, peak_c, r, c)
        inside = heat[r:r + 6, c:c + 6].mean()
        mask = torch.ones_like(heat, dtype=torch.bool)
        mask[max(r - 2, 0):r + 8, max(c - 2, 0):c + 8] = False
        assert inside > 5 * heat[mask].mean()
        assert heat[bar_r:bar_r + 2, 8:24].mean() < 0.5 * inside


def test_gradcam_default_layer_per_family(lite0, family):
    expected = {"efficientnet_lite0": "conv_head", "resnet18": "layer4", "vgg16": "conv5", "alexnet": "conv5"}
    for name, layer in expected.items():
        model = lite0 if name == "efficientnet_lite0" else family(name)
        cam = viz.gradcam(model, torch.randn(3, 64, 64), target=3)
        assert cam.layer == layer and cam.heatmap.shape == (64, 64) and cam.target == 3


def test_gradcam_leaves_the_model_alone(family):
    model = copy.deepcopy(family("resnet18"))
    tlkit.freeze(model)                      # frozen body: Grad-CAM must still see gradients
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cam = viz.gradcam(model, torch.randn(3, 64, 64))
    assert cam.heatmap.max() > 0
    assert model.training, "the model's train/eval mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "Grad-CAM must not write .grad"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()), "BN statistics changed"


def test_class_activation_map_imagenet_names(lite0):
    image = torch.randn(3, 96, 96)
    fig = viz.class_activation_map(lite0, image, target="ant")
    data = fig.tlkit_data
    assert data["target"] == 310 == tlkit.imagenet_classes().index("ant") and data["label"] == "ant"
    predicted = viz.gradcam(lite0, image)
    with torch.no_grad():
        assert predicted.target == int(lite0(image.unsqueeze(0)).argmax())
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    with pytest.raises(ValueError, match="no class called 'antt'.*'ant'"):
        viz.gradcam(lite0, image, target="antt")


# ---------------------------------------------------------------------------
# Activation maximization
# ---------------------------------------------------------------------------

def _total_variation(x):
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


@pytest.mark.slow
def test_activation_maximization_excites_the_channel(lite0):
    channels = [0, 1, 2, 3]
    fig = viz.activation_maximization(lite0, "blocks.1", channels, size=64, steps=30)
    data = fig.tlkit_data
    assert data["images"].shape == (4, 3, 64, 64)
    assert data["images"].min() >= 0 and data["images"].max() <= 1
    curve = data["objective"]
    assert curve.shape == (31, 4)
    assert (curve[-1] > curve[0] + 3).all(), curve[[0, -1]]
    # The pattern excites its own channel more than the other patterns do.
    x = (data["images"] - 0.5) / 0.5
    with torch.no_grad():
        h = lite0.bn1(lite0.conv_stem(x))
        act = lite0.blocks[1](lite0.blocks[0](h)).mean(dim=(2, 3))[:, channels]
    assert torch.equal(act.argmax(dim=0), torch.arange(4))
    # Jitter and blur keep the patterns smoother than plain gradient ascent.
    plain = viz.activation_maximization(lite0, "blocks.1", channels, steps=30, jitter=0, blur_every=0)
    assert _total_variation(data["images"]) < 0.8 * _total_variation(plain.tlkit_data["images"])
    again = viz.activation_maximization(lite0, "blocks.1", channels, size=64, steps=30)
    assert torch.equal(again.tlkit_data["images"], data["images"]), "same seed, same picture"
    with pytest.raises(ValueError, match="24 channels"):
        viz.activation_maximization(lite0, "blocks.1", 99, steps=1)


# ---------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------

def test_embedding_pca_and_tsne():
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    digits = load_digits()
    x, y = digits.data[:300], digits.target[:300]
    names = [f"digit {i}" for i in range(10)]
    fig = viz.embedding(torch.tensor(x, dtype=torch.float32), torch.tensor(y), classes=names)
    data = fig.tlkit_data
    assert data["points"].shape == (300, 2)
    reference = PCA(2).fit_transform(x)
    assert np.allclose(np.abs(data["points"]), np.abs(reference), atol=1e-3)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [f"digit {c} ({(y == c).sum()})" for c in range(10)]
    assert "variance" in fig.axes[0].get_xlabel()

    from tlkit.features import Features

    features = Features(x=torch.tensor(x[:60], dtype=torch.float32), y=torch.tensor(y[:60]),
                        classes=[str(i) for i in range(10)], stage="blocks.3")
    tsne = viz.embedding(features, method="tsne").tlkit_data
    assert tsne["points"].shape == (60, 2) and tsne["classes"] == features.classes
    assert tsne["labels"].tolist() == y[:60].tolist()
    with pytest.raises(ValueError, match="300 feature vectors but 2 labels"):
        viz.embedding(x, [0, 1])
    with pytest.raises(ValueError, match="'pca' or 'tsne'"):
        viz.embedding(x, method="umap")


# ---------------------------------------------------------------------------
# Training views
# ---------------------------------------------------------------------------

def _history(label, scale):
    return SimpleNamespace(label=label, train_loss=[1.0 * scale, 0.6 * scale, 0.4 * scale],
                           val_loss=[0.9 * scale, 0.7 * scale, 0.65 * scale], train_acc=[0.5, 0.7, 0.8],
                           val_acc=[0.55, 0.72, 0.7])


def test_history_overlays_runs_with_their_labels():
    from tlkit.train import History

    runs = [History(label="lr=1e-3", **{k: v for k, v in vars(_history("", 1.0)).items() if k != "label"}),
            _history("lr=1e-1", 2.0), _history(None, 1.5)]
    fig = viz.history(runs)
    ax_loss, ax_acc = fig.axes[:2]
    assert len(ax_loss.get_lines()) == 6                               # 3 runs × (train, val)
    assert len(ax_acc.get_lines()) == 9                                # and a best-val marker each
    assert ax_loss.get_xlabel() == "epoch"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["lr=1e-3", "lr=1e-1", "run 3"] and "validation" in labels
    assert fig.tlkit_data["runs"]["lr=1e-1"]["train_loss"] == [2.0, 1.2, 0.8]
    assert np.allclose(ax_loss.get_lines()[2].get_ydata(), [2.0, 1.2, 0.8])
    with pytest.raises(TypeError, match="History"):
        viz.history([{"loss": 1}])


def test_confusion_counts(square_net, square_ds):
    fig = viz.confusion(square_net, square_ds)
    data = fig.tlkit_data
    with torch.no_grad():
        probs = square_net(torch.stack([to_tensor(i) for i in square_ds.images])).softmax(1)
    predicted = probs.argmax(1)
    targets = torch.tensor(square_ds.targets)
    for t in range(2):
        for p in range(2):
            assert data["matrix"][t, p] == int(((targets == t) & (predicted == p)).sum())
    assert data["accuracy"] == pytest.approx(float((predicted == targets).float().mean()))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bar only", "square"]
    assert ax.get_ylabel() == "true class"
    with pytest.raises(ValueError, match="2 outputs but the dataset has 3 classes"):
        viz.confusion(square_net, FakeDataset(square_ds.images, square_ds.targets, ["a", "b", "c"]))


def test_top_losses_picks_the_highest(square_net, square_ds):
    # Flip a few labels so that there are confident mistakes to find.
    flipped = FakeDataset(square_ds.images, [1 - t if i % 7 == 0 else t for i, t in enumerate(square_ds.targets)],
                          square_ds.classes)
    fig = viz.top_losses(square_net, flipped, k=5)
    data = fig.tlkit_data
    with torch.no_grad():
        logits = square_net(torch.stack([to_tensor(i) for i in flipped.images]))
    losses = nn.functional.cross_entropy(logits, torch.tensor(flipped.targets), reduction="none")
    assert data["indices"].tolist() == losses.argsort(descending=True)[:5].tolist()
    assert torch.allclose(data["losses"], losses.sort(descending=True).values[:5], atol=1e-4)
    assert set(data["indices"].tolist()) <= {i for i in range(len(flipped)) if i % 7 == 0}
    title = fig.axes[0].get_title()
    assert "predicted" in title and "true" in title and ("square" in title or "bar only" in title)


@pytest.mark.slow
def test_top_losses_real_images_use_the_backbone_preprocessing(lite0):
    files = [(p, 0) for p in sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:3]]
    files += [(p, 1) for p in sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:3]]
    if len(files) < 6:
        pytest.skip(f"no images under {HYMENOPTERA}")
    ds = FakeDataset([Image.open(p).convert("RGB") for p, _ in files], [t for _, t in files], ["ants", "bees"])
    model = copy.deepcopy(lite0)                # zero-shot ants vs bees: ImageNet's 'ant' and 'bee' outputs
    rows = [310, 309]
    w, b = model.classifier.weight.detach()[rows].clone(), model.classifier.bias.detach()[rows].clone()
    tlkit.replace_head(model, 2)
    model.classifier.weight.data.copy_(w)
    model.classifier.bias.data.copy_(b)
    probs, labels = viz.predictions(model, ds)
    x = torch.stack([tlkit.preprocess(model)(img) for img in ds.images])
    with torch.no_grad():
        assert torch.allclose(probs, model(x).softmax(1), atol=1e-5)
    assert (probs.argmax(1) == labels).float().mean() >= 0.8
    data = viz.top_losses(model, ds, k=2, probs=probs).tlkit_data
    losses = -probs[torch.arange(6), labels].log()
    assert data["indices"].tolist() == losses.argsort(descending=True)[:2].tolist()


# ---------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------

def _sgd_step(model, size=64):
    torch.manual_seed(0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, size, size)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    model.eval()


def test_weight_drift_is_zero_exactly_for_frozen_stages(family):
    model = copy.deepcopy(family("resnet18"))
    tlkit.replace_head(model, 2)
    tlkit.freeze(model, until="layer3")
    before = copy.deepcopy(model)
    _sgd_step(model)
    drift = viz.weight_drift(before, model)
    assert list(drift) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert drift["stem"] == drift["layer1"] == drift["layer2"] == 0.0
    assert all(drift[s] > 0 for s in ("layer3", "layer4", "head"))
    w0 = torch.cat([p.detach().flatten() for p in before.layer4.parameters()]).double()
    w1 = torch.cat([p.detach().flatten() for p in model.layer4.parameters()]).double()
    assert drift["layer4"] == pytest.approx(float((w1 - w0).norm() / w0.norm()), rel=1e-5)
    # A cloned state dict works as 'before'; the live state dict is refused (it would always give 0).
    assert viz.weight_drift({k: v.clone() for k, v in before.state_dict().items()}, model) == drift
    with pytest.raises(ValueError, match="shares memory"):
        viz.weight_drift(model.state_dict(), model)
    with pytest.raises(ValueError, match="deepcopy"):
        viz.weight_drift(model, model)
    # A replaced head cannot be compared: nan, not a misleading number.
    assert np.isnan(viz.weight_drift(before, tlkit.replace_head(copy.deepcopy(model), 5))["head"])

    fig = viz.stage_drift(before, model)
    assert fig.tlkit_data["drift"]["after"] == drift
    assert fig.tlkit_data["frozen"]["after"] == {"stem": True, "layer1": True, "layer2": True, "layer3": False,
                                                  "layer4": False, "head": False}
    heights = [bar.get_height() for bar in fig.axes[0].containers[0]]
    assert heights == pytest.approx(list(drift.values()))


def test_filter_drift(family):
    model = copy.deepcopy(family("resnet18"))
    before = copy.deepcopy(model)
    with torch.no_grad():
        model.conv1.weight[3] *= 1.5                # one filter changes by 50%
    data = viz.filter_drift(before, model).tlkit_data
    assert data["layer"] == "conv1" and data["before"].shape == data["after"].shape == (32, 3, 7, 7)
    assert data["relative_change"][3] == pytest.approx(0.5, rel=1e-5)
    assert float(data["relative_change"].sum()) == pytest.approx(0.5, rel=1e-5)
    unchanged = viz.filter_drift(before, copy.deepcopy(before))
    assert unchanged.tlkit_data["overall"] == 0.0


# ---------------------------------------------------------------------------
# Augmentations
# ---------------------------------------------------------------------------

def test_augmentations_are_seeded_and_shown_unnormalised(square_ds):
    pipeline = v2.Compose([v2.RandomResizedCrop(24, antialias=True), v2.RandomHorizontalFlip(),
                           v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.2] * 3)])
    state = torch.get_rng_state()
    fig = viz.augmentations(square_ds, pipeline, n=6, index=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state), "the global random state must be left alone"
    images = fig.tlkit_data["images"]
    assert len(images) == 6 and all(img.shape == (3, 24, 24) for img in images)
    assert all(0 <= float(img.min()) and float(img.max()) <= 1 for img in images)
    torch.manual_seed(1)
    first = pipeline(square_ds.load_image(3))
    assert torch.allclose(images[0], (first * 0.2 + 0.5).clamp(0, 1), atol=1e-6), "draws must be unnormalised"
    again = viz.augmentations(square_ds, pipeline, n=6, index=3, seed=1).tlkit_data["images"]
    other = viz.augmentations(square_ds, pipeline, n=6, index=3, seed=2).tlkit_data["images"]
    assert all(torch.equal(a, b) for a, b in zip(images, again))
    assert not all(torch.equal(a, b) for a, b in zip(images, other))
    assert "square" in fig.texts[0].get_text() or "bar only" in fig.texts[0].get_text()  # class name in the title
    with pytest.raises(IndexError, match="out of range"):
        viz.augmentations(square_ds, pipeline, index=99)


def test_figures_are_returned_not_left_open(family, square_net, square_ds):
    plt.close("all")
    viz.filters(family("resnet18"))
    viz.class_activation_map(square_net, torch.rand(3, 32, 32))
    viz.confusion(square_net, square_ds)
    assert plt.get_fignums() == [], "a notebook would show the figure twice"


# ---------------------------------------------------------------------------
# Pictures against baselines
# ---------------------------------------------------------------------------

def test_image_filters(lite0, default_style):
    check_image(viz.filters(lite0), "filters_lite0_stem")


def test_image_history(default_style):
    check_image(viz.history([_history("lr=1e-3", 1.0), _history("lr=1e-1", 2.0)]), "history_two_runs")


def test_image_confusion(default_style):
    probs = torch.tensor([[0.9, 0.05, 0.05]] * 5 + [[0.1, 0.8, 0.1]] * 4 + [[0.2, 0.2, 0.6]] * 6
                         + [[0.6, 0.3, 0.1]] * 2)
    targets = [0] * 5 + [1] * 4 + [2] * 6 + [1] * 2
    ds = FakeDataset([None] * len(targets), targets, ["daisy", "dandelion", "sunflower"])
    check_image(viz.confusion(None, ds, probs=probs), "confusion_three_classes")


def test_image_stage_drift(family, default_style):
    before = family("resnet18")
    after = copy.deepcopy(before)
    tlkit.freeze(after, until="layer2")
    with torch.no_grad():          # scaling a stage by (1 + a) moves it by exactly a, whatever its weights
        for a, name in zip([0.01, 0.02, 0.05, 0.2], ["layer2", "layer3", "layer4", "head"]):
            for path in tlkit.get_stage(after, name).modules:
                for p in after.get_submodule(path).parameters():
                    p.mul_(1 + a)
    fig = viz.stage_drift(before, after)
    assert list(fig.tlkit_data["drift"]["after"].values()) == pytest.approx([0, 0, 0.01, 0.02, 0.05, 0.2])
    check_image(fig, "stage_drift_resnet18")


# ---------------------------------------------------------------------------
# 0.2: one prediction path, one set of helpers, `dataset` as the argument name
# ---------------------------------------------------------------------------

def test_predictions_are_tlkit_predict_proba(square_ds):
    import inspect

    from tlkit import _runtime
    from tlkit.viz import _common

    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=2, image_size=32)
    probs, labels = viz.predictions(model, square_ds)
    assert torch.equal(probs, tlkit.predict_proba(model, square_ds, progress=False))
    assert labels.tolist() == square_ds.targets
    # the viz helpers are the runtime's, not copies with their own rules
    for name in ("device_of", "eval_mode", "run_until", "stage_names"):
        assert getattr(_common, name) is getattr(_runtime, name), name
    for fn in (viz.confusion, viz.top_losses, viz.predictions, viz.augmentations):
        assert list(inspect.signature(fn).parameters)[:2] in (["model", "dataset"], ["dataset", "augment"]), fn
