"""OpenAI-compatible request and response bodies, with every input bounded."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from borealis.wire import GenerateChunk, Role, SpecDecodeStats

MAX_PROMPT_CHARS = 200_000
Domain = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(StrictModel):
    include_usage: bool = False


class RequestMetadata(BaseModel):
    """OpenAI's free-form string metadata; ``domain`` labels the traffic for drift statistics."""

    model_config = ConfigDict(extra="allow")
    domain: Domain | None = None


# Fields OpenAI clients send that would change what comes back: refused unless at their no-op value.
NO_OP_VALUES: dict[str, tuple[object, ...]] = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}),
    "top_logprobs": (None, 0),
    "prediction": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "top_k": (None, -1, 0),
    "min_p": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
}
MAX_IGNORED_FIELDS = 32


class SamplingFields(BaseModel):
    """Lenient where it is harmless: an unknown field is accepted and ignored (the response names it
    in ``x-borealis-ignored-fields``) unless it changes semantics, which is a 400 naming it."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopString | list[StopString] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="Not supported: must be 0.")
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="Not supported: must be 0.")
    user: str | None = Field(default=None, max_length=256)
    metadata: RequestMetadata | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @model_validator(mode="after")
    def _refuse_what_changes_semantics(self) -> SamplingFields:
        extra = self.model_extra or {}
        if len(extra) > MAX_IGNORED_FIELDS:
            raise ValueError(f"at most {MAX_IGNORED_FIELDS} unsupported fields per request")
        for name, value in extra.items():
            allowed = NO_OP_VALUES.get(name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{name} is not supported (only {allowed[1:] or 'null'} is accepted)")
        return self

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
        | list[Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]]
    )
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(StrictModel):
    type: Literal["text"]
    text: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Role | Literal["developer"]
    content: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] | list[TextPart]
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Literal[False] | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, chunk: GenerateChunk) -> Usage:
        """From a worker's final chunk."""
        prompt, completion = chunk.prompt_tokens or 0, chunk.completion_tokens or 0
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class SpeculativeDecodingMetrics(BaseModel):
    """Per-request statistics in vLLM's shape (``metrics.speculative_decoding``), derived from
    ``spec_decode``. vLLM's denominator: mean acceptance length is 1 + accepted / steps that drafted,
    so plain steps the adaptive controller chose do not count (``spec_decode`` counts every step)."""

    mean_acceptance_length: float
    draft_acceptance_rate: float
    acceptance_histogram: list[int] = Field(description="[k]: drafting steps that accepted exactly k tokens.")
    num_spec_steps: int
    num_accepted_draft_tokens: int
    num_draft_tokens: int
    num_spec_tokens: int = Field(description="The deepest proposal of the request (tree depth).")

    @classmethod
    def of(cls, stats: SpecDecodeStats) -> SpeculativeDecodingMetrics:
        reached = stats.accepted_per_position  # [k]: steps that accepted at least k + 1 tokens
        at_least = [stats.num_drafts, *reached]
        histogram = [
            at_least[k] - (at_least[k + 1] if k + 1 < len(at_least) else 0) for k in range(len(at_least))
        ]
        steps = stats.num_drafts
        return cls(
            mean_acceptance_length=round(1 + stats.num_accepted_tokens / steps, 4) if steps else 1.0,
            draft_acceptance_rate=round(stats.num_accepted_tokens / stats.num_draft_tokens, 4)
            if stats.num_draft_tokens
            else 0.0,
            acceptance_histogram=histogram,
            num_spec_steps=steps,
            num_accepted_draft_tokens=stats.num_accepted_tokens,
            num_draft_tokens=stats.num_draft_tokens,
            num_spec_tokens=len(reached),
        )


class ResponseMetrics(BaseModel):
    speculative_decoding: SpeculativeDecodingMetrics

    @classmethod
    def of(cls, stats: SpecDecodeStats | None) -> ResponseMetrics | None:
        return cls(speculative_decoding=SpeculativeDecodingMetrics.of(stats)) if stats else None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    spec_decode: SpecDecodeStats | None = None
    metrics: ResponseMetrics | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    spec_decode: SpecDecodeStats | None = None
    metrics: ResponseMetrics | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "borealis"
    max_model_len: int | None = Field(default=None, description="Prompt plus completion tokens, at most.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
