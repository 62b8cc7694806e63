"""The ``tlkit`` command line: ``tlkit doctor`` tells what works on this machine.

Example:
    $ tlkit doctor
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


def doctor(network: bool = True) -> str:
    """A report of versions, device, usable backbones, caches and network, as text."""
    import torch
    import torchvision
    import timm

    from . import __version__
    from .backbones import backbone_info, list_backbones, weights_status
    from .devices import default_device
    from .download import cache_dir, mirror

    lines = [f"tlkit {__version__}",
             f"Python {platform.python_version()} ({sys.executable})",
             f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}"]
    dev, why = default_device()
    lines.append(f"device: {dev} - {why}")
    lines.append("backbones:")
    for name in list_backbones():
        status = weights_status(name)
        info = backbone_info(name)
        where = info.weights_path or ""
        lines.append(f"  {name:<20} {status:<16} {where}")
    lines.append("  timm:<name>          any timm model, through timm's own download and cache")
    from . import datasets

    lines.append("datasets:")
    for name in datasets.list_datasets():
        lines.append(f"  {name:<20} {datasets.status(name)}")
    lines.append(f"data cache:     {cache_dir('data')}  (TLKIT_DATA)")
    lines.append(f"feature cache:  {cache_dir('features')}  (TLKIT_CACHE)")
    lines.append(f"weights cache:  {torch.hub.get_dir()}/checkpoints  (TORCH_HOME)")
    lines.append(f"mirror:         {mirror() or 'none'}  (TLKIT_MIRROR)")
    lines.append(f"network:        {_network_reachable() if network else 'not checked (--no-network)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlkit", description="tlkit: transfer learning, by experiment.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="versions, device, usable backbones, caches and network")
    p.add_argument("--no-network", action="store_true", help="skip the network check")
    _add_classroom_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        print(doctor(network=not args.no_network))
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
    p.add_argument("--data", help="shared, pre-warmed data cache (default: $TLKIT_DATA)")
    p.add_argument("--cache", help="shared, pre-warmed feature cache (default: $TLKIT_CACHE)")
    p = sub.add_parser("warm-cache", help="fill the shared data cache for the course before students start")
    p.add_argument("--datasets", nargs="+", help="dataset names (default: those the lessons in course/source load)")
    p.add_argument("--course", default="course", help="the course folder (default: course)")


def _run_classroom_command(args) -> int:
    from .classroom import Limits, autograde, warm_cache
    from .errors import TlkitError

    try:
        if args.command == "warm-cache":
            results = warm_cache(args.datasets, course=args.course)
            return 0 if all(r.startswith("ready") for r in results.values()) else 1
        autograde(args.course, args.lesson, workers=args.workers, scheduler=args.scheduler,
                           force=args.force, limits=Limits(args.timeout, args.memory, args.threads),
                           students=args.student, data_dir=args.data, cache_dir=args.cache)
    except TlkitError as exc:
        print(f"tlkit {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0  # the run finished; each submission's status is in the report


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
