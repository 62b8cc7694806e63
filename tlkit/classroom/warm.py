"""Fill the shared data cache once, before 300 students (or 300 autograded submissions) need it.

``tlkit warm-cache`` loads every dataset the course's lessons load (found by reading
``course/source``; or those named with ``--datasets``) into ``TLKIT_DATA``, checking each image
once, so that no student and no grading worker downloads, unpacks or verifies it again. It then
prints how to make the cache read-only for students and how to hand it to ``tlkit autograde``.

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

__all__ = ["warm_cache", "course_datasets", "read_only_instructions"]

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
