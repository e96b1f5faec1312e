"""A real Celery training worker (solo pool) on real Redis: rounds, resume after a kill, hostile traces."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from borealis.settings import Settings
from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from tests.json_server import json_server
from tests.procs import cli_argv, start, stop, wait_until
from tests.training.test_online import push, records, target  # noqa: F401  (module fixtures reused)
from worker.traces.codec import PAYLOAD_FIELD, encode
from worker.training.checkpoint import LATEST


def _learning_on(_method: str, path: str) -> tuple[int, object]:
    """The control plane as the trainer sees it while no candidate is due: learning is on."""
    return (200 if path == "/internal/learning" else 404), {"paused": False}


@pytest.fixture
def control_plane() -> Iterator[str]:
    with json_server(_learning_on) as url:
        yield url


def checkpoint_round(home: Path) -> int:
    root = home / "trainer" / "checkpoints"
    try:  # a newer round may replace the one LATEST named while it is being read
        state = json.loads((root / (root / LATEST).read_text() / "state.json").read_text())
    except FileNotFoundError:
        return 0
    return int(state["round"])


def test_worker_trains_rounds_and_resumes_after_kill(
    base_env: dict[str, str],
    tmp_path: Path,
    tiny_model_dir: Path,
    control_plane: str,
    records: list[TraceRecord],  # noqa: F811
) -> None:
    env = {
        **base_env,
        "BOREALIS_MODEL_PATH": str(tiny_model_dir),
        "BOREALIS_CONTROL_PLANE_URL": control_plane,
        "BOREALIS_TRAINER_MIN_RECORDS": "4",
        "BOREALIS_TRAINER_STEPS_PER_ROUND": "2",
        "BOREALIS_TRAINER_READ_BATCH": "6",
        "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "1000",
        "BOREALIS_TRAINER_BATCH_TOKENS": "256",
        "BOREALIS_DRAFT_VOCAB_SIZE": "256",
        "BOREALIS_TRACE_MAX_RECORD_BYTES": "65536",
    }
    home = Path(env["BOREALIS_HOME"])
    settings = Settings(
        redis_url=env["BOREALIS_REDIS_URL"], redis_key_prefix=env["BOREALIS_REDIS_KEY_PREFIX"]
    )
    push(settings, records[:12])
    log = tmp_path / "trainer.log"
    trainer = start(cli_argv("worker", "train"), env, log)
    try:
        wait_until(lambda: checkpoint_round(home) >= 2, 90, "two checkpointed rounds", trainer, log)
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    before = checkpoint_round(home)
    push(settings, records[12:18])
    hostile = push_hostile(
        settings,
        records[0],
        json.loads((Path(env["BOREALIS_MODEL_PATH"]) / "config.json").read_text())["vocab_size"],
    )
    restarted = start(cli_argv("worker", "train"), env, log)
    try:
        wait_until(lambda: checkpoint_round(home) > before, 90, "a round after the restart", restarted, log)
        wait_until(lambda: dead_letter_reasons(settings) == hostile, 30, "hostile traces dead-lettered")
        after_hostile = checkpoint_round(home)
        push(settings, records[18:24])
        wait_until(lambda: checkpoint_round(home) > after_hostile, 90, "trainer unaffected", restarted, log)
    finally:
        assert stop(restarted) == 0, log.read_text()[-2000:]
    assert "resumed at round" in log.read_text()


def push_hostile(settings: Settings, valid: TraceRecord, vocab_size: int) -> list[str]:
    """Entries a broken or hostile producer could write; the dead-letter reason each must get."""
    foreign = valid.model_copy(
        update={"request_id": "foreign", "output_ids": [vocab_size + 7] * 4, "steps": []}
    )
    negative = valid.model_dump(mode="json") | {"request_id": "negative", "prompt_ids": [-1, 5]}
    entries = {
        "bad_json": b"{not json",
        "schema": json.dumps(negative).encode(),
        "oversized": b"[" + b"1," * 100_000 + b"1]",
        "foreign_tokens": encode(foreign),
    }
    client = redis.Redis.from_url(settings.redis_url)
    for payload in entries.values():
        client.xadd(TraceBusConfig.from_settings(settings).stream, {PAYLOAD_FIELD: payload})
    client.close()
    return sorted(entries)


def dead_letter_reasons(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        entries = client.xrange(TraceBusConfig.from_settings(settings).dead_letter_stream)
    finally:
        client.close()
    return sorted(fields[b"reason"].decode() for _, fields in entries)
