"""Autograde every submission of a lesson with N parallel workers, on nbgrader.

nbgrader grades one submission after another and its SQLite gradebook is not safe for several
processes (nbgrader #174). The approach its maintainers give (#174, #1424): run ``nbgrader
autograde`` in separate processes, each with its own gradebook, and merge the gradebooks at the
end. :func:`autograde` does that:

1. it reads the course like nbgrader does (``nbgrader_config.py`` in ``course``), skips
   submissions already graded (same files, timestamp not newer) unless ``force``, and makes one
   gradebook holding only this lesson (no student);
2. each submission becomes a :class:`Job` carrying its files and that gradebook, so it can run
   here (``workers`` threads, each driving one ``nbgrader autograde`` process at a time) or on a
   ``dask.distributed`` cluster (``scheduler``), where no shared file system is needed;
3. :func:`grade_submission` grades one job in a private scratch course: nbgrader's own
   ``autograde`` command, with its kernel in the sandbox (:mod:`tlkit.classroom.sandbox`) and
   nbgrader's ``Execute`` swapped for :class:`~tlkit.classroom.execute.SandboxedExecute` (a time
   budget for the notebook; a dead kernel still leaves the tests that ran scored);
4. the results are merged into the course gradebook by this process alone (a single writer), the
   autograded notebooks land in ``autograded/`` (with a first cell telling the student what the
   review found, which nbgrader's feedback shows), and a report is written to
   ``reports/<lesson>/`` (:mod:`tlkit.classroom.report`).

Example:
    >>> from tlkit.classroom import autograde
    >>> report = autograde("course", "02-feature-extraction", workers=2)  # doctest: +SKIP
    >>> print(report.table())                                               # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ArgumentError
from .report import MARKER, Report, Result
from .sandbox import PACKAGE_ROOT, Isolation, kernel_settings, probe, sandbox_user, write_kernelspec
from .scan import scan_notebook

__all__ = ["Limits", "Job", "autograde", "grade_submission", "find_submissions"]

GRACE = 120.0  # seconds beyond the notebook's budget for kernel start, sanitizing and saving

_CONFIG = '''# Written by tlkit autograde for one submission: the course's config, then these overrides.
import os
c = get_config()  # noqa: F821
if os.path.exists("course_config.py"):
    load_subconfig("course_config.py")  # noqa: F821
from nbgrader.converters.autograde import Autograde
from nbgrader.preprocessors import Execute
from tlkit.classroom.execute import SandboxedExecute

c.CourseDirectory.root = {course!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = {autograded!r}
c.CourseDirectory.db_url = {db_url!r}
c.Autograde.create_student = True
c.Autograde.autograde_preprocessors = [
    SandboxedExecute if p is Execute else p
    for p in Autograde.class_traits()["autograde_preprocessors"].default()]
c.Execute.kernel_name = "tlkit-sandbox"
c.SandboxedExecute.budget = {budget!r}
c.SandboxedExecute.status_file = {status!r}
c.SandboxedExecute.skip_ungraded_tail = {skip!r}
c.KernelManager.transport = "ipc"
c.KernelManager.ip = {ip!r}
'''


@dataclass
class Limits:
    """What one submission may use: wall-clock seconds for the whole notebook (nbgrader's per-cell
    ``Execute.timeout`` still applies inside it), memory in GB (private writable memory, RLIMIT_DATA), CPU threads."""

    timeout: float = 900.0
    memory_gb: float = 4.0
    threads: int = 1

    def __post_init__(self):
        for name in ("timeout", "memory_gb", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ArgumentError(f"Limits({name}={value!r}): expected a positive number")


@dataclass
class Job:
    """One submission to grade, self-contained (it can travel to a Dask worker)."""

    lesson: str
    student: str
    payload: bytes                    # tar: course_config.py, gradebook.db, source/, submitted/
    fingerprint: str
    timestamp: str | None
    limits: Limits
    isolation: dict
    hide: list[str] = field(default_factory=list)
    readonly: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    scratch: str | None = None
    run_all: bool = False             # also the cells after the last graded cell (execute.ungraded_tail)


# --------------------------------------------------------------------------- the course side

def _course(root: Path):
    """nbgrader's CourseDirectory for the course in ``root``, and the loaded config."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config_file = root / "nbgrader_config.py"
    if not config_file.is_file():
        raise ArgumentError(f"course={str(root)!r}: no nbgrader_config.py there; give the course folder "
                            "(the one you run nbgrader in), e.g. --course course/")
    config = PyFileConfigLoader(config_file.name, path=str(root)).load_config()
    coursedir = CourseDirectory(config=config)
    if not config.CourseDirectory.get("root"):
        coursedir.root = str(root)
    return coursedir, config


def _tar(files: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, path in sorted(files.items()):
            tar.add(path, arcname=name, recursive=False)
    return buf.getvalue()


def _untar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def _files(folder: Path, prefix: str, skip_notebooks: bool = False) -> dict[str, Path]:
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if ".ipynb_checkpoints" in rel.parts or MARKER in rel.parts or (skip_notebooks and path.suffix == ".ipynb"):
            continue
        if path.is_file():
            out[f"{prefix}/{rel.as_posix()}"] = path
    return out


def find_submissions(coursedir, lesson: str) -> dict[str, Path]:
    """``{student: folder}`` for every ``submitted/<student>/<lesson>/`` holding a notebook."""
    base = Path(coursedir.format_path(coursedir.submitted_directory, ".", "."))
    return {p.parent.name: p for p in sorted(base.glob(f"*/{lesson}")) if any(p.glob("*.ipynb"))}


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for name, path in _files(folder, ".").items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _timestamp(folder: Path) -> str | None:
    path = folder / "timestamp.txt"
    return path.read_text().strip() or None if path.is_file() else None


def _graded(gb, lesson: str, student: str, folder: Path, autograded: Path, fingerprint: str) -> bool:
    """Already graded: in the gradebook, not older than the submission, same files as then."""
    from nbgrader.api import MissingEntry
    from nbgrader.utils import parse_utc

    marker = autograded / MARKER
    if not marker.is_file():
        return False
    try:
        submission = gb.find_submission(lesson, student)
    except MissingEntry:
        return False
    stamp = _timestamp(folder)
    if stamp and (submission.timestamp is None or submission.timestamp < parse_utc(stamp).replace(tzinfo=None)):
        return False
    return json.loads(marker.read_text()).get("fingerprint") == fingerprint


def _template_gradebook(db_url: str, lesson: str, dest: Path) -> bytes:
    """A copy of the course gradebook with this lesson only and no student."""
    from nbgrader.api import Gradebook, MissingEntry

    if not db_url.startswith("sqlite:///"):
        raise ArgumentError(f"the course gradebook is {db_url!r}; tlkit autograde merges into a SQLite "
                            "gradebook only (nbgrader's default)")
    source = Path(db_url[len("sqlite:///"):])
    if not source.is_file():
        raise ArgumentError(f"no gradebook at {source}: run `nbgrader generate_assignment {lesson}` first")
    shutil.copy(source, dest)
    with Gradebook(f"sqlite:///{dest}") as gb:
        try:
            gb.find_assignment(lesson)
        except MissingEntry:
            raise ArgumentError(f"lesson {lesson!r} is not in the gradebook {source}: run "
                                f"`nbgrader generate_assignment {lesson}` first") from None
        for student in [s.id for s in gb.students]:
            gb.remove_student(student)
        for name in [a.name for a in gb.assignments if a.name != lesson]:
            gb.remove_assignment(name)
    with sqlite3.connect(dest) as db:
        db.execute("VACUUM")
    return dest.read_bytes()


# --------------------------------------------------------------------------- the worker side

def _wait(proc: subprocess.Popen, timeout: float) -> tuple[float, bool]:
    """Wait for ``proc`` (kill its process group after ``timeout`` s); return its CPU seconds
    (with the kernel's, which it waited for) and whether it was killed."""
    deadline, killed = time.monotonic() + timeout, False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, killed
        if time.monotonic() > deadline and not killed:
            os.killpg(proc.pid, 9)
            killed = True
        time.sleep(0.1)


def _read_gradebook(path: Path, lesson: str, student: str) -> dict[str, tuple[float, float, bool]]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{path}") as gb:
        try:
            submission = gb.find_submission(lesson, student)
        except MissingEntry:
            return {}
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                scores[grade.name] = (float(grade.score), float(grade.max_score), bool(grade.needs_manual_grade))
    return scores


def _errors(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error" and o.get("ename") != "NotRun":
                    gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                    where = f"cell {i + 1}" + (f" ({gid})" if gid else "")
                    out.append(f"{where}: {o.get('ename')}: {str(o.get('evalue', ''))[:150]}")
    return out


def grade_submission(job: Job) -> Result:
    """Grade one submission with nbgrader in a private scratch course, its kernel sandboxed."""
    start = time.monotonic()
    isolation = Isolation(**job.isolation)
    scratch = Path(tempfile.mkdtemp(prefix="tlkit-ag-", dir=job.scratch))
    try:
        os.chmod(scratch, 0o711)
        course, box = scratch / "c", scratch / "b"
        course.mkdir(mode=0o700)
        box.mkdir(mode=0o700)
        _untar(job.payload, course)
        status_file = course / "status.json"
        (course / "nbgrader_config.py").write_text(_CONFIG.format(
            course=str(course), autograded=str(box / "autograded"), db_url=f"sqlite:///{course / 'gradebook.db'}",
            budget=float(job.limits.timeout), status=str(status_file), skip=not job.run_all, ip=str(box / "run" / "k")))
        env = dict(os.environ)
        env.update(JUPYTER_PATH=str(course / "jupyter"), JUPYTER_RUNTIME_DIR=str(course / "runtime"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p))
        threads = str(job.limits.threads)
        kernel_env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": env["PYTHONPATH"],
                      "PATH": env["PATH"], **job.env}
        cpu_limit = int(job.limits.timeout * job.limits.threads + 30)
        with sandbox_user() if isolation.own_user else nullcontext((None, None)) as (uid, _):
            settings = kernel_settings(box, isolation, uid, int(job.limits.memory_gb * (1 << 30)), cpu_limit,
                                       job.hide, job.readonly, kernel_env)
            write_kernelspec(course / "jupyter", settings)
            with open(course / "nbgrader.log", "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nbgrader", "autograde", job.lesson, f"--student={job.student}"],
                    cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                cpu, killed = _wait(proc, job.limits.timeout + GRACE)
        log_text = (course / "nbgrader.log").read_text(errors="replace")
        record = json.loads(status_file.read_text()) if status_file.is_file() else {}
        status, message = record.get("status", "ok"), record.get("message", "")
        if killed:
            where = f" (it was running cell {record['cell']})" if record.get("cell") else ""
            status, message = "timeout", f"killed after {job.limits.timeout + GRACE:.0f} s{where}"
        elif not status_file.is_file() or "Exception while loading config file" in log_text:
            # nbgrader went on without our config: the kernel was not sandboxed, so nothing counts
            status, message = "crashed", "the sandbox was not used (see the log); grades discarded"
        elif status == "running":
            status, message = "crashed", f"nbgrader stopped while cell {record.get('cell')} ran"
        elif proc.returncode != 0 and status == "ok":
            status = "crashed"
            message = f"nbgrader autograde failed (exit {proc.returncode}); last log lines: " + \
                " | ".join(log_text.strip().splitlines()[-3:])
        out = box / "autograded" / job.student / job.lesson
        if message.startswith("the sandbox was not used"):  # its grades are not read
            out = scratch / "nothing"
        submitted = course / "submitted" / job.student / job.lesson
        findings = [f for nb in sorted(submitted.glob("*.ipynb")) for f in scan_notebook(nb)]
        scores = _read_gradebook(course / "gradebook.db", job.lesson, job.student) if out.is_dir() else {}
        return Result(
            student=job.student, lesson=job.lesson, status=status, message=message, scores=scores,
            errors=_errors(out) if out.is_dir() else [], findings=findings,
            seconds=time.monotonic() - start, cpu_seconds=cpu, fingerprint=job.fingerprint,
            timestamp=job.timestamp, log=log_text[-4000:],
            gradebook=(course / "gradebook.db").read_bytes() if scores else None,
            autograded=_tar(_files(out, ".")) if out.is_dir() else None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- the whole lesson

def _jobs(coursedir, config, lesson, students, force, limits, isolation, env, readonly, scratch, say, run_all=False):
    from nbgrader.api import Gradebook

    found = find_submissions(coursedir, lesson)
    if students:
        missing = sorted(set(students) - set(found))
        if missing:
            raise ArgumentError(f"no submission of {lesson!r} for {missing} under "
                                f"{coursedir.format_path(coursedir.submitted_directory, '.', '.')}")
        found = {s: found[s] for s in students}
    root = Path(coursedir.root)
    hide = [coursedir.format_path(d, ".", ".") for d in (coursedir.source_directory, coursedir.submitted_directory,
                                                       coursedir.autograded_directory, coursedir.feedback_directory)]
    hide.append(coursedir.db_url[len("sqlite:///"):])
    exchange = config.get("Exchange", {}).get("root")
    if exchange:
        hide.append(exchange)
    hide = [str(Path(p).resolve()) for p in hide if Path(p).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "gradebook.db"
        _template_gradebook(coursedir.db_url, lesson, template)
        common = {"gradebook.db": template}
        if (root / "nbgrader_config.py").is_file():
            common["course_config.py"] = root / "nbgrader_config.py"
        common.update(_files(Path(coursedir.format_path(coursedir.source_directory, ".", lesson)),
                             f"source/{lesson}", skip_notebooks=True))
        jobs, skipped = [], []
        with Gradebook(coursedir.db_url) as gb:
            for student, folder in found.items():
                fingerprint = _fingerprint(folder)
                autograded = Path(coursedir.format_path(coursedir.autograded_directory, student, lesson))
                if not force and _graded(gb, lesson, student, folder, autograded, fingerprint):
                    skipped.append(student)
                    continue
                files = dict(common, **_files(folder, f"submitted/{student}/{lesson}"))
                jobs.append(Job(lesson, student, _tar(files), fingerprint, _timestamp(folder), limits,
                                asdict(isolation), hide, readonly, env, scratch, run_all))
    if skipped:
        say(f"skipping {len(skipped)} already graded submission(s) (use --force to regrade): "
            + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    return jobs


def _caches(data_dir, cache_dir, say) -> tuple[dict[str, str], list[str]]:
    """The kernel's TLKIT_DATA/TLKIT_CACHE (the shared warm caches) and the paths to mount read-only."""
    env, readonly = {}, []
    for var, value in (("TLKIT_DATA", data_dir), ("TLKIT_CACHE", cache_dir)):
        value = value or os.environ.get(var)
        if not value:
            say(f"shared cache: {var} not set: each submission starts with an empty private cache "
                "(run `tlkit warm-cache` and pass --data/--cache)")
            continue
        path = Path(value).resolve()
        env[var] = str(path)
        readonly.append(str(path))
        blocked = [p for p in [path, *path.parents] if p.exists() and not os.stat(p).st_mode & 0o001]
        note = f" - NOT readable by the sandbox user: {blocked[0]} is not world-traversable (chmod o+x)" \
            if blocked and os.geteuid() == 0 else ""
        say(f"shared cache: {var}={path} (read-only for student code){note}")
    return env, readonly


def autograde(course: str | os.PathLike, lesson: str, workers: int = 2, scheduler: str | None = None,
              force: bool = False, limits: Limits | None = None, students: list[str] | None = None,
              data_dir: str | None = None, cache_dir: str | None = None, scratch: str | None = None,
              progress: bool = True, run_all: bool = False) -> Report:
    """Autograde every submission of ``lesson`` in ``course``; merge into its gradebook; report.

    ``workers`` submissions are graded at once on this machine, or, with ``scheduler``
    (``"tcp://host:8786"``), on that Dask cluster. ``data_dir``/``cache_dir`` are the shared,
    pre-warmed caches (default: ``TLKIT_DATA``/``TLKIT_CACHE``), read-only for student code.
    The code cells after the last graded cell are not run unless ``run_all`` (no score depends on
    them; see :func:`tlkit.classroom.execute.ungraded_tail`).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ArgumentError(f"workers={workers!r}: expected a whole number of parallel workers, at least 1")
    limits = limits or Limits()
    say = print if progress else (lambda *a, **k: None)
    root = Path(course).resolve()
    coursedir, config = _course(root)
    isolation = probe()
    say(isolation.describe())
    env, readonly = _caches(data_dir, cache_dir, say)
    jobs = _jobs(coursedir, config, lesson, students, force, limits, isolation, env, readonly, scratch, say, run_all)
    report = Report(lesson=lesson, root=root)
    if not jobs:
        say(f"nothing to grade for {lesson}")
        return report
    say(f"grading {len(jobs)} submission(s) of {lesson} with "
        + (f"the Dask cluster at {scheduler}" if scheduler else f"{workers} worker(s)")
        + f"; at most {limits.timeout:.0f} s and {limits.memory_gb:g} GB each")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), unit="submission", disable=not progress, desc=lesson)
    start = time.monotonic()
    try:
        for result in _run(jobs, workers, scheduler):
            report.merge(result, coursedir)
            bar.set_postfix_str(f"{result.student}: {result.status}")
            bar.update()
    finally:
        bar.close()
    report.wall_seconds = time.monotonic() - start
    report.write()
    say(report.table())
    say(f"report: {report.folder / 'grades.csv'} and {report.folder / 'report.md'}")
    return report


def _run(jobs: list[Job], workers: int, scheduler: str | None):
    """Results as they finish, from local workers or a Dask cluster."""
    if scheduler:
        try:
            from distributed import Client, as_completed as dask_completed
        except ImportError:
            raise ArgumentError("--scheduler needs dask.distributed: pip install 'tlkit[classroom]'") from None
        with Client(scheduler) as client:
            futures = [client.submit(grade_submission, job, pure=False, key=f"autograde-{job.lesson}-{job.student}-"
                                     f"{job.fingerprint[:8]}") for job in jobs]
            for future in dask_completed(futures):
                yield future.result()
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(grade_submission, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
