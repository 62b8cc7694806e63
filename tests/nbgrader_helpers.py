"""Helpers for tests that drive nbgrader and run student versions of the lessons.

* :func:`make_course` builds a throwaway nbgrader course folder (our ``course/nbgrader_config.py``
  plus the lessons you name) and :func:`nbgrader` runs the venv's ``nbgrader`` command in it;
* :func:`run_until_first_exercise` generates a lesson's student version and executes it, cell by
  cell, up to its first exercise (the first code cell with a solution region).

The kernel is the ``python3`` kernelspec, which jupyter_client starts with the Python running these
tests (``.venv/bin/python``): the same interpreter nbgrader uses when started from the venv.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
CONFIG = COURSE / "nbgrader_config.py"
VENV_BIN = Path(sys.executable).parent
TEST_LESSON = Path(__file__).resolve().parent / "notebooks" / "nbgrader_lesson"

__all__ = ["lessons", "env", "make_course", "nbgrader", "student_version", "solution_cells",
           "is_solution", "first_exercise", "type_answers", "run_until_first_exercise", "run_with_answers"]

MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def lessons() -> list[Path]:
    """The course's nbgrader source notebooks, ``course/source/<name>/<name>.ipynb``, in order."""
    return sorted(p for p in COURSE.glob("source/*/*.ipynb") if p.stem == p.parent.name)


def env(threads: int | None = None) -> dict[str, str]:
    """The environment for nbgrader and kernels: the venv's bin first on PATH (nbgrader calls
    ``alembic`` from there), and the classroom data mirror when there is one beside the checkout.
    ``threads`` caps the kernels' CPU threads (OMP_NUM_THREADS), for small work on a busy machine."""
    out = dict(os.environ)
    if threads is not None:
        out["OMP_NUM_THREADS"] = out["MKL_NUM_THREADS"] = str(threads)
    out["PATH"] = f"{VENV_BIN}{os.pathsep}{out.get('PATH', '')}"
    mirror = ROOT.parent / "shared" / "datasets"
    if "TLKIT_MIRROR" not in out and mirror.is_dir():
        out["TLKIT_MIRROR"] = str(mirror)
    return out


def make_course(root: Path, lesson_dirs: list[Path]) -> Path:
    """A fresh nbgrader course in ``root``: our config and ``source/<name>/`` for each lesson folder."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, root / "nbgrader_config.py")
    for folder in lesson_dirs:
        shutil.copytree(folder, root / "source" / folder.name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def nbgrader(course: Path, *args: str, timeout: float = 900, threads: int | None = None) -> str:
    """Run ``nbgrader <args>`` in the course folder; return its output, fail with it if the command fails."""
    cmd = [str(VENV_BIN / "nbgrader"), *args]
    proc = subprocess.run(cmd, cwd=course, env=env(threads), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "[ERROR]" in output or "| ERROR]" in output:
        raise AssertionError(f"`{' '.join(cmd[1:])}` failed in {course} (exit {proc.returncode}):\n{output[-6000:]}")
    return output


def student_version(course: Path, name: str) -> Path:
    """Generate the student version of lesson ``name`` in ``course``; return the release notebook."""
    nbgrader(course, "generate_assignment", name, "--force")
    path = course / "release" / name / f"{name}.ipynb"
    assert path.is_file(), f"nbgrader generate_assignment wrote no {path}"
    return path


def is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution", False))


def solution_cells(nb) -> dict[str, nbformat.NotebookNode]:
    """Solution cells (code and written answers) by grade_id."""
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if is_solution(c)}


def first_exercise(nb) -> int:
    """Index of the first code cell with a solution region (``len(nb.cells)`` if there is none)."""
    return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_solution(c)), len(nb.cells))


def type_answers(student_nb, answers: dict[str, str | None], source_nb=None):
    """A copy of a student version with answers typed over the stubs, as a learner would.

    ``answers`` maps grade_ids to code or text that replaces the ``raise NotImplementedError()``
    stub (at its indentation, so a stub inside a function body works); ``None`` takes the
    solution from ``source_nb`` (marker lines dropped). Cells not named keep their stub.
    """
    nb = nbformat.from_dict(student_nb)
    solutions = solution_cells(source_nb) if source_nb is not None else {}
    for grade_id, cell in solution_cells(nb).items():
        if grade_id not in answers:
            continue
        answer = answers[grade_id]
        if answer is None:
            cell.source = "\n".join(line for line in solutions[grade_id].source.splitlines()
                                    if not any(m in line for m in MARKERS))
            continue
        stub = re.search(r"^([ \t]*)# YOUR CODE HERE\n\1raise NotImplementedError\(\)|YOUR ANSWER HERE",
                         cell.source, re.M)
        assert stub, f"no stub to answer in cell {grade_id}:\n{cell.source}"
        indent = stub.group(1) or ""
        cell.source = cell.source[:stub.start()] + indent + answer.replace("\n", "\n" + indent) + \
            cell.source[stub.end():]
    return nb


def _execute(nb, name: str, folder: Path, timeout: int, allow_errors: bool, stop: int):
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(folder)}})
    with client.setup_kernel(env=env(), cwd=str(folder)):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # no terminal colours in the report
                raise AssertionError(f"{name}: the student version fails in cell {index} (before its first "
                                     f"exercise, cell {stop}):\n{cell.source[:500]}\n---\n{message}") from None
    return nb


def run_with_answers(notebook_path: Path, answers: dict[str, str | None], workdir: Path, timeout: int = 600):
    """Generate a lesson's student version, type ``answers`` in (see :func:`type_answers`) and run it
    up to and including its last autograded test cell, errors allowed, as nbgrader's autograder
    would. Returns the executed notebook (truncated after that cell)."""
    notebook_path = Path(notebook_path)
    name = notebook_path.parent.name
    course = make_course(Path(workdir) / "course", [notebook_path.parent])
    release = student_version(course, name)
    nb = type_answers(nbformat.read(release, as_version=4), answers, nbformat.read(notebook_path, as_version=4))
    last = max(i for i, c in enumerate(nb.cells)
               if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code" and not is_solution(c))
    nb.cells = nb.cells[:last + 1]
    return _execute(nb, name, release.parent, timeout, allow_errors=True, stop=last)


def run_until_first_exercise(notebook_path: Path, workdir: Path | None = None, timeout: int = 600):
    """Generate the student version of a lesson and run it up to (not including) its first exercise.

    ``notebook_path`` is a source notebook ``.../<name>/<name>.ipynb``; its folder is copied into a
    fresh nbgrader course under ``workdir`` (a temporary folder by default). Cells run in the release
    folder, as a learner's would. Raises AssertionError naming the cell that failed. Returns the
    executed student notebook, truncated before the first exercise.
    """
    import tempfile

    notebook_path = Path(notebook_path)
    name = notebook_path.parent.name
    workdir = Path(tempfile.mkdtemp(prefix="tlkit-student-")) if workdir is None else Path(workdir)
    course = make_course(workdir / "course", [notebook_path.parent])
    release = student_version(course, name)
    nb = nbformat.read(release, as_version=4)
    stop = first_exercise(nb)
    nb.cells = nb.cells[:stop]
    return _execute(nb, name, release.parent, timeout, allow_errors=False, stop=stop)
