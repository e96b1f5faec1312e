"""Prints the requirements of the GPU shape: SGLang as `borealis[sglang]` pins it, then Borealis's own
dependencies (with the given extras) less those SGLang 0.5.23 pins itself (torch with CUDA,
transformers, tokenizers; openai and sentencepiece for the dev extra), for one `pip install -r`. Used
by Dockerfile.gpu and `make test-gpu`.

    python scripts/gpu_requirements.py worker dev > requirements-gpu.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

SGLANG_PINS = ("torch", "transformers", "tokenizers", "openai", "sentencepiece")


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(d for extra in extras for d in optional[extra])]
    kept = [d for d in wanted if d.split("==")[0].split("[")[0] not in SGLANG_PINS]
    return [*optional["sglang"], *kept]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
