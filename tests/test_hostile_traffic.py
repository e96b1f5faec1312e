"""Hostile input through real processes: no request can hurt another, nothing unauthenticated
reaches a worker, and every bound answers with a clear status.

The fast cases run against a tiny random-weight Llama; the admission cases (a full queue, a client
that disconnects) need generation slow enough to overlap, so they run on SmolLM2.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import wait_until
from tests.stack import CLUSTER_TOKEN, Stack

TINY = "tiny-llama"
SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("hostile-home")
    limits = {"BOREALIS_MAX_NEW_TOKENS_LIMIT": "64", "BOREALIS_MAX_REQUEST_BYTES": str(1024 * 1024)}
    with Stack(home, redis_url, key_prefix, tiny_model_dir, TINY, limits) as stack:
        stack.start_worker("hostile-w1")
        yield stack


def worker_url(stack: Stack) -> str:
    workers = stack.admin("GET", "/api/workers").json()
    url: str = workers[0]["url"]
    return url


def complete(stack: Stack, **fields: Any) -> httpx.Response:
    body = {"model": TINY, "prompt": "The quick brown fox", "max_tokens": 24, **fields}
    return httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60)


DEGENERATE = [
    {"temperature": 1e-40},
    {"temperature": 5e-324},
    {"temperature": 1e-6, "top_p": 1e-9},
    {"temperature": 2.0, "top_p": 5e-324},
    {"temperature": 1.0, "seed": 2**63 - 1},
    {"temperature": 1.0, "seed": 0},
    {"temperature": 1e-30, "seed": 2**62},
]


def test_degenerate_sampling_beside_a_normal_request_leaves_it_intact(stack: Stack) -> None:
    expected = complete(stack, temperature=0).json()["choices"][0]["text"]
    results: dict[str, httpx.Response] = {}

    def send(name: str, fields: dict[str, Any]) -> None:
        results[name] = complete(stack, **fields)

    threads = [threading.Thread(target=send, args=(f"bad{i}", f)) for i, f in enumerate(DEGENERATE)]
    threads += [threading.Thread(target=send, args=(f"good{i}", {"temperature": 0})) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for name, response in results.items():
        assert response.status_code < 500, f"{name}: {response.status_code} {response.text}"
    for i in range(3):
        assert results[f"good{i}"].json()["choices"][0]["text"] == expected
    # A temperature too small to divide by is greedy: the same text as temperature 0.
    assert results["bad0"].json()["choices"][0]["text"] == expected


def test_out_of_range_sampling_values_get_a_4xx(stack: Stack) -> None:
    for fields in ({"seed": 2**64}, {"seed": -1}, {"temperature": -1e-9}, {"top_p": 0}):
        response = complete(stack, **fields)
        assert response.status_code == 400, (fields, response.text)


def test_worker_refuses_requests_without_the_cluster_token(stack: Stack) -> None:
    url = worker_url(stack) + "/generate"
    body = {"request_id": "direct-1", "prompt": "hello", "max_tokens": 4, "temperature": 0}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    assert httpx.post(url, json={"junk": True}, timeout=30).status_code == 401  # before the body is read
    wrong = {"authorization": "Bearer not-the-token"}
    assert httpx.post(url, json=body, headers=wrong, timeout=30).status_code == 401
    right = {"authorization": f"Bearer {CLUSTER_TOKEN}"}
    assert httpx.post(url, json=body, headers=right, timeout=30).status_code == 200
    # The wire model has the control plane's bounds: nobody reaches the engine with a wild seed.
    unbounded = {**body, "request_id": "direct-2", "seed": 2**70, "temperature": 1.0}
    assert httpx.post(url, json=unbounded, headers=right, timeout=30).status_code == 422


def test_a_huge_body_gets_413_before_it_is_read(stack: Stack) -> None:
    body = b'{"model": "tiny-llama", "prompt": "' + b"a" * (60 * 1024 * 1024) + b'"}'
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{stack.base_url}/v1/completions", content=body, headers=headers, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap counts streamed bytes
        yield b'{"model": "tiny-llama", "prompt": "'
        for _ in range(40):
            yield b"a" * (64 * 1024)
        yield b'"}'

    chunked = httpx.post(f"{stack.base_url}/v1/completions", content=chunks(), headers=headers, timeout=60)
    assert chunked.status_code == 413
    assert complete(stack, temperature=0).status_code == 200


def test_two_thousand_domain_labels_leave_metrics_bounded(stack: Stack) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(2000):
            body = {"model": TINY, "prompt": "x", "max_tokens": 1, "metadata": {"domain": f"junk{i}"}}
            assert client.post(f"{stack.base_url}/v1/completions", json=body).status_code == 200
        metrics = client.get(f"{stack.base_url}/metrics").text
    labels = set(re.findall(r'domain="([^"]+)"', metrics))
    assert not any(label.startswith("junk") for label in labels), sorted(labels)[:10]
    assert "other" in labels
    assert len(labels) <= 8, labels


# -- admission: slow enough generation (SmolLM2) that requests overlap ----------------------------


@pytest.fixture(scope="module")
def smol_stack(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("admission-home")
    env = {
        "BOREALIS_MAX_BATCH": "1",
        "BOREALIS_WORKER_MAX_QUEUED": "1",
        "BOREALIS_MAX_IN_FLIGHT": "2",
        "BOREALIS_MAX_NEW_TOKENS_LIMIT": "400",
    }
    with Stack(home, redis_url, key_prefix, smollm2_dir, SMOL, env) as stack:
        stack.start_worker("admission-w1")
        yield stack


def smol_body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


@pytest.mark.slow
def test_a_full_control_plane_answers_429_with_retry_after(smol_stack: Stack) -> None:
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        response = httpx.post(f"{smol_stack.base_url}/v1/chat/completions", json=smol_body(48), timeout=120)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=180)
    codes = sorted(r.status_code for r in responses)
    # The control plane relays at most 2 at once (and the worker holds 1 decoding + 1 queued).
    assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) == {200, 429}, codes
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "rate_limit_error"
    assert httpx.post(f"{smol_stack.base_url}/v1/chat/completions", json=smol_body(4), timeout=120).is_success


@pytest.mark.slow
def test_a_full_worker_queue_answers_503_with_retry_after(smol_stack: Stack) -> None:
    url = worker_url(smol_stack) + "/generate"
    headers = {"authorization": f"Bearer {CLUSTER_TOKEN}"}
    body = {
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 64,
        "temperature": 0,
    }
    with httpx.Client(timeout=120) as client, ExitStack() as streams:
        admitted = [
            streams.enter_context(
                client.stream("POST", url, json={**body, "request_id": f"q{i}"}, headers=headers)
            )
            for i in range(2)
        ]
        assert [r.status_code for r in admitted] == [200, 200]
        refused = client.post(url, json={**body, "request_id": "q2"}, headers=headers)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        duplicate = client.post(url, json={**body, "request_id": "q0"}, headers=headers)
        assert duplicate.status_code == 409
        for response in admitted:
            assert b'"finish_reason":"length"' in response.read()


@pytest.mark.slow
def test_a_disconnected_non_streaming_request_is_aborted(smol_stack: Stack) -> None:
    url = worker_url(smol_stack)

    def active() -> int:
        count: int = httpx.get(f"{url}/health", timeout=10).json()["active_requests"]
        return count

    with pytest.raises(httpx.ReadTimeout):  # 400 tokens take far longer than the client waits
        httpx.post(f"{smol_stack.base_url}/v1/chat/completions", json=smol_body(400), timeout=3)
    started = time.monotonic()
    wait_until(lambda: active() == 0, 10, "the worker to abort the abandoned request")
    assert time.monotonic() - started < 10
