"""A tiny nbgrader course for the classroom tests: one assignment, two graded exercises, trivial answers.

:func:`tiny_course` writes ``nbgrader_config.py`` (our course config, with a short per-cell timeout),
``source/tiny/tiny.ipynb`` and a data file the lesson reads, and runs ``nbgrader generate_assignment``;
:func:`submit` writes a student's notebook into ``submitted/<student>/tiny/`` with the answer cells
replaced (``None`` keeps the stub of the student version).
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbgrader_helpers import CONFIG, nbgrader

LESSON = "tiny"
SOLUTIONS = {"ex1": "def double(x):\n    return 2 * x", "ex2": "answer = 42"}


def _meta(grade_id, solution=False, grade=False, locked=False, points=0):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def tiny_course(root: Path, cell_timeout: int = 5) -> Path:
    """A course in ``root`` (made world-traversable, so only the sandbox keeps students out)."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in [root, *root.parents]:
        if str(folder).startswith(("/tmp/", "/var/tmp/")) and folder != Path("/tmp"):
            os.chmod(folder, 0o755)
    config = CONFIG.read_text() + f"\nc.Execute.timeout = {cell_timeout}\nc.Exchange.root = {str(root / 'exchange')!r}\n"
    (root / "nbgrader_config.py").write_text(config)
    src = root / "source" / LESSON
    src.mkdir(parents=True)
    (src / "numbers.txt").write_text("3\n")
    nb = new_notebook(cells=[
        new_code_cell("n = int(open('numbers.txt').read())\nprint('ready', n)", metadata=_meta("setup", locked=True)),
        new_markdown_cell("Write `double(x)`.", metadata=_meta("ex1_text", locked=True)),
        new_code_cell("### BEGIN SOLUTION\ndef double(x):\n    return 2 * x\n### END SOLUTION",
                      metadata=_meta("ex1", solution=True)),
        new_code_cell("assert double(n) == 6, 'double(3) should be 6'", metadata=_meta("ex1_test", grade=True, locked=True, points=1)),
        new_markdown_cell("Set `answer` to 42.", metadata=_meta("ex2_text", locked=True)),
        new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", metadata=_meta("ex2", solution=True)),
        new_code_cell("assert answer == 42\n### BEGIN HIDDEN TESTS\nassert answer - 40 == 2\n### END HIDDEN TESTS",
                      metadata=_meta("ex2_test", grade=True, locked=True, points=1)),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src / f"{LESSON}.ipynb")
    nbgrader(root, "generate_assignment", LESSON, "--force", timeout=300)
    return root


def submit(course: Path, student: str, answers: dict[str, str | None], extra: list[str] = ()) -> Path:
    """Submit the student version with ``answers`` by grade_id (missing: the solution; None: the stub)
    and ``extra`` code cells appended after the answers."""
    nb = nbformat.read(course / "release" / LESSON / f"{LESSON}.ipynb", as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in SOLUTIONS:
            answer = answers.get(gid, SOLUTIONS[gid])
            if answer is not None:
                cell.source = answer
    nb.cells += [new_code_cell(code) for code in extra]
    folder = course / "submitted" / student / LESSON
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{LESSON}.ipynb")
    return folder
