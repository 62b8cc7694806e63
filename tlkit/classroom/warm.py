"""Fill the shared data cache once, before 300 students (or 300 autograded submissions) need it.

``tlkit warm-cache`` loads every dataset the course's lessons load (found by reading
``course/source``; or those named with ``--datasets``) into ``TLKIT_DATA``, checking each image
once, so that no student and no grading worker downloads, unpacks or verifies it again. With
``--features`` it also runs each lesson's graded part once (:func:`warm_features`), so that the
features those cells extract are in ``TLKIT_CACHE`` and no grading worker extracts them again. It
then prints how to make the caches read-only for students and how to hand them to ``tlkit autograde``.

Example:
    >>> from tlkit.classroom import warm_cache
    >>> warm_cache(["digits"], progress=False)["digits"]  # doctest: +SKIP
    'ready: 1438 train + 359 val images'
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ArgumentError

__all__ = ["warm_cache", "warm_features", "course_datasets", "read_only_instructions"]

_LOAD = re.compile(r"""load\(\s*["']([A-Za-z0-9_-]+)["']""")


def course_datasets(source: str | Path) -> list[str]:
    """Registered datasets that the notebooks under ``source`` load (``datasets.load("name", ...)``)."""
    from .. import datasets

    names: list[str] = []
    for nb in sorted(Path(source).glob("*/*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
        text = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")
        for name in _LOAD.findall(text):
            if name in datasets.list_datasets() and name not in names:
                names.append(name)
    return names


def read_only_instructions(data_dir: Path, cache_dir: Path) -> str:
    """Shell commands that make the warm caches readable, not writable, by everyone else."""
    return "\n".join([
        "Make the caches read-only for students (they stay writable for you):",
        f"  chmod -R a+rX,go-w {data_dir} {cache_dir}",
        "Point students' kernels at them (JupyterHub: c.Spawner.environment in jupyterhub_config.py):",
        f"  TLKIT_DATA={data_dir}  TLKIT_CACHE={cache_dir}",
        "and the grader:",
        f"  tlkit autograde LESSON --workers N --data {data_dir} --cache {cache_dir}",
        "(what a student computes beyond the warm cache stays in memory or in their own writable cache)",
    ])


def warm_cache(names: list[str] | None = None, course: str | Path = "course", progress: bool = True) -> dict[str, str]:
    """Load each dataset (default: those the course's lessons load) into the data cache, every split.

    Returns ``{name: "ready: ..." or "failed: <reason>"}``; raises ArgumentError for an unknown name.
    """
    from .. import datasets
    from ..download import cache_dir

    if names is None:
        source = Path(course) / "source"
        names = course_datasets(source) if source.is_dir() else []
        if not names:
            raise ArgumentError(f"no lesson under {source} loads a registered dataset; name them with "
                                f"--datasets (known: {', '.join(datasets.list_datasets())})")
    unknown = [n for n in names if n not in datasets.list_datasets()]
    if unknown:
        raise ArgumentError(f"--datasets: unknown dataset(s) {unknown}; known: {', '.join(datasets.list_datasets())}")
    out: dict[str, str] = {}
    for name in names:
        entry = datasets.info(name)
        splits = [s for s in entry.splits if s != "all"] or list(entry.splits)
        try:
            sizes = [f"{len(datasets.load(name, split, progress=progress))} {split}" for split in splits]
            out[name] = "ready: " + " + ".join(sizes) + " images"
        except Exception as exc:  # report every dataset, then let the caller decide
            out[name] = f"failed: {type(exc).__name__}: {exc}"
        if progress:
            print(f"{name}: {out[name]}")
    if progress:
        print(f"data cache: {cache_dir('data')}")
        print(read_only_instructions(cache_dir("data"), cache_dir("features").parent))
    return out


def warm_features(lessons: list[str] | None = None, course: str | Path = "course", timeout: int = 900,
                  progress: bool = True) -> dict[str, str]:
    """Run each lesson's graded part once, so that the features it extracts are in ``TLKIT_CACHE``.

    The part is what ``tlkit autograde`` runs: the source notebook (with solutions) up to its last
    graded cell (:func:`tlkit.classroom.execute.ungraded_tail`), executed in the lesson's folder by
    nbclient with this Python's kernel. Features are cached by content (backbone weights, images,
    stage, size), so a student's or a grading worker's identical extraction then reads them.
    Returns ``{lesson: "ready: ..." or "failed: <reason>"}``; raises ArgumentError for an unknown lesson.

    >>> warm_features(["02-feature-extraction"], progress=False)["02-feature-extraction"][:6]  # doctest: +SKIP
    'ready:'
    """
    import time

    import nbformat
    from nbclient import NotebookClient

    from ..download import cache_dir
    from .execute import ungraded_tail

    source = Path(course) / "source"
    found = sorted(p.parent.name for p in source.glob("*/*.ipynb") if p.stem == p.parent.name)
    lessons = found if lessons is None else list(lessons)
    unknown = [name for name in lessons if name not in found]
    if unknown:
        raise ArgumentError(f"--lessons: no lesson {unknown} under {source}; found: {', '.join(found) or 'none'}")
    out: dict[str, str] = {}
    for lesson in lessons:
        path = source / lesson / f"{lesson}.ipynb"
        nb = nbformat.read(path, as_version=4)
        tail = ungraded_tail(nb)
        if tail is None:
            out[lesson] = "skipped: no graded cell, nothing for the grader to reuse"
        else:
            nb.cells = nb.cells[:tail]
            start = time.monotonic()
            try:
                NotebookClient(nb, timeout=timeout, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
                out[lesson] = f"ready: {tail} cells run in {time.monotonic() - start:.0f} s"
            except Exception as exc:  # report every lesson, then let the caller decide
                first = (str(exc).strip().splitlines() or [""])[-1]
                out[lesson] = f"failed: {type(exc).__name__}: {first[:300]}"
        if progress:
            print(f"{lesson}: {out[lesson]}")
    if progress:
        print(f"feature cache: {cache_dir('features')}")
    return out
