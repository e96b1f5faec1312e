"""Server-sent events for streamed completions: one frame per chunk, a usage frame, ``[DONE]``.

The route decides what each chunk looks like (``Render``); this module owns the framing, the error
frame when the worker fails mid-stream, and closing the upstream stream when the client leaves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from backend.schemas.openai import ResponseMetrics, Usage
from backend.services.inference import WorkerFailed
from borealis.wire import GenerateChunk


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


Render = Callable[[GenerateChunk], list[dict[str, Any]]]


async def relay_sse(
    stream: AsyncGenerator[GenerateChunk, None],
    first: GenerateChunk,
    render: Render,
    usage_envelope: dict[str, Any] | None,
) -> AsyncIterator[bytes]:
    """SSE frames for each chunk, then (if asked) a usage frame, then ``[DONE]``; errors as an error frame."""
    chunk = first
    try:
        while True:
            if chunk.finish_reason == "error":
                yield _sse({"error": {"message": f"inference failed: {chunk.error}", "type": "server_error"}})
                break
            for payload in render(chunk):
                yield _sse(payload)
            if chunk.finish_reason is not None:
                if usage_envelope is not None:
                    spec = chunk.spec_decode.model_dump() if chunk.spec_decode else None
                    metrics = ResponseMetrics.of(chunk.spec_decode)
                    yield _sse(
                        {
                            **usage_envelope,
                            "choices": [],
                            "usage": Usage.of(chunk).model_dump(),
                            "spec_decode": spec,
                            "metrics": metrics.model_dump() if metrics else None,
                        }
                    )
                break
            chunk = await anext(stream)
    except (WorkerFailed, StopAsyncIteration) as exc:
        yield _sse(
            {"error": {"message": f"inference failed: {exc or 'stream ended early'}", "type": "server_error"}}
        )
    finally:
        # Closing the upstream stream tells the worker to stop generating for a vanished client.
        await stream.aclose()
    yield b"data: [DONE]\n\n"
