"""Grades that cannot be faked from the learner's kernel (issue 15, item 4a).

Each attack below is written as a student would type it into a solution cell, and runs in a
namespace that stands for the kernel (``exec`` of the cell's code). Then the visible check and
the hidden test run as the lesson runs them: the hidden test loads a fresh copy of
``tlkit/grading/verify.py`` with ``LOADER`` (the lines the lessons' hidden cells start with). Every
attack must fail; the honest answer next to it must pass (so the failure is the attack's).
"""
from __future__ import annotations

import copy
import importlib
import json
import sys
from pathlib import Path

import pytest
from module_state import restored
import torch
from torch import nn

import tlkit
import tlkit.train
from tlkit import grading
from tlkit.grading import CheckFailed

ROOT = Path(__file__).resolve().parents[1]
FREEZING = importlib.import_module("tlkit.freezing")  # the module (tlkit.freeze is the function)

LOADER = '''import sys as _sys, importlib.util as _u  # a fresh copy of tlkit's verifier, read from its file, not from sys.modules:
_t = next(s for f in _sys.meta_path if hasattr(f, "find_spec") and (s := f.find_spec("tlkit", None)))
_s = _u.spec_from_file_location("_tlkit_verify", _t.submodule_search_locations[0] + "/grading/verify.py")
_v = _u.module_from_spec(_s); _s.loader.exec_module(_v)  # nothing a cell changed in tlkit reaches it
'''


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kernel():
    """A namespace standing for the learner's kernel; tlkit's modules are put back afterwards."""
    with restored([tlkit, grading, grading.verify, FREEZING, tlkit.train, torch, nn]):
        yield {"tlkit": tlkit, "grading": grading, "torch": torch, "nn": nn}


def run(namespace: dict, code: str) -> dict:
    exec(compile(code, "<cell>", "exec"), namespace)
    return namespace


def hidden(namespace: dict, code: str) -> None:
    """A hidden test cell: the loader, then ``code``."""
    run(namespace, LOADER + code)


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return tlkit.load_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def model(lite):
    m = copy.deepcopy(lite)
    m.classifier = nn.Linear(1280, 2)
    return m


# --------------------------------------------------------------------------- the loader

def test_the_loader_gives_a_private_copy_not_the_imported_module(kernel):
    hidden(kernel, "")
    fresh = kernel["_v"]
    assert fresh is not grading.verify and fresh.__name__ == "_tlkit_verify"
    assert Path(fresh.__file__) == Path(grading.verify.__file__)
    assert "_tlkit_verify" not in sys.modules  # nothing for a later cell to find and replace


def test_the_loader_ignores_a_replaced_verifier(kernel, model):
    run(kernel, "import tlkit.grading.verify as v\nv.frozen = lambda *a, **k: None")
    with pytest.raises(AssertionError, match="should be frozen are still trainable"):
        hidden(kernel | {"model": model}, '_v.frozen(model, trainable=["classifier"])')


def test_the_lessons_hidden_tests_use_the_loader():
    """Every hidden test that calls the verifier loads it with LOADER, unchanged."""
    uses = 0
    for path in sorted((ROOT / "course" / "source").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if "_v." in source and "BEGIN HIDDEN TESTS" in source:
                uses += 1
                assert LOADER in source, f"{path.name}: a hidden test calls _v without the standard loader"
    assert uses >= 8


# --------------------------------------------------------------------------- switching the checks off

def test_replacing_fail_does_not_switch_the_checks_off(kernel, lite):
    untouched = copy.deepcopy(lite)  # ImageNet head, nothing frozen
    run(kernel, "tlkit.grading._fail = lambda m: None\ntlkit.grading.CheckFailed = Warning")
    with pytest.raises(Exception, match="your head has 1000 outputs"):
        grading.check_head(untouched, 2)
    with pytest.raises(Exception, match="nothing is frozen"):
        grading.check_frozen(untouched)
    kernel["model"] = untouched
    with pytest.raises(AssertionError, match="1000 outputs"):
        hidden(kernel, '_v.head(model, "classifier", 2)')
    with pytest.raises(AssertionError, match="should be frozen are still trainable"):
        hidden(kernel, '_v.frozen(model, trainable=["classifier"])')


def test_replaced_check_frozen_and_trainable_summary_do_not_pass_the_hidden_test(kernel, model):
    kernel["model"] = model  # the new head, nothing frozen
    run(kernel, """
from types import SimpleNamespace
tlkit.grading.check_frozen = lambda *a, **k: print("✓ frozen")
grading.check_frozen = tlkit.grading.check_frozen
tlkit.trainable_summary = lambda m: SimpleNamespace(trainable=1280 * 2 + 2)
""")
    run(kernel, "grading.check_frozen(model, until=None)")  # the visible test is fooled...
    assert tlkit.trainable_summary(model).trainable == 2562  # ...and so is the old hidden test
    with pytest.raises(AssertionError, match="should be frozen are still trainable"):
        hidden(kernel, '_v.frozen(model, trainable=["classifier"])')
    FREEZING.freeze(model)
    hidden(kernel, '_v.frozen(model, trainable=["classifier"])')  # the honest answer passes


def test_batchnorm_momentum_zero_in_train_mode_is_not_frozen(kernel, model):
    kernel["model"] = model
    run(kernel, """
for name, p in model.named_parameters():
    p.requires_grad = name.startswith("classifier")
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = 0.0   # the running statistics never move...
model.train()              # ...but the layers normalise with each batch's statistics
""")
    with pytest.raises(CheckFailed, match="BatchNorm layers in the frozen stages still run in training mode"):
        grading.check_frozen(model)
    with pytest.raises(AssertionError, match="still run in training mode after model.train"):
        hidden(kernel, '_v.frozen(model, trainable=["classifier"])')


def test_frozen_features_must_not_change_between_modes_whatever_the_flags_say(model):
    """Dropout in the frozen part left to follow model.train(): every BatchNorm runs in eval mode, and
    every parameter is frozen, yet the features change in train mode. (tlkit.freeze keeps such a Dropout
    in eval mode; here the flag that does so is switched off again, as a learner's hand-made freeze would.)"""
    model.conv_stem = nn.Sequential(model.conv_stem, nn.Dropout(0.5))
    FREEZING.freeze(model)
    model.conv_stem[1].tlkit_frozen = False
    with pytest.raises(AssertionError, match="differs between model.eval"):
        grading.verify.frozen(model, trainable=["classifier"])


# --------------------------------------------------------------------------- a training step

def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


@pytest.fixture
def lesson1(kernel):
    cnn = _cnn()
    gen = torch.Generator().manual_seed(0)
    kernel.update(cnn=cnn, x_batch=torch.randn(16, 1, 16, 16, generator=gen), y_batch=torch.arange(16) % 10,
                  F=torch.nn.functional)
    run(kernel, "optimizer = torch.optim.Adam(cnn.parameters(), lr=1e-3)")
    return kernel


HONEST_STEP = """
def train_step(model, batch):
    x, y = batch
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss
"""


def test_an_honest_training_step_passes_visible_and_hidden(lesson1, capsys):
    run(lesson1, HONEST_STEP + "grading.check_training_step(cnn, train_step, (x_batch, y_batch))")
    assert "✓ training step" in capsys.readouterr().out
    hidden(lesson1, "_v.training_step(cnn, train_step, (x_batch, y_batch))")


def test_noise_under_no_grad_is_not_a_training_step(lesson1):
    run(lesson1, """
def train_step(model, batch):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)   # every weight moves
    return torch.tensor(1.0)
""")
    with pytest.raises(CheckFailed, match="not those of the cross-entropy loss"):
        run(lesson1, "grading.check_training_step(cnn, train_step, (x_batch, y_batch))")
    with pytest.raises(AssertionError, match="returned 1, but the cross-entropy loss"):
        hidden(lesson1, "_v.training_step(cnn, train_step, (x_batch, y_batch))")


@pytest.mark.parametrize("change,match", [
    ("    model.train()\n", "left in eval mode"),
    ("    optimizer.zero_grad()\n", "clear the old gradients"),
    ("    loss = F.cross_entropy(model(x), y)\n", "clear the old gradients|cross-entropy"),
    ("    optimizer.step()\n", "none of the 4 trainable parameter tensors changed"),
    ("    return loss\n", "should return the loss"),
])
def test_every_requirement_of_the_training_step_is_checked_visibly(lesson1, change, match):
    """Exercise 1.3 states four steps and a return value: leaving out any one fails the visible test."""
    replacement = {"    loss = F.cross_entropy(model(x), y)\n": "    loss = F.mse_loss(model(x).softmax(1), "
                   "F.one_hot(y, 10).float())\n", "    return loss\n": "    return None\n"}.get(change, "")
    run(lesson1, HONEST_STEP.replace(change, replacement))
    with pytest.raises(CheckFailed, match=match):
        run(lesson1, "grading.check_training_step(cnn, train_step, (x_batch, y_batch))")


# --------------------------------------------------------------------------- the LR finder

def _curve():
    lrs = [10 ** (-6 + i / 4) for i in range(25)]
    losses = [2.0] * 8 + [2.0 - 0.2 * i for i in range(1, 9)] + [0.5, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    return lrs, losses


def test_a_look_alike_finder_does_not_pass(kernel):
    lrs, losses = _curve()
    kernel.update(lrs=lrs, losses=losses)
    run(kernel, "from types import SimpleNamespace\n"
                "finder = SimpleNamespace(lrs=lrs, losses=losses, raw_losses=losses, suggestion=1e-3)\nmy_lr = 1e-3")
    with pytest.raises(CheckFailed, match="should be what tlkit.train.lr_find returns"):
        run(kernel, "grading.check_lr(my_lr, finder)")
    with pytest.raises(AssertionError, match="not what tlkit.train.lr_find returns"):
        hidden(kernel, "_v.lr_finder(finder)")


@pytest.mark.slow
def test_a_hand_made_finder_result_is_not_the_curve_lr_find_gives(kernel):
    from tlkit import datasets

    digits = datasets.subset(datasets.load("digits", "train", progress=False), per_class=4)
    model = FREEZING.freeze(tlkit.load_backbone("efficientnet_lite0", num_classes=10, image_size=32),
                                until="blocks.6")
    args = dict(start=1e-5, end=1.0, steps=8, batch_size=8, progress=False)
    real = tlkit.train.lr_find(model, digits, **args)
    lrs, losses = _curve()
    kernel.update(real=real, fresh=tlkit.train.lr_find(model, digits, **args), lrs=lrs, losses=losses)
    hidden(kernel, "_v.same_curve(real, fresh)")  # lr_find is deterministic: a genuine result matches a re-run
    run(kernel, "finder = tlkit.train.LRFinderResult(lrs, losses, losses, suggestion=1e-3)")
    with pytest.raises(AssertionError, match="not what lr_find gives for this model and data"):
        hidden(kernel, "_v.same_curve(finder, fresh)")
    # The finder replaced too, so that a re-run in the kernel returns the fake: the hidden test runs a fresh copy.
    kernel.update(model=model, digits=digits, args=args)
    run(kernel, "tlkit.train.lr_find = lambda *a, **k: finder")
    with pytest.raises(AssertionError, match="not what lr_find gives for this model and data"):
        hidden(kernel, '_v.same_curve(finder, _v.fresh_module("train").lr_find(model, digits, **args))')


def test_learning_rate_is_judged_on_the_curve(kernel):
    lrs, losses = _curve()
    kernel["finder"] = tlkit.train.LRFinderResult(lrs, losses, losses, suggestion=lrs[12])
    hidden(kernel, "_v.learning_rate(1e-3, finder)")
    for bad in ("1e-1", "None", "1e-5"):
        with pytest.raises(AssertionError):
            hidden(kernel, f"_v.learning_rate({bad}, finder)")


# --------------------------------------------------------------------------- reference features

STACK_READER = """
import inspect
def extract(x):
    for info in inspect.stack():
        for value in info.frame.f_locals.values():
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[0] == len(x) and value.shape[1] > 64:
                return value.clone()       # the reference features, copied from a caller's frame
        if "expected" in info.frame.f_locals:
            return info.frame.f_locals["expected"]
    return torch.zeros(len(x), 1280)
"""


def test_a_feature_extractor_cannot_copy_the_reference_from_a_frame(kernel, lite):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kernel.update(model=copy.deepcopy(lite), images=images)
    run(kernel, STACK_READER)
    with pytest.raises(CheckFailed, match="differ from the reference"):
        run(kernel, "grading.check_features(extract, model, images)")
    with pytest.raises(AssertionError, match="differ from what the model's head reads"):
        hidden(kernel, '_v.features(extract, model, images, "classifier")')
    run(kernel, "honest = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)")
    run(kernel, "model.eval()\ngrading.check_features(honest, model, images)")
    hidden(kernel, '_v.features(honest, model, images, "classifier")')


# --------------------------------------------------------------------------- torch itself

def test_the_verifier_refuses_a_patched_torch(kernel):
    run(kernel, "torch.equal = lambda a, b: True")
    with pytest.raises(AssertionError, match="a cell replaced them"):
        hidden(kernel, "")
