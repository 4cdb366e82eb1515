"""One writer per data directory: a lock file held while the derived stores (chroma, BM25) are written.

chroma's embedded store is not safe with two processes writing it, and two syncs racing could each drop
what the other wrote. The lock is `flock` on `<data_dir>/.write.lock`: the kernel releases it when the
holder dies, so a killed ingest never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ..errors import StoreError

LOCK_NAME = ".write.lock"


class WriteLock:
    """An exclusive, process-wide lock on one data directory's stores."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; never waits."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the lock; StoreError naming the problem when it stays taken."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"another scenerec process is writing to {self.path.parent} (ingest or repair); "
                    "try again when it has finished"
                )
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
