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
    # `tlkit lessons DIR`: the student versions of the lessons (tlkit.lessons).
    p = sub.add_parser("lessons", help="write the lessons (student versions, no solutions) into a folder")
    p.add_argument("folder", help="where to write them, one subfolder per lesson")
    p.add_argument("--overwrite", action="store_true", help="replace lessons already in the folder")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        print(doctor(network=not args.no_network))
    elif args.command == "lessons":
        from .lessons import write_lessons

        written = write_lessons(args.folder, overwrite=args.overwrite)
        print(f"wrote {len(written)} lessons into {args.folder}; open them with: jupyter lab {args.folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
