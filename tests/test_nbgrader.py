"""nbgrader, headless, from source notebooks to a gradebook and feedback.

* end to end on the test mini-lesson (tests/notebooks/nbgrader_lesson): generate the student
  version, grade three submissions (the solutions, the untouched student version, plausible wrong
  answers), export the grades and check them, and check the feedback names each mistake;
* every course lesson: its student version is well formed (no solution or hidden test left, every
  code cell still valid Python, test cells locked with points) and runs up to its first exercise.
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import nbformat
import pytest

from nbgrader_helpers import (COURSE, MARKERS, TEST_LESSON, first_exercise, is_solution, lessons, make_course,
                              nbgrader, run_until_first_exercise, run_with_answers, solution_cells,
                              student_version, type_answers)

LESSON = TEST_LESSON.name

# Plausible wrong answers, by grade_id: the ImageNet head size, a forgotten freeze, ImageNet's statistics
# on the Lite backbone. The optimizer and the training step are right, so those two exercises score.
WRONG = {
    "ex1_head": "model.classifier = nn.Linear(1280, 1000)",
    "ex2_freeze": "tlkit.trainable_summary(model)   # looked, but froze nothing",
    "ex3_norm": "normalize = v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
    "ex4_opt": "optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)",
    "ex5_step": None,  # the solution
    "q1_bn": "Because the gradients are off, so nothing changes.",
}
POINTS = {"ex1_head_test": 2, "ex2_freeze_test": 2, "ex3_norm_test": 2, "ex4_opt_test": 2, "ex5_step_test": 2}
WRONG_SCORE = 4  # ex4 and ex5
# Tampering, as issue 15 tried it: the visible checks switched off or replaced from a solution cell, nothing
# done, and a "training step" that adds noise under no_grad. Only the honest optimizer (for the untouched,
# all-trainable model) may score: the hidden tests use a fresh copy of tlkit/grading/verify.py.
TAMPERED = {
    "ex1_head": "import tlkit.grading\ntlkit.grading._fail = lambda m: None\n"
                "grading.check_head = lambda *args: print('✓ head: 2 outputs for 2 classes')",
    "ex2_freeze": "from types import SimpleNamespace\ngrading.check_frozen = lambda *args, **kwargs: print('✓ frozen')\n"
                  "tlkit.trainable_summary = lambda m: SimpleNamespace(trainable=2562)",
    "ex3_norm": "normalize = v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])\n"
                "grading.check_normalization = lambda *args: print('✓ normalization')",
    "ex4_opt": "optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)",
    "ex5_step": "with torch.no_grad():\n    for p in model.parameters():\n        p.add_(torch.randn_like(p) * 1e-3)\n"
                "return torch.tensor(1.0)",
}
TAMPERED_SCORE = 2  # ex4


def _submit(course: Path, student: str, nb) -> None:
    folder = course / "submitted" / student / LESSON
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{LESSON}.ipynb")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_generate_autograde_export_and_feedback(tmp_path):
    course = make_course(tmp_path / "course", [TEST_LESSON])
    release = nbformat.read(student_version(course, LESSON), as_version=4)
    source = nbformat.read(TEST_LESSON / f"{LESSON}.ipynb", as_version=4)

    # The student version: stubs instead of solutions, no hidden tests, tests locked.
    text = "\n".join(c.source for c in release.cells)
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text
    assert "replace_head(model, num_classes)" not in text and "out_features == 2" not in text
    assert not any(m in text for m in MARKERS)

    _submit(course, "alice", type_answers(release, dict.fromkeys(WRONG), source))   # the solutions
    _submit(course, "bob", release)                                                  # nothing done
    _submit(course, "carol", type_answers(release, WRONG, source))                   # typical mistakes
    _submit(course, "dave", type_answers(release, TAMPERED, source))                 # checks switched off
    nbgrader(course, "autograde", LESSON, threads=1)  # tiny batches: one thread each is fastest

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        def scores(student):
            return {g.name: g.score for g in gb.find_submission_notebook(LESSON, LESSON, student).grades}

        assert {k: v for k, v in scores("alice").items() if k in POINTS} == POINTS
        assert all(scores("bob")[k] == 0 for k in POINTS) and scores("bob")["q1_bn"] == 0
        carol = scores("carol")
        assert carol["ex1_head_test"] == carol["ex2_freeze_test"] == carol["ex3_norm_test"] == 0
        assert carol["ex4_opt_test"] == carol["ex5_step_test"] == 2
        dave = scores("dave")
        assert {k: dave[k] for k in POINTS} == {**dict.fromkeys(POINTS, 0), "ex4_opt_test": 2}, dave
        # The written answers need a person: grade them as the formgrader would.
        for student, points in (("alice", 1), ("carol", 0)):
            grade = gb.find_grade("q1_bn", LESSON, LESSON, student)
            assert grade.needs_manual_grade
            grade.manual_score = points
        gb.db.commit()

    nbgrader(course, "export", "--to", "grades.csv")
    with open(course / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert {s: float(rows[s]["score"]) for s in rows} == {"alice": 11.0, "bob": 0.0, "carol": float(WRONG_SCORE),
                                                          "dave": float(TAMPERED_SCORE)}
    assert all(float(r["max_score"]) == 11.0 for r in rows.values())

    # The kernel that graded is this venv's Python.
    graded = nbformat.read(course / "autograded" / "alice" / LESSON / f"{LESSON}.ipynb", as_version=4)
    setup_output = "".join(o.get("text", "") for o in graded.cells[1].outputs)
    assert f"Python: {sys.executable}" in setup_output, setup_output

    nbgrader(course, "generate_feedback", LESSON)
    feedback = {s: _text(course / "feedback" / s / LESSON / f"{LESSON}.html") for s in ("alice", "bob", "carol")}
    assert "✓ head: 2 outputs for 2 classes" in feedback["alice"] and "✓ training step" in feedback["alice"]
    assert "CheckFailed" not in feedback["alice"]
    assert "your head has 1000 outputs, the dataset has 2 classes" in feedback["carol"]
    assert "nothing is frozen" in feedback["carol"]
    assert "different normalization than ImageNet" in feedback["carol"]
    assert "✓ optimizer" in feedback["carol"] and "✓ training step" in feedback["carol"]
    assert "not written yet" in feedback["bob"] and "your head has 1000 outputs" in feedback["bob"]
    # Blank answers: the templates define the names as None, so the tests say what is missing.
    assert "optimizer is None: not written yet" in feedback["bob"]
    assert "transform is None: not written yet" in feedback["bob"]
    assert "NameError" not in feedback["bob"]
    assert re.search(r"Score:\s*4(\.0)?\s*/\s*11", re.sub(r"<[^>]+>", " ", feedback["carol"]))


# --------------------------------------------------------------------------- a real lesson's exercises

REAL = COURSE / "source" / "02-feature-extraction" / "02-feature-extraction.ipynb"
# Lesson 2's exercises answered the way learners get them wrong: ImageNet's statistics typed into the
# Lite pipeline, the ImageNet head size, requires_grad switched off by hand (BatchNorm still in train
# mode), and an optimizer over every parameter.
REAL_WRONG = {
    "ex2_1_normalization": "mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)",
    "ex2_2_head": "model.classifier = nn.Linear(tlkit.num_features(model), 1000)",
    "ex2_3_freeze": "for p in model.parameters():\n    p.requires_grad = False\nmodel.classifier.requires_grad_(True)",
    "ex2_4_optimizer": "optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)",
}
REAL_MESSAGES = {
    "ex2_1_normalization_test": "different normalization than ImageNet's",
    "ex2_2_head_test": "your head has 1000 outputs, the dataset has 2 classes",
    "ex2_3_freeze_test": "BatchNorm layers in the frozen stages still run in training mode",
    "ex2_4_optimizer_test": "the optimizer holds 147 frozen parameter tensors",
}


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.skipif(not REAL.is_file(), reason="lesson 02-feature-extraction is not in course/source")
def test_real_lesson_exercises_fail_with_the_specific_mistake(tmp_path):
    nb = run_with_answers(REAL, REAL_WRONG, tmp_path)
    errors = {c.metadata["nbgrader"]["grade_id"]: " ".join(o.get("evalue", "") for o in c.outputs
                                                          if o.get("output_type") == "error")
              for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}
    assert set(REAL_MESSAGES) <= set(errors), f"the lesson's test cells changed: {sorted(errors)}"
    for grade_id, message in REAL_MESSAGES.items():
        assert message in errors[grade_id], f"{grade_id}: {errors[grade_id]!r}"
    for grade_id in REAL_WRONG:  # the answers themselves ran: only the tests fail
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        assert not [o for o in cell.outputs if o.get("output_type") == "error"], (grade_id, cell.outputs)


# --------------------------------------------------------------------------- the course's lessons

LESSONS = lessons()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Student versions of every lesson, made with one `nbgrader generate_assignment "*"`."""
    course = make_course(tmp_path_factory.mktemp("course"), [p.parent for p in LESSONS])
    nbgrader(course, "generate_assignment", "*")
    return course


def _compiles(source: str) -> str | None:
    """None if the cell is valid Python (IPython magics and shell escapes blanked), else the error."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        compile("\n".join(lines), "<cell>", "exec")
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}: {(exc.text or '').strip()}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(not LESSONS, reason="no lessons in course/source yet")
@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_version_is_well_formed(released, lesson):
    source = nbformat.read(lesson, as_version=4)
    student = nbformat.read(released / "release" / lesson.stem / lesson.name, as_version=4)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in source.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), f"grade_ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}"
    tests = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade") and not is_solution(c)]
    assert tests, "the lesson has no autograded test cell"
    for cell in tests:
        meta = cell.metadata["nbgrader"]
        assert meta.get("locked") and meta.get("points", 0) > 0, f"test cell {meta['grade_id']} needs locked + points"
    text = "\n".join(c.source for c in student.cells)
    assert not any(m in text for m in MARKERS), "a solution or hidden-test marker survived into the student version"
    broken = {i: err for i, c in enumerate(student.cells) if c.cell_type == "code" and (err := _compiles(c.source))}
    assert not broken, ("student-version cells that are not valid Python (a solution region inside an expression "
                        f"becomes `raise NotImplementedError()` there; make it whole statements): {broken}")
    for grade_id, cell in solution_cells(source).items():
        if cell.cell_type == "code":
            assert "### BEGIN SOLUTION" in cell.source, f"solution cell {grade_id} has no solution region"


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.skipif(not LESSONS, reason="no lessons in course/source yet")
@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_version_runs_until_first_exercise(lesson, tmp_path):
    nb = run_until_first_exercise(lesson, tmp_path)
    assert first_exercise(nbformat.read(lesson, as_version=4)) == len(nb.cells)
    assert any(c.cell_type == "code" for c in nb.cells), "nothing ran before the first exercise"


@pytest.mark.slow
def test_run_until_first_exercise_reports_the_failing_cell(tmp_path):
    lesson = tmp_path / "src" / "broken"
    lesson.mkdir(parents=True)
    nb = nbformat.read(TEST_LESSON / f"{LESSON}.ipynb", as_version=4)
    nb.cells[1].source = "x = 1\nraise RuntimeError('the data is missing')"
    nbformat.write(nb, lesson / "broken.ipynb")
    with pytest.raises(AssertionError, match=r"(?s)broken: the student version fails in cell 1 .*RuntimeError: the data is missing"):
        run_until_first_exercise(lesson / "broken.ipynb", tmp_path / "work")
