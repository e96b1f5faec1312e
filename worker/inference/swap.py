"""The swap protocol on the worker side, in one place (the state sequence is in ``borealis.wire``).

``SwapListener`` hears swap commands on Redis pub/sub; they only wake the heartbeat, whose reply
from the control plane names the version to serve. ``DraftSwapper`` then fetches the artifact over
HTTP, checks the sha256 the control plane vouches for while it streams (safetensors only, nothing
deserialised before), loads it on a background thread, has the engine install it between two
decoding steps (``build_swapper`` wires that to the engine runner), and acks. A failed swap keeps the
current draft and is reported; the same bad version is not retried until the control plane asks
again after a back-off.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from borealis.control_client import ControlPlaneClient, ControlPlaneError
from borealis.settings import Settings
from borealis.wire import SwapAck, SwapCommand
from worker.inference.engine_factory import ServingEngine
from worker.inference.runner import EngineRunner
from worker.inference.server import WorkerState
from worker.native_memory import release_free_memory

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER_S = 30.0

DraftLoader = Callable[[Path], Any]
"""Builds the engine's draft from an artifact directory (raises on a bad artifact)."""
Installer = Callable[[str | None, Any, Callable[[BaseException | None], None]], None]
"""Hands (version, draft or None) to the engine thread; calls back once it is installed or failed."""


class SwapFailed(RuntimeError):
    pass


@dataclass
class _Failure:
    version: str
    at: float


class DraftSwapper:
    def __init__(
        self,
        worker_id: str,
        client: ControlPlaneClient,
        cache_dir: Path,
        loader: DraftLoader,
        installer: Installer,
    ) -> None:
        self.worker_id = worker_id
        self._client = client
        self._cache_dir = cache_dir
        shutil.rmtree(cache_dir, ignore_errors=True)  # downloads a crash left behind
        self._loader = loader
        self._installer = installer
        self._lock = threading.Lock()
        self.current: str | None = None
        self._in_progress: str | None = None
        self._failure: _Failure | None = None

    def request(self, version: str | None) -> bool:
        """Start moving to ``version`` unless already there, on the way, or recently failed."""
        with self._lock:
            if version == self.current or (version is not None and version == self._in_progress):
                return False
            failure = self._failure
            if (
                failure
                and failure.version == version
                and time.monotonic() - failure.at < RETRY_FAILED_AFTER_S
            ):
                return False
            self._in_progress = version
        threading.Thread(target=self._swap, args=(version,), name=f"swap-{version}", daemon=True).start()
        return True

    def _swap(self, version: str | None) -> None:
        started = time.monotonic()
        try:
            draft = self._load(version) if version is not None else None
            installed = threading.Event()
            errors: list[BaseException] = []

            def done(error: BaseException | None) -> None:
                if error is not None:
                    errors.append(error)
                installed.set()

            self._installer(version, draft, done)
            if not installed.wait(timeout=600):
                raise SwapFailed("the engine did not install the draft within 600 s")
            if errors:
                raise SwapFailed(f"engine refused the draft: {errors[0]}")
        except Exception as exc:
            log.warning("swap to %s failed: %s", version, exc)
            with self._lock:
                self._in_progress = None
                self._failure = _Failure(str(version), time.monotonic())
            self._ack(version, ok=False, error=str(exc)[:2000], seconds=time.monotonic() - started)
            return
        with self._lock:
            self.current = version
            self._in_progress = None
            self._failure = None
        log.info("now serving draft %s (%.2f s)", version, time.monotonic() - started)
        self._ack(version, ok=True, error="", seconds=time.monotonic() - started)

    def _load(self, version: str) -> Any:
        """Fetch and load; the files go once loaded (a worker would otherwise keep every version)."""
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{version}-", dir=self._cache_dir))
        try:
            self._client.fetch_draft(version, staging)
            return self._loader(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _ack(self, version: str | None, ok: bool, error: str, seconds: float) -> None:
        ack = SwapAck(
            worker_id=self.worker_id, draft_version=version, ok=ok, error=error, load_seconds=seconds
        )
        try:
            self._client.swap_ack(ack)
        except ControlPlaneError as exc:  # the audit log misses one entry; the heartbeat still tells
            log.warning("swap ack for %s not delivered: %s", version, exc)


class SwapListener:
    def __init__(self, redis_url: str, channel: str, on_command: Callable[[SwapCommand], None]) -> None:
        self._redis_url = redis_url
        self._channel = channel
        self._on_command = on_command
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swap-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _handle(self, data: bytes) -> None:
        try:
            command = SwapCommand.model_validate_json(data)
        except ValidationError as exc:
            log.warning("ignoring a malformed swap command: %s", exc.errors()[:1])
            return
        self._on_command(command)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2, socket_timeout=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                backoff = 0.5
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and isinstance(message.get("data"), bytes):
                        self._handle(message["data"])
                pubsub.close()
                client.close()
            except redis.RedisError as exc:
                log.warning("swap listener lost Redis (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def build_swapper(
    settings: Settings,
    state: WorkerState,
    runner: EngineRunner,
    serving: ServingEngine[Any],
    control: ControlPlaneClient,
) -> DraftSwapper | None:
    """The worker's swapper, installing drafts on the engine thread between two steps; None when the
    engine takes no draft (the reference HF engine)."""
    load, install = serving.load_draft, serving.install_draft
    if load is None or install is None:
        return None

    def installer(version: str | None, draft: Any, done: Callable[[BaseException | None], None]) -> None:
        def apply() -> None:
            install(draft)
            state.draft_version = version

        def installed(error: BaseException | None) -> None:
            done(error)
            if error is None and settings.worker_tune_allocator:
                threading.Thread(target=release_free_memory, name="malloc-trim", daemon=True).start()

        runner.call_between_steps(apply, installed)

    cache_dir = settings.home / "worker-drafts" / state.worker_id.replace(":", "_")
    return DraftSwapper(state.worker_id, control, cache_dir, load, installer)
