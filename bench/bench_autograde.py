"""Autograde throughput: a class-like mix of submissions of one lesson, graded with 1 and 2 workers.

    python bench/bench_autograde.py                       # the tiny fixture assignment (tests/)
    python bench/bench_autograde.py --lesson 02-feature-extraction --count 24   # a real lesson (slow)

The mix, in turn: correct, blank, partly wrong (half the exercises), hostile (an infinite loop in
the first exercise). Printed, not asserted:

* wall time with 1 and 2 workers, the speed-up, submissions per hour;
* per-submission wall and CPU time (CPU of nbgrader and the kernel: "core-seconds");
* cold vs warm shared cache: one correct submission graded with no shared cache (its kernel
  fills a private one from TLKIT_MIRROR) and with the cache warmed by ``tlkit warm-cache``;
* the projection for 300 students x 8 lessons on a 16-core server:
  ``hours = students x lessons x core_seconds_per_submission / (cores x efficiency) / 3600``,
  where efficiency = measured speed-up / workers (2 workers here), at most 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tlkit.classroom import Limits, autograde  # noqa: E402


def _fixture(workdir: Path, count: int) -> tuple[Path, str, str]:
    from classroom_helpers import LESSON, submit, tiny_course

    course = tiny_course(workdir / "course")
    kinds = [{}, {"ex1": None, "ex2": None}, {"ex2": "answer = 41"}, {"ex1": "while True:\n    pass"}]
    for i in range(count):
        submit(course, f"s{i:03d}", kinds[i % 4])
    return course, LESSON, "s000"


def _real(workdir: Path, lesson: str, count: int) -> tuple[Path, str, str]:
    import nbformat
    from nbgrader_helpers import COURSE, make_course, solution_cells, student_version, type_answers

    source = COURSE / "source" / lesson / f"{lesson}.ipynb"
    course = make_course(workdir / "course", [source.parent])
    release = nbformat.read(student_version(course, lesson), as_version=4)
    src = nbformat.read(source, as_version=4)
    code_ids = [g for g, c in solution_cells(src).items() if c.cell_type == "code"]
    mixes = [dict.fromkeys(code_ids), {}, dict.fromkeys(code_ids[: len(code_ids) // 2]),
             {**dict.fromkeys(code_ids), code_ids[0]: "while True:\n    pass"}]
    for i in range(count):
        nb = type_answers(release, mixes[i % 4], src)
        folder = course / "submitted" / f"s{i:03d}" / lesson
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{lesson}.ipynb")
    return course, lesson, "s000"


def _summary(name: str, report, count: int) -> dict:
    secs = [r.seconds for r in report.results]
    cpu = [r.cpu_seconds for r in report.results]
    statuses = {s: sum(r.status == s for r in report.results) for s in ("ok", "timeout", "memory", "crashed")}
    print(f"{name}: {count} submissions in {report.wall_seconds:.0f} s = {count / report.wall_seconds * 3600:.0f}/hour; "
          f"per submission {statistics.mean(secs):.1f} s wall, {statistics.mean(cpu):.1f} core-s (median "
          f"{statistics.median(cpu):.1f}); statuses {statuses}")
    return {"wall": report.wall_seconds, "cpu": statistics.mean(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesson", help="a course lesson (default: the tiny test fixture)")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--memory", type=float, default=4)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-autograde-"))
    os.chmod(workdir, 0o755)
    try:
        course, lesson, one = _real(workdir, args.lesson, args.count) if args.lesson else _fixture(workdir, args.count)
        limits = Limits(timeout=args.timeout, memory_gb=args.memory, threads=1)
        print(f"machine: {os.cpu_count()} CPU cores; lesson {lesson}; {args.count} submissions "
              "(correct, blank, partly wrong, hostile loop)")
        cache = workdir / "cache"
        data = cache / "data"
        data.mkdir(parents=True)
        run = dict(limits=limits, data_dir=str(data), cache_dir=str(cache), progress=False)
        if args.lesson:  # cold vs warm shared cache, one correct submission each
            cold = autograde(course, lesson, workers=1, students=[one], force=True,
                             **dict(run, data_dir=None, cache_dir=None))
            from tlkit.classroom.warm import course_datasets, warm_cache

            os.environ["TLKIT_DATA"], os.environ["TLKIT_CACHE"] = str(data), str(cache)
            warm_cache(course_datasets(course / "source"), progress=False)
            os.system(f"chmod -R a+rX,go-w {cache}")
            warm = autograde(course, lesson, workers=1, students=[one], force=True, **run)
            print(f"cold shared cache: {cold.results[0].seconds:.1f} s, {cold.results[0].cpu_seconds:.1f} core-s; "
                  f"warm: {warm.results[0].seconds:.1f} s, {warm.results[0].cpu_seconds:.1f} core-s")
        else:
            print("cold vs warm shared cache: not measured on the fixture (it loads no data); use --lesson")
        one_worker = _summary("1 worker ", autograde(course, lesson, workers=1, force=True, **run), args.count)
        two_workers = _summary("2 workers", autograde(course, lesson, workers=2, force=True, **run), args.count)
        speedup = one_worker["wall"] / two_workers["wall"]
        efficiency = min(1.0, speedup / 2)
        core_s = two_workers["cpu"]
        hours = 300 * 8 * core_s / (16 * efficiency) / 3600
        print(f"speed-up 1 -> 2 workers: {speedup:.2f}x (parallel efficiency {efficiency:.0%})")
        print(f"projection, 300 students x 8 lessons on 16 cores: 300*8*{core_s:.1f} core-s / (16*{efficiency:.2f}) "
              f"= {hours:.1f} h; one lesson for 300 students: {hours / 8 * 60:.0f} min")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
