"""Drives an ``Engine`` from one thread and fans its token events out to waiting requests.

All torch work happens on this thread; HTTP handlers only enqueue commands and read events,
so a slow client never stalls decoding and a draft swap can be applied between steps.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from worker.engine.types import Engine, GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

EventSink = Callable[[TokenEvent | BaseException], None]


@dataclass(frozen=True)
class _Submit:
    request: GenerationRequest
    sink: EventSink


@dataclass(frozen=True)
class _Abort:
    request_id: str


@dataclass(frozen=True)
class _Finish:
    """End a request early as finished (a stop string matched): its final event still comes."""

    request_id: str


@dataclass(frozen=True)
class _Call:
    """Run ``fn`` on the engine thread between two steps (a draft swap); report to ``done``."""

    fn: Callable[[], None]
    done: Callable[[BaseException | None], None]


class EngineRunner:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._commands: queue.Queue[_Submit | _Abort | _Finish | _Call | None] = queue.Queue()
        self._sinks: dict[str, EventSink] = {}
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._stopping = threading.Event()

    @property
    def active_requests(self) -> int:
        return len(self._sinks)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._commands.put(None)
        self._thread.join(timeout=10)

    def submit(self, request: GenerationRequest, sink: EventSink) -> None:
        self._commands.put(_Submit(request, sink))

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def finish(self, request_id: str) -> None:
        self._commands.put(_Finish(request_id))

    def call_between_steps(
        self, fn: Callable[[], None], done: Callable[[BaseException | None], None]
    ) -> None:
        self._commands.put(_Call(fn, done))

    def _apply(self, command: _Submit | _Abort | _Finish | _Call) -> None:
        if isinstance(command, _Call):
            try:
                command.fn()
            except Exception as exc:  # reported to the caller; the engine keeps its previous state
                command.done(exc)
            else:
                command.done(None)
            return
        if isinstance(command, _Abort):
            self._engine.abort(command.request_id)
            self._sinks.pop(command.request_id, None)
            return
        if isinstance(command, _Finish):
            event = self._engine.finish(command.request_id)
            sink = self._sinks.pop(command.request_id, None)
            if event is not None and sink is not None:
                sink(event)
            return
        request_id = command.request.request_id
        if request_id in self._sinks:
            command.sink(ValueError(f"request id {request_id!r} is already running"))
            return
        try:
            self._engine.submit(command.request)
        except Exception as exc:  # a refused request fails alone; the engine thread goes on
            command.sink(exc)
            return
        self._sinks[request_id] = command.sink

    def _drain(self, block: bool) -> None:
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return
            if command is None:
                return
            self._apply(command)
            block = False

    def _fail_all(self, exc: BaseException) -> None:
        for request_id, sink in list(self._sinks.items()):
            self._engine.abort(request_id)
            sink(exc)
        self._sinks.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._drain(block=not self._engine.has_work())
            if not self._engine.has_work():
                continue
            try:
                events = self._engine.step()
            except Exception as exc:  # an engine fault fails the batch, not the process
                log.exception("engine step failed")
                self._fail_all(exc)
                continue
            for event in events:
                sink = self._sinks.get(event.request_id)
                if sink is None:
                    continue
                if event.finish_reason is not None:
                    del self._sinks[event.request_id]
                sink(event)
