"""docker-compose.yml stays consistent with the code (no Docker engine runs here to try it)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from appliance.cli import build_parser
from borealis.settings import Settings
from scripts.gpu_requirements import requirements
from tests.test_compose_stack import SECRETS, interpolate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_borealis_command_exists(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in compose["services"].items():
        if service.get("build"):
            args = parser.parse_args(service["command"])
            assert callable(args.func), name


def test_every_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    fields = {f"BOREALIS_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}) if service.get("build") else {}:
            assert variable in fields, f"{name}: {variable} is not a setting"


def test_ports_line_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_env = services["api"]["environment"]
    api_port = api_env["BOREALIS_API_PORT"]
    assert f"{api_port}:{api_port}" in services["api"]["ports"]
    control_plane = urlparse(api_env["BOREALIS_CONTROL_PLANE_URL"])
    assert (control_plane.hostname, str(control_plane.port)) == ("api", api_port)
    worker_port = services["inference-worker"]["environment"]["BOREALIS_WORKER_PORT"]
    assert worker_port in services["inference-worker"]["expose"]
    assert f":{worker_port}/health" in " ".join(services["inference-worker"]["healthcheck"]["test"])
    assert f":{api_port}/health" in " ".join(services["api"]["healthcheck"]["test"])
    secrets = {name: "secret" for name in SECRETS}
    for url_key, service in (("BOREALIS_REDIS_URL", "redis"), ("BOREALIS_DATABASE_URL", "postgres")):
        assert urlparse(interpolate(api_env[url_key], secrets)).hostname == service


def test_every_container_shares_the_operators_secrets(compose: dict[str, Any]) -> None:
    """Compose refuses to start without them, so no container generates a token of its own."""
    for name, service in compose["services"].items():
        if service.get("build") and name != "model-prepare":
            token = service["environment"]["BOREALIS_CLUSTER_TOKEN"]
            assert token.startswith("${BOREALIS_CLUSTER_TOKEN:?"), name
    assert compose["services"]["api"]["environment"]["BOREALIS_ADMIN_TOKEN"].startswith(
        "${BOREALIS_ADMIN_TOKEN:?"
    )
    with pytest.raises(KeyError, match="BOREALIS_REDIS_PASSWORD"):
        interpolate(compose["services"]["api"]["environment"]["BOREALIS_REDIS_URL"], {})
    assert "api-home:/data" in compose["services"]["api"]["volumes"]
    assert "/data" in compose["services"]["training-worker"]["volumes"]


def test_workers_read_the_model_the_prepare_step_writes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prepare = services["model-prepare"]
    home = prepare["environment"]["BOREALIS_HOME"]
    written = Settings(home=Path(home)).embedded_model_dir
    (volume_spec,) = prepare["volumes"]
    volume, mount = volume_spec.split(":")[:2]
    relative = written.relative_to(mount)
    for name in ("inference-worker", "training-worker"):
        (spec,) = [v for v in services[name]["volumes"] if v.startswith("models:")]
        worker_volume, worker_mount = spec.split(":")[:2]
        assert worker_volume == volume
        assert Path(services[name]["environment"]["BOREALIS_MODEL_PATH"]) == Path(worker_mount) / relative


def test_the_gpu_profile_runs_sglang_workers_on_reserved_gpus_from_the_gpu_image(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["inference-worker-gpu"]
    trainer = compose["services"]["training-worker-gpu"]
    assert worker["command"] == ["worker", "inference"] and trainer["command"] == ["worker", "train"]
    assert Settings(engine=worker["environment"]["BOREALIS_ENGINE"]).engine == "sglang"
    assert worker["environment"]["BOREALIS_SGLANG_DEVICE"] == "cuda"
    assert Settings(trainer_device=trainer["environment"]["BOREALIS_TRAINER_DEVICE"]).trainer.device == "cuda"
    for service in (worker, trainer):
        assert service["profiles"] == ["gpu"] and service["build"] == worker["build"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    dockerfile = ROOT / worker["build"]["dockerfile"]
    assert "python scripts/gpu_requirements.py worker" in dockerfile.read_text()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sglang"]
    wanted = requirements(["worker"])
    assert wanted[0] == extra[0] and not [d for d in wanted if d.startswith(("torch==", "transformers=="))]
    for name, service in compose["services"].items():
        if service.get("build") and "gpu" not in service.get("profiles", []):
            assert not service.get("deploy"), f"{name}: the CPU shape reserves no GPU"
