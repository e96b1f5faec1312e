"""What this machine's CPU can do, read torch-free (settings resolve ``auto`` choices from it)."""

from __future__ import annotations

from pathlib import Path


def bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is emulated, slowly."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
