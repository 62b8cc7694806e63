"""The explorers in tlkit.widgets, driven headlessly: set control values, click buttons, check state.

Runs train efficientnet_lite0 (bundled ImageNet weights) for one epoch on 4 images per class
of hymenoptera (or scikit-learn's digits where hymenoptera cannot be had), so each run takes
a few seconds on a CPU.
"""
from __future__ import annotations

import copy
import re

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import tlkit  # noqa: E402
from tlkit import datasets, widgets  # noqa: E402

TIMEOUT = 300  # seconds a background run may take on 2 busy cores before a test gives up


@pytest.fixture(scope="module")
def model():
    return tlkit.load_backbone("efficientnet_lite0", num_classes=2)


@pytest.fixture(scope="module")
def data():
    try:
        train = datasets.load("hymenoptera", "train", progress=False)
        val = datasets.load("hymenoptera", "val", progress=False)
    except tlkit.DownloadError:  # no mirror and no network: digits ship with scikit-learn
        train, val = datasets.load("digits", "train"), datasets.load("digits", "val")
    return datasets.subset(train, per_class=4), datasets.subset(val, per_class=4)


def _trainable_when_frozen(model, until: str) -> int:
    """Counted here, independently of the explorer: requires_grad after tlkit.freeze on a copy."""
    m = tlkit.freeze(copy.deepcopy(model), until=until)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _points(fig):
    """Markers drawn on the accuracy panel of FreezeExplorer.plot(): one Line2D per run."""
    ax = fig.axes[0]
    return [line for line in ax.lines if line.get_marker() == "o"]


# ---------------------------------------------------------------------------
# FreezeExplorer
# ---------------------------------------------------------------------------

def test_freeze_point_control_shows_what_trainable_summary_reports(model, data):
    train, val = data
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    fe = widgets.freeze_explorer(model, train, val)
    fe.widget  # build the controls
    names = [s.name for s in tlkit.list_stages(model)]
    assert [value for _, value in fe.point.options] == names
    assert fe.point.value == "head"
    seen = set()
    for until in ("blocks.5", "stem", "conv_head", "head"):
        fe.point.value = until
        expected = _trainable_when_frozen(model, until)
        seen.add(expected)
        assert fe.until == until
        assert fe.summary().trainable == expected
        assert tlkit.trainable_summary(tlkit.freeze(copy.deepcopy(model), until=until)).trainable == expected
        assert f"<b>{expected:,}</b> of {fe.summary().total:,}" in fe.headline.value
        # the diagram shades exactly the stages before the freeze point
        assert fe.diagram.value.count("data-frozen='1'") == names.index(until)
        assert fe.diagram.value.count("data-frozen='0'") == len(names) - names.index(until)
        assert until in str(fe.details.outputs[0]["data"]["text/plain"])
    assert len(seen) == 4  # four freeze points, four different counts
    # the explorer never touches the learner's model
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_freeze_explorer_works_for_other_families():
    resnet = tlkit.load_backbone("resnet18", pretrained=False, num_classes=3)
    fe = widgets.freeze_explorer(resnet)
    assert fe.points == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert fe.select("layer3").trainable == _trainable_when_frozen(resnet, "layer3")
    assert "layer3 and later train" in fe.widget.children[1].value


def test_freeze_explorer_rejects_bad_input(model, data):
    train, val = data
    with pytest.raises(ValueError, match=r"'layer3' is not a freeze point.*blocks\.5"):
        widgets.freeze_explorer(model, train, val, until="layer3")
    with pytest.raises(TypeError, match="ImageDataset"):
        widgets.freeze_explorer(model, [1, 2, 3], val)
    with pytest.raises(TypeError, match="torch model"):
        widgets.freeze_explorer("efficientnet_lite0", train, val)
    fe = widgets.freeze_explorer(model)  # no data: the diagram works, Run does not
    assert fe.widget is not None and fe.run_button.disabled
    with pytest.raises(ValueError, match="no training set"):
        fe.run("head")


@pytest.mark.slow
def test_run_button_trains_a_copy_and_adds_one_point(model, data):
    train, val = data
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    fe = widgets.freeze_explorer(model, train, val, epochs=1)
    fe.widget
    assert fe.chart.layout.display == "none" and "No runs yet" in fe.results.value
    fe.point.value = "blocks.5"
    fe.run_button.click()
    assert fe.running and fe.run_button.disabled and not fe.stop_button.disabled
    fe.wait(TIMEOUT)
    assert not fe.run_button.disabled and fe.stop_button.disabled
    assert len(fe.runs) == 1
    run = fe.runs[0]
    assert run.until == "blocks.5" and run.epochs == 1 and not run.stopped
    assert run.trainable == _trainable_when_frozen(model, "blocks.5")
    assert 0.0 <= run.val_acc <= 1.0 and run.val_acc == run.history.val_acc[-1]
    assert len(_points(fe.plot())) == 1
    assert fe.chart.value[:4] == b"\x89PNG" and fe.chart.layout.display is None
    assert re.search(rf"blocks\.5\s+{run.trainable:,}", fe.results.value)
    assert "blocks.5: val accuracy" in fe.status.value
    # the learner's model is untouched: runs train a copy
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())

    # The plain call does the same work and updates the same view.
    first_chart = fe.chart.value
    result = fe.run("head", verbose=False)
    assert result is fe.runs[-1] and len(fe.runs) == 2
    assert len(_points(fe.plot())) == 2 and fe.chart.value != first_chart
    assert "head" in fe.table() and "blocks.5" in fe.table()


@pytest.mark.slow
def test_stop_button_stops_a_run(model, data, monkeypatch):
    train, val = data
    fe = widgets.freeze_explorer(model, train, val, epochs=3)
    fe.widget
    # Stop pressed at once: the next forward pass raises, no epoch completes, no point is added.
    fe.point.value = "blocks.6"
    fe.run_button.click()
    fe.stop_button.click()
    fe.wait(TIMEOUT)
    assert fe.runs == [] and "stopped before the first epoch" in fe.status.value
    assert not fe.run_button.disabled

    # Stop pressed during the first epoch: fit's callback returns False after it; the point is kept, marked.
    original = fe._epoch_progress

    def press_stop_after_first_epoch(epoch, epochs):
        original(epoch, epochs)
        if epoch == 1:
            fe.stop_button.click()

    monkeypatch.setattr(fe, "_epoch_progress", press_stop_after_first_epoch)
    fe.run_button.click()
    fe.wait(TIMEOUT)
    assert len(fe.runs) == 1 and fe.runs[0].stopped and fe.runs[0].epochs == 1
    assert "(stopped)" in fe.status.value


@pytest.mark.slow
def test_freeze_explorer_as_a_plain_call(model, data, capsys):
    train, val = data
    fe = widgets.freeze_explorer(model, train, val, epochs=1, until=["conv_head"])
    assert [r.until for r in fe.runs] == ["conv_head"]
    out = capsys.readouterr().out
    assert "fit 'conv_head'" in out and "epoch 1/1" in out  # fit's own report, as in a lesson
    text = repr(fe)
    assert "train from 'conv_head'" in text and f"{fe.runs[0].trainable:,}" in text
    bundle = fe._repr_mimebundle_()
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(bundle)
    assert "tlkit-diagram" in bundle["text/html"]


# ---------------------------------------------------------------------------
# LRExplorer
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_lr_explorer_sliders_runs_and_lr_find(model, data):
    train, val = data
    # The plain call: the listed settings train at once.
    lx = widgets.lr_explorer(model, train, val, epochs=1, until="blocks.6", lrs=[(1e-2, 1e-4)], lr_find_steps=8)
    assert len(lx.runs) == 1
    first = lx.runs[0]
    assert (first.head_lr, first.body_lr, first.until) == (1e-2, 1e-4, "blocks.6")
    assert first.history.lr[0] == pytest.approx(1e-2)  # fit recorded the head's rate

    lx.widget
    assert lx.curves.layout.display is None and lx.curves.value[:4] == b"\x89PNG"
    # Head only: the body slider is disabled and the run has no body rate.
    lx.point.value = "head"
    assert lx.body_slider.disabled
    lx.head_slider.value = 1e-3
    lx.run_button.click()
    lx.wait(TIMEOUT)
    assert len(lx.runs) == 2
    assert lx.runs[1].head_lr == pytest.approx(1e-3) and lx.runs[1].body_lr is None
    assert lx.runs[1].until == "head"
    assert list(lx.plot().tlkit_data["runs"]) == ["head 1e-2, body 1e-4", "head 1e-3"]
    assert "1e-3" in lx.results.value and "1e-2" in lx.results.value

    # lr_find beside the curves, and its suggestion moves the sliders.
    assert lx.suggest_button.disabled and lx.finder.layout.display == "none"
    lx.find_button.click()
    lx.wait(TIMEOUT)
    assert lx.lr_finder is not None and len(lx.lr_finder.lrs) == 8
    assert lx.finder.layout.display is None and not lx.suggest_button.disabled
    lx.suggest_button.click()
    suggestion = min(max(lx.lr_finder.suggestion, 1e-6), 1.0)
    assert lx.head_slider.value == pytest.approx(suggestion, rel=0.2)  # the slider snaps to its steps
    assert lx.head_lr == pytest.approx(lx.head_slider.value)

    lx.clear_button.click()
    assert lx.runs == [] and lx.curves.layout.display == "none"


def test_lr_explorer_rejects_bad_input(model, data):
    train, val = data
    with pytest.raises(ValueError, match="positive learning rate"):
        widgets.lr_explorer(model, train, val, head_lr=-1)
    with pytest.raises(ValueError, match="not a freeze point"):
        widgets.lr_explorer(model, train, val, until="fc")
    with pytest.raises(ValueError, match="needs a training set"):
        widgets.lr_explorer(model, None)
    lx = widgets.lr_explorer(model, train, val)
    with pytest.raises(ValueError, match="no lr_find result yet"):
        lx.use_suggestion()


# ---------------------------------------------------------------------------
# AugmentationExplorer
# ---------------------------------------------------------------------------

def _draws(pipeline, image, n=4, seed=3):
    torch.manual_seed(seed)
    return [torch.from_numpy(np.array(pipeline(image))) for _ in range(n)]


@pytest.fixture(scope="module")
def photo(data):
    return data[0].load_image(0)


@pytest.mark.parametrize("preset", ["none", "light", "standard", "strong"])
def test_augmentation_presets_behave_like_tlkit_datasets(preset, photo):
    ours = widgets.AugmentationSettings.preset(preset).pipeline()
    theirs = datasets.augmentation(preset, 224)
    assert all(torch.equal(a, b) for a, b in zip(_draws(ours, photo), _draws(theirs, photo)))


def test_augmentation_code_builds_the_same_pipeline(data, photo):
    ax = widgets.augmentation_explorer(data[0], augment="none", crop_scale=0.5, hflip=0.5, vflip=0.5, rotation=30,
                                       brightness=0.3, hue=0.05, grayscale=0.2, blur=1.5, size=96,
                                       interpolation="bicubic")
    namespace: dict = {}
    exec(ax.code, namespace)
    copied = namespace["augment"]
    assert [type(t).__name__ for t in copied.transforms] == [type(t).__name__ for t in ax.pipeline.transforms] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation", "ColorJitter",
        "RandomGrayscale", "GaussianBlur"]
    assert all(torch.equal(a, b) for a, b in zip(_draws(copied, photo), _draws(ax.pipeline, photo)))
    assert _draws(ax.pipeline, photo, n=1)[0].shape == (96, 96, 3)
    # a batch of identical uint8 images gets a different draw per image (so fit(augment=...) varies them)
    batch = torch.from_numpy(np.array(photo)).permute(2, 0, 1).unsqueeze(0).repeat(4, 1, 1, 1)
    out = ax.pipeline(batch)
    assert out.shape == (4, 3, 96, 96) and not all(torch.equal(out[0], out[i]) for i in range(1, 4))


def test_augmentation_controls_update_pipeline_code_and_grid(data):
    ax = widgets.augmentation_explorer(data[0], augment="light", num_images=2, n_draws=3, tile=48)
    ax.widget
    assert ax.preset.value == "light" and ax.controls["hflip"].value is True
    assert ax.grid().size == (4 * 48 + 2 * 4 + 14, 2 * 48 + 4)
    png = ax.image.value
    assert png[:4] == b"\x89PNG"

    ax.controls["rotation"].value = 40
    assert ax.settings.rotation == 40
    assert "v2.RandomRotation(40" in ax.code and "RandomRotation(40" in ax.code_view.value
    assert any(type(t).__name__ == "RandomRotation" for t in ax.pipeline.transforms)
    assert ax.preset.value == "custom" and ax.image.value != png

    ax.controls["vflip"].value = True
    assert ax.settings.vflip == 0.5 and "RandomVerticalFlip(p=0.5)" in ax.code

    ax.preset.value = "none"  # a preset moves every control
    assert ax.controls["crop_scale"].value == 1.0 and ax.controls["rotation"].value == 0
    assert ax.controls["hflip"].value is False and ax.controls["vflip"].value is False
    assert [type(t).__name__ for t in ax.pipeline.transforms] == ["Resize", "CenterCrop"]
    assert ax.preset.value == "none"

    # draws are seeded: the same seed draws the same grid, New draws moves on
    ax.set(augment="strong")
    same = ax.grid(seed=7).tobytes() == ax.grid(seed=7).tobytes()
    before = ax.image.value
    ax.draw_button.click()
    assert same and ax.seed == 1 and ax.image.value != before


def test_augmentation_explorer_rejects_bad_settings(data):
    with pytest.raises(ValueError, match="rotation must be a number from 0 to 180"):
        widgets.augmentation_explorer(data[0], rotation=500)
    with pytest.raises(TypeError, match="unknown setting.*'rotate'"):
        widgets.augmentation_explorer(data[0], rotate=10)
    with pytest.raises(ValueError, match="Unknown augmentation preset"):
        widgets.augmentation_explorer(data[0], augment="heavy")
    with pytest.raises(TypeError, match="ImageDataset"):
        widgets.augmentation_explorer([1, 2])
    ax = widgets.augmentation_explorer(data[0])
    with pytest.raises(ValueError, match="hue"):
        ax.set(hue=0.9)
    assert ax.settings.hue == 0.02  # unchanged after the error


# ---------------------------------------------------------------------------
# AdvisorWidget
# ---------------------------------------------------------------------------

def test_advisor_controls_update_the_advice(model):
    from tlkit import advisor

    aw = widgets.advisor_widget(per_class=100, num_classes=2, similarity="similar")
    aw.widget
    assert aw.advice.strategy == advisor.advise(200, 2, "similar").strategy == "feature_extraction"
    assert "feature extraction" in aw.card.value
    aw.similarity_buttons.value = "different"
    assert aw.advice.strategy == advisor.advise(200, 2, "different").strategy
    assert aw.advice.strategy.replace("_", " ") in aw.card.value
    aw.per_class_slider.value = 2000
    aw.classes_box.value = 10
    assert aw.num_images == 20_000
    expected = advisor.advise(20_000, 10, "different")
    assert (aw.advice.strategy, aw.advice.freeze_until) == (expected.strategy, expected.freeze_until)
    assert aw.advice.strategy.replace("_", " ") in aw.card.value
    # bad input through a control: a message, the advice stays
    aw.set(num_classes=10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        aw.set(num_classes=1)
    assert aw.num_classes == 10 and aw.advice.strategy == expected.strategy
    # the plain call
    text = str(widgets.advisor_widget(per_class=40, num_classes=5, similarity="different"))
    assert "early_features" in text and "200 images" in text


@pytest.mark.slow
def test_measure_my_dataset_moves_the_controls(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    train, _ = data
    aw = widgets.advisor_widget(dataset=train, measure_options={"stages": ["blocks.4"]})  # one probe: faster
    aw.widget
    aw.measure_button.click()
    aw.wait(TIMEOUT)
    m = aw.measurement
    assert m is not None and m.num_images == len(train) and m.num_classes == len(train.classes)
    assert aw.per_class == pytest.approx(len(train) / len(train.classes))
    assert aw.per_class_slider.value == pytest.approx(aw.per_class, rel=0.1)
    assert aw.advice.similarity_score == round(m.similarity, 2)
    assert aw.similarity_buttons.value == aw.advice.similarity
    # One rounding everywhere: the status line, the label, the card and the LEEP row agree.
    shown = f"{m.similarity:.2f}"
    assert f"similarity score {shown}" in aw.status.value and f"measured: {shown}" in aw.similarity_label.value
    assert f"(score {shown})" in aw.card.value and f"similarity {shown}" in aw.measurement_view.value
    assert "Measurement" in aw.measurement_view.value
    assert "loses" not in aw.measurement_view.value and "penultimate features" in aw.measurement_view.value
    assert list(m.stage_accuracy) == ["blocks.4", "penultimate"]


@pytest.mark.slow
def test_the_pipeline_trains_with_fit_as_the_code_says(model, data):
    from tlkit.train import fit

    train, val = data
    ax = widgets.augmentation_explorer(train, augment="standard", vflip=0.5, blur=1.0)
    history = fit(tlkit.freeze(copy.deepcopy(model)), train, val, epochs=1, augment=ax.pipeline, progress=False)
    assert history.epochs == 1 and 0.0 <= history.val_acc[0] <= 1.0


# ---------------------------------------------------------------------------
# Progress bars leave nothing behind in a saved notebook
# ---------------------------------------------------------------------------

_PROGRESS_CELL = """\
from tlkit._progress import Progress
bar = Progress(total=5, desc="extracting features")
for _ in range(5):
    bar.update()
bar.line("extracted 5 batches")
bar.close()
"""


def _execute(source: str, env: dict | None = None):
    import os

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _output_text(nb) -> str:
    import json

    return json.dumps(nb.cells[0].outputs)


@pytest.mark.slow
def test_executed_notebook_keeps_no_progress_bar_stub():
    nb = _execute(_PROGRESS_CELL, {"TLKIT_PROGRESS": ""})
    text = _output_text(nb)
    assert "extracted 5 batches" in text  # the lines a learner should read stay
    assert "0%|" not in text and "extracting features" not in text, text
    assert "application/vnd.jupyter.widget-view+json" not in text, text


@pytest.mark.slow
def test_notebook_run_by_nbgrader_prints_only_the_lines():
    nb = _execute(_PROGRESS_CELL, {"NBGRADER_EXECUTION": "autograde"})
    outputs = nb.cells[0].outputs
    assert [o.get("text") for o in outputs] == ["extracted 5 batches\n"], outputs


def test_progress_mode_follows_the_environment(monkeypatch):
    from tlkit._progress import progress_mode

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("TLKIT_PROGRESS", "lines")
    assert progress_mode() == "lines" and progress_mode(False) == "off"
    monkeypatch.setenv("TLKIT_PROGRESS", "")
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    assert progress_mode() == "lines"



# ---------------------------------------------------------------------------
# What the charts and tables explain (no training: runs made up from History objects)
# ---------------------------------------------------------------------------

def _history(label, train_loss, val_acc):
    from tlkit.train import History

    return History(label=label, train_loss=list(train_loss), train_acc=[0.5] * len(train_loss),
                   val_loss=list(train_loss), val_acc=list(val_acc), lr=[1e-3] * len(train_loss),
                   epoch_time=[1.0] * len(train_loss), train_time=[0.5] * len(train_loss))


def test_freeze_chart_has_a_legend_and_the_table_explains_its_marks(model, data):
    train, val = data
    fe = widgets.freeze_explorer(model, train, val)
    h = _history("x", [0.5], [0.9])
    fe.runs += [widgets.FreezeRun("head", 10, 100, 0.9, 0.9, 4.0, 1, False, h, train_seconds=1.0),
                widgets.FreezeRun("blocks.5", 50, 100, 0.8, 0.8, 9.0, 1, True, h, train_seconds=2.0)]
    fig = fe.plot()
    assert fig.legends, "the freeze chart has no legend"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["latest run", "earlier runs", "stopped before its last epoch", "mean at each freeze point"]
    assert "wall time" in fig.axes[1].get_ylabel()
    table = fe.table()
    assert "* stopped before its last epoch" in table and "wall time: what you waited" in table
    assert re.search(r"blocks\.5 .* 9\.0s\s+1\*", table)


def test_lr_chart_keeps_a_diverged_run_from_flattening_the_others(model, data):
    train, val = data
    lx = widgets.LRExplorer(model, train, val, epochs=3)
    good = _history("head 1e-3", [0.62, 0.41, 0.30], [0.7, 0.8, 0.85])
    bad = _history("head 1e+0", [3.0, 40.0, 86.0], [0.5, 0.5, 0.5])
    lx.runs += [widgets.LRRun(1e-3, None, "head", 0.85, 0.85, 3.0, 3, False, good),
                widgets.LRRun(1.0, None, "head", 0.5, 0.5, 3.0, 3, False, bad)]
    assert lx.diverged(bad) and not lx.diverged(good)
    fig = lx.plot()
    (ax_loss,) = [ax for ax in fig.axes if "loss" in ax.get_ylabel()]
    bottom, top = ax_loss.get_ylim()
    assert 0.62 < top < 1.0, top  # the good run fills the axis; 86 is off it
    legend = " ".join(t.get_text() for leg in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
                      for t in leg.get_texts())
    assert "head 1e0 (diverged" in legend and "head 1e-3" in legend
    assert "diverged" in lx.table().splitlines()[2] and "diverged" not in lx.table().splitlines()[1]


def test_lr_results_say_a_run_is_going_once_its_curve_is_drawn(model, data):
    train, val = data
    lx = widgets.LRExplorer(model, train, val, epochs=3)
    lx.widget
    assert "No runs yet" in lx.results.value
    lx._current = _history("head 1e-3", [0.6], [0.7])  # what fit's callback leaves after epoch 1
    lx._refresh_curves()
    lx._refresh_results()
    assert lx.curves.layout.display is None
    assert "No runs yet" not in lx.results.value and "head 1e-3: 1 epoch done" in lx.results.value


@pytest.mark.slow
def test_freeze_progress_bar_moves_during_an_epoch(model, data):
    train, val = data
    fe = widgets.freeze_explorer(model, train, val, epochs=1, batch_size=2)
    fe.widget
    seen = []
    fe.progress.observe(lambda ch: seen.append(ch["new"]), "value")
    run = fe.run("head", verbose=False)
    batches = -(-len(train) // 2)
    assert run is not None and fe.progress.max == batches
    assert [v for v in seen if 0 < v < batches], f"the bar only moved at the epoch's end: {seen}"
    assert seen[-1] == batches


def test_advisor_card_names_the_strategy_as_the_code_does():
    aw = widgets.advisor_widget(per_class=40, num_classes=5, similarity="different")
    aw.widget
    assert aw.advice.strategy == "early_features"
    assert "<code>early_features</code>" in aw.card.value and "early features</b>" not in aw.card.value
