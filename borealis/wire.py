"""Every message that crosses a process boundary, defined once and versioned.

Producer and consumer import the same models, so they cannot drift apart. Torch-free: the
control plane imports this without the ML stack. Bump ``WIRE_VERSION`` on any incompatible
change; receivers refuse messages of another version (the base model's validator).

The swap protocol, as the sequence of states one draft version goes through:

1. desired version committed — the registry stores it (promotion, approval, rollback);
2. swap command (fast path) — ``SwapCommand`` on Redis pub/sub, only a wake-up for workers;
3. heartbeat reconciles — ``HeartbeatReply.desired_draft_version`` is the authority: a worker that
   missed the command, or restarted, converges on its next beat;
4. fetch and verify — ``DraftManifest`` then the weights over HTTP, sha256 checked while streaming;
5. load off the engine thread — the worker builds the draft while serving goes on;
6. install between steps — the engine switches drafts between two decoding steps;
7. ack — ``SwapAck`` to the control plane, ok or with the error (the old draft keeps serving).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

WIRE_VERSION = 1

MAX_GENERATED_TOKENS = 16_384  # also the longest trace output
MAX_SEED = 2**63 - 1
DraftVersion = Annotated[str, StringConstraints(pattern=r"^v[0-9]{1,9}$")]
DomainLabel = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
CallerLabel = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=256)]

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "abort", "error"]
DraftSource = Literal["trainer", "upload", "offline"]


class WireModel(BaseModel):
    """Base of every message: unknown fields and another wire version are refused when parsed."""

    model_config = ConfigDict(extra="forbid")
    wire_version: int = WIRE_VERSION

    @field_validator("wire_version")
    @classmethod
    def _wire_version(cls, value: int) -> int:
        if value != WIRE_VERSION:
            raise ValueError(f"wire version {value} is not {WIRE_VERSION}")
        return value


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str = Field(max_length=200_000)


class WorkerRegistration(WireModel):
    """Inference worker → control plane, at start and on every heartbeat (idempotent upsert)."""

    worker_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str = Field(min_length=1, max_length=512, description="Where the control plane reaches it.")
    model: str = Field(min_length=1, max_length=256)
    draft_version: DraftVersion | None = None
    active_requests: int = Field(default=0, ge=0, description="Admitted and unfinished: decoding or waiting.")
    waiting_requests: int = Field(default=0, ge=0, description="Of those, waiting for a batch slot.")
    max_context_tokens: int = Field(ge=1)
    traces_exported: int = Field(default=0, ge=0, description="Trace records handed to Redis since start.")
    traces_dropped: int = Field(
        default=0, ge=0, description="Trace records dropped since start (never blocks)."
    )
    trace_features_stored: int = Field(
        default=0, ge=0, description="Trace feature blobs written to the side store since start."
    )
    trace_features_dropped: int = Field(
        default=0, ge=0, description="Trace feature blobs dropped (over budget, or refused by Redis)."
    )
    rss_bytes: int = Field(default=0, ge=0, description="The worker's resident memory (0: unknown).")
    cpu_seconds: float = Field(default=0.0, ge=0.0, description="CPU time the worker process has used.")
    engine: Literal["spec", "hf", "sglang"] = Field(
        default="spec",
        description="spec: the lean speculative engine; hf: reference decoding, no draft; sglang: an "
        "SGLang engine (EAGLE-3 drafts on CUDA).",
    )
    fallback_reason: str = Field(
        default="", max_length=300, description="Why the worker serves with hf though spec was asked for."
    )


class HeartbeatReply(WireModel):
    """Control plane → inference worker, in answer to every heartbeat: the version it should serve.

    Workers reconcile to ``desired_draft_version`` whenever it differs from what they hold, so a
    restarted worker, or one that missed a swap command, converges without operator action.
    """

    desired_draft_version: DraftVersion | None = None
    learning_paused: bool = False


def swap_channel(key_prefix: str) -> str:
    """The Redis pub/sub channel carrying ``SwapCommand`` messages."""
    return f"{key_prefix}:swaps"


class SwapCommand(WireModel):
    """Control plane → inference workers (Redis pub/sub): load this draft version and switch to it."""

    command_id: str = Field(min_length=1, max_length=64)
    draft_version: DraftVersion | None = Field(default=None, description="None: serve without a draft.")
    reason: str = Field(default="", max_length=500)


class SwapAck(WireModel):
    """Inference worker → control plane: the outcome of a swap (or of a reconcile)."""

    worker_id: str = Field(min_length=1, max_length=128)
    draft_version: DraftVersion | None = None
    ok: bool
    error: str = Field(default="", max_length=2000)
    load_seconds: float = Field(default=0.0, ge=0.0)


# A draft artifact travels as a directory of two files: the weights, and a manifest naming them.
WEIGHTS_FILE = "draft.safetensors"
MANIFEST_FILE = "manifest.json"


class LearningState(WireModel):
    """Control plane → training worker, each round: whether to learn, and which draft is live."""

    paused: bool
    live_version: DraftVersion | None = None


class RegisteredDraft(WireModel):
    """Control plane → publisher: the version a registration got, and where its weights go."""

    version: DraftVersion
    upload_path: str = Field(max_length=256)
    status: str = Field(default="uploading", max_length=32)
    artifact_uploaded: bool = Field(
        default=False, description="The same artifact was registered and uploaded before: nothing to send."
    )


class UploadResult(WireModel):
    """Control plane → publisher: the verified upload, and the status the approval policy gave it."""

    version: DraftVersion
    status: str = Field(max_length=32)


class DraftManifest(WireModel):
    """Control plane → workers and trainers: a registered version's manifest and artifact digest."""

    version: DraftVersion
    parent_version: DraftVersion | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_bytes: int = Field(gt=0)
    manifest: dict[str, Any] = Field(default_factory=dict)


class Received(WireModel):
    """Control plane → sender: the message was stored."""

    ok: bool = True


class DraftRegistration(WireModel):
    """Training worker → control plane: a candidate draft; its weights are uploaded next.

    ``shadow_eval`` maps a domain to the simulated acceptance length of the candidate and of the
    live draft on the same held-out traces: ``{"code": {"candidate": 2.9, "live": 2.4}}``.
    """

    parent_version: DraftVersion | None = None
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_bytes: int = Field(gt=0, le=4 * 1024**3)
    manifest: dict[str, Any] = Field(default_factory=dict)
    data_window: dict[str, Any] = Field(default_factory=dict)
    training_metrics: dict[str, Any] = Field(default_factory=dict)
    shadow_eval: dict[str, dict[str, float]] = Field(default_factory=dict, max_length=64)
    source: DraftSource = "trainer"


class GenerateRequest(WireModel):
    """Control plane → inference worker: one generation, by prompt text or chat turns."""

    request_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    prompt: str | None = Field(default=None, max_length=400_000)
    messages: list[ChatTurn] | None = Field(default=None, max_length=512)
    max_tokens: int = Field(ge=1, le=MAX_GENERATED_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: list[StopString] = Field(default_factory=list, max_length=4)
    domain: DomainLabel | None = None
    caller: CallerLabel = Field(default="anonymous", description="Who sent it: the API key's name.")
    stream: bool = Field(
        default=True,
        description="Whether the caller relays text as it comes. False: the worker answers with one "
        "final chunk (unless stop strings must be watched), so no step waits on relaying a chunk.",
    )


class AcceptedBySource(BaseModel):
    """Accepted tokens by proposer; a token both proposed counts for both (the sum may exceed the total)."""

    draft: int = Field(default=0, ge=0, description="Proposed by the learned draft.")
    ngram: int = Field(default=0, ge=0, description="Proposed by n-gram (prompt) lookup.")


class SpecDecodeStats(BaseModel):
    """Per-request speculative decoding counters (vLLM-style names)."""

    num_steps: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = Field(default_factory=list)
    accepted_by_source: AcceptedBySource = Field(default_factory=AcceptedBySource)
    mean_acceptance_length: float = 0.0
    draft_version: DraftVersion | None = None
    decode_seconds: float = Field(default=0.0, ge=0.0)  # this request's share of its decoding steps
    target_only_seconds: float = Field(default=0.0, ge=0.0)  # the same, estimated without speculation
    prefill_seconds: float = Field(default=0.0, ge=0.0)  # the prompt and first token (0: SGLang)


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
    queue_seconds: float | None = Field(default=None, ge=0.0)  # final chunk: waited for a batch slot
    # final chunk: from the first token to the last, in the worker; the control plane places the first
    # token of a request it was not streamed from this
    after_first_token_seconds: float | None = Field(default=None, ge=0.0)
    error: str | None = None


class WorkerError(WireModel):
    """Inference worker → control plane: a request it refuses (e.g. prompt longer than the context)."""

    status: int
    message: str


# -- Trace records: inference worker → Redis Stream → trainer --------------------------------------

TRACE_SCHEMA_VERSION = 1
MAX_TRACE_PROMPT_TOKENS = 32_768
MAX_TRACE_OUTPUT_TOKENS = MAX_GENERATED_TOKENS
MAX_TRACE_STEPS = MAX_TRACE_OUTPUT_TOKENS  # every step emits at least one token
MAX_PROPOSED_PER_STEP = 128
MAX_TRACE_PROPOSED_TOKENS = 262_144

TokenId = Annotated[int, Field(ge=0, lt=2**31)]


class TraceStep(BaseModel):
    """One verification step: what was proposed after ``position`` output tokens, and how much was kept.

    ``parents[i]`` is the index of node ``i``'s parent in ``proposed`` (-1: the root); ``None`` means a
    chain. ``draft_probs[i]`` is the learned draft's probability of node ``i`` given its parent (0.0 for
    tokens another proposer, e.g. n-gram lookup, added). The accepted path is
    ``output_ids[position:position + accepted]``; every other node is a rejected proposal, which the
    trainer learns from as a negative example.
    """

    model_config = ConfigDict(extra="forbid")
    position: int = Field(ge=0, le=MAX_TRACE_OUTPUT_TOKENS)
    proposed: list[TokenId] = Field(default_factory=list, max_length=MAX_PROPOSED_PER_STEP)
    draft_probs: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=list, max_length=MAX_PROPOSED_PER_STEP
    )
    parents: list[int] | None = Field(default=None, max_length=MAX_PROPOSED_PER_STEP)
    accepted: int = Field(default=0, ge=0, le=MAX_PROPOSED_PER_STEP)

    @field_serializer("draft_probs")
    def _compact_probs(self, probs: list[float]) -> list[float]:
        """Four decimals are plenty for a training signal and cut a trace's size by about a third."""
        return [round(p, 4) for p in probs]

    @model_validator(mode="after")
    def _consistent(self) -> TraceStep:
        if len(self.draft_probs) != len(self.proposed):
            raise ValueError("draft_probs must have one probability per proposed token")
        if self.parents is not None:
            if len(self.parents) != len(self.proposed):
                raise ValueError("parents must have one entry per proposed token")
            if any(not -1 <= parent < index for index, parent in enumerate(self.parents)):
                raise ValueError("parents[i] must be -1 or the index of an earlier node")
        if self.accepted > len(self.proposed):
            raise ValueError("accepted exceeds the number of proposed tokens")
        return self


class TraceRecord(WireModel):
    """Inference worker → trainer: one finished request, everything the draft can learn from.

    A record ships token ids and verification steps (~40 bytes per token), never target features:
    EAGLE-3 features are three hidden states per token (3 x 576 values for SmolLM2, ~32 KB per
    token at GPU scale), so a bounded stream holding them would hold ~100x fewer requests. The
    worker puts them, with the final hidden state, in a bounded side store under ``features_key``
    (Redis, with a TTL; see ``worker.traces.features``) so the trainer needs no target prefill; a
    record without a key, or whose features expired, costs the trainer one prefill instead.

    Every list is bounded so a hostile record cannot exhaust a consumer's memory.
    """

    trace_version: int = TRACE_SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=128)
    worker_id: str | None = Field(default=None, max_length=128)
    model: str = Field(min_length=1, max_length=256)
    draft_version: DraftVersion | None = Field(default=None, description="None: no learned draft.")
    domain: DomainLabel
    domain_source: Literal["request", "detected"]
    caller: CallerLabel = Field(default="anonymous", description="The API key's name that sent it.")
    started_at: float = Field(ge=0, description="Unix seconds when the request was admitted.")
    finished_at: float = Field(ge=0, description="Unix seconds when its last token was emitted.")
    finish_reason: FinishReason
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    prompt_ids: list[TokenId] = Field(max_length=MAX_TRACE_PROMPT_TOKENS)
    output_ids: list[TokenId] = Field(max_length=MAX_TRACE_OUTPUT_TOKENS)
    steps: list[TraceStep] = Field(default_factory=list, max_length=MAX_TRACE_STEPS)
    steps_exact: bool = Field(
        default=True,
        description="False: the engine could not tell step by step what it accepted (an SGLang worker "
        "whose streamed chunks disagree with SGLang's own histogram), so `steps` is left empty.",
    )
    features_key: str | None = Field(
        default=None,
        max_length=256,
        description="Side-store key of the target features of prompt_ids + output_ids; may expire.",
    )

    @field_validator("trace_version")
    @classmethod
    def _trace_version(cls, value: int) -> int:
        if value != TRACE_SCHEMA_VERSION:
            raise ValueError(f"trace schema version {value} is not {TRACE_SCHEMA_VERSION}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TraceRecord:
        if self.finished_at < self.started_at:
            raise ValueError("finished_at precedes started_at")
        if sum(len(step.proposed) for step in self.steps) > MAX_TRACE_PROPOSED_TOKENS:
            raise ValueError(f"more than {MAX_TRACE_PROPOSED_TOKENS} proposed tokens")
        previous = -1
        for step in self.steps:
            if step.position <= previous or step.position >= len(self.output_ids):
                raise ValueError("step positions must increase and index into output_ids")
            previous = step.position
        return self

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens per target step (accepted proposals + the target's own token), as in ``SpecDecodeStats``."""
        if not self.steps:
            return 0.0
        return (sum(step.accepted for step in self.steps) + len(self.steps)) / len(self.steps)


class DriftReport(WireModel):
    """Training worker → control plane: one closed drift window, stored for operators and the dashboard.

    ``divergence`` is Jensen-Shannon between this window's token distribution and the reference
    windows'; ``divergence_floor`` the same between reference windows (unchanged traffic's own
    variety: a shift must exceed it by ``js_threshold``); ``mix_shift`` the total-variation distance
    of the domain mix; all are None until a reference exists. ``shift`` is the trainer's verdict (it
    raises its learning rate on a shift).
    """

    trainer: str = Field(min_length=1, max_length=128)
    index: int = Field(ge=0)
    requests: int = Field(ge=0)
    tokens: int = Field(ge=0)
    started_at: float = Field(ge=0)
    ended_at: float = Field(ge=0)
    domain_mix: dict[DomainLabel, float] = Field(default_factory=dict, max_length=64)
    acceptance_by_domain: dict[DomainLabel, float] = Field(default_factory=dict, max_length=64)
    divergence: float | None = Field(default=None, ge=0.0, le=1.0)
    divergence_floor: float | None = Field(default=None, ge=0.0, le=1.0)
    mix_shift: float | None = Field(default=None, ge=0.0, le=1.0)
    js_threshold: float = Field(ge=0.0, le=1.0)
    mix_threshold: float = Field(ge=0.0, le=1.0)
    shift: bool


class TrainerProgress(WireModel):
    """Training worker → control plane after every round: how far learning has got.

    Counters are cumulative since the trainer's state began (they survive its restarts through the
    checkpoint, except ``cpu_seconds`` and ``rss_bytes``, which describe the running process).
    ``acked_records`` counts every trace the trainer has finished with (trained on, held out or
    skipped), ``holding_records`` those read and not yet acknowledged (a trainer without a draft
    yet holds traces until it has enough to start one); ``last_candidate_round`` is the round whose
    candidate was last published, so a caller can tell that a decision was taken on everything acked.
    """

    trainer: str = Field(min_length=1, max_length=128)
    round: int = Field(ge=0)
    status: str = Field(min_length=1, max_length=32)
    optimizer_steps: int = Field(ge=0)
    trained_records: int = Field(ge=0)
    heldout_records: int = Field(ge=0)
    trained_rows: int = Field(ge=0)
    acked_records: int = Field(ge=0)
    holding_records: int = Field(ge=0)
    last_candidate: DraftVersion | None = None
    last_candidate_round: int | None = Field(default=None, ge=0)
    examples_from_features: int = Field(ge=0)
    examples_by_prefill: int = Field(ge=0)
    examples_revocabulary: int = Field(default=0, ge=0)  # carried to a remapped vocabulary by the head
    cpu_seconds: float = Field(ge=0.0)
    rss_bytes: int = Field(ge=0)
