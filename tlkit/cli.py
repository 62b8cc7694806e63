"""The ``tlkit`` command line: ``tlkit doctor`` tells what works on this machine;
``tlkit lessons DIR`` writes the course's lessons (student versions) into DIR.

Example:
    $ tlkit doctor
    $ tlkit lessons my-course
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import sys

__all__ = ["main", "doctor"]


def _network_reachable(host: str = "download.pytorch.org", port: int = 443, timeout: float = 3.0) -> str:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return f"yes ({host} answers)"
    except OSError as exc:
        return f"no ({host}: {exc.__class__.__name__}: {exc}); bundled backbones and the mirror still work"


def _problem(exc: BaseException) -> str:
    return f"PROBLEM: {type(exc).__name__}: {exc}"


def _checked(label: str, compute) -> str:
    """``label`` and what ``compute()`` says; a problem it raises becomes the line, not a traceback."""
    try:
        return f"{label}{compute()}"
    except Exception as exc:  # noqa: BLE001 - the doctor reports every problem and carries on
        return f"{label}{_problem(exc)}"


def _cache_line(kind: str, variable: str) -> str:
    from .download import cache_dir
    from .errors import DatasetError

    try:
        return f"{cache_dir(kind)}  ({variable})"
    except (OSError, DatasetError) as exc:
        where = os.environ.get(variable) or "the user's cache folder"
        if os.environ.get(variable) and os.path.isfile(os.path.expanduser(where)):
            where += " is a file, not a folder"
        return (f"PROBLEM: cannot create the {kind} cache ({where}): {type(exc).__name__}: {exc}. "
                f"What to do: point {variable} at a writable folder, e.g. export {variable}=/tmp/tlkit-{kind}")


def doctor(network: bool = True) -> str:
    """A report of versions, device, usable backbones, caches and network, as text.

    It never stops at the first problem: a cache folder that cannot be created, a bad
    ``TLKIT_DEVICE`` or a missing package each become a ``PROBLEM:`` line saying what to do.
    """
    import warnings

    import torch
    import torchvision
    import timm

    from . import __version__
    from .backbones import backbone_info, list_backbones, weights_status
    from .devices import default_device
    from .download import mirror

    lines = [f"tlkit {__version__}",
             f"Python {platform.python_version()} ({sys.executable})",
             f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}"]

    def device_line() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fallback is said on the line itself
            dev, why = default_device()
        return f"{dev} - {why}"

    lines.append(_checked("device: ", device_line))
    lines.append("backbones:")
    for name in list_backbones():
        lines.append(_checked(f"  {name:<20} ",
                              lambda: f"{weights_status(name):<16} {backbone_info(name).weights_path or ''}"))
    lines.append("  timm:<name>          any timm model, through timm's own download and cache")
    lines.append("datasets:")
    try:
        from . import datasets

        names = datasets.list_datasets()
    except Exception as exc:  # noqa: BLE001
        names = []
        lines.append(f"  {_problem(exc)}")
    for name in names:
        try:
            lines.append(f"  {name:<20} {datasets.status(name)}")
        except OSError:
            lines.append(f"  {name:<20} unknown (see the data cache line)")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"  {name:<20} {_problem(exc)}")
    lines.append(f"data cache:     {_cache_line('data', 'TLKIT_DATA')}")
    lines.append(f"feature cache:  {_cache_line('features', 'TLKIT_CACHE')}")
    lines.append(_checked("weights cache:  ", lambda: f"{torch.hub.get_dir()}/checkpoints  (TORCH_HOME)"))
    lines.append(_checked("mirror:         ", lambda: f"{mirror() or 'none'}  (TLKIT_MIRROR)"))
    lines.append(f"network:        {_network_reachable() if network else 'not checked (--no-network)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlkit", description="tlkit: transfer learning, by experiment.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="versions, device, usable backbones, caches and network")
    p.add_argument("--no-network", action="store_true", help="skip the network check")
    # `tlkit lessons DIR`: the student versions of the lessons (tlkit.lessons).
    p = sub.add_parser("lessons", help="write the lessons (student versions, no solutions) into a folder")
    p.add_argument("folder", help="where to write them, one subfolder per lesson")
    p.add_argument("--overwrite", action="store_true", help="replace lessons already in the folder")
    _add_classroom_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        print(doctor(network=not args.no_network))
    elif args.command == "lessons":
        from .lessons import write_lessons

        written = write_lessons(args.folder, overwrite=args.overwrite)
        print(f"wrote {len(written)} lessons into {args.folder}; open them with: jupyter lab {args.folder}")
    elif args.command in ("autograde", "warm-cache"):
        return _run_classroom_command(args)
    return 0


# --- classroom commands (tlkit.classroom): `tlkit autograde`, `tlkit warm-cache` ---------------

def _add_classroom_commands(sub) -> None:
    p = sub.add_parser("autograde", help="autograde every submission of a lesson in parallel, sandboxed (nbgrader)")
    p.add_argument("lesson", help="the nbgrader assignment, e.g. 02-feature-extraction")
    p.add_argument("--course", default=".", help="the course folder with nbgrader_config.py (default: here)")
    p.add_argument("--workers", type=int, default=2, help="submissions graded at once on this machine (default 2)")
    p.add_argument("--scheduler", help="a dask.distributed scheduler address (tcp://host:8786) to grade on")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded")
    p.add_argument("--timeout", type=float, default=900, help="wall-clock seconds per submission (default 900)")
    p.add_argument("--memory", type=float, default=4, help="memory limit per submission in GB (default 4)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per submission's kernel (default 1)")
    p.add_argument("--student", action="append", help="grade only this student (repeatable)")
    p.add_argument("--run-all", action="store_true",
                   help="also run the cells after the last graded cell (skipped by default: no score depends on them)")
    p.add_argument("--data", help="shared, pre-warmed data cache (default: $TLKIT_DATA)")
    p.add_argument("--cache", help="shared, pre-warmed feature cache (default: $TLKIT_CACHE)")
    p = sub.add_parser("warm-cache", help="fill the shared data cache for the course before students start")
    p.add_argument("--datasets", nargs="+", help="dataset names (default: those the lessons in course/source load)")
    p.add_argument("--course", default="course", help="the course folder (default: course)")
    p.add_argument("--features", action="store_true",
                   help="also run each lesson's graded part once, so its extracted features are in the cache")
    p.add_argument("--lessons", nargs="+", help="with --features: these lessons (default: all in course/source)")


def _run_classroom_command(args) -> int:
    from .classroom import Limits, autograde, warm_cache, warm_features
    from .errors import TlkitError

    try:
        if args.command == "warm-cache":
            results = warm_cache(args.datasets, course=args.course)
            if args.features:
                results.update(warm_features(args.lessons, course=args.course))
            return 0 if all(r.startswith(("ready", "skipped")) for r in results.values()) else 1
        autograde(args.course, args.lesson, workers=args.workers, scheduler=args.scheduler,
                           force=args.force, limits=Limits(args.timeout, args.memory, args.threads),
                           students=args.student, data_dir=args.data, cache_dir=args.cache,
                           run_all=args.run_all)
    except TlkitError as exc:
        print(f"tlkit {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0  # the run finished; each submission's status is in the report


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
