"""Concurrent benchmark clients: C threads sending OpenAI-API requests, every outcome kept.

One pool serves every benchmark: a finite list of requests (``bench shift``) or an endless
stream until stopped (``bench swap``, ``bench load``), plain or streaming (SSE) responses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.workloads import Prompt


@dataclass(frozen=True)
class Request:
    path: str  # "/v1/completions" or "/v1/chat/completions"
    body: dict[str, Any]
    stream: bool = False


@dataclass(frozen=True)
class Outcome:
    index: int  # position of the request in the pool's sequence
    client: int
    started: float  # time.monotonic()
    finished: float
    status: str  # HTTP status, "stream_error", or the transport exception's name
    completion_tokens: int = 0
    spec: dict[str, Any] = field(default_factory=dict)  # the response's ``spec_decode``

    @property
    def ok(self) -> bool:
        return self.status == "200"

    @property
    def latency_s(self) -> float:
        return self.finished - self.started


def prompt_request(
    model: str, prompt: Prompt, max_tokens: int, temperature: float = 0.0, seed: int | None = None
) -> Request:
    """An OpenAI request for a workload prompt (greedy unless ``temperature``): chat prompts as
    messages, the rest as completions."""
    common: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "metadata": {"domain": prompt.domain},
    }
    if seed is not None:
        common["seed"] = seed
    if prompt.chat:
        messages = [{"role": "user", "content": prompt.text}]
        return Request("/v1/chat/completions", {**common, "messages": messages})
    return Request("/v1/completions", {**common, "prompt": prompt.text})


# (request index, client index) -> the request to send, or None: this client is done
RequestSource = Callable[[int, int], Request | None]


def send(client: httpx.Client, request: Request) -> tuple[str, int, dict[str, Any]]:
    """(status, completion tokens, spec_decode) of one request."""
    if not request.stream:
        response = client.post(request.path, json=request.body)
        body = response.json() if response.is_success else {}
        tokens = int((body.get("usage") or {}).get("completion_tokens", 0))
        return str(response.status_code), tokens, body.get("spec_decode") or {}
    stream_body = {**request.body, "stream": True, "stream_options": {"include_usage": True}}
    status, tokens, spec = "", 0, {}
    with client.stream("POST", request.path, json=stream_body) as response:
        status = str(response.status_code)
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            frame = json.loads(line[6:])
            if "error" in frame:
                status = "stream_error"
            if frame.get("usage"):
                tokens = int(frame["usage"]["completion_tokens"])
            if frame.get("spec_decode"):
                spec = frame["spec_decode"]
    return status, tokens, spec


class ClientPool:
    def __init__(
        self,
        base_url: str,
        concurrency: int,
        source: RequestSource,
        timeout_s: float = 600,
        think_s: float = 0.0,
    ) -> None:
        """``think_s``: each client's pause after a reply, like a user reading it (0: closed loop)."""
        self.outcomes: list[Outcome] = []
        self._think_s = think_s
        self._source = source
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(base_url, i, timeout_s), daemon=True)
            for i in range(concurrency)
        ]

    def _claim(self) -> int:
        with self._lock:
            index, self._next = self._next, self._next + 1
            return index

    def _run(self, base_url: str, client_index: int, timeout_s: float) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            while not self._stop.is_set():
                index = self._claim()
                request = self._source(index, client_index)
                if request is None:
                    return
                started = time.monotonic()
                try:
                    status, tokens, spec = send(client, request)
                except httpx.HTTPError as exc:
                    status, tokens, spec = type(exc).__name__, 0, {}
                outcome = Outcome(index, client_index, started, time.monotonic(), status, tokens, spec)
                with self._lock:
                    self.outcomes.append(outcome)
                if self._think_s:
                    self._stop.wait(self._think_s)

    def start(self) -> ClientPool:
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> list[Outcome]:
        """Wait for a finite source to run out; the outcomes in request order."""
        for thread in self._threads:
            thread.join()
        return sorted(self.outcomes, key=lambda o: o.index)

    def stop(self) -> list[Outcome]:
        """Let in-flight requests finish, send no more; the outcomes in request order."""
        self._stop.set()
        return self.join()


def run_all(base_url: str, requests: list[Request], concurrency: int, think_s: float = 0.0) -> list[Outcome]:
    """Send a fixed list of requests through ``concurrency`` clients; outcomes in list order."""

    def source(index: int, _client: int) -> Request | None:
        return requests[index] if index < len(requests) else None

    return ClientPool(base_url, concurrency, source, think_s=think_s).start().join()
