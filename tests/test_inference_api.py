"""OpenAI-compatible API against real processes: a control plane and an inference worker.

The worker serves a tiny random-weight Llama (real forward passes, fast); the slow end-to-end
test with SmolLM2 and `borealis up` lives in test_appliance.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.procs import wait_until
from tests.stack import CLUSTER_TOKEN, Stack

MODEL = "tiny-llama"


LIMITS = {"BOREALIS_MAX_PROMPT_TOKENS": "256", "BOREALIS_MAX_NEW_TOKENS_LIMIT": "64"}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("api-home")
    with Stack(home, redis_url, key_prefix, tiny_model_dir, MODEL, LIMITS) as stack:
        stack.start_worker("w1")
        yield stack


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_health_ready_and_models(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{stack.base_url}/ready").json()["ready"] is True
    running = httpx.get(f"{stack.base_url}/version").json()
    assert running["wire_version"] == 1 and running["version"]
    models = client(stack).models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["max_model_len"] == 256 + 64  # type: ignore[index]


def test_chat_completion_with_openai_client(stack: Stack) -> None:
    reply = client(stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None and reply.usage.completion_tokens >= 1
    assert reply.usage.prompt_tokens > 5  # the chat template wraps the message
    stats = reply.model_extra["spec_decode"]  # type: ignore[index]
    # The prefill emits the first token; every target step after it emits its own token plus the
    # accepted drafted ones, the last step cut at max_tokens.
    decoded = reply.usage.completion_tokens - 1
    assert stats["num_steps"] <= decoded <= stats["num_steps"] + stats["num_accepted_tokens"]
    assert stats["prefill_seconds"] > 0  # the worker's own time on the request: prefill, then decoding
    # the same in vLLM's shape: its steps are the ones that drafted, its histogram adds up
    vllm = reply.model_extra["metrics"]["speculative_decoding"]  # type: ignore[index]
    histogram = vllm["acceptance_histogram"]
    assert vllm["num_spec_steps"] == stats["num_drafts"] == sum(histogram)
    assert vllm["num_accepted_draft_tokens"] == stats["num_accepted_tokens"]
    assert sum(k * count for k, count in enumerate(histogram)) == stats["num_accepted_tokens"]


def test_greedy_completion_is_deterministic_and_respects_max_tokens(stack: Stack) -> None:
    api = client(stack)
    first = api.completions.create(model=MODEL, prompt="The quick brown fox", max_tokens=10, temperature=0)
    second = api.completions.create(model=MODEL, prompt="The quick brown fox", max_tokens=10, temperature=0)
    assert first.choices[0].text == second.choices[0].text
    assert first.usage is not None and first.usage.completion_tokens <= 10


def test_seeded_sampling_is_reproducible(stack: Stack) -> None:
    api = client(stack)
    texts = {
        api.completions.create(model=MODEL, prompt="Once", max_tokens=12, temperature=1.0, seed=7)
        .choices[0]
        .text
        for _ in range(2)
    }
    assert len(texts) == 1


def test_streaming_chat_matches_non_streaming(stack: Stack) -> None:
    api = client(stack)
    messages = [{"role": "user", "content": "Count to three"}]
    whole = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    chunks = list(
        api.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_a_non_streamed_request_comes_from_the_worker_in_one_chunk(stack: Stack) -> None:
    """The worker hands a caller that does not stream one final chunk (no step waits on relaying
    the others), with the same text as the streamed chunks and the span after its first token. A
    streamed caller gets its first token in a chunk of its own (the rest at the stream interval)."""
    worker: str = stack.admin("GET", "/api/workers").json()[0]["url"]
    headers = {"authorization": f"Bearer {CLUSTER_TOKEN}"}
    body = {"prompt": "The quick brown fox", "max_tokens": 24, "temperature": 0}

    def chunks(request_id: str, stream: bool) -> list[dict[str, Any]]:
        sent = {**body, "request_id": request_id, "stream": stream}
        response = httpx.post(f"{worker}/generate", json=sent, headers=headers, timeout=60)
        assert response.status_code == 200
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    streamed, whole = chunks("relay-streamed", True), chunks("relay-whole", False)
    assert len(streamed) >= 2 and len(whole) == 1
    assert "".join(chunk["text"] for chunk in streamed) == whole[0]["text"]
    assert streamed[0]["text"] and streamed[0]["finish_reason"] is None
    assert whole[0]["finish_reason"] == streamed[-1]["finish_reason"] == "length"
    assert whole[0]["completion_tokens"] == 24
    for final in (whole[0], streamed[-1]):
        decoding = final["spec_decode"]["decode_seconds"]
        assert 0 < final["after_first_token_seconds"] < decoding + 1.0


def test_stop_string_ends_generation(stack: Stack) -> None:
    api = client(stack)
    full = api.completions.create(model=MODEL, prompt="a b c", max_tokens=20, temperature=0).choices[0].text
    assert len(full) > 4
    stop = full[2:4]
    cut = api.completions.create(model=MODEL, prompt="a b c", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(stop)]
    raw = httpx.post(
        f"{stack.base_url}/v1/completions",
        json={"model": MODEL, "prompt": "a b c", "max_tokens": 20, "temperature": 0, "stop": [stop]},
        timeout=60,
    ).json()
    assert raw["choices"][0]["finish_reason"] == "stop"
    assert raw["spec_decode"]["num_steps"] > 0  # the statistics of the steps run before the cut


BAD_BODIES = [
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        400,
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9},
        400,
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        400,
        "temperature",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3},
        400,
        "n",
    ),
    (
        "/v1/chat/completions",
        {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]},
        404,
        "gpt-17",
    ),
    ("/v1/completions", {"model": MODEL}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400, "one prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "logit_bias": {"50": -100}}, 400, "logit_bias"),
    (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        },
        400,
        "tools",
    ),
    (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
        400,
        "response_format",
    ),
    ("/v1/completions", {"model": MODEL, "prompt": "word " * 400, "max_tokens": 8}, 400, "context"),
]


@pytest.mark.parametrize(("path", "body", "status", "mentions"), BAD_BODIES)
def test_bad_input_gets_a_clear_4xx(stack: Stack, path: str, body: dict, status: int, mentions: str) -> None:
    response = httpx.post(f"{stack.base_url}{path}", json=body, timeout=30)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert mentions in message


def test_harmless_unknown_fields_are_accepted_and_named(stack: Stack) -> None:
    """What clients send by default (store, user, parallel_tool_calls, an empty logit_bias) works."""
    raw = client(stack).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=4,
        temperature=0,
        store=False,
        user="someone",
        parallel_tool_calls=False,
        logit_bias={},
        extra_body={"top_k": -1, "some_vendor_flag": True},
    )
    assert raw.parse().choices[0].finish_reason in {"stop", "length"}
    ignored = raw.headers["x-borealis-ignored-fields"].split(",")
    assert {"store", "parallel_tool_calls", "logit_bias", "top_k", "some_vendor_flag"} <= set(ignored)
    odd = httpx.post(
        f"{stack.base_url}/v1/completions",
        json={"model": MODEL, "prompt": "x", "max_tokens": 2, "\u00e9t\U0006a13d": 1, "store": True},
        timeout=30,
    )
    assert odd.status_code == 200 and odd.headers["x-borealis-ignored-fields"] == "store,+1 unnamed"
    plain = httpx.post(
        f"{stack.base_url}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=30
    )
    assert plain.status_code == 200 and "x-borealis-ignored-fields" not in plain.headers


def test_malformed_json_is_a_400(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base_url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_heartbeat_needs_the_cluster_token_and_a_valid_payload(stack: Stack) -> None:
    anonymous = httpx.post(f"{stack.base_url}/internal/workers/heartbeat", json={"worker_id": "x"})
    assert anonymous.status_code == 401
    malformed = stack.cluster("POST", "/internal/workers/heartbeat", json={"worker_id": "x y"})
    assert malformed.status_code == 400


def test_metrics_count_speculation_by_domain(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "prompt": "a a a a a a a a",
        "max_tokens": 16,
        "temperature": 0,
        "metadata": {"domain": "code"},
    }
    assert httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60).status_code == 200
    streamed = {**body, "stream": True}
    assert httpx.post(f"{stack.base_url}/v1/completions", json=streamed, timeout=60).status_code == 200
    text = httpx.get(f"{stack.base_url}/metrics").text
    wanted = ('domain="code"', 'draft_version="none"', f'model_name="{MODEL}"')  # vLLM's model_name label

    def labelled(line: str) -> bool:
        return all(label in line for label in wanted)

    for name in (
        "borealis:time_to_first_token_seconds_count",
        "borealis:request_time_per_output_token_seconds_count",
        "borealis:request_queue_time_seconds_count",
        "borealis:spec_decode_num_drafts_total",
        "borealis:spec_decode_num_draft_tokens_total",
        "borealis:spec_decode_num_accepted_tokens_total",
        "borealis:spec_decode_decode_seconds_total",
        "borealis:spec_decode_target_only_seconds_total",
        "borealis:request_success_total",
        "borealis:e2e_request_latency_seconds_count",
    ):
        assert any(line.startswith(name + "{") and labelled(line) for line in text.splitlines()), name
    generated = [
        line
        for line in text.splitlines()
        if line.startswith("borealis:generation_tokens_total{") and labelled(line)
    ]
    assert float(generated[0].rsplit(" ", 1)[1]) >= 16
    itl = "borealis:inter_token_latency_seconds_count{"
    gaps = [line for line in text.splitlines() if line.startswith(itl)]
    assert gaps and float(gaps[0].rsplit(" ", 1)[1]) >= 1  # chunks after the first, timed apart

    def counter(name: str, extra: str = "") -> float:
        rows = [row for row in text.splitlines() if row.startswith(name + "{") and labelled(row)]
        return sum(float(row.rsplit(" ", 1)[1]) for row in rows if extra in row)

    # Every finished request has a first token, streamed or not (the latter placed by the worker).
    finished = counter("borealis:request_success_total")
    assert finished >= 2 and counter("borealis:time_to_first_token_seconds_count") == finished

    # Control-plane state an SRE alerts on, read at scrape time.
    assert "borealis:learning_paused 0.0" in text.splitlines()
    for line in (
        'borealis:workers{state="healthy"} 1.0',
        'borealis:workers{state="stale"} 0.0',
        'borealis:draft_versions{status="live"} 0.0',
        'borealis:num_requests_running{model_name="tiny-llama"}',
        "borealis:workers_on_desired_draft 1.0",
    ):
        assert any(row.startswith(line) for row in text.splitlines()), line
    memory = [
        row
        for row in text.splitlines()
        if row.startswith('borealis:worker_resident_memory_bytes{worker="w1"}')
    ]
    assert memory and float(memory[0].rsplit(" ", 1)[1]) > 10 * 1024**2
    cpu = [
        row for row in text.splitlines() if row.startswith('borealis:worker_cpu_seconds_total{worker="w1"}')
    ]
    assert cpu and float(cpu[0].rsplit(" ", 1)[1]) > 0
    assert any(row.startswith("process_resident_memory_bytes ") for row in text.splitlines())

    # No draft is live: every accepted token came from n-gram lookup, none from the draft (that
    # any are accepted is the engine tests' business: this random model may reject every guess).
    accepted = counter("borealis:spec_decode_num_accepted_tokens_total")
    by_source = "borealis:spec_decode_num_accepted_tokens_by_source_total"
    assert counter(by_source, 'source="ngram"') == accepted
    assert counter(by_source, 'source="draft"') == 0


def test_dashboard_and_local_plotly_are_served(stack: Stack) -> None:
    page = httpx.get(f"{stack.base_url}/dashboard", follow_redirects=True)
    assert page.status_code == 200 and "Sign in with the admin credential" in page.text
    plotly_js = httpx.get(f"{stack.base_url}/dashboard/static/plotly.min.js")
    assert plotly_js.status_code == 200 and len(plotly_js.content) > 1_000_000


def test_worker_killed_mid_request_gives_a_clean_error(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    """A control plane whose only worker dies while streaming: an error event and [DONE], no hang."""
    lone = Stack(
        tmp_path, redis_url, key_prefix, tiny_model_dir, MODEL, {"BOREALIS_MAX_NEW_TOKENS_LIMIT": "900"}
    )
    try:
        lone.start_api()
        doomed = lone.start_worker("doomed")
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 900, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{lone.base_url}/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            stream = (line for line in response.iter_lines() if line)
            assert '"text"' in next(stream)
            doomed.kill()
            lines = list(stream)
        assert lines[-1] == "data: [DONE]"
        assert "inference failed" in lines[-2]
        # With no worker left the API says so instead of hanging.
        wait_until(lambda: not lone.ready_workers(), 30, "worker marked stale")
        after = httpx.post(f"{lone.base_url}/v1/completions", json={**body, "stream": False}, timeout=30)
        assert after.status_code == 503
        assert "no healthy inference worker" in after.json()["error"]["message"]
    finally:
        lone.stop()
