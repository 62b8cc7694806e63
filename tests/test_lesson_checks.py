"""The lessons' own exercise and test cells, run against small stand-ins for the lesson's objects.

Running a lesson takes minutes; its exercise cells need only a few of its objects (a model, a
batch, a finder result). So these tests read the cells from ``course/source`` and ``exec`` them
in a namespace holding stand-ins, as the kernel would, to show on the real cell code that

* the solution passes the visible test *and* the hidden one;
* a visible ✓ means full marks: an answer that breaks a requirement the exercise states fails the
  visible test (lesson 2's optimizer at ``lr=1e-1`` used to print ✓, then score 0);
* tampering from the kernel (issue 15's attacks) fails the hidden test.

Blank answers are tested on nbgrader's student version in tests/test_nbgrader.py.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from module_state import restored
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

import tlkit
from tlkit import advisor, grading, train
from tlkit.grading import CheckFailed

pytestmark = pytest.mark.slow  # builds several EfficientNets: about a minute on 2 busy cores

SOURCE = Path(__file__).resolve().parents[1] / "course" / "source"
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
FREEZING = importlib.import_module("tlkit.freezing")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def put_back():
    """Cells below patch tlkit as a student would; put every module back afterwards."""
    with restored([tlkit, grading, grading.verify, FREEZING, train]):
        yield


def cell(lesson: str, grade_id: str) -> str:
    path = next(SOURCE.glob(f"{lesson}*/*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def visible(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS")[0]


def run(ns: dict, source: str) -> dict:
    exec(compile(source, "<cell>", "exec"), ns)
    return ns


def answer(lesson: str, grade_id: str, ns: dict, code: str | None = None) -> dict:
    """Run an exercise cell with its solution (``code=None``) or ``code`` typed over the solution region."""
    lines = cell(lesson, grade_id).splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if "### BEGIN SOLUTION" in line)
    end = next(i for i, line in enumerate(lines) if "### END SOLUTION" in line)
    indent = lines[begin][:len(lines[begin]) - len(lines[begin].lstrip())]
    middle = lines[begin + 1:end] if code is None else [indent + line + "\n" for line in code.splitlines()]
    return run(ns, "".join(lines[:begin] + middle + lines[end + 1:]))


def base() -> dict:
    return {"tlkit": tlkit, "grading": grading, "train": train, "advisor": advisor, "torch": torch, "nn": nn,
            "F": F, "v2": v2}


@pytest.fixture(scope="module")
def lite_weights():
    torch.manual_seed(0)
    return tlkit.load_backbone("efficientnet_lite0", pretrained=False).state_dict()


@pytest.fixture
def pretrained_off(monkeypatch, lite_weights):
    """The lessons load ImageNet weights; random ones are enough here (and never touch the disk)."""
    real = tlkit.load_backbone

    def load(name="efficientnet_lite0", pretrained=True, num_classes=None, **kw):
        return real(name, False, num_classes, **kw)
    monkeypatch.setattr(tlkit, "load_backbone", load)


# --------------------------------------------------------------------------- lesson 2

@pytest.fixture
def lesson2(pretrained_off):
    ns = base() | {"train_ds": SimpleNamespace(classes=["ants", "bees"])}
    answer("02", "ex2_2_head", ns)
    return ns


def test_lesson2_solutions_pass_visible_and_hidden(lesson2, capsys):
    for exercise in ("ex2_3_freeze", "ex2_4_optimizer"):
        answer("02", exercise, lesson2)
    for test in ("ex2_2_head_test", "ex2_3_freeze_test", "ex2_4_optimizer_test"):
        run(lesson2, cell("02", test))
    out = capsys.readouterr().out
    assert "✓ head" in out and "✓ frozen" in out and "✓ optimizer" in out


@pytest.mark.parametrize("code,match", [
    ("optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-1)",
     "the head trains at lr 0.1; the exercise asks for 0.001"),
    ("optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)",
     "the exercise asks for torch.optim.AdamW"),
])
def test_lesson2_optimizer_breaking_a_stated_requirement_fails_the_visible_test(lesson2, code, match):
    """The ✓-then-0 case of issue 15: lr=1e-1 printed ✓, then the hidden test gave 0."""
    answer("02", "ex2_3_freeze", lesson2)
    answer("02", "ex2_4_optimizer", lesson2, code)
    with pytest.raises(CheckFailed, match=match):
        run(lesson2, visible(cell("02", "ex2_4_optimizer_test")))


def test_lesson2_replaced_checks_pass_the_visible_test_but_not_the_hidden_one(lesson2):
    answer("02", "ex2_3_freeze", lesson2, """from types import SimpleNamespace
import tlkit.grading
tlkit.grading.check_frozen = lambda *args, **kwargs: print("✓ frozen")
tlkit.trainable_summary = lambda model: SimpleNamespace(trainable=1280 * 2 + 2)""")
    run(lesson2, visible(cell("02", "ex2_3_freeze_test")))  # fooled: nothing is frozen
    with pytest.raises(AssertionError, match="should be frozen are still trainable"):
        run(lesson2, cell("02", "ex2_3_freeze_test"))


def test_lesson2_fail_switched_off_does_not_pass(lesson2):
    answer("02", "ex2_2_head", lesson2, "import tlkit.grading\ntlkit.grading._fail = lambda m: None")
    with pytest.raises(AssertionError, match="1000 outputs"):
        run(lesson2, cell("02", "ex2_2_head_test"))


def test_lesson2_batchnorm_momentum_zero_fails_visible_and_hidden(lesson2):
    code = """for p in model.parameters():
    p.requires_grad = False
model.classifier.requires_grad_(True)
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = 0.0
model.train()"""
    answer("02", "ex2_3_freeze", lesson2, code)
    with pytest.raises(CheckFailed, match="still run in training mode"):
        run(lesson2, visible(cell("02", "ex2_3_freeze_test")))
    lesson2["grading"] = SimpleNamespace(check_frozen=lambda *a, **k: None)  # even with the visible check gone
    with pytest.raises(AssertionError, match="still run in training mode"):
        run(lesson2, cell("02", "ex2_3_freeze_test").replace("from tlkit import grading\n", ""))


def test_lesson2_normalization_solution_passes_hidden():
    ns = base()
    answer("02", "ex2_1_normalization", ns)
    run(ns, cell("02", "ex2_1_normalization_test"))
    answer("02", "ex2_1_normalization", ns, "mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)")
    ns["grading"] = SimpleNamespace(check_normalization=lambda *a: None)
    with pytest.raises(AssertionError, match="not normalised the way the backbone was trained"):
        run(ns, cell("02", "ex2_1_normalization_test").replace("from tlkit import grading\n", ""))


# --------------------------------------------------------------------------- lesson 1

@pytest.fixture
def lesson1():
    ns = base()
    torch.manual_seed(0)
    ns["cnn"] = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    gen = torch.Generator().manual_seed(0)
    ns.update(x_batch=torch.rand(32, 1, 32, 32, generator=gen), y_batch=torch.arange(32) % 10)
    return ns


def test_lesson1_training_step_solution_passes_visible_and_hidden(lesson1, capsys):
    answer("01", "ex1_3_step", lesson1)
    run(lesson1, cell("01", "ex1_3_step_test"))
    assert "✓ training step" in capsys.readouterr().out


def test_lesson1_noise_under_no_grad_fails(lesson1):
    answer("01", "ex1_3_step", lesson1, """with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 1e-3)
loss = torch.tensor(1.0)""")
    with pytest.raises(CheckFailed, match="not those of the cross-entropy loss"):
        run(lesson1, visible(cell("01", "ex1_3_step_test")))
    with pytest.raises(AssertionError, match="cross-entropy"):
        run(lesson1, cell("01", "ex1_3_step_test").replace("grading.check_training_step(", "print("))


def test_lesson1_counting_exercises_pass():
    ns = base()
    for exercise, test in (("ex1_1_dense", "ex1_1_dense_test"), ("ex1_2_conv", "ex1_2_conv_test")):
        answer("01", exercise, ns)
        run(ns, cell("01", test))


# --------------------------------------------------------------------------- lesson 3

@pytest.fixture
def lesson3(pretrained_off):
    return base() | {"model": tlkit.load_backbone("efficientnet_lite0", num_classes=2)}


def test_lesson3_solutions_pass_and_a_wrong_first_rate_fails_visibly(lesson3):
    answer("03", "ex3_1_freeze", lesson3)
    run(lesson3, cell("03", "ex3_1_freeze_test"))
    answer("03", "ex3_2_groups", lesson3)
    run(lesson3, cell("03", "ex3_2_groups_test"))
    answer("03", "ex3_2_groups", lesson3, "groups = tlkit.param_groups(model, lr=1e-3, body_lr=1e-5)\n"
                                          "optimizer = torch.optim.AdamW(groups)")
    with pytest.raises(AssertionError, match="should learn at 1e-4"):
        run(lesson3, visible(cell("03", "ex3_2_groups_test")))


def _compare_modes(m):
    """Lesson 3's compare_modes: how much the features the head reads change between train and eval mode."""
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.train()
        f_train = m.global_pool(m.forward_features(x))
        m.eval()
        f_eval = m.global_pool(m.forward_features(x))
    return ((f_train - f_eval).norm() / f_eval.norm()).item()


def test_lesson3_freeze_by_hand_solution_passes_and_requires_grad_only_fails(lesson3):
    lesson3["compare_modes"] = _compare_modes
    answer("03", "ex3_3_by_hand", lesson3)
    run(lesson3, cell("03", "ex3_3_by_hand_test"))
    answer("03", "ex3_3_by_hand", lesson3, "\n".join([
        "for stage in tlkit.list_stages(model)[:[s.name for s in tlkit.list_stages(model)].index(until)]:",
        "    for path in stage.modules:",
        "        for p in model.get_submodule(path).parameters():",
        "            p.requires_grad = False"]))
    with pytest.raises(AssertionError, match="BatchNorm"):
        run(lesson3, visible(cell("03", "ex3_3_by_hand_test")))


def test_lesson3_freeze_point_elsewhere_fails(lesson3):
    answer("03", "ex3_1_freeze", lesson3, 'tlkit.freeze(model, until="blocks.6")')
    with pytest.raises(CheckFailed, match="blocks.5 should be trainable"):
        run(lesson3, visible(cell("03", "ex3_1_freeze_test")))


# --------------------------------------------------------------------------- lesson 5

def test_lesson5_optimizer_solution_passes_and_sgd_fails_visibly(pretrained_off):
    ns = base()
    answer("05", "ex5_3_opt", ns)
    run(ns, cell("05", "ex5_3_opt_test"))
    answer("05", "ex5_3_opt", ns, 'tlkit.freeze(top, until="blocks.5")\n'
                                 "opt = torch.optim.SGD([{'params': [p for n, p in top.named_parameters() "
                                 "if p.requires_grad and not n.startswith('classifier')], 'lr': 1e-4}, "
                                 "{'params': top.classifier.parameters(), 'lr': 1e-3}])")
    with pytest.raises(CheckFailed, match="asks for torch.optim.AdamW"):
        run(ns, visible(cell("05", "ex5_3_opt_test")))


def test_lesson5_drift_solution_passes():
    ns = base()
    torch.manual_seed(0)
    before = nn.Module()
    before.conv_stem = nn.Conv2d(3, 4, 3)
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.conv_stem.weight.mul_(1.5)
    ns.update(before=before, body_models={"lr 0.01": after}, highest="lr 0.01")
    answer("05", "ex5_1_drift", ns)
    run(ns, cell("05", "ex5_1_drift_test"))


# --------------------------------------------------------------------------- lessons 6 and 7

def test_lesson6_table_solution_passes_visible_and_hidden():
    ns = base()
    answer("06", "ex6_2_table", ns)
    run(ns, cell("06", "ex6_2_table_test"))


def test_lesson7_model_solution_passes_and_the_hidden_test_needs_a_real_freeze(pretrained_off):
    ns = base() | {"BACKBONE": "efficientnet_lite0", "train_ds": SimpleNamespace(classes=["a", "b", "c"]),
                   "advice": SimpleNamespace(freeze_until="blocks.5")}
    answer("07", "ex7_1_model", ns)
    run(ns, cell("07", "ex7_1_model_test"))
    answer("07", "ex7_1_model", ns, "my_model = tlkit.load_backbone(BACKBONE, num_classes=3)\n"
                                    "grading.check_frozen = lambda *a, **k: None")
    with pytest.raises(AssertionError, match="should be frozen are still trainable"):
        run(ns, cell("07", "ex7_1_model_test"))


def test_lesson7_per_class_accuracy_solution_passes():
    ns = base() | {"probs": torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]),
                   "val_ds": SimpleNamespace(targets=[0, 1, 1], classes=["x", "y"])}
    answer("07", "ex7_2_acc", ns)
    run(ns, cell("07", "ex7_2_acc_test"))


# --------------------------------------------------------------------------- blank answers, on nbgrader's student version

@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Every lesson's student version, from one `nbgrader generate_assignment "*"`."""
    from nbgrader_helpers import lessons, make_course, nbgrader

    course = make_course(tmp_path_factory.mktemp("course"), [p.parent for p in lessons()])
    nbgrader(course, "generate_assignment", "*")
    return {p.parent.name[:2]: nbformat.read(p, as_version=4) for p in (course / "release").glob("*/*.ipynb")}


def _finder():
    lrs = [10 ** (-6 + i / 4) for i in range(25)]
    losses = [2.0] * 8 + [2.0 - 0.2 * i for i in range(1, 9)] + [0.5, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    return train.LRFinderResult(lrs, losses, losses, suggestion=lrs[12])


def _stand_ins(lesson: str) -> dict:
    """What each lesson has defined by the time its exercises run, as small stand-ins."""
    ns = base() | {"images_per_second": 100.0, "train_ds": SimpleNamespace(classes=["ants", "bees"]),
                   "finder": _finder(), "SEED": 0, "BACKBONE": "efficientnet_lite0",
                   "CASES": {"digits, small": (None, None, None)},
                   "advice": {"digits, small": SimpleNamespace(measurement=SimpleNamespace(best_stage="blocks.3"))}}
    torch.manual_seed(0)
    ns["model"] = tlkit.load_backbone("efficientnet_lite0", num_classes=2)
    ns["cnn"] = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    ns.update(x_batch=torch.rand(8, 1, 4, 4), y_batch=torch.arange(8))
    stem = nn.Module()
    stem.conv_stem = nn.Conv2d(3, 4, 3)
    ns.update(model_none=None, h_none=None, model_aug=None, h_aug=None, digits_small=None, digits_model=None,
              before=stem, body_models={"lr 0.01": stem}, highest="lr 0.01", digits=None, viz=None, probs=torch.eye(2),
              val_ds=SimpleNamespace(targets=[0, 1], classes=["a", "b"]))
    if lesson == "00":
        ns["model"] = tlkit.load_backbone("efficientnet_lite0")
    return ns


BLANKS = [  # lesson, exercise, its test, what the visible test says about a blank answer
    ("00", "ex0_1_hours", "ex0_1_hours_test", "hours_from_scratch is not written yet"),
    ("00", "ex0_2_head", "ex0_2_head_test", "head_params is not written yet"),
    ("01", "ex1_1_dense", "ex1_1_dense_test", "weights_per_neuron is not written yet"),
    ("01", "ex1_2_conv", "ex1_2_conv_test", "conv_params is not written yet"),
    ("01", "ex1_3_step", "ex1_3_step_test", "your training step is not written yet"),
    ("02", "ex2_1_normalization", "ex2_1_normalization_test", "transform is None: not written yet"),
    ("02", "ex2_2_head", "ex2_2_head_test", "your head has 1000 outputs"),
    ("02", "ex2_3_freeze", "ex2_3_freeze_test", "nothing is frozen"),
    ("02", "ex2_4_optimizer", "ex2_4_optimizer_test", "optimizer is None: not written yet"),
    ("03", "ex3_1_freeze", "ex3_1_freeze_test", "nothing is frozen"),
    ("03", "ex3_2_groups", "ex3_2_groups_test", "groups is not written yet"),
    ("03", "ex3_3_by_hand", "ex3_3_by_hand_test", "freeze_by_hand is not written yet"),
    ("04", "ex4_1_digits", "ex4_1_digits_test", "digit_aug is not written yet"),
    ("04", "ex4_2_gap", "ex4_2_gap_test", "honest_gap is not written yet"),
    ("05", "ex5_1_drift", "ex5_1_drift_test", "relative_change is not written yet"),
    ("05", "ex5_2_lr", "ex5_2_lr_test", "lr is None: not written yet"),
    ("05", "ex5_3_opt", "ex5_3_opt_test", "nothing is frozen"),
    ("06", "ex6_1_predict", "ex6_1_predict_test", "predictions are not written yet"),
    ("06", "ex6_2_table", "ex6_2_table_test", "table_strategy is not written yet"),
    ("06", "ex6_3_early", "ex6_3_early_test", "early_probe is not written yet"),
    ("07", "ex7_1_model", "ex7_1_model_test", "your head has 1000 outputs"),
    ("07", "ex7_2_acc", "ex7_2_acc_test", "per_class_accuracy is not written yet"),
]


def test_every_autograded_exercise_is_listed_for_the_blank_test():
    ids = set()
    for path in SOURCE.glob("*/*.ipynb"):
        ids |= {c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    assert ids == {test for _, _, test, _ in BLANKS}


@pytest.mark.parametrize("lesson,exercise,test,message", BLANKS, ids=[b[1] for b in BLANKS])
def test_a_blank_answer_gets_not_written_yet_not_a_name_error(released, pretrained_off, lesson, exercise, test,
                                                               message):
    """The student version, untouched: the exercise cell stops at the stub, then its test runs (as in
    nbgrader's autograde, which goes on after an error) and says what is missing."""
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in released[lesson].cells}
    assert "raise NotImplementedError()" in cells[exercise]
    ns = _stand_ins(lesson)
    try:
        run(ns, cells[exercise])
    except NotImplementedError:
        pass  # the stub: the kernel reports it and goes on to the next cell
    with pytest.raises(AssertionError) as info:
        run(ns, cells[test])
    assert message in str(info.value), str(info.value)


# --------------------------------------------------------------------------- lessons 4 and 5, on small real data

@pytest.fixture(scope="module")
def digits():
    from tlkit import datasets

    return datasets.subset(datasets.load("digits", "train", progress=False), per_class=4)


@pytest.mark.parametrize("code,match", [
    (None, None),
    ("digit_aug = v2.RandomAffine(degrees=30)", "tilts by up to 30 degrees: at most 15"),
    ("digit_aug = v2.Compose([v2.RandomAffine(degrees=5), v2.RandomVerticalFlip()])", "contains a flip"),
    ("digit_aug = v2.RandomAffine(degrees=5, translate=(0.1, 0.1))\ndigit_aug = v2.Compose([digit_aug, "
     "v2.RandomChoice([v2.Lambda(lambda x: x), v2.Lambda(lambda x: v2.functional.vertical_flip(x))])])",
     "turns pictures upside down"),
])
def test_lesson4_augmentation_requirements_are_all_visible(digits, code, match):
    """Exercise 4.1 asks for at most 15 degrees and no flip of any kind: the visible test checks both."""
    ns = base() | {"digits": digits, "viz": SimpleNamespace(augmentations=lambda *a, **k: None)}
    answer("04", "ex4_1_digits", ns, code)
    if match is None:
        run(ns, cell("04", "ex4_1_digits_test"))
        return
    with pytest.raises(AssertionError, match=match):
        run(ns, visible(cell("04", "ex4_1_digits_test")))


def test_lesson5_finder_exercise_passes_and_a_fake_finder_fails(digits):
    """The hidden test re-runs the lesson's lr_find (a fresh copy of tlkit/train.py) and judges my_lr on it."""
    ns = base() | {"small": digits, "SEED": 0}
    ns["top_model"] = FREEZING.freeze(tlkit.load_backbone("efficientnet_lite0", num_classes=10, image_size=32),
                                      until="blocks.6")
    ns["finder"] = train.lr_find(ns["top_model"], digits, start=1e-6, end=1.0, steps=30, batch_size=16, seed=0,
                                 progress=False)
    answer("05", "ex5_2_lr", ns)
    run(ns, cell("05", "ex5_2_lr_test"))
    lrs, losses = ns["finder"].lrs, [2.0 - i / 30 for i in range(len(ns["finder"].lrs))]
    ns.update(lrs=lrs, losses=losses)
    answer("05", "ex5_2_lr", ns, "finder = train.LRFinderResult(lrs, losses, losses, suggestion=lrs[-3])\n"
                                 "train.lr_find = lambda *a, **k: finder\nmy_lr = lrs[-3]")
    run(ns, visible(cell("05", "ex5_2_lr_test")))  # the visible check is fooled by a hand-made LRFinderResult
    with pytest.raises(AssertionError, match="not what lr_find gives"):
        run(ns, cell("05", "ex5_2_lr_test"))
