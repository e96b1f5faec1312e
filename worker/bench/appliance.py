"""A private appliance for benchmarks: its own home, ports, tokens, Redis and processes.

Benchmarks measure the real thing (control plane, inference workers, trainer as separate
processes talking HTTP and Redis), never an in-process shortcut. Its home (logs, drafts, a trainer's
checkpoints: 0.3 GB after a co-located `bench shift`) goes when the benchmark ends well and stays,
named in a warning, when it fails.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from borealis.embedded_redis import start_embedded_redis
from borealis.processes import COLOCATED_TRAINER_ENV, Child, cli_argv, free_port
from borealis.secrets import generate_token
from borealis.settings import Settings, get_settings

if TYPE_CHECKING:
    from worker.draft.model import Eagle3Draft

log = logging.getLogger(__name__)


@dataclass
class Appliance:
    home: Path
    base_url: str
    admin_token: str
    cluster_token: str
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def admin_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"authorization": f"Bearer {self.admin_token}"}, timeout=60
        )

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self.children if c.process is not None}

    def wait_ready(self, timeout_s: float = 300) -> None:
        def exited() -> str | None:
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    return f"{child.name} exited; see {child.log_path}"
            return None

        wait_until_ok(
            f"{self.base_url}/ready", exited, timeout_s, f"appliance not ready; logs in {self.home}"
        )


def wait_until_ok(url: str, exited: Callable[[], str | None], timeout_s: float, not_ready: str) -> None:
    """Poll ``url`` until it answers 200; fail at once when ``exited`` names a process that died
    (its message), or with ``not_ready`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (dead := exited()) is not None:
            raise RuntimeError(dead)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(not_ready)


@contextmanager
def private_appliance(
    settings: Settings, workers: int = 1, trainer: bool = False, extra_env: dict[str, str] | None = None
) -> Iterator[Appliance]:
    home = Path(tempfile.mkdtemp(prefix="borealis-bench-"))
    api_port = free_port()
    env = {
        **COLOCATED_TRAINER_ENV,  # like `borealis up`: one machine
        **os.environ,
        "BOREALIS_HOME": str(home),
        "BOREALIS_API_PORT": str(api_port),
        "BOREALIS_ADMIN_TOKEN": generate_token("adm"),
        "BOREALIS_CLUSTER_TOKEN": generate_token("cls"),
        "BOREALIS_MODEL_PATH": str(settings.resolved_model_path),
        "BOREALIS_DATABASE_URL": "",
        **(extra_env or {}),
    }
    redis_process = None
    if not settings.redis_url:
        redis_port = free_port()
        password = secrets.token_urlsafe(24)
        redis_process = start_embedded_redis(home / "redis", redis_port, home / "redis.log", password)
        env["BOREALIS_REDIS_URL"] = f"redis://:{password}@127.0.0.1:{redis_port}/0"
    appliance = Appliance(
        home, f"http://127.0.0.1:{api_port}", env["BOREALIS_ADMIN_TOKEN"], env["BOREALIS_CLUSTER_TOKEN"], env
    )
    appliance.children.append(Child("control-plane", cli_argv("api"), home / "api.log"))
    for index in range(workers):
        appliance.children.append(
            Child(f"inference-worker-{index}", cli_argv("worker", "inference"), home / f"worker-{index}.log")
        )
    if trainer:
        appliance.children.append(Child("training-worker", cli_argv("worker", "train"), home / "trainer.log"))
    failed = True
    try:
        for child in appliance.children:
            child_env = dict(env)
            if child.name.startswith("inference-worker"):
                child_env["BOREALIS_WORKER_PORT"] = str(free_port())
                child_env["BOREALIS_WORKER_ID"] = child.name
            child.start(child_env)
        appliance.wait_ready()
        yield appliance
        failed = False
    finally:
        for child in reversed(appliance.children):
            child.stop()
        if redis_process is not None:
            redis_process.terminate()
            try:
                redis_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                redis_process.kill()
        if failed:
            log.warning("the private appliance's logs are kept in %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)


def day0_draft(model_dir: Path, seed: int = 0) -> Eagle3Draft:
    """A random-weight draft for the target in ``model_dir``, as a fresh appliance starts with."""
    from collections import Counter

    from worker.draft.model import new_draft
    from worker.draft.vocab import DraftVocab
    from worker.engine.llama import LlamaSpec

    spec = LlamaSpec.from_config(json.loads((model_dir / "config.json").read_text()))
    size = get_settings().draft_vocab_size
    return new_draft(spec, DraftVocab.from_counts(Counter(), size, spec.vocab_size), seed=seed)


def make_day0_drafts(model_dir: Path, root: Path) -> list[Path]:
    """Two random-weight drafts for the target: real artifacts to swap between."""
    from worker.draft.io import save_draft

    paths = []
    for seed in (1, 2):
        paths.append(root / f"draft-{seed}")
        save_draft(day0_draft(model_dir, seed), paths[-1])
    return paths


def wait_for_version(client: httpx.Client, version: str, timeout_s: float = 120) -> float:
    """Seconds until every healthy worker reports ``version`` (its swap acknowledged)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        workers = [w for w in client.get("/api/workers").json() if w["healthy"]]
        if workers and all(w["draft_version"] == version for w in workers):
            return time.monotonic() - started
        time.sleep(0.02)
    raise RuntimeError(f"workers did not reach {version} within {timeout_s} s")
