"""nbgrader's ``Execute`` preprocessor with a time budget per notebook and a record of what stopped it.

nbgrader limits each cell (``Execute.timeout``, then it interrupts the kernel and goes on); a
notebook whose every cell is slow can still run for hours, and a kernel that dies (memory, CPU
limit) makes nbgrader drop the whole submission. :class:`SandboxedExecute` adds:

* ``budget``: seconds for the whole notebook; each cell's timeout is the smaller of nbgrader's and
  what is left; once it is spent, the remaining cells are not run;
* a dead kernel ends execution instead of the submission: the cell where it died gets the error,
  every later code cell gets a ``NotRun`` error output, so nbgrader scores the tests that ran and
  gives 0 to the others (a test cell without an error would otherwise count as passed);
* ``status_file``: a JSON record ``{"status": "ok" | "timeout" | "memory" | "crashed", "cell": N,
  "grade_id": ..., "message": ..., "skipped": K}`` of the first thing that went wrong, for the grade report;
* ``skip_ungraded_tail``: the code cells after the last graded or solution code cell are not run
  (:func:`ungraded_tail`). Cells run in order, so no test can depend on a cell that comes after
  every test: skipping them changes no score, and saves the lesson's closing experiments
  (lesson 2's network trained from scratch, for one) in every submission. Each lesson says where
  grading stops; ``tlkit autograde --run-all`` runs everything.

``tlkit autograde`` configures nbgrader to use it in place of ``Execute``:

    c.Autograde.autograde_preprocessors = [SandboxedExecute, ...the rest of nbgrader's list...]
"""
from __future__ import annotations

import json
import signal
import time

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from traitlets import Bool, Float, Unicode

from nbgrader.preprocessors import Execute

__all__ = ["SandboxedExecute", "classify_error", "ungraded_tail"]

MEMORY_SIGNS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "DefaultCPUAllocator",
                "std::bad_alloc", "out of memory")


def classify_error(ename: str, evalue: str) -> str | None:
    """``"timeout"`` or ``"memory"`` when a cell's error is one of those, else None (a plain error)."""
    if ename == "CellTimeoutError":
        return "timeout"
    text = f"{ename}: {evalue}"
    if any(sign in text for sign in MEMORY_SIGNS):
        return "memory"
    return None


def ungraded_tail(nb) -> int | None:
    """Index of the first cell after the last graded or solution code cell; None if there is none.

    >>> from nbformat.v4 import new_code_cell, new_notebook
    >>> test = new_code_cell("assert x == 1", metadata={"nbgrader": {"grade": True, "solution": False}})
    >>> ungraded_tail(new_notebook(cells=[new_code_cell("x = 1"), test, new_code_cell("plot()")]))
    2
    """
    def graded_or_solution(cell) -> bool:
        meta = cell.metadata.get("nbgrader", {})
        return cell.cell_type == "code" and bool(meta.get("grade") or meta.get("solution"))

    graded = [i for i, cell in enumerate(nb.cells) if graded_or_solution(cell)]
    return graded[-1] + 1 if graded else None


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class SandboxedExecute(Execute):
    """``Execute`` with a notebook-wide time budget and graceful handling of a dead kernel."""

    budget = Float(0.0, help="Seconds for the whole notebook (0: no budget).").tag(config=True)
    status_file = Unicode("", help="Where to write the JSON record of what stopped execution.").tag(config=True)
    skip_ungraded_tail = Bool(False, help="Do not run the code cells after the last graded or solution "
                                          "code cell (no score depends on them).").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._deadline = time.monotonic() + self.budget if self.budget > 0 else None
        self._record = {"status": "ok", "cell": None, "grade_id": None, "message": ""}
        self._stopped = ""
        self._tail = ungraded_tail(nb) if self.skip_ungraded_tail else None
        self._skipped = 0
        try:
            return super().preprocess(nb, resources, km)
        finally:
            if self.status_file:
                with open(self.status_file, "w") as f:
                    json.dump({**self._record, "skipped": self._skipped}, f)

    def _get_timeout(self, cell):
        timeout = super()._get_timeout(cell)
        if self._deadline is not None:
            left = max(1, int(self._deadline - time.monotonic()) + 1)
            timeout = left if not timeout else min(timeout, left)
        return timeout

    def _note(self, status: str, index: int, cell, message: str) -> None:
        if self._record["status"] == "ok":
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            self._record = {"status": status, "cell": index + 1, "grade_id": grade_id, "message": message}

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        if self._tail is not None and index >= self._tail:
            cell.outputs = [] if self._skipped else [NotebookNode(
                output_type="stream", name="stdout",
                text="Not run by the autograder: no graded cell comes after this point, so these cells "
                     "cannot change a score (tlkit autograde --run-all runs them).\n")]
            self._skipped += 1
            return cell, resources
        if not self._stopped and self._deadline is not None and time.monotonic() >= self._deadline:
            self._stopped = f"the notebook's time budget ({self.budget:.0f} s) ran out before cell {index + 1}"
            self._note("timeout", index, cell, self._stopped)
        if self._stopped:
            cell.outputs = [_error("NotRun", f"not run: {self._stopped}")]
            return cell, resources
        limit = self._get_timeout(cell)
        if self.status_file:  # where we are, in case the whole grader is killed
            with open(self.status_file, "w") as f:
                json.dump({"status": "running", "cell": index + 1, "message": ""}, f)
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except CellTimeoutError as exc:  # e.g. "Timeout waiting for IOPub output" after an interrupt
            first = str(exc).splitlines()[0]
            self._note("timeout", index, cell, f"timed out at cell {index + 1} ({first})")
            cell.outputs = list(cell.get("outputs", [])) + [_error("CellTimeoutError", first)]
            return cell, self.resources
        except DeadKernelError:
            code = None
            process = getattr(getattr(self.km, "provisioner", None), "process", None)
            if process is not None:
                code = process.poll()
            if code == -signal.SIGXCPU or code == -signal.SIGKILL and self._deadline is not None \
                    and time.monotonic() >= self._deadline:
                status, why = "timeout", "the kernel used up its CPU-time limit"
            elif code == -signal.SIGKILL:
                status, why = "memory", "the kernel was killed (SIGKILL: most often out of memory)"
            else:
                status, why = "crashed", f"the kernel died (exit status {code})"
            self._stopped = f"{why} in cell {index + 1}"
            self._note(status, index, cell, self._stopped)
            cell.outputs = list(cell.get("outputs", [])) + [_error("KernelDied", self._stopped)]
            return cell, self.resources
        for out in cell.outputs:
            if out.get("output_type") == "error":
                kind = classify_error(out.get("ename", ""), out.get("evalue", ""))
                if kind == "timeout":
                    self._note(kind, index, cell, f"timed out at cell {index + 1} (no reply within "
                                                  f"{limit} s; the kernel was interrupted)")
                elif kind == "memory":
                    self._note(kind, index, cell, f"ran out of memory at cell {index + 1}: "
                                                  f"{out.get('ename')}: {str(out.get('evalue'))[:120]}")
        return cell, resources
