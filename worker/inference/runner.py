"""Drives an ``Engine`` from one thread and fans its token events out to waiting requests.

All torch work happens on this thread; HTTP handlers only enqueue commands and read events,
so a slow client never stalls decoding and a draft swap can be applied between steps.

The engine is also *built* on this thread (model loading packs weights with OpenMP). libgomp keeps
a thread pool per thread that has run a parallel region; once two threads have pools on a machine
with as many cores as torch threads, every pool stops spin-waiting and each small matmul pays a
futex wake-up: one decode-sized linear went from 55 to 180 us, serving through the API from 51 to
38 tok/s. So no other long-lived thread of the worker may run parallel torch ops.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from worker.engine.types import Engine, GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

EventSink = Callable[[TokenEvent | BaseException], None]
T = TypeVar("T")


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
    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._commands: queue.Queue[_Submit | _Abort | _Finish | _Call | None] = queue.Queue()
        self._sinks: dict[str, EventSink] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def active_requests(self) -> int:
        return len(self._sinks)

    def start(self, build: Callable[[], T], engine_of: Callable[[T], Engine]) -> T:
        """Build the engine on the engine thread, start stepping it there; returns what ``build`` made."""
        built: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue()

        def main() -> None:
            try:
                result = build()
                self._engine = engine_of(result)
            except BaseException as exc:  # reported to the caller of start(), which re-raises it
                built.put((None, exc))
                return
            built.put((result, None))
            self._run()

        self._thread = threading.Thread(target=main, name="engine", daemon=True)
        self._thread.start()
        result, error = built.get()
        if error is not None:
            raise error
        assert result is not None
        return result

    def stop(self) -> None:
        self._stopping.set()
        self._commands.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, request: GenerationRequest, sink: EventSink) -> None:
        self._commands.put(_Submit(request, sink))

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def finish(self, request_id: str) -> None:
        self._commands.put(_Finish(request_id))

    @property
    def _active_engine(self) -> Engine:
        assert self._engine is not None, "used before start()"
        return self._engine

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
            self._active_engine.abort(command.request_id)
            self._sinks.pop(command.request_id, None)
            return
        if isinstance(command, _Finish):
            event = self._active_engine.finish(command.request_id)
            sink = self._sinks.pop(command.request_id, None)
            if event is not None and sink is not None:
                sink(event)
            return
        request_id = command.request.request_id
        if request_id in self._sinks:
            command.sink(ValueError(f"request id {request_id!r} is already running"))
            return
        try:
            self._active_engine.submit(command.request)
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
            self._active_engine.abort(request_id)
            sink(exc)
        self._sinks.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._drain(block=not self._active_engine.has_work())
            if not self._active_engine.has_work():
                continue
            try:
                events = self._active_engine.step()
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
