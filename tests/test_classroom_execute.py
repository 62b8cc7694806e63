"""SandboxedExecute (nbgrader's Execute with a notebook budget): what is not run once the budget is spent."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tlkit.classroom.execute import SandboxedExecute, classify_error, ungraded_tail

LESSONS = Path(__file__).resolve().parents[1] / "course" / "source"


def test_errors_are_classified():
    assert classify_error("CellTimeoutError", "") == "timeout"
    assert classify_error("MemoryError", "") == "memory"
    assert classify_error("RuntimeError", "DefaultCPUAllocator: can't allocate memory: you tried 50 GB") == "memory"
    assert classify_error("AssertionError", "double(3) should be 6") is None


@pytest.mark.slow
def test_budget_stops_the_notebook_and_later_cells_score_nothing(tmp_path):
    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(60)"), new_code_cell("x = 1"),
                             new_code_cell("assert x == 1")])
    status = tmp_path / "status.json"
    ex = SandboxedExecute(timeout=600, budget=3, kernel_name="python3", status_file=str(status))
    ex.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    first = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert first and first[-1].ename == "CellTimeoutError"
    for cell in nb.cells[1:]:  # a test cell without an error would count as passed: it must carry one
        assert [o.ename for o in cell.outputs] == ["NotRun"]
        assert "time budget (3 s) ran out before cell 2" in cell.outputs[0].evalue
    record = json.loads(status.read_text())
    assert record["status"] == "timeout" and record["cell"] == 1 and "timed out at cell 1" in record["message"]


def _graded(source: str, grade_id: str, solution: bool = False):
    return new_code_cell(source, metadata={"nbgrader": {"grade": not solution, "solution": solution,
                                                        "grade_id": grade_id, "points": 0 if solution else 1}})


def test_ungraded_tail_starts_after_the_last_graded_or_solution_cell():
    nb = new_notebook(cells=[new_code_cell("a = 1"), _graded("x = 1", "ex", solution=True),
                             _graded("assert x == 1", "ex_test"), new_code_cell("plot()"), new_code_cell("more()")])
    assert ungraded_tail(nb) == 3
    assert ungraded_tail(new_notebook(cells=[new_code_cell("a = 1")])) is None
    nb.cells.append(_graded("assert a == 1", "late_test"))  # a test at the very end: nothing is skipped
    assert ungraded_tail(nb) == len(nb.cells)


@pytest.mark.slow
def test_the_ungraded_tail_is_not_run_and_every_graded_cell_is(tmp_path):
    marker = tmp_path / "tail-ran"
    nb = new_notebook(cells=[_graded("x = 1", "ex", solution=True), new_code_cell("y = x + 1"),
                             _graded("assert y == 2", "ex_test"),
                             new_code_cell(f"open({str(marker)!r}, 'w').close()"), new_code_cell("1 / 0")])
    status = tmp_path / "status.json"
    SandboxedExecute(timeout=60, kernel_name="python3", status_file=str(status), skip_ungraded_tail=True) \
        .preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert not any(o.output_type == "error" for cell in nb.cells for o in cell.get("outputs", []))
    assert not marker.exists()
    assert "Not run by the autograder" in nb.cells[3].outputs[0].text and nb.cells[4].outputs == []
    assert json.loads(status.read_text())["skipped"] == 2
    SandboxedExecute(timeout=60, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert marker.exists() and nb.cells[4].outputs[0].ename == "ZeroDivisionError"  # the default runs all


@pytest.mark.parametrize("lesson", sorted(p.parent.name for p in LESSONS.glob("*/*.ipynb")))
def test_each_lesson_says_where_grading_stops(lesson):
    """What the autograder skips is stated in the lesson, right where the skipping starts."""
    nb = nbformat.read(LESSONS / lesson / f"{lesson}.ipynb", as_version=4)
    tail = ungraded_tail(nb)
    if tail is None or not any(cell.cell_type == "code" for cell in nb.cells[tail:]):
        return
    note = nb.cells[tail]
    assert note.cell_type == "markdown" and "Where grading stops" in note.source and "tlkit autograde" in note.source
