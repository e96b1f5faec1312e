"""Size-rotated log files for child processes: a long-running appliance never fills its disk.

Children write to a pipe; one thread per child copies what arrives into ``NAME.log``, which moves to
``NAME.log.1`` (and so on up to ``backups``) when it passes ``max_bytes``, as ``logrotate`` would.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class RotatingLog:
    def __init__(
        self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        """Append, rotating at a line end so that no file passes ``max_bytes`` (a line longer than a
        whole file is cut)."""
        while data:
            room = max(0, self.max_bytes - self._size)
            if len(data) <= room:
                cut = len(data)
            else:
                cut = data.rfind(b"\n", 0, room) + 1 or (room if self._size == 0 else 0)
            if cut:
                self._file.write(data[:cut])
                self._size += cut
                data = data[cut:]
            if data:
                self._rotate()
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._file.close()


def pump(stream: IO[bytes], log: RotatingLog) -> threading.Thread:
    """Copy ``stream`` into ``log`` on a daemon thread until the writer closes it."""

    def run() -> None:
        try:
            while chunk := os.read(stream.fileno(), 65536):  # returns what the pipe holds, at once
                log.write(chunk)
        finally:
            log.close()
            stream.close()

    thread = threading.Thread(target=run, name=f"log-{log.path.name}", daemon=True)
    thread.start()
    return thread
