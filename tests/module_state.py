"""Put modules back as they were after a test that patches them the way a student's cell would."""
from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Iterator, Sequence


@contextmanager
def restored(modules: Sequence[ModuleType]) -> Iterator[None]:
    """On exit, remove attributes added to ``modules`` and put back every replaced one."""
    saved = [dict(vars(m)) for m in modules]
    try:
        yield
    finally:
        for module, before in zip(modules, saved):
            for name in set(vars(module)) - set(before):
                delattr(module, name)
            for name, value in before.items():
                if vars(module).get(name) is not value:
                    setattr(module, name, value)
