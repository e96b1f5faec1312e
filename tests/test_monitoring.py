"""The shipped Grafana board and Prometheus config name only metrics the control plane exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-llama"
METRIC = re.compile(r"\b(borealis:[a-z0-9_]+|process_[a-z0-9_]+)")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[set[str]]:
    """Every sample name ``/metrics`` declares, from its ``# TYPE`` lines, after one real request."""
    with Stack(
        tmp_path_factory.mktemp("monitoring-home"), redis_url, key_prefix, tiny_model_dir, MODEL
    ) as stack:
        stack.start_worker("w1")
        body = {"model": MODEL, "prompt": "a b a b", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60).status_code == 200
        text = httpx.get(f"{stack.base_url}/metrics", timeout=30).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            if kind == "counter":  # declared with or without ``_total`` depending on the client version
                names.add(family if family.endswith("_total") else family + "_total")
            else:
                names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
    yield names


def board_expressions() -> list[str]:
    board = json.loads((ROOT / "monitoring" / "grafana" / "borealis.json").read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_every_board_expression_names_exported_metrics(exported: set[str]) -> None:
    expressions = board_expressions()
    assert len(expressions) >= 15
    for expr in expressions:
        named = METRIC.findall(expr)
        assert named, f"no Borealis metric in {expr!r}"
        missing = [name for name in named if name not in exported]
        assert not missing, f"{expr!r} names metrics /metrics does not export: {missing}"


def test_prometheus_scrapes_the_control_plane() -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"prometheus", "grafana", "flower"} <= {
        name for name, service in compose["services"].items() if "monitoring" in service.get("profiles", [])
    }
