"""An inference worker with ``BOREALIS_ENGINE=sglang`` (SGLang's light CPU install) behind the control
plane, answering the OpenAI API with the CPU engine's greedy text (``make test-sglang``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.sglang.requests import MAX_NEW, PROMPTS, require_sglang
from tests.stack import Stack

require_sglang()

pytestmark = [pytest.mark.slow, pytest.mark.sglang]
MODEL = "smollm2-sglang"


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
