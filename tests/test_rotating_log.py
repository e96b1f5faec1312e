"""Child process logs rotate by size: a long-running appliance never fills its disk."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from borealis.processes import Child


def test_a_chatty_child_fills_rotated_files_bounded_in_size_and_count(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(3000):\n    sys.stdout.write(f'line {i:05d} ' + 'x' * 80 + '\\n')\n"
    log = tmp_path / "logs" / "chatty.log"
    child = Child("chatty", [sys.executable, "-c", script], log, log_max_bytes=20_000, log_backups=3)
    child.start({})
    assert child.process is not None and child.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "line 02999" not in log.read_text():
        time.sleep(0.05)  # the pump thread copies what the pipe still holds
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["chatty.log", "chatty.log.1", "chatty.log.2", "chatty.log.3"]
    assert all((log.parent / name).stat().st_size <= 20_000 for name in files)
    assert "line 02999" in log.read_text()  # the newest lines are in the live file
    assert "line 00000" not in "".join((log.parent / name).read_text() for name in files)  # oldest dropped
    rotated = (log.parent / "chatty.log.1").read_text().splitlines()
    current = log.read_text().splitlines()
    assert int(rotated[-1].split()[1]) + 1 == int(current[0].split()[1])  # no line lost at the seam
