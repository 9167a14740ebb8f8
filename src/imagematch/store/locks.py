"""A lock shared by every process that opens the same library on one machine's disk (fcntl.flock).

Threads of one process share the same lock object (one per file), which is re-entrant within a thread, so a
guarded step may call another guarded step. The operating system drops a process's lock when it dies, even
under kill -9, so a crash never leaves the library locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class FileLock:
    """Exclusive across processes (flock on `path`) and across threads (an RLock); re-entrant in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._threads.acquire()
        if self._depth == 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                self._threads.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._threads.release()


_locks: dict[str, FileLock] = {}
_locks_guard = threading.Lock()


def file_lock(path: Path) -> FileLock:
    """The one FileLock of this process for `path` (two objects for one file would block each other in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = FileLock(Path(key))
        return lock
