"""The box each submission's kernel runs in, seen from the grader.

:func:`probe` finds out once what this machine lets the grader isolate and says so in words;
:func:`sandbox_user` lends a submission a user id of its own (root only) for as long as it runs;
:func:`kernel_settings` and :func:`write_kernelspec` describe the box to the launcher
(``_launch.py``), which jupyter_client starts in place of the kernel; :func:`kill_user` ends
whatever a submission left running.

What a submission gets, when the grader runs as root (CI does, a hub's grading account can):

* no network: a network namespace of its own (its loopback is down, so even 127.0.0.1 of the
  machine is unreachable);
* its own user id (61000 and up, one per submission running at the same time, no login, no
  passwd entry), so it can read, write and delete only its own copy of the submission, its
  private HOME and TMPDIR, and what is readable by everyone;
* a mount namespace in which the course's ``source/`` (solutions), ``submitted/``,
  ``autograded/``, ``feedback/``, the gradebook and the exchange are covered by empty, unreadable
  file systems, and the shared data and feature caches are mounted read-only;
* limits on memory (private writable memory, RLIMIT_DATA), CPU seconds, file size; no core files.

Without root, it uses a user namespace for the network and the mounts where the kernel allows
it; the kernel then runs as the instructor's own user (files the instructor can delete, it can
delete). :func:`probe` lists what is not isolated; ``tlkit autograde`` prints it at the start.

Example:
    >>> from tlkit.classroom.sandbox import probe
    >>> print(probe().describe())  # doctest: +SKIP
    sandbox: network: isolated (own network namespace) ...
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Isolation", "probe", "sandbox_user", "kill_user", "kernel_settings", "write_kernelspec",
           "KERNEL_NAME", "UID_BASE"]

KERNEL_NAME = "tlkit-sandbox"
UID_BASE, UID_SLOTS = 61000, 1000
LAUNCHER = Path(__file__).with_name("_launch.py")
_PROBE = ("import ctypes,sys; sys.exit(0 if ctypes.CDLL(None, use_errno=True).unshare({flags}) == 0 else 1)")
# The folder that holds the tlkit package (a kernel imports tlkit from there).
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

# Environment a kernel may inherit from the grader; everything else is set on purpose.
PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "NBGRADER_EXECUTION", "TLKIT_MIRROR",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_HOME", "JUPYTER_PLATFORM_DIRS")


def needed_paths() -> list[str]:
    """Folders a kernel must read: this Python (the venv and the installation it points to) and tlkit."""
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, PACKAGE_ROOT)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(paths)


def blocked_by(path: str) -> str | None:
    """The highest folder on the way to ``path`` that other users cannot enter (no ``o+x``), or None."""
    parts = Path(os.path.realpath(path)).parts
    for i in range(2, len(parts) + 1):
        folder = os.path.join(*parts[:i])
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def _can_unshare(flags: int) -> bool:
    try:
        return subprocess.run([sys.executable, "-c", _PROBE.format(flags=flags)], timeout=30,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Isolation:
    """What the sandbox can do on this machine; ``notes`` says what it cannot, in words."""

    root: bool
    network: bool            # a network namespace per kernel
    mounts: bool             # a mount namespace per kernel (hide solutions, read-only caches)
    own_user: bool           # a user id per kernel
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            "sandbox: network: " + ("isolated (own network namespace)" if self.network else "NOT isolated"),
            "sandbox: user: " + (f"one unprivileged user id per submission ({UID_BASE}+)" if self.own_user
                                 else f"NOT separated (kernels run as {pwd.getpwuid(os.getuid()).pw_name})"),
            "sandbox: solutions, other submissions, gradebook: " + (
                "hidden (own mount namespace)" if self.mounts else
                "protected by file permissions only" if self.own_user else "NOT hidden"),
            "sandbox: memory, CPU time, file size: limited (setrlimit); HOME and TMPDIR: private",
        ]
        return "\n".join(lines + [f"sandbox: note: {n}" for n in self.notes])


def probe() -> Isolation:
    """Find out what this machine lets the grader isolate (a second or so: two tiny processes)."""
    root = os.geteuid() == 0
    notes = []
    if root:
        net = _can_unshare(0x40000000)
        mounts = _can_unshare(0x00020000)
    else:
        net = _can_unshare(0x10000000 | 0x40000000)
        mounts = net and _can_unshare(0x10000000 | 0x00020000)
        notes.append("not running as root: student code runs as your own user and can read and delete "
                     "what you can outside the hidden course folders; grade as root (or a dedicated "
                     "grading account) on a shared server")
    if not net:
        notes.append("cannot create a network namespace here (no permission or user namespaces "
                     "disabled): student code HAS network access")
    if not mounts:
        notes.append("cannot create a mount namespace here: solutions and other submissions are "
                     "protected only by file permissions")
    own_user = root
    blocked = sorted({b for p in needed_paths() if (b := blocked_by(p))})
    if root and blocked:
        if mounts:
            notes.append(f"Python/tlkit sit under {', '.join(blocked)}, which other users cannot enter: inside "
                         "the sandbox that folder is replaced by an empty one holding only them, read-only")
        else:
            own_user = False
            notes.append(f"Python/tlkit sit under {', '.join(blocked)}, which other users cannot enter, and no "
                         "mount namespace is available: kernels run as root (install Python where others can read it)")
    return Isolation(root=root, network=net, mounts=mounts, own_user=own_user, notes=notes)


@contextlib.contextmanager
def sandbox_user(lock_dir: str | os.PathLike = "/run/tlkit-sandbox"):
    """A user id no one else is using, held (by a file lock) until the ``with`` block ends.

    Ids with a passwd entry are skipped. Yields ``(uid, gid)``; the gid is the same number.
    """
    Path(lock_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    for uid in range(UID_BASE, UID_BASE + UID_SLOTS):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        handle = open(Path(lock_dir) / f"{uid}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield uid, uid
        finally:
            kill_user(uid)
            handle.close()
        return
    raise RuntimeError(f"all {UID_SLOTS} sandbox user ids from {UID_BASE} are in use (lock files in {lock_dir})")


def kill_user(uid: int) -> None:
    """Kill every process of ``uid`` (what a submission left running), from a child that takes that id."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal, except this one
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def kernel_settings(box: Path, isolation: Isolation, uid: int | None, memory_bytes: int | None,
                    cpu_seconds: int | None, hide: list[str], readonly: list[str], env: dict[str, str]) -> dict:
    """The launcher's settings for one submission: its box (with ``home/``, ``tmp/``, ``run/``),
    what to hide and make read-only, the limits, and the kernel's whole environment."""
    for sub in ("home", "tmp", "run"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    kernel_env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    kernel_env.update(env)
    kernel_env.update(HOME=str(box / "home"), TMPDIR=str(box / "tmp"), USER="tlkit-sandbox",
                      LOGNAME="tlkit-sandbox", MPLCONFIGDIR=str(box / "home" / ".matplotlib"),
                      IPYTHONDIR=str(box / "home" / ".ipython"), JUPYTER_RUNTIME_DIR=str(box / "run"),
                      XDG_CACHE_HOME=str(box / "home" / ".cache"), PYTHONDONTWRITEBYTECODE="1")
    reach, covers = [], set()
    if isolation.own_user and isolation.mounts:
        for path, writable in [(p, False) for p in needed_paths() + list(readonly)]:
            cover = blocked_by(path)
            if cover:
                covers.add(cover)
                reach.append([os.path.realpath(path), writable])
    return {"box": str(box), "run": str(box / "run"), "uid": uid if isolation.own_user else None,
            "reach": reach, "covers": sorted(covers, key=len),
            "gid": uid if isolation.own_user else None, "network": isolation.network,
            "hide": hide if isolation.mounts else [], "readonly": readonly if isolation.mounts else [],
            "memory_bytes": memory_bytes, "cpu_seconds": cpu_seconds, "file_bytes": 4 << 30, "env": kernel_env}


def write_kernelspec(jupyter_dir: Path, settings: dict) -> Path:
    """Write ``settings.json`` and the ``tlkit-sandbox`` kernel spec under ``jupyter_dir/kernels``
    (point ``JUPYTER_PATH`` at ``jupyter_dir``). The kernel is this Python's ipykernel."""
    spec_dir = jupyter_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    settings_path = jupyter_dir / "settings.json"
    settings_path.write_text(json.dumps(settings, indent=1))
    spec = {"argv": [sys.executable, "-I", str(LAUNCHER), str(settings_path), "--",
                     sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tlkit sandbox)", "language": "python",
            "interrupt_mode": "signal", "metadata": {"debugger": False}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir
