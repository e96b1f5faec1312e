"""The docker-compose shape, run without Docker: each service's command as its own process.

No Docker engine runs on the development machines, so this reads ``docker-compose.yml``, resolves
each Borealis service's environment the way compose does (``${VAR:?}`` from the operator's
environment, ``$$`` escapes) and starts its command with that environment and its own empty home:
two inference workers and two training workers beside the control plane, against a real
PostgreSQL and a real ``redis-server`` started with the compose service's own ``--requirepass``.
What a container would give differs only in addresses: service host names become 127.0.0.1 with
free ports, and each replica's container hostname becomes its worker id / trace consumer name.
The embedded model is replaced by a tiny random Llama (``model-prepare`` is tested on its own).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from borealis.embedded_redis import start_embedded_redis
from tests.procs import cli_argv, free_port, http_ok, start, stop, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"  # the compose file's served name; the weights are a tiny Llama here
SECRETS = (
    "BOREALIS_CLUSTER_TOKEN",
    "BOREALIS_ADMIN_TOKEN",
    "BOREALIS_REDIS_PASSWORD",
    "BOREALIS_POSTGRES_PASSWORD",
)
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::\?[^}]*)?\}")
SPEEDUPS = {  # test pacing only: rounds and candidates in seconds instead of minutes
    "BOREALIS_HEARTBEAT_SECONDS": "0.5",
    "BOREALIS_WORKER_STALE_SECONDS": "3",
    "BOREALIS_TRAINER_MIN_RECORDS": "4",
    "BOREALIS_TRAINER_STEPS_PER_ROUND": "2",
    "BOREALIS_TRAINER_READ_BATCH": "16",
    "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "2",
    "BOREALIS_TRAINER_BATCH_TOKENS": "256",
    "BOREALIS_TRAINER_IDLE_SECONDS": "1",
    "BOREALIS_TRACE_CLAIM_IDLE_SECONDS": "5",
    "BOREALIS_TRAINER_CHAIN_LEASE_SECONDS": "8",
    "BOREALIS_TRAINER_WATCHDOG_SECONDS": "2",
    "BOREALIS_DRAFT_VOCAB_SIZE": "256",
    "BOREALIS_AUTO_ROLLBACK": "false",
    "BOREALIS_DRIFT_WINDOW_REQUESTS": "4",
    "BOREALIS_THREADS": "1",
}


def interpolate(value: str, operator_env: dict[str, str]) -> str:
    """Compose's substitution: ``${VAR}``, ``${VAR:?message}`` (required), ``$$`` for a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in operator_env:
            raise KeyError(f"compose would refuse to start: {name} is not set")
        return operator_env[name]

    return _VARIABLE.sub(one, value)


@dataclass
class ComposeStack:
    root: Path
    spec: dict[str, Any]
    operator_env: dict[str, str]
    addresses: dict[str, str]
    base_env: dict[str, str]
    api_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def service_env(self, service: str, replica: str, extra: dict[str, str]) -> dict[str, str]:
        env = {**self.base_env, **SPEEDUPS}
        for name, raw in (self.spec["services"][service].get("environment") or {}).items():
            value = interpolate(str(raw), self.operator_env)
            for host, address in self.addresses.items():
                value = value.replace(host, address)
            env[name] = value
        home = self.root / replica
        home.mkdir(parents=True, exist_ok=False)  # its own empty home, as a fresh container has
        env.update({"BOREALIS_HOME": str(home), **extra})
        return env

    def run(self, service: str, replica: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        command = [str(part) for part in self.spec["services"][service]["command"]]
        env = self.service_env(service, replica, extra or {})
        process = start(cli_argv(*command), env, self.root / f"{replica}.log")
        self.processes[replica] = process
        return process

    def log(self, replica: str) -> Path:
        return self.root / f"{replica}.log"

    def stop_all(self) -> None:
        for process in self.processes.values():
            stop(process)


@pytest.fixture
def compose_stack(
    tmp_path: Path, postgres_url: str, tiny_model_dir: Path, key_prefix: str
) -> Iterator[ComposeStack]:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    operator_env = {name: secrets.token_hex(24) for name in SECRETS}
    redis_command = " ".join(spec["services"]["redis"]["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in redis_command  # the password this test starts it with
    redis_port = free_port()
    redis_process = start_embedded_redis(
        tmp_path / "redis", redis_port, tmp_path / "redis.log", operator_env["BOREALIS_REDIS_PASSWORD"]
    )
    api_port = free_port()
    # The compose database URL, with the service address replaced by this machine's PostgreSQL.
    compose_db = interpolate(spec["x-borealis-env"]["BOREALIS_DATABASE_URL"], operator_env)
    addresses = {
        compose_db: postgres_url,
        "@redis:6379": f"@127.0.0.1:{redis_port}",
        "http://api:8000": f"http://127.0.0.1:{api_port}",
        "/models/smollm2-135m-instruct": str(tiny_model_dir),
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BOREALIS_")}
    base_env["BOREALIS_REDIS_KEY_PREFIX"] = f"{key_prefix}-compose-{secrets.token_hex(3)}"
    stack = ComposeStack(tmp_path / "services", spec, operator_env, addresses, base_env, api_port)
    try:
        yield stack
    finally:
        stack.stop_all()
        redis_process.terminate()
        redis_process.wait(timeout=10)


def test_the_compose_shape_converges_serves_trains_swaps_and_survives_losses(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    api_port = stack.api_port
    base = f"http://127.0.0.1:{api_port}"
    admin = {"authorization": f"Bearer {stack.operator_env['BOREALIS_ADMIN_TOKEN']}"}

    migrate = stack.run("migrate", "migrate")
    assert migrate.wait(timeout=120) == 0, stack.log("migrate").read_text()[-2000:]
    api = stack.run("api", "api", {"BOREALIS_API_HOST": "127.0.0.1", "BOREALIS_API_PORT": str(api_port)})
    wait_until(http_ok(f"{base}/health"), 60, "control plane", api, stack.log("api"))
    httpx.put(f"{base}/api/policy", json={"mode": "auto", "margin": 0.0}, headers=admin).raise_for_status()

    workers = {}
    for index in (1, 2):
        name = f"inference-worker-{index}"
        port = str(free_port())
        workers[name] = stack.run(
            "inference-worker",
            name,
            {"BOREALIS_WORKER_HOST": "127.0.0.1", "BOREALIS_WORKER_PORT": port, "BOREALIS_WORKER_ID": name},
        )

    def ready_workers() -> list[str]:
        try:
            found: list[str] = httpx.get(f"{base}/ready", timeout=2).json()["workers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return []
        return found

    wait_until(lambda: len(ready_workers()) == 2, 120, "both inference workers registered")
    trainers = {
        f"training-worker-{i}": stack.run(
            "training-worker",
            f"training-worker-{i}",
            {"BOREALIS_TRAINER_CONSUMER_NAME": f"training-worker-{i}"},
        )
        for i in (1, 2)
    }

    statuses: list[int] = []

    def serve(count: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(count):
                body = {
                    "model": MODEL,
                    "prompt": f"count {i} one two three",
                    "max_tokens": 16,
                    "temperature": 0,
                }
                statuses.append(client.post(f"{base}/v1/completions", json=body).status_code)

    def trainer_versions() -> list[dict[str, Any]]:
        drafts = httpx.get(f"{base}/api/drafts", headers=admin, timeout=10).json()
        return [v for v in drafts if v["source"] == "trainer"]

    def serving() -> dict[str, Any]:
        listed = httpx.get(f"{base}/api/workers", headers=admin, timeout=10).json()
        return {w["id"]: w["draft_version"] for w in listed if w["healthy"]}

    def trained_and_swapped() -> bool:
        serve(4)
        live = [v["id"] for v in trainer_versions() if v["status"] == "live"]
        return bool(live) and set(serving().values()) == {live[-1]} and len(serving()) == 2

    wait_until(trained_and_swapped, 300, "a trained draft live on both workers")
    assert set(statuses) == {200}, statuses

    # Lose one of each: serving goes on through the other worker, learning through the other trainer.
    workers["inference-worker-1"].send_signal(signal.SIGKILL)
    trainers["training-worker-1"].send_signal(signal.SIGKILL)
    before = len(trainer_versions())
    statuses.clear()
    serve(8)
    assert set(statuses) == {200}, statuses

    def learning_goes_on() -> bool:
        serve(4)
        return len(trainer_versions()) > before

    wait_until(learning_goes_on, 300, "a new candidate from the surviving trainer")
    assert set(statuses) == {200}, statuses
