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

from borealis.control_client import ControlPlaneClient, ControlPlaneError
from borealis.wire import HeartbeatReply, WorkerRegistration

log = logging.getLogger(__name__)


class HeartbeatLoop:
    def __init__(
        self,
        client: ControlPlaneClient,
        interval_s: float,
        snapshot: Callable[[], WorkerRegistration],
        on_reply: Callable[[HeartbeatReply], None],
    ) -> None:
        self._client = client
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

    def beat(self) -> bool:
        try:
            reply = self._client.heartbeat(self._snapshot())
        except ControlPlaneError as exc:
            log.warning("heartbeat to %s failed: %s", self._client.base_url, exc)
            return False
        self._on_reply(reply)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._wake.wait(self._interval_s)
            self._wake.clear()
