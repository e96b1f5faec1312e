"""Hot swap of the draft model inside a running inference worker.

Weights come from the control plane over HTTP and are checked against the sha256 the control
plane vouches for before anything is deserialised (safetensors only). Loading happens on a
background thread; the engine switches between two decoding steps, so no request stalls or fails.
A failed swap keeps the current draft and is reported; the same bad version is not retried
until the control plane asks again after a back-off.
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

from borealis.control_client import ControlPlaneClient, ControlPlaneError
from borealis.wire import SwapAck
from worker.engine.types import Drafter

log = logging.getLogger(__name__)

RETRY_FAILED_AFTER_S = 30.0

DraftLoader = Callable[[Path], Drafter]
"""Builds the engine's draft from an artifact directory (raises on a bad artifact)."""
Installer = Callable[[str | None, Drafter | None, Callable[[BaseException | None], None]], None]
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

    def _load(self, version: str) -> Drafter:
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
