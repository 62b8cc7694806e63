"""SandboxedExecute (nbgrader's Execute with a notebook budget): what is not run once the budget is spent."""
from __future__ import annotations

import json

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tlkit.classroom.execute import SandboxedExecute, classify_error


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
