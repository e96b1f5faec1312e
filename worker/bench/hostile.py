"""A hostile client for ``borealis bench load --hostile``: degenerate sampling values, label floods,
oversized bodies and clients that disconnect, mixed in with well-behaved traffic.

It counts what it got back by kind and status; the benchmark then shows whether any of it reached
the well-behaved clients (their failures) or the server (5xx anywhere).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import httpx

OVERSIZED_BYTES = 6 * 1024 * 1024  # above the control plane's default 4 MiB body cap


def attacks(model: str) -> list[tuple[str, dict[str, Any] | bytes, float]]:
    """(kind, body, client timeout in seconds) for one pass over every attack."""
    chat = [{"role": "user", "content": "Write a long essay about the sea."}]
    return [
        ("tiny_temperature", {"model": model, "messages": chat, "max_tokens": 32, "temperature": 1e-40}, 120),
        (
            "tiny_top_p",
            {"model": model, "messages": chat, "max_tokens": 32, "temperature": 2.0, "top_p": 5e-324},
            120,
        ),
        (
            "huge_seed",
            {"model": model, "messages": chat, "max_tokens": 32, "temperature": 1.0, "seed": 2**63 - 1},
            120,
        ),
        ("seed_out_of_range", {"model": model, "messages": chat, "max_tokens": 8, "seed": 2**64}, 120),
        (
            "label_flood",
            {
                "model": model,
                "messages": chat,
                "max_tokens": 4,
                "metadata": {"domain": f"x{uuid.uuid4().hex[:12]}"},
            },
            120,
        ),
        ("oversized_body", b'{"model": "m", "prompt": "' + b"a" * OVERSIZED_BYTES + b'"}', 120),
        ("disconnect", {"model": model, "messages": chat, "max_tokens": 400, "temperature": 0}, 1.0),
    ]


class HostileClient:
    def __init__(self, base_url: str, model: str) -> None:
        self.base_url = base_url
        self.model = model
        self.outcomes: Counter[str] = Counter()  # "kind:status"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-client", daemon=True)

    def _run(self) -> None:
        url = f"{self.base_url}/v1/chat/completions"
        with httpx.Client() as client:
            while not self._stop.is_set():
                for kind, body, timeout_s in attacks(self.model):
                    if self._stop.is_set():
                        return
                    self.outcomes[f"{kind}:{self._send(client, url, body, timeout_s)}"] += 1

    @staticmethod
    def _send(client: httpx.Client, url: str, body: dict[str, Any] | bytes, timeout_s: float) -> str:
        try:
            if isinstance(body, bytes):
                headers = {"content-type": "application/json"}
                response = client.post(url, content=body, headers=headers, timeout=timeout_s)
            else:
                response = client.post(url, json=body, timeout=timeout_s)
        except httpx.TimeoutException:
            return "disconnected"
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    def start(self) -> HostileClient:
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=180)
        return dict(sorted(self.outcomes.items()))

    @property
    def server_errors(self) -> int:
        return sum(count for key, count in self.outcomes.items() if key.rsplit(":", 1)[1].startswith("5"))
