"""The trace bus is torch-free: the inference worker's exporter and any trainer-side tool can use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "borealis.tracebus",
    *sorted(
        f"worker.traces.{p.stem}" for p in (ROOT / "worker" / "traces").glob("*.py") if p.stem != "__init__"
    ),
]


def test_trace_bus_imports_no_ml_stack() -> None:
    assert "worker.traces.consumer" in MODULES
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'worker.engine') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
