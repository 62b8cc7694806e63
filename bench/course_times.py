"""Time every lesson notebook of the course, the way a learner (and CI) runs it, and collect its claims.

Each lesson's source notebook (with solutions) is executed top to bottom by nbclient in its own
folder, one at a time, on whatever device `tlkit.default_device()` picks. By default every lesson
starts from empty data and feature caches (temporary folders), as on a learner's first run and in
CI; `--warm` keeps the usual caches instead. Prints one line per lesson and a Markdown table for
course/README.md.

Lessons state their claims with `tlkit.grading.check_claim` ("feature extraction beats training
from scratch", with the measured margin). `--seeds 0 1 2` runs every lesson once per seed (the
lesson's `SEED = 0` line is set to each seed in turn, nothing else changes) and prints every
claim's evidence per seed: the check that the story holds across seeds, not just for seed 0.

Example (from the repository root):

    TLKIT_MIRROR=../shared/datasets .venv/bin/python bench/course_times.py
    .venv/bin/python bench/course_times.py 03-fine-tuning 05-learning-rates --warm
    .venv/bin/python bench/course_times.py --seeds 0 1 2
    .venv/bin/python bench/course_times.py --table-from seed0.log seeds12.log   # one claims table from several runs
    .venv/bin/python bench/course_times.py --gpu-settings   # the GPU settings, here (slow on a CPU)
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tlkit.grading import CLAIM_SHOWN

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "course" / "source"


SEED_LINE = re.compile(r"^SEED = \d+", re.MULTILINE)


def set_seed(nb: nbformat.NotebookNode, seed: int) -> bool:
    """Set the lesson's ``SEED = ...`` line to ``seed``; False if the lesson has none."""
    for cell in nb.cells:
        if cell.cell_type == "code" and SEED_LINE.search(cell.source):
            cell.source = SEED_LINE.sub(f"SEED = {seed}", cell.source, count=1)
            return True
    return False


GPU_LINE = 'GPU = device.type == "cuda"'


def force_gpu_settings(nb: nbformat.NotebookNode) -> bool:
    """Make the lesson choose its GPU settings on whatever device runs it; False if it has no GPU switch."""
    for cell in nb.cells:
        if cell.cell_type == "code" and GPU_LINE in cell.source:
            cell.source = cell.source.replace(GPU_LINE, "GPU = True  # course_times.py --gpu-settings", 1)
            return True
    return False


def claims_and_errors(nb: nbformat.NotebookNode) -> tuple[list[str], list[str]]:
    """The claim lines (``✓ shown on this run: ...``) and the errors in an executed notebook."""
    claims, errors = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                claims += [line[2:] for line in out.get("text", "").splitlines() if line.startswith(CLAIM_SHOWN)]
            elif out.get("output_type") == "error":
                value = out.get("evalue", "")
                if out.get("ename") == "ClaimNotShown":
                    claims.append("✗ " + value.splitlines()[0].rstrip("."))
                else:
                    errors.append(f"{out.get('ename')}: {value[:200]}")
    return claims, errors


def run_lesson(lesson: str, warm: bool, timeout: int, seed: int | None = None,
               save: Path | None = None, gpu_settings: bool = False) -> tuple[float, str, list[str]]:
    """Execute one lesson notebook; return (seconds, "ok" or what failed, the claims it printed)."""
    path = SOURCE / lesson / f"{lesson}.ipynb"
    nb = nbformat.read(path, as_version=4)
    if seed is not None and not set_seed(nb, seed):
        return 0.0, "no SEED line: not run", []
    if gpu_settings and not force_gpu_settings(nb):
        return 0.0, "no GPU switch: not run", []
    with tempfile.TemporaryDirectory(prefix=f"tlkit-{lesson}-") as tmp:
        saved = {k: os.environ.get(k) for k in ("TLKIT_CACHE", "TLKIT_DATA")}
        if not warm:
            os.environ["TLKIT_CACHE"] = str(Path(tmp) / "features")
            os.environ["TLKIT_DATA"] = str(Path(tmp) / "data")
        # allow_errors: a claim that does not hold is reported, and the claims after it still run
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            client.execute()
            claims, errors = claims_and_errors(nb)
            failed = [c for c in claims if c.startswith("✗")]
            status = "ok" if not errors and not failed else "FAILED: " + "; ".join(errors + failed)[:300]
        except Exception as exc:  # a timeout or a dead kernel: report and go on with the next lesson
            last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            claims, status = [], f"FAILED: {last[:200]}"
        finally:
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, save / (lesson + ("" if seed is None else f"-seed{seed}") + ".ipynb"))
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return time.perf_counter() - start, status, claims


def split_claim(line: str) -> tuple[str, str, bool]:
    """``(claim, evidence, shown)`` from a claim line as ``claims_and_errors`` returns it.

    ``check_claim`` writes "<claim> (<evidence>)"; the evidence is the last top-level parenthesis.
    """
    shown = not line.startswith("✗")
    text = line.split("on this run: ", 1)[-1].rstrip(".")
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0 and text.endswith(")") and text[i] == "(":
            return text[:i].strip(), text[i + 1:-1], shown
    return text, "", shown


def claims_table(runs: list[tuple[str, int, list[str]]], seeds: list[int]) -> str:
    """A Markdown table, one row per claim and one column per seed, from ``(lesson, seed, claims)`` runs.

    A claim a seed did not print reads "not run"; one it did not show is marked ✗.
    """
    evidence: dict[tuple[str, str], dict[int, str]] = {}
    for lesson, seed, claims in sorted(runs, key=lambda r: r[0]):
        for line in claims:
            claim, ev, shown = split_claim(line)
            evidence.setdefault((lesson, claim), {})[seed] = ev if shown else "✗ " + ev
    lines = ["| lesson | claim | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for (lesson, claim), by_seed in evidence.items():
        lines.append(f"| {int(lesson[:2])} | {claim} | " + " | ".join(by_seed.get(s, "not run") for s in seeds) + " |")
    return "\n".join(lines)


LOG_LESSON = re.compile(r"^(\d\d-[\w-]+) seed (\d+)\s+[\d.]+ s\s")


def runs_from_log(text: str) -> list[tuple[str, int, list[str]]]:
    """The ``(lesson, seed, claims)`` runs in what ``--seeds ... --claims`` printed (to join several runs' logs)."""
    runs: list[tuple[str, int, list[str]]] = []
    for line in text.splitlines():
        m = LOG_LESSON.match(line)
        if m:
            runs.append((m.group(1), int(m.group(2)), []))
        elif runs and line.startswith("    ") and "on this run: " in line:
            runs[-1][2].append(line.strip())
    return runs


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {os.cpu_count()} CPU cores"
    return f"CPU only: {os.cpu_count()} cores, {platform.processor() or platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson folders (default: all in course/source)")
    parser.add_argument("--warm", action="store_true", help="keep the usual data and feature caches")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    parser.add_argument("--seeds", type=int, nargs="+", help="run each lesson once per seed (its SEED line)")
    parser.add_argument("--claims", action="store_true", help="print each lesson's claims and their evidence")
    parser.add_argument("--gpu-settings", action="store_true",
                        help="run the lessons' GPU settings even without a GPU (to check their code and claims)")
    parser.add_argument("--save", type=Path, help="write the executed notebooks (with outputs) into this folder")
    parser.add_argument("--table-from", type=Path, nargs="+", metavar="LOG",
                        help="run nothing: print the claims table from the saved output of earlier --seeds runs")
    args = parser.parse_args(argv)
    if args.table_from:
        runs = [r for log in args.table_from for r in runs_from_log(log.read_text())]
        print(claims_table(runs, sorted({seed for _, seed, _ in runs})))
        return 0
    lessons = args.lessons or sorted(p.name for p in SOURCE.iterdir() if (p / f"{p.name}.ipynb").exists())
    print(f"device: {device_line()}; caches: {'warm' if args.warm else 'empty (first run)'}"
          + ("; the lessons' GPU settings" if args.gpu_settings else ""), flush=True)
    rows, runs = [], []
    for seed in args.seeds or [None]:
        for lesson in lessons:
            seconds, status, claims = run_lesson(lesson, args.warm, args.timeout, seed, args.save, args.gpu_settings)
            rows.append((lesson, seed, seconds, status))
            runs.append((lesson, seed, claims))
            tag = "" if seed is None else f" seed {seed}"
            print(f"{lesson + tag:36s} {seconds:7.1f} s  {status}", flush=True)
            if args.claims or args.seeds:
                for claim in claims:
                    print(f"    {claim}", flush=True)
    print("\n| lesson | seed | wall time | status |\n|---|---|---|---|")
    for lesson, seed, seconds, status in rows:
        print(f"| {lesson} | {'' if seed is None else seed} | {int(seconds // 60)} min {seconds % 60:04.1f} s | {status} |")
    print(f"| total | | {sum(r[2] for r in rows) / 60:.1f} min | |")
    if args.seeds:
        print("\n" + claims_table(runs, args.seeds))
    return 0 if all(r[3] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
