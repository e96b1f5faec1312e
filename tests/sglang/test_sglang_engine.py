"""A real ``sglang.Engine`` on CPU (SGLang's light install, ``make test-sglang``) behind Borealis.

Target-only, because SGLang's speculative kernels need CUDA: greedy output identical to the CPU
engine's target-only decoding, token for token; weights moved through the swap path between requests
while traffic runs, with no failed request; and a whole worker behind the control plane answering the
OpenAI API. Skipped where SGLang is not installed, unless ``BOREALIS_REQUIRE_SGLANG=1`` (CI sets it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from transformers import AutoTokenizer

from borealis.settings import Settings
from tests.sglang.requests import Traffic, call_between_steps, generate, tokens
from tests.stack import Stack
from worker.draft.generate import greedy_outputs
from worker.engine.llama import LlamaModel
from worker.inference.engine_factory import ServingEngine, build_engine
from worker.inference.runner import EngineRunner
from worker.sglang.engine import SGLangEngine
from worker.sglang.session import TokenizerManagerSession
from worker.sglang.swap import DraftWeights, SGLangDraftSwapper

if os.environ.get("BOREALIS_REQUIRE_SGLANG") == "1":
    import sglang  # noqa: F401  (a missing install fails here instead of skipping)
else:
    pytest.importorskip("sglang")

pytestmark = [pytest.mark.slow, pytest.mark.sglang]
MODEL = "smollm2-sglang"
PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, a small robot"]
MAX_NEW = 24
NORM = "model.norm.weight"  # the target's final norm, as SGLang's Llama loads it


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: Any) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def cpu_engine_outputs(smollm2_dir: Path, prompt_ids: list[list[int]], tokenizer: Any) -> list[list[int]]:
    """The CPU engine's target-only greedy continuations (fp32), the reference."""
    target = LlamaModel.load(smollm2_dir)
    return greedy_outputs(target, prompt_ids, MAX_NEW, stop_token_ids=(tokenizer.eos_token_id,))


@pytest.fixture(scope="module")
def serving(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EngineRunner, Any]]:
    home = tmp_path_factory.mktemp("sglang-home")
    settings = Settings(engine="sglang", sglang_device="cpu", home=home, threads=2, max_batch=4)
    runner = EngineRunner()
    built: ServingEngine[Any] = runner.start(
        lambda: build_engine(settings.serving, smollm2_dir, home), lambda s: s.engine
    )
    try:
        yield runner, built
    finally:
        runner.stop()
        assert built.close is not None
        built.close()


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


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("sglang-stack")
    env = {"BOREALIS_ENGINE": "sglang", "BOREALIS_SGLANG_DEVICE": "cpu", "BOREALIS_MAX_BATCH": "4"}
    with Stack(home, redis_url, key_prefix, smollm2_dir, MODEL, env) as stack:
        stack.start_worker("sglang-1")
        yield stack


def test_an_sglang_worker_serves_the_openai_api_behind_the_control_plane(
    stack: Stack, cpu_engine_outputs: list[list[int]], tokenizer: Any
) -> None:
    (worker,) = stack.admin("GET", "/api/workers").json()
    assert worker["engine"] == "sglang" and "target-only" in worker["fallback_reason"]
    api = OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)
    for prompt, expected in zip(PROMPTS, cpu_engine_outputs, strict=True):
        reply = api.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_NEW, temperature=0)
        assert reply.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
        assert reply.usage is not None and reply.usage.completion_tokens == len(expected)
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in api.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=MAX_NEW,
            temperature=0,
            stream=True,
        )
        if chunk.choices
    ]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces).strip()
