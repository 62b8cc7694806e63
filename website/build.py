"""Build the course website: every lesson executed, shown as learners get it (no solutions).

    python website/build.py                      # all lessons (about 19 minutes on 2 CPU cores)
    python website/build.py --lessons 00 01      # only these are executed; the others appear unexecuted

Steps: copy each lesson folder of ``course/source`` to a staging folder, execute the source
notebook there (with solutions, so every later cell has what it needs) with nbclient, turn it into
the student version *keeping the outputs* (``tlkit.lessons.student_version(keep_outputs=True)``:
solution regions become ``# YOUR CODE HERE``, their outputs and hidden tests are dropped, written
answers become ``YOUR ANSWER HERE``), mark each exercise, add a landing page, and render with
Sphinx + myst-nb (``website/conf.py``). Output: ``<out>/html/index.html``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SOURCE = ROOT / "course" / "source"
REPO_URL = "https://github.com/tlkit/tlkit"
sys.path.insert(0, str(ROOT))

from tlkit.lessons import student_version  # noqa: E402

EXERCISE_NOTE = (":::{note}\n**Exercise.** This cell is yours to complete: open the lesson in JupyterLab "
                 "(`make lab`, `tlkit lessons DIR`, or the Binder link at the top of the page), write your "
                 "code in place of `raise NotImplementedError()` and run the test cell below it.\n:::")
WRITTEN_NOTE = (":::{note}\n**Written exercise.** Answer in the notebook, in place of *YOUR ANSWER HERE*; "
                "a person grades it.\n:::")


def _lesson_names(selected: list[str] | None) -> tuple[list[str], set[str]]:
    names = sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb") if p.stem == p.parent.name)
    if not selected:
        return names, set(names)
    chosen = {n for n in names for s in selected if n == s or n.startswith(s + "-")}
    unknown = [s for s in selected if not any(n == s or n.startswith(s + "-") for n in names)]
    if unknown:
        sys.exit(f"website/build.py: --lessons {' '.join(unknown)}: no such lesson; the lessons are {names}")
    return names, chosen


def execute(path: Path, timeout: int) -> dict:
    """Run the notebook at ``path`` in its own folder; return it (as JSON) with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   store_widget_state=False).execute()
    return json.loads(nbformat.writes(nb))


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def for_the_site(nb: dict) -> dict:
    """The student version with outputs, each exercise marked, links to the package's files made absolute."""
    out = student_version(nb, keep_outputs=True)
    cells = []
    for i, cell in enumerate(out["cells"]):
        grading = cell.get("metadata", {}).get("nbgrader", {})
        if grading.get("solution"):
            note = EXERCISE_NOTE if cell["cell_type"] == "code" else WRITTEN_NOTE
            cells.append({"cell_type": "markdown", "id": f"exercise-note-{i}", "metadata": {}, "source": note})
        if cell["cell_type"] == "markdown":
            # ../../../tlkit/x.py (a path in the repository) -> the file on GitHub
            cell["source"] = re.sub(r"\]\((?:\.\./)+((?:tlkit|course|bench|tests)/[^)\s]+)\)",
                                    rf"]({REPO_URL}/blob/main/\1)", _src(cell))
        cell.get("metadata", {}).pop("widgets", None)
        cells.append(cell)
    out["cells"] = cells
    out.get("metadata", {}).pop("widgets", None)
    return out


def _title(nb: dict, name: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", _src(cell), re.M)
            if m:
                return m.group(1).strip()
    return name


def landing_page(titles: dict[str, str], executed: set[str]) -> str:
    rows = "\n".join(f"| [{titles[n]}](lessons/{n}/{n}.ipynb) | "
                     f"{'yes' if n in executed else 'not in this build'} |" for n in titles)
    toc = "\n".join(f"lessons/{n}/{n}" for n in titles)
    return f"""# tlkit: transfer learning, by experiment

A course on **transfer learning with convolutional networks**, in eight notebooks. Every lesson runs
real experiments on ImageNet-pretrained networks and real photos, on an ordinary laptop without a
GPU, and every claim it makes is shown by its own experiment.

These pages show each lesson **as it ran** (outputs and figures included) and its exercises as
exercises: the solutions are not here. To do the exercises, open the lessons in JupyterLab:

* **in your browser, nothing to install:** the *launch Binder* link at the top of each lesson;
* **with pip:** `pip install "tlkit[course]"`, then `tlkit lessons my-course` and `jupyter lab my-course`;
* **from a clone of the repository:** `make lab` ([README]({REPO_URL}#readme)).

| lesson | outputs on these pages |
|---|---|
{rows}

```{{toctree}}
:maxdepth: 1
:caption: Lessons
:hidden:

{toc}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "_build"), help="build folder (HTML in <out>/html)")
    parser.add_argument("--lessons", nargs="*", help="execute only these (e.g. 00 01); default: all")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run")
    args = parser.parse_args(argv)
    names, chosen = _lesson_names(args.lessons or os.environ.get("SITE_LESSONS", "").split() or None)
    out = Path(args.out).resolve()
    stage = out / "src"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "lessons").mkdir(parents=True)
    shutil.copy(HERE / "conf.py", stage / "conf.py")
    # The kernel imports this checkout's tlkit; progress bars print plain lines (nothing to render).
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    os.environ["TLKIT_PROGRESS"] = "lines"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    titles = {}
    for name in names:
        dst = stage / "lessons" / name
        shutil.copytree(SOURCE / name, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        path = dst / f"{name}.ipynb"
        if name in chosen:
            start = time.perf_counter()
            print(f"executing {name} ...", flush=True)
            nb = execute(path, args.timeout)
            print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
        else:
            nb = json.loads(path.read_text(encoding="utf-8"))
        nb = for_the_site(nb)
        titles[name] = _title(nb, name)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    (stage / "index.md").write_text(landing_page(titles, chosen), encoding="utf-8")
    html = out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(stage), str(html)]
    print(" ".join(cmd), flush=True)
    done = subprocess.run(cmd)
    if done.returncode:
        return done.returncode
    (html / ".nojekyll").touch()  # GitHub Pages: serve _static/ and _images/ as they are
    print(f"site: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
