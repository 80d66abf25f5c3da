"""Whole-file reads of Parquet files kept in memory while the file is unchanged, for long-lived
readers of the candle store (the live stage reads the same files many times)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import polars as pl


class ReadCache:
    """Whole-file reads kept while the file is unchanged (same inode, size and mtime: a write is
    an atomic replace, so a new version is a new inode), least recently used first out of a byte
    budget. For long-lived readers that read the same files many times (the live stage)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[Path, tuple[tuple[int, int, int], pl.DataFrame, int]] = (
            OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    def read(self, path: Path, load: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        # The signature is taken before the read: a file replaced in between is read again
        # next time (its new signature misses), never served stale.
        st = path.stat()
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._frames.get(path)
            if hit is not None and hit[0] == signature:
                self._frames.move_to_end(path)
                return hit[1]
        frame = load()
        size = int(frame.estimated_size())
        with self._lock:
            old = self._frames.pop(path, None)
            self._bytes -= old[2] if old else 0
            if size <= self.max_bytes:
                self._frames[path] = (signature, frame, size)
                self._bytes += size
            while self._bytes > self.max_bytes:
                self._bytes -= self._frames.popitem(last=False)[1][2]
        return frame
