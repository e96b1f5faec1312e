"""Served requests become trace records on the real Redis stream, and the control plane reports the bus."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from borealis.settings import Settings
from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from tests.procs import wait_until
from tests.stack import Stack
from worker.draft.examples import build_example, example_from_record
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.traces.consumer import TraceConsumer
from worker.traces.features import feature_reader

MODEL = "tiny-llama"


@pytest.fixture
def stack(tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str) -> Iterator[Stack]:
    with Stack(tmp_path / "home", redis_url, key_prefix, tiny_model_dir, MODEL) as stack:
        stack.start_worker("w1")
        yield stack


def _check_shipped_features(records: list[TraceRecord], config: TraceBusConfig, model_dir: Path) -> None:
    """The trainer builds the same example from a record's shipped features as from a prefill."""
    target = LlamaModel.load(model_dir)
    reader = feature_reader(config, 4 * target.spec.hidden_size)
    vocab = DraftVocab(torch.arange(target.spec.vocab_size // 2), target.spec.vocab_size)
    for record in records:
        tokens = record.prompt_ids + record.output_ids
        stored = reader.get(record.features_key, len(tokens))
        assert stored is not None and len(tokens) - 1 <= stored.shape[0] <= len(tokens)
        shipped = example_from_record(target, vocab, record, stored=torch.from_numpy(stored))
        recomputed = build_example(
            target, vocab, tokens[: len(shipped)], len(record.prompt_ids), record.domain
        )
        assert torch.equal(shipped.target_argmax, recomputed.target_argmax)
        torch.testing.assert_close(
            shipped.features.float(), recomputed.features.float(), atol=2e-2, rtol=1e-2
        )


def test_requests_are_exported_as_traces(stack: Stack, redis_url: str, tiny_model_dir: Path) -> None:
    prompts = {"code": "def add(a, b):\n    return a + b\n\ndef sub(a, b):", "prose": "The river ran quietly"}
    ids = {}
    for domain, prompt in prompts.items():
        body = {
            "model": MODEL,
            "prompt": prompt,
            "max_tokens": 24,
            "temperature": 0,
            "metadata": {"domain": domain},
        }
        response = httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60)
        assert response.status_code == 200
        ids[domain] = response.json()["usage"]["completion_tokens"]
    config = TraceBusConfig.from_settings(Settings(redis_url=redis_url, redis_key_prefix=stack.key_prefix))
    consumer = TraceConsumer(config, name="test-reader")
    records = []
    wait_until(
        lambda: (
            bool(records.extend(d.record for d in consumer.read(count=10, block_ms=200))) or len(records) >= 2
        ),
        30,
        "two trace records",
    )
    by_domain = {r.domain: r for r in records}
    assert set(by_domain) == {"code", "prose"}
    for domain, record in by_domain.items():
        assert record.domain_source == "request"
        assert record.worker_id == "w1" and record.model == MODEL
        assert len(record.output_ids) == ids[domain]
        assert record.prompt_ids and record.steps
        # Every output token after the prefill's is accounted for by a step: each starts where the
        # previous one's accepted path and own token ended; the last may be cut at max_tokens.
        assert record.steps[0].position == 1
        for before, after in itertools.pairwise(record.steps):
            assert after.position == before.position + before.accepted + 1
        last = record.steps[-1]
        assert last.position + last.accepted <= len(record.output_ids) <= last.position + last.accepted + 1
    _check_shipped_features(records, config, tiny_model_dir)
    wait_until(lambda: stack.admin("GET", "/api/tracebus").json()["exported"] >= 2, 10, "heartbeat report")
    bus = stack.admin("GET", "/api/tracebus").json()
    assert bus["stream_length"] >= 2 and bus["dropped"] == 0
    metrics = httpx.get(f"{stack.base_url}/metrics").text
    assert 'borealis:traces_exported_total{worker="w1"}' in metrics
    assert "borealis:trace_stream_length" in metrics
    wait_until(
        lambda: (
            'borealis:trace_features_stored_total{worker="w1"} 2.0'
            in httpx.get(f"{stack.base_url}/metrics").text
        ),
        10,
        "feature blobs reported",
    )
    assert (
        'borealis:trace_features_dropped_total{worker="w1"} 0.0'
        in httpx.get(f"{stack.base_url}/metrics").text
    )
