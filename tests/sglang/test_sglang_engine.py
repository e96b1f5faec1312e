"""A real ``sglang.Engine`` on CPU (SGLang's light install, ``make test-sglang``) in this process.

Target-only, because SGLang's speculative kernels need CUDA: greedy output identical to the CPU
engine's target-only decoding, token for token; weights moved through the swap path between requests
while traffic runs, with no failed request. SGLang's shutdown kills every child of its process, so
these run before anything starts a subprocess (``test_sglang_worker.py``, the embedded Redis).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from borealis.settings import Settings
from tests.sglang.requests import (
    MAX_NEW,
    Traffic,
    call_between_steps,
    generate,
    require_sglang,
    serving_sglang,
    tokens,
)
from worker.engine.llama import LlamaModel
from worker.inference.engine_factory import ServingEngine
from worker.inference.runner import EngineRunner
from worker.sglang.engine import SGLangEngine
from worker.sglang.serving import SGLangDrafts
from worker.sglang.session import TokenizerManagerSession
from worker.sglang.swap import DraftWeights, SGLangDraftSwapper

require_sglang()
pytestmark = [pytest.mark.slow, pytest.mark.sglang]
NORM = "model.norm.weight"  # the target's final norm, as SGLang's Llama loads it


@pytest.fixture(scope="module")
def serving(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EngineRunner, ServingEngine[Any]]]:
    home = tmp_path_factory.mktemp("sglang-home")
    settings = Settings(engine="sglang", sglang_device="cpu", home=home, threads=2, max_batch=4)
    with serving_sglang(settings, smollm2_dir) as served:
        yield served


def test_greedy_output_is_the_cpu_engines_target_only_output_token_for_token(
    serving: tuple[EngineRunner, Any],
    prompt_ids: list[list[int]],
    cpu_engine_outputs: list[list[int]],
    tokenizer: Any,
) -> None:
    runner, built = serving
    assert built.kind == "sglang" and "target-only" in built.fallback_reason and built.load_draft is None
    for i, (prompt, expected) in enumerate(zip(prompt_ids, cpu_engine_outputs, strict=True)):
        events = generate(runner, f"greedy-{i}", prompt, tokenizer.eos_token_id, MAX_NEW)
        assert tokens(events) == expected
        final = events[-1]
        assert final.finish_reason in ("length", "stop") and final.stats is not None
        assert final.stats.num_steps == 0 and final.trace == ()  # target-only: nothing speculated


def test_weights_move_through_the_swap_path_between_requests_with_no_failed_request(
    serving: tuple[EngineRunner, Any], prompt_ids: list[list[int]], tokenizer: Any, smollm2_dir: Path
) -> None:
    runner, built = serving
    engine: SGLangEngine = built.engine
    eos = tokenizer.eos_token_id
    baseline = tokens(generate(runner, "before", prompt_ids[0], eos, MAX_NEW))
    norm = LlamaModel.load(smollm2_dir).norm.clone()
    session = TokenizerManagerSession(engine.runtime.tokenizer_manager)
    swapper = SGLangDraftSwapper(session, DraftWeights("v1", {NORM: norm}), selector="target")
    with Traffic(runner, prompt_ids, eos, MAX_NEW) as traffic:
        call_between_steps(runner, lambda: engine.call(swapper.install(DraftWeights("v2", {NORM: -norm}))))
        changed = tokens(generate(runner, "after-swap", prompt_ids[0], eos, MAX_NEW))
        call_between_steps(runner, lambda: engine.call(swapper.rollback()))
        restored = tokens(generate(runner, "after-rollback", prompt_ids[0], eos, MAX_NEW))
    assert changed != baseline  # negated final norm: the target's logits flip, greedy picks differ
    assert restored == baseline
    assert swapper.current.version == "v1"
    assert len(traffic.finished) >= 2 and set(traffic.finished) <= {"length", "stop"}


def test_a_restart_drains_the_requests_in_flight_and_serves_the_queued_ones_on_the_new_engine(
    serving: tuple[EngineRunner, Any],
    prompt_ids: list[list[int]],
    cpu_engine_outputs: list[list[int]],
    tokenizer: Any,
    smollm2_dir: Path,
    tmp_path: Path,
) -> None:
    """The path a new draft vocabulary takes on a GPU, here back to target-only (no draft on CPU)."""
    runner, built = serving
    engine: SGLangEngine = built.engine
    settings = Settings(engine="sglang", sglang_device="cpu", home=tmp_path, threads=2, max_batch=4)
    drafts = SGLangDrafts(engine, settings.serving, smollm2_dir, "cpu", tmp_path / "sglang-drafts")
    old_runtime = engine.runtime
    eos = tokenizer.eos_token_id
    with Traffic(runner, prompt_ids, eos, MAX_NEW) as traffic:
        while not traffic.finished:  # the restart comes with requests in flight
            time.sleep(0.05)
        call_between_steps(runner, lambda: drafts.install(None))
        after = tokens(generate(runner, "after-restart", prompt_ids[0], eos, MAX_NEW))
    assert engine.runtime is not old_runtime
    assert after == cpu_engine_outputs[0]
    assert len(traffic.finished) >= 2 and set(traffic.finished) <= {"length", "stop"}
