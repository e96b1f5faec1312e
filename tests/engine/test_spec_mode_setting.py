"""``BOREALIS_SPEC_MODE``: the engine a worker builds speculates as configured, off included."""

from __future__ import annotations

from pathlib import Path

import pytest

from borealis.settings import Settings
from tests.engine.helpers import greedy_request, run_all
from tests.engine.test_engine_greedy import prompts
from worker.engine.engine import SpecEngine
from worker.inference.engine_factory import build_engine


def served(tiny_dir: Path, mode: str) -> tuple[dict[str, list[int]], int]:
    settings = Settings(spec_mode=mode, redis_url="", max_batch=2)  # type: ignore[arg-type]
    engine = build_engine(settings.serving, tiny_dir, settings.home).engine
    assert isinstance(engine, SpecEngine) and engine.config.spec.mode == mode
    requests = [greedy_request(f"r{i}", p, 16) for i, p in enumerate(prompts(3, seed=5))]
    outputs, stats = run_all(engine, requests)
    return outputs, sum(s.num_drafts for s in stats.values())


@pytest.mark.parametrize("mode", ["tree", "chain"])
def test_speculation_off_decodes_the_same_tokens_with_no_proposals(tiny_dir: Path, mode: str) -> None:
    plain, plain_drafts = served(tiny_dir, "off")
    spec, spec_drafts = served(tiny_dir, mode)
    assert plain == spec
    assert plain_drafts == 0 and spec_drafts > 0
