"""The kernel cache keeps a few builds, not one per source version ever built (any CPU: no build here)."""

from __future__ import annotations

import os
from pathlib import Path

from worker.engine import native


def test_old_builds_are_pruned_to_the_newest_few(tmp_path: Path) -> None:
    builds = [tmp_path / f"skinny-{i:016x}.so" for i in range(native.KEEP_BUILDS + 3)]
    for age, build in enumerate(builds):
        build.write_bytes(b"\0")
        os.utime(build, (1_000_000 - age, 1_000_000 - age))  # builds[0] is the newest
    other = tmp_path / "notes.txt"
    other.write_text("not a build")
    native._prune(tmp_path)
    assert sorted(tmp_path.glob("skinny-*.so")) == sorted(builds[: native.KEEP_BUILDS])
    assert other.exists()
