"""Process boundaries from DESIGN.md: the control plane and dashboard import no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONTROL_PLANE_MODULES = [
    "backend.app",
    "backend.db.migrate",
    "backend.api.routes.dashboard_pages",
    "borealis.wire",
    "borealis.tracebus",
    "borealis.domains",
    "appliance.cli",
    "appliance.supervisor",
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


ENGINE_MODULES = sorted(
    f"worker.engine.{path.stem}"
    for path in (ROOT / "worker" / "engine").glob("*.py")
    if path.stem != "__init__"
)


def test_engine_imports_no_service_stack() -> None:
    """Every engine module, so a new one cannot bring HTTP, Redis or a database in unnoticed."""
    assert "worker.engine.engine" in ENGINE_MODULES
    code = (
        f"import sys\nfor m in {ENGINE_MODULES!r}: __import__(m)\n"
        "bad = sorted(m for m in ('fastapi', 'redis', 'sqlalchemy', 'httpx', 'celery') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
