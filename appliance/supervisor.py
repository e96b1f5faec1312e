"""`borealis up`: the whole appliance on one machine, as supervised child processes.

Children run in their own sessions so the supervisor alone decides the shutdown order; a child
that dies is restarted with backoff, and one that keeps dying stops the appliance with an error.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from types import FrameType

import httpx

from backend.db.migrate import upgrade
from borealis.embedded_redis import start_embedded_redis
from borealis.processes import COLOCATED_TRAINER_ENV, Child, cli_argv, free_port
from borealis.secrets import resolve_cluster_token
from borealis.settings import Settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0


class ShutdownRequested(Exception):
    pass


def _wait_for(url: str, deadline_s: float, children: list[Child]) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode}; see {child.log_path}"
                )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def run_appliance(settings: Settings, prepare_model: bool = True) -> int:
    home = settings.home
    logs = home / "logs"
    env = dict(os.environ)
    env["BOREALIS_HOME"] = str(home)
    api_port = settings.api_port or free_port()
    env["BOREALIS_API_PORT"] = str(api_port)
    env["BOREALIS_WORKER_PORT"] = str(settings.worker_port or free_port())
    env = COLOCATED_TRAINER_ENV | env
    # Resolved once here so no two children race to generate different tokens.
    env["BOREALIS_CLUSTER_TOKEN"] = resolve_cluster_token(settings.security)
    redis_process = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise ShutdownRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = [
        Child("control-plane", cli_argv("api"), logs / "control-plane.log"),
        Child("inference-worker", cli_argv("worker", "inference"), logs / "inference-worker.log"),
        # Serving never depends on training: the trainer is restarted however often it dies.
        Child("training-worker", cli_argv("worker", "train"), logs / "training-worker.log", critical=False),
    ]
    for child in children:
        child.log_max_bytes, child.log_backups = settings.log_max_bytes, settings.log_backups
    try:
        if not settings.redis_url:
            redis_port = free_port()
            password = secrets.token_urlsafe(24)
            redis_process = start_embedded_redis(home / "redis", redis_port, logs / "redis.log", password)
            env["BOREALIS_REDIS_URL"] = f"redis://:{password}@127.0.0.1:{redis_port}/0"
            print(f"embedded redis on 127.0.0.1:{redis_port}", flush=True)
        upgrade(settings.resolved_database_url)
        if prepare_model and not settings.model_path:
            print("preparing the embedded model (first run only)…", flush=True)
            subprocess.run(cli_argv("model", "prepare"), env=env, check=True)
        for child in children:
            child.start(env)
        base = f"http://{settings.api_host}:{api_port}"
        if not _wait_for(f"{base}/ready", 600, children):
            raise RuntimeError(f"the appliance did not become ready; logs in {logs}")
        print(f"Borealis is ready. Dashboard: {base}/dashboard  API: {base}/v1  logs: {logs}", flush=True)
        if not settings.security.admin_token:
            print(f"admin credential: {settings.security.admin_token_file} (owner-only)", flush=True)
        _supervise(children, env)
    except ShutdownRequested as reason:
        print(f"stopping ({reason})…", flush=True)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    return 0


def _supervise(children: list[Child], env: dict[str, str]) -> None:
    while True:
        time.sleep(0.5)
        for child in children:
            if child.process is None or child.process.poll() is None:
                continue
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(child.restarts) > MAX_RESTARTS and child.critical:
                raise RuntimeError(f"{child.name} keeps exiting; see {child.log_path}")
            print(f"{child.name} exited with {child.process.returncode}; restarting", flush=True)
            time.sleep(min(2 ** len(child.restarts), 30))
            child.start(env)
