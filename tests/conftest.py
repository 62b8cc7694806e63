"""Shared pytest set-up for tlkit's suite."""
from __future__ import annotations

import os
from pathlib import Path

# Notebooks under tests/notebooks are fixtures that the browser and nbgrader tests copy and run
# themselves; nbval must not collect them a second time.
collect_ignore_glob = ["notebooks/*"]

# CI and `make test` use the classroom mirror beside the checkout; so does a bare `pytest`.
_shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if _shared.is_dir():
    os.environ.setdefault("TLKIT_MIRROR", str(_shared))
