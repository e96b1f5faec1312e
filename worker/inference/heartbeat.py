"""Keeps the control plane told that this worker is alive, where it is and how loaded it is.

A control plane that is down or restarting only delays registration: the loop keeps trying
and never takes the worker down. Its replies are the only authority on which draft to serve: a swap
command on Redis merely wakes the loop for an early heartbeat (see ``wake``), so whoever can write
to Redis cannot make a worker load a version the control plane does not serve.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

from borealis.wire import HeartbeatReply, WorkerRegistration

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/internal/workers/heartbeat"


class HeartbeatLoop:
    def __init__(
        self,
        control_plane_url: str,
        cluster_token: str,
        interval_s: float,
        snapshot: Callable[[], WorkerRegistration],
        on_reply: Callable[[HeartbeatReply], None],
    ) -> None:
        self._url = control_plane_url.rstrip("/") + HEARTBEAT_PATH
        self._headers = {"authorization": f"Bearer {cluster_token}", "content-type": "application/json"}
        self._interval_s = interval_s
        self._snapshot = snapshot
        self._on_reply = on_reply
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def wake(self) -> None:
        """Beat now instead of at the next interval (a swap command arrived)."""
        self._wake.set()

    def beat(self, client: httpx.Client) -> bool:
        try:
            response = client.post(
                self._url,
                content=self._snapshot().model_dump_json(),
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            log.warning("heartbeat to %s failed: %s", self._url, exc)
            return False
        if response.status_code >= 400:
            log.warning("heartbeat refused (%s): %s", response.status_code, response.text[:200])
            return False
        try:
            reply = HeartbeatReply.model_validate_json(response.content)
        except ValueError as exc:
            log.warning("unreadable heartbeat reply: %s", exc)
            return False
        self._on_reply(reply)
        return True

    def _run(self) -> None:
        with httpx.Client(timeout=self._interval_s * 2) as client:
            while not self._stop.is_set():
                self.beat(client)
                self._wake.wait(self._interval_s)
                self._wake.clear()
