"""The course's lessons, as student versions: no solutions, no hidden tests, no outputs.

``tlkit lessons DIR`` (or :func:`write_lessons`) writes them into a folder of your choice. An
installed wheel carries the student versions (made when the wheel is built, by
:func:`student_version`, so the wheel holds no solution); a source checkout makes them from
``course/source/`` on the fly.

:func:`student_version` does what nbgrader's ``ClearSolutions`` and ``ClearHiddenTests``
preprocessors do to a notebook (``tests/test_packaging.py`` checks that both give the same
cells), in plain Python, so neither nbgrader nor nbformat is needed to install or use tlkit.

Example:
    >>> from tlkit.lessons import list_lessons, write_lessons
    >>> list_lessons()[:2]                                       # doctest: +SKIP
    ['00-welcome', '01-cnn-basics']
    >>> write_lessons("my-course")                               # doctest: +SKIP
    [PosixPath('my-course/00-welcome/00-welcome.ipynb'), ...]
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path

from .errors import ArgumentError, TlkitError

__all__ = ["list_lessons", "student_version", "write_lessons", "kernel_language_info", "stamp_language_info", "CODE_STUB", "TEXT_STUB"]

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"   # as in course/nbgrader_config.py
TEXT_STUB = "YOUR ANSWER HERE"
_PACKAGED = Path(__file__).resolve().parent / "lessons_data"          # in a wheel
_CHECKOUT = Path(__file__).resolve().parents[1] / "course" / "source"  # in a source checkout


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _replace_region(text: str, begin: str, end: str, stub: str | None) -> tuple[str, bool]:
    """Replace each ``begin``...``end`` region by ``stub`` (indented like ``begin``), or drop it."""
    out, inside, found = [], False, False
    for line in text.split("\n"):
        if begin in line:
            if inside:
                raise TlkitError(f"nested {begin!r} regions in a cell:\n{text}")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + s for s in stub.split("\n"))
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise TlkitError(f"{begin!r} without {end!r} in a cell:\n{text}")
    return "\n".join(out), found


def student_version(notebook: dict, keep_outputs: bool = False) -> dict:
    """A copy of an nbgrader source notebook as learners get it.

    Solution regions become :data:`CODE_STUB` (or :data:`TEXT_STUB` in markdown), solution cells
    without a region become the stub, hidden tests are removed, and outputs are cleared.
    ``keep_outputs=True`` (for the website, from an executed notebook) keeps the outputs of every
    cell except those of solution cells and of cells that held a solution or hidden test region.

    Example:
        >>> nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 3,
        ...        "source": "x = None\\n### BEGIN SOLUTION\\nx = 1\\n### END SOLUTION"}], "metadata": {}}
        >>> print(student_version(nb)["cells"][0]["source"])
        x = None
        # YOUR CODE HERE
        raise NotImplementedError()
    """
    nb = copy.deepcopy(notebook)
    for cell in nb.get("cells", []):
        text = _source(cell)
        code = cell.get("cell_type") == "code"
        text, replaced = _replace_region(text, "### BEGIN SOLUTION", "### END SOLUTION",
                                         CODE_STUB if code else TEXT_STUB)
        text, hidden = _replace_region(text, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS", None)
        solution = bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))
        if solution and not replaced:
            text = CODE_STUB if code else TEXT_STUB
        cell["source"] = text
        if code and (not keep_outputs or solution or replaced or hidden):
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("celltoolbar", None)
    return nb


def kernel_language_info() -> dict | None:
    """What this Python's ipykernel reports as ``language_info`` (None without ipykernel).

    JupyterLab writes the kernel's ``language_info`` into a notebook when the kernel starts; a
    notebook that already holds the same one does not show as modified when it is opened.
    """
    try:
        from ipykernel.ipkernel import IPythonKernel
    except ImportError:
        return None
    return copy.deepcopy(dict(IPythonKernel.language_info))


def _lessons_root() -> Path:
    for root in (_PACKAGED, _CHECKOUT):
        if root.is_dir() and any(root.glob("*/*.ipynb")):
            return root
    raise TlkitError(f"no lessons found: neither {_PACKAGED} (an installed wheel) nor {_CHECKOUT} "
                     "(a source checkout) holds any. Reinstall tlkit from a wheel or PyPI.")


def list_lessons() -> list[str]:
    """The lesson names, in order (``00-welcome`` ...)."""
    return sorted(p.parent.name for p in _lessons_root().glob("*/*.ipynb") if p.stem == p.parent.name)


def write_lessons(folder: str | Path, lessons: list[str] | None = None, overwrite: bool = False) -> list[Path]:
    """Write the student versions of ``lessons`` (default: all) into ``folder``, one subfolder each.

    A lesson's other files (pictures it shows) are copied too. An existing notebook is kept (your
    work is never overwritten) unless ``overwrite=True``. Returns the notebooks written.
    """
    root, names = _lessons_root(), list_lessons()
    chosen = names if lessons is None else list(lessons)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ArgumentError(f"lessons={unknown}: no such lesson; the lessons are {names}.")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ArgumentError(f"folder={str(folder)!r} is a file: give a folder to write the lessons into.")
    info = kernel_language_info()
    written = []
    for name in chosen:
        src_dir, dst_dir = root / name, folder / name
        dst = dst_dir / f"{name}.ipynb"
        if dst.exists() and not overwrite:
            print(f"kept {dst} (already there; overwrite=True / --overwrite replaces it)", file=sys.stderr)
            continue
        nb = json.loads((src_dir / f"{name}.ipynb").read_text(encoding="utf-8"))
        if root == _CHECKOUT:
            nb = student_version(nb)
        if info:
            nb.setdefault("metadata", {})["language_info"] = info
        dst_dir.mkdir(parents=True, exist_ok=True)
        for extra in sorted(src_dir.iterdir()):
            if extra.is_file() and extra.suffix != ".ipynb" and not (dst_dir / extra.name).exists():
                shutil.copy2(extra, dst_dir / extra.name)
        dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(dst)
    return written


def build_packaged_lessons(source: Path, target: Path) -> list[Path]:
    """Write student versions of every lesson in ``source`` into ``target`` (used by setup.py)."""
    written = []
    for nb_path in sorted(Path(source).glob("*/*.ipynb")):
        if nb_path.stem != nb_path.parent.name:
            continue
        out_dir = Path(target) / nb_path.parent.name
        out_dir.mkdir(parents=True, exist_ok=True)
        nb = student_version(json.loads(nb_path.read_text(encoding="utf-8")))
        (out_dir / nb_path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        for extra in nb_path.parent.iterdir():
            if extra.is_file() and extra.suffix != ".ipynb":
                shutil.copy2(extra, out_dir / extra.name)
        written.append(out_dir / nb_path.name)
    return written


def stamp_language_info(path: str | Path) -> bool:
    """Give the notebook at ``path`` this Python's kernel ``language_info``; True if it changed.

    Then JupyterLab, when the kernel starts, finds nothing to update and the freshly opened
    notebook shows no unsaved-changes dot. ``make student`` stamps the student versions it makes.
    """
    info = kernel_language_info()
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if not info or nb.get("metadata", {}).get("language_info") == info:
        return False
    nb.setdefault("metadata", {})["language_info"] = info
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True
