"""Requests through an ``EngineRunner`` as the worker's HTTP side makes them, for the SGLang tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from borealis.settings import Settings
from worker.engine.types import GenerationRequest, SamplingParams, TokenEvent
from worker.inference.engine_factory import ServingEngine, build_engine
from worker.inference.runner import EngineRunner

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, a small robot"]
MAX_NEW = 24


def require_sglang() -> None:
    """Skip the module where SGLang is not installed, unless ``BOREALIS_REQUIRE_SGLANG=1`` (CI)."""
    if os.environ.get("BOREALIS_REQUIRE_SGLANG") == "1":
        import sglang  # noqa: F401  (a missing install fails here instead of skipping)
    else:
        pytest.importorskip("sglang")


def generate(
    runner: EngineRunner, request_id: str, prompt: list[int], eos: int, max_new_tokens: int
) -> list[TokenEvent]:
    """Every event of one greedy request, up to and including its final one."""
    done = threading.Event()
    events: list[TokenEvent] = []

    def sink(event: TokenEvent | BaseException) -> None:
        assert isinstance(event, TokenEvent), event
        events.append(event)
        if event.finish_reason is not None:
            done.set()

    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=(eos,))
    runner.submit(GenerationRequest(request_id, prompt, params), sink)
    assert done.wait(300), f"{request_id} did not finish"
    return events


def tokens(events: list[TokenEvent]) -> list[int]:
    return [t for e in events for t in e.token_ids]


class Traffic:
    """Greedy requests one after another on a thread, each final finish reason kept."""

    def __init__(self, runner: EngineRunner, prompts: list[list[int]], eos: int, max_new_tokens: int) -> None:
        self.finished: list[str | None] = []
        self._stop = threading.Event()
        self._args = (runner, prompts, eos, max_new_tokens)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        runner, prompts, eos, max_new_tokens = self._args
        n = 0
        while not self._stop.is_set():
            final = generate(runner, f"traffic-{n}", prompts[n % len(prompts)], eos, max_new_tokens)[-1]
            self.finished.append(final.finish_reason)
            n += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=300)


def call_between_steps(runner: EngineRunner, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the engine thread between two steps; fail the test if it raised."""
    done = threading.Event()
    errors: list[BaseException | None] = []

    def finished(error: BaseException | None) -> None:
        errors.append(error)
        done.set()

    runner.call_between_steps(fn, finished)
    assert done.wait(600) and errors == [None], errors


@contextmanager
def serving_sglang(settings: Settings, model_dir: Path) -> Iterator[tuple[EngineRunner, ServingEngine[Any]]]:
    """The worker's engine for ``settings`` on a runner, as the inference worker builds it; closed after."""
    runner = EngineRunner()
    built: ServingEngine[Any] = runner.start(
        lambda: build_engine(settings.serving, model_dir, settings.home), lambda s: s.engine
    )
    try:
        yield runner, built
    finally:
        runner.stop()
        assert built.close is not None
        built.close()
