"""Process boundaries from DESIGN.md: the control plane and dashboard import no torch."""

from __future__ import annotations

import subprocess
import sys

CONTROL_PLANE_MODULES = [
    "backend.app",
    "backend.db.migrate",
    "dashboard.routes",
    "borealis.wire",
    "borealis.cli",
    "borealis.supervisor",
]


def test_control_plane_imports_no_ml_stack() -> None:
    code = (
        f"import sys\nfor m in {CONTROL_PLANE_MODULES!r}: __import__(m)\n"
        "from backend.app import create_app\ncreate_app()\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'worker.engine') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_engine_imports_no_service_stack() -> None:
    code = (
        "import sys, worker.engine.hf_plain, worker.engine.sampling\n"
        "bad = sorted(m for m in ('fastapi', 'redis', 'sqlalchemy', 'httpx', 'celery') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
