"""tlkit's in-memory caches: bounded, thread-safe, and keyed by what the data really contains.

The decoded images of ``fit`` (``tlkit._batches``) and the extracted features
(``tlkit.features``, ``tlkit.advisor``) are kept in :class:`LRUCache` objects: the widgets run
training in background threads, so every cache has a lock and a size limit.
:func:`content_key` names a dataset by the bytes of its files, not their paths and dates.

Example:
    >>> c = LRUCache(max_items=2)
    >>> c.put("a", 1); c.put("b", 2); c.put("c", 3)
    >>> c.get("a") is None, c.get("c")
    (True, 3)
"""
from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable

__all__ = ["LRUCache", "content_key", "clear_all"]

_ALL_CACHES: "weakref.WeakSet[LRUCache]" = weakref.WeakSet()


def _file_digest(path: Any) -> str:
    """A content hash of one file, computed once per (path, size, mtime, ctime, inode).

    The ctime is part of the memo because ``cp -p``, ``rsync -a`` and unzip restore the mtime
    but cannot restore the ctime: a same-size edit is always noticed.
    """
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    found = FILE_DIGESTS.get(memo)
    if found is None:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        found = h.hexdigest()
        FILE_DIGESTS.put(memo, found)
    return found


def content_key(dataset: Any) -> str | None:
    """The dataset's ``key`` plus a hash of its image files' bytes (None: the dataset cannot be cached).

    tlkit's caches (decoded images, features) use it, so an image edited in place, even with
    its size and mtime preserved, gives new results.
    """
    key = getattr(dataset, "key", None)
    if key is None:
        return None
    paths = getattr(dataset, "paths", None)
    if not paths:
        return str(key)
    h = hashlib.blake2b(digest_size=12)
    for p in paths:
        h.update(_file_digest(p).encode())
    return f"{key}/files-{h.hexdigest()}"


class LRUCache:
    """A thread-safe mapping that forgets the least recently used entries beyond ``max_items``
    (and beyond ``max_bytes`` when ``size`` says how big an entry is).

    >>> c = LRUCache(max_items=2)
    >>> c.put("a", 1); c.put("b", 2); c.put("c", 3)
    >>> c.get("a") is None, c.get("c")
    (True, 3)
    """

    def __init__(self, max_items: int = 64, max_bytes: int | None = None,
                 size: Callable[[Any], int] | None = None):
        self.max_items, self.max_bytes, self._size = max_items, max_bytes, size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        _ALL_CACHES.add(self)

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
            if self.max_bytes is not None and self._size is not None:
                while len(self._items) > 1 and sum(map(self._size, self._items.values())) > self.max_bytes:
                    self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def clear_all() -> None:
    """Empty every tlkit cache in this process (decoded images, features, stage outputs)."""
    for cache in list(_ALL_CACHES):
        cache.clear()


FILE_DIGESTS = LRUCache(max_items=200_000)
"""Content hash of each file version seen (by path, size, mtime, ctime and inode): about 200 bytes each."""
