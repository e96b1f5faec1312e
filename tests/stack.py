"""A control plane and inference workers as real subprocesses, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.procs import cli_argv, free_port, http_ok, start, stop, wait_until

ADMIN_TOKEN = "adm_test_" + uuid.uuid4().hex
CLUSTER_TOKEN = "cls_test_" + uuid.uuid4().hex


class Stack:
    def __init__(
        self,
        home: Path,
        redis_url: str,
        key_prefix: str,
        model_dir: Path,
        model_name: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOREALIS_")}
        self.env.update(
            {
                "BOREALIS_HOME": str(home),
                "BOREALIS_REDIS_URL": redis_url,
                "BOREALIS_REDIS_KEY_PREFIX": f"{key_prefix}-{uuid.uuid4().hex[:6]}",
                "BOREALIS_THREADS": "1",
                "BOREALIS_MODEL_PATH": str(model_dir),
                "BOREALIS_MODEL_NAME": model_name,
                "BOREALIS_API_PORT": str(self.api_port),
                "BOREALIS_HEARTBEAT_SECONDS": "0.5",
                "BOREALIS_WORKER_STALE_SECONDS": "3",
                "BOREALIS_ADMIN_TOKEN": ADMIN_TOKEN,
                "BOREALIS_CLUSTER_TOKEN": CLUSTER_TOKEN,
                **(extra_env or {}),
            }
        )
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def key_prefix(self) -> str:
        return self.env["BOREALIS_REDIS_KEY_PREFIX"]

    def start_api(self) -> None:
        self.api = start(cli_argv("api"), self.env, self.home / "api.log")
        wait_until(http_ok(f"{self.base_url}/health"), 60, "control plane", self.api, self.home / "api.log")

    def start_worker(
        self, worker_id: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **self.env,
            "BOREALIS_WORKER_PORT": str(free_port()),
            "BOREALIS_WORKER_ID": worker_id,
            **(extra_env or {}),
        }
        log = self.home / f"worker-{worker_id}.log"
        process = start(cli_argv("worker", "inference"), env, log)
        self.workers[worker_id] = process
        wait_until(lambda: worker_id in self.ready_workers(), 120, f"worker {worker_id}", process, log)
        return process

    def ready_workers(self) -> list[str]:
        try:
            workers: list[str] = httpx.get(f"{self.base_url}/ready", timeout=2).json()["workers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return []
        return workers

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=60, **kwargs)

    def cluster(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {CLUSTER_TOKEN}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=60, **kwargs)

    def stop(self) -> None:
        for process in self.workers.values():
            stop(process)
        if self.api is not None:
            stop(self.api)

    def __enter__(self) -> Stack:
        """Start the control plane; leaving the block stops it and every worker, even on failure."""
        try:
            self.start_api()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Traffic:
    """Continuous completions in the background; every status code is kept (-1: no answer in 60 s)."""

    def __init__(self, base_url: str, model: str) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, model), daemon=True)

    def _run(self, base_url: str, model: str) -> None:
        body = {"model": model, "prompt": "one two three", "max_tokens": 24, "temperature": 0}
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(client.post(f"{base_url}/v1/completions", json=body).status_code)
                except httpx.HTTPError:
                    self.statuses.append(-1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
