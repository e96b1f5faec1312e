"""Trainer progress reports reach operators (``/api/trainers``) and Prometheus (``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.services.trainer_progress import TrainerMonitor
from borealis.wire import TrainerProgress
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("trainer-progress-home")
    with Stack(home, redis_url, key_prefix, tiny_model_dir, "tiny-llama") as stack:
        yield stack


def progress(trainer: str, steps: int) -> TrainerProgress:
    return TrainerProgress(
        trainer=trainer,
        round=3,
        status="trained",
        optimizer_steps=steps,
        trained_records=40,
        heldout_records=8,
        trained_rows=5000,
        acked_records=48,
        holding_records=0,
        last_candidate="v0002",
        last_candidate_round=2,
        examples_from_features=40,
        examples_by_prefill=0,
        cpu_seconds=12.5,
        rss_bytes=700_000_000,
    )


def post(stack: Stack, body: str) -> int:
    headers = {"content-type": "application/json"}
    return stack.cluster("POST", "/internal/trainers/progress", content=body, headers=headers).status_code


def test_the_latest_report_is_served_and_exported(stack: Stack) -> None:
    assert post(stack, progress("trainer-a", 10).model_dump_json()) == 200
    assert post(stack, progress("trainer-a", 30).model_dump_json()) == 200
    (view,) = stack.admin("GET", "/api/trainers").json()
    assert view["progress"]["optimizer_steps"] == 30 and view["progress"]["last_candidate"] == "v0002"
    assert 0 <= view["age_seconds"] < 60
    text = stack.admin("GET", "/metrics").text
    assert 'borealis:trainer_optimizer_steps_total{trainer="trainer-a"} 30.0' in text
    assert 'borealis:trainer_rss_bytes{trainer="trainer-a"} 7e+08' in text


def test_bad_reports_are_refused_and_the_view_needs_an_admin(stack: Stack) -> None:
    negative = progress("trainer-b", 1).model_dump_json().replace('"round":3', '"round":-1')
    assert post(stack, negative) == 400
    assert post(stack, '{"trainer": "x"}') == 400
    assert httpx.get(f"{stack.base_url}/api/trainers", timeout=10).status_code == 401
    assert all(v["progress"]["trainer"] != "trainer-b" for v in stack.admin("GET", "/api/trainers").json())


def test_the_monitor_forgets_the_longest_silent_trainer_beyond_its_bound() -> None:
    monitor = TrainerMonitor(max_trainers=2)
    for name in ("t1", "t2", "t3"):
        monitor.report(progress(name, 1))
    assert [r.progress.trainer for r in monitor.latest()] == ["t2", "t3"]
