"""The trace bus is torch-free: the inference worker's exporter and any trainer-side tool can use it."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["codec", "config", "consumer", "domain", "drift", "exporter", "replay"]


def test_trace_bus_imports_no_ml_stack() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}: importlib.import_module('worker.traces.' + m)\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'worker.engine') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
