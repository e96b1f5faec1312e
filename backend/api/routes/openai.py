"""OpenAI-compatible inference API: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from backend.api.deps import ApiKeyDep, CallerDep, ObserverDep, RouterDep, SettingsDep
from backend.api.errors import APIError
from backend.api.sse import Render, relay_sse
from backend.schemas.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    ResponseMetrics,
    SamplingFields,
    Usage,
)
from backend.services.inference import (
    InferenceRouter,
    NoWorkerAvailable,
    Overloaded,
    WorkerFailed,
    WorkerRejected,
)
from backend.services.observation import RequestObserver
from borealis.domains import canonical_domain
from borealis.settings import Settings
from borealis.wire import ChatTurn, GenerateChunk, GenerateRequest

router = APIRouter(prefix="/v1", tags=["inference"], dependencies=[ApiKeyDep])

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy completions default
DISCONNECT_POLL_SECONDS = 0.5


async def _check_model(body: SamplingFields, settings: Settings, inference: InferenceRouter) -> None:
    served = await inference.served_models() | {settings.model_name}
    if body.model not in served:
        raise APIError(
            404,
            f"The model {body.model!r} does not exist; available: {sorted(served)}",
            param="model",
            code="model_not_found",
        )


def _bounded_max_tokens(requested: int | None, default: int, settings: Settings) -> int:
    max_tokens = default if requested is None else requested
    if max_tokens > settings.max_new_tokens_limit:
        raise APIError(
            400,
            f"max_tokens must be at most {settings.max_new_tokens_limit}, got {max_tokens}",
            param="max_tokens",
        )
    return max_tokens


def _wire_request(
    body: SamplingFields, max_tokens: int, settings: Settings, caller: str, **prompt: Any
) -> GenerateRequest:
    requested = body.metadata.domain if body.metadata else None
    return GenerateRequest(
        request_id=uuid.uuid4().hex,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        domain=canonical_domain(requested, settings.allowed_domains),
        caller=caller,
        stream=body.stream,
        **prompt,
    )


def _generation(
    inference: InferenceRouter, observer: RequestObserver, request: GenerateRequest, model: str
) -> AsyncGenerator[GenerateChunk, None]:
    return observer.observe(inference.generate(request, model), request.domain, request.stream)


def _api_error(exc: Exception) -> APIError:
    """The one mapping from routing failures to client-facing statuses."""
    if isinstance(exc, WorkerRejected):
        return APIError(exc.status, str(exc))
    if isinstance(exc, Overloaded):
        return APIError(429, str(exc), type_="rate_limit_error", headers={"Retry-After": "1"})
    if isinstance(exc, NoWorkerAvailable):
        return APIError(503, str(exc), type_="server_error", headers={"Retry-After": "2"})
    return APIError(502, str(exc), type_="server_error")


ROUTING_ERRORS = (WorkerRejected, Overloaded, NoWorkerAvailable, WorkerFailed)


async def _collect(stream: AsyncGenerator[GenerateChunk, None]) -> tuple[str, GenerateChunk]:
    """Run a request to completion; returns the text and the final chunk."""
    parts = []
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                if chunk.finish_reason == "error":
                    raise APIError(502, f"inference failed: {chunk.error}", type_="server_error")
                return "".join(parts), chunk
    except ROUTING_ERRORS as exc:
        raise _api_error(exc) from exc
    finally:
        await stream.aclose()  # tells the worker to stop when the client went away
    raise APIError(502, "inference ended without a result", type_="server_error")


async def _collect_while_connected(
    http: Request, stream: AsyncGenerator[GenerateChunk, None]
) -> tuple[str, GenerateChunk]:
    """Like ``_collect``, but a client that disconnects cancels generation on the worker too."""
    task = asyncio.ensure_future(_collect(stream))
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if not task.done() and await http.is_disconnected():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise APIError(499, "client closed the request", code="client_closed")
    return task.result()


async def _first_chunk(stream: AsyncGenerator[GenerateChunk, None]) -> GenerateChunk:
    """Start generation before the HTTP response so early failures still get a proper status code."""
    try:
        return await anext(stream)
    except ROUTING_ERRORS as exc:
        raise _api_error(exc) from exc


async def _event_stream(
    stream: AsyncGenerator[GenerateChunk, None],
    body: SamplingFields,
    envelope: dict[str, Any],
    render: Render,
) -> StreamingResponse:
    first = await _first_chunk(stream)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    relay = relay_sse(stream, first, render, envelope if include_usage else None)
    return StreamingResponse(relay, media_type="text/event-stream", headers=_ignored_header(body))


IGNORED_HEADER = "x-borealis-ignored-fields"


HEADER_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _ignored_header(body: SamplingFields) -> dict[str, str]:
    """Names the fields accepted but ignored, so a client can tell (empty when there are none).
    Names a header cannot carry (any character outside a plain token) are counted, not echoed."""
    ignored = body.ignored_fields()
    if not ignored:
        return {}
    named = [name for name in ignored if HEADER_SAFE_NAME.match(name)]
    others = len(ignored) - len(named)
    return {IGNORED_HEADER: ",".join([*named, *([f"+{others} unnamed"] if others else [])])}


@router.get("/models", response_model=ModelList)
async def list_models(settings: SettingsDep, inference: RouterDep) -> ModelList:
    models = await inference.served_models() | {settings.model_name}
    now = int(time.time())
    context = settings.max_prompt_tokens + settings.max_new_tokens_limit
    return ModelList(data=[ModelCard(id=name, created=now, max_model_len=context) for name in sorted(models)])


@router.post("/completions", response_model=Completion)
async def create_completion(
    body: CompletionRequest,
    http: Request,
    settings: SettingsDep,
    inference: RouterDep,
    observer: ObserverDep,
    caller: CallerDep,
    response: Response,
) -> Completion | StreamingResponse:
    await _check_model(body, settings, inference)
    max_tokens = _bounded_max_tokens(body.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS, settings)
    request = _wire_request(body, max_tokens, settings, caller, prompt=body.prompt_text())
    completion_id, created = f"cmpl-{request.request_id}", int(time.time())
    if not body.stream:
        response.headers.update(_ignored_header(body))
        text, final = await _collect_while_connected(
            http, _generation(inference, observer, request, body.model)
        )
        return Completion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=[CompletionChoice(text=text, finish_reason=final.finish_reason)],
            usage=Usage.of(final),
            spec_decode=final.spec_decode,
            metrics=ResponseMetrics.of(final.spec_decode),
        )

    def render(chunk: GenerateChunk) -> list[dict[str, Any]]:
        if not chunk.text and chunk.finish_reason is None:
            return []
        return [
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {"index": 0, "text": chunk.text, "finish_reason": chunk.finish_reason, "logprobs": None}
                ],
            }
        ]

    envelope = {"id": completion_id, "object": "text_completion", "created": created, "model": body.model}
    return await _event_stream(_generation(inference, observer, request, body.model), body, envelope, render)


@router.post("/chat/completions", response_model=ChatCompletion)
async def create_chat_completion(
    body: ChatCompletionRequest,
    http: Request,
    settings: SettingsDep,
    inference: RouterDep,
    observer: ObserverDep,
    caller: CallerDep,
    response: Response,
) -> ChatCompletion | StreamingResponse:
    await _check_model(body, settings, inference)
    default_max = settings.max_new_tokens_limit
    max_tokens = _bounded_max_tokens(body.requested_max_tokens(), default_max, settings)
    turns = [
        ChatTurn(role="system" if m.role == "developer" else m.role, content=m.text()) for m in body.messages
    ]
    request = _wire_request(body, max_tokens, settings, caller, messages=turns)
    completion_id, created = f"chatcmpl-{request.request_id}", int(time.time())
    if not body.stream:
        response.headers.update(_ignored_header(body))
        text, final = await _collect_while_connected(
            http, _generation(inference, observer, request, body.model)
        )
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=final.finish_reason)],
            usage=Usage.of(final),
            spec_decode=final.spec_decode,
            metrics=ResponseMetrics.of(final.spec_decode),
        )

    def base(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    sent_role = False

    def render(chunk: GenerateChunk) -> list[dict[str, Any]]:
        nonlocal sent_role
        payloads = []
        if not sent_role:
            sent_role = True
            payloads.append(base({"role": "assistant", "content": ""}, None))
        if chunk.text:
            payloads.append(base({"content": chunk.text}, None))
        if chunk.finish_reason is not None:
            payloads.append(base({}, chunk.finish_reason))
        return payloads

    envelope = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": body.model,
    }
    return await _event_stream(_generation(inference, observer, request, body.model), body, envelope, render)
