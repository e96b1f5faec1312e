"""Drift windows reported by trainers are stored, served to operators, and shifts audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from borealis.wire import DriftReport
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("drift-home")
    with Stack(home, redis_url, key_prefix, tiny_model_dir, "tiny-llama") as stack:
        yield stack


def report(index: int, divergence: float | None, shift: bool) -> DriftReport:
    return DriftReport(
        trainer="t1",
        index=index,
        requests=100,
        tokens=4000,
        started_at=1000.0 + index,
        ended_at=1001.0 + index,
        domain_mix={"code": 0.2, "prose": 0.8},
        acceptance_by_domain={"code": 2.1},
        divergence=divergence,
        mix_shift=0.1,
        js_threshold=0.1,
        mix_threshold=0.3,
        shift=shift,
    )


def test_windows_are_stored_in_order_and_shifts_audited(stack: Stack) -> None:
    for window in (report(0, None, False), report(1, 0.04, False), report(2, 0.2, True)):
        response = stack.cluster(
            "POST",
            "/internal/drift",
            content=window.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
    drift = stack.admin("GET", "/api/drift").json()
    assert drift["js_threshold"] == 0.1
    assert [w["index"] for w in drift["windows"]] == [0, 1, 2]
    assert [w["shift"] for w in drift["windows"]] == [False, False, True]
    assert drift["windows"][2]["domain_mix"] == {"code": 0.2, "prose": 0.8}
    shifts = stack.admin("GET", "/api/audit?action=drift.shift").json()
    assert [entry["target"] for entry in shifts] == ["window 2"]


def test_bad_reports_are_refused(stack: Stack) -> None:
    bad = report(3, 0.5, True).model_dump()
    bad["divergence"] = 7.0
    assert stack.cluster("POST", "/internal/drift", json=bad).status_code == 400
    assert (
        httpx.post(f"{stack.base_url}/internal/drift", json=report(4, 0.1, False).model_dump()).status_code
        == 401
    )
