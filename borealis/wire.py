"""Every message that crosses a process boundary, defined once and versioned.

Producer and consumer import the same models, so they cannot drift apart. Torch-free: the
control plane imports this without the ML stack. Bump ``WIRE_VERSION`` on any incompatible
change; receivers refuse messages of another major version.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WIRE_VERSION = 1

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "abort", "error"]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wire_version: int = WIRE_VERSION


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str = Field(max_length=200_000)


class WorkerRegistration(WireModel):
    """Inference worker → control plane, at start and on every heartbeat (idempotent upsert)."""

    worker_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str = Field(min_length=1, max_length=512, description="Where the control plane reaches it.")
    model: str = Field(min_length=1, max_length=256)
    draft_version: str | None = Field(default=None, max_length=128)
    active_requests: int = Field(default=0, ge=0)
    max_context_tokens: int = Field(ge=1)


class GenerateRequest(WireModel):
    """Control plane → inference worker: one generation, by prompt text or chat turns."""

    request_id: str = Field(min_length=1, max_length=128)
    prompt: str | None = Field(default=None, max_length=400_000)
    messages: list[ChatTurn] | None = Field(default=None, max_length=512)
    max_tokens: int = Field(ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=4)
    domain: str | None = Field(default=None, max_length=64)


class SpecDecodeStats(BaseModel):
    """Per-request speculative decoding counters (vLLM-style names)."""

    num_steps: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = Field(default_factory=list)
    mean_acceptance_length: float = 0.0
    draft_version: str | None = None


class GenerateChunk(WireModel):
    """Inference worker → control plane: one line of the NDJSON response stream.

    ``text`` is the new text since the previous chunk. The final chunk carries
    ``finish_reason``, token counts and the speculative statistics.
    """

    request_id: str
    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    spec_decode: SpecDecodeStats | None = None
    error: str | None = None


class WorkerError(WireModel):
    """Inference worker → control plane: a request it refuses (e.g. prompt longer than the context)."""

    status: int
    message: str
