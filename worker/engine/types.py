"""The engine's interface: plain data in, token events out, one decoding step at a time.

The engine knows nothing of HTTP, Redis or databases. The inference worker process owns the
loop: it submits requests, calls ``step()`` repeatedly (a draft swap happens between steps),
and routes each ``TokenEvent`` to the waiting client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch

    from worker.engine.llama import KVCache, LlamaSpec, StepInput

FinishReason = Literal["stop", "length", "abort", "error"]  # error: this sequence failed, no other


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    domain: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)  # queue time runs from here to the prefill


@dataclass
class SpecStats:
    """Per-request speculative decoding counters (shape modelled on vLLM's spec-decode metrics)."""

    num_steps: int = 0  # target forward passes that produced tokens for this request
    num_drafts: int = 0  # steps in which at least one token was proposed
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [k]: drafts with token k accepted
    # Accepted tokens by who proposed them; a token both proposed counts for both, so the two
    # may add up to more than num_accepted_tokens.
    accepted_from_draft: int = 0  # the learned draft proposed it
    accepted_from_ngram: int = 0  # n-gram lookup proposed it
    decode_seconds: float = 0.0  # this request's share of the wall time of the decoding steps it was in
    target_only_seconds: float = 0.0  # the same share had those tokens been decoded without speculation
    queue_seconds: float = 0.0  # from submission to the start of its prefill (waiting for a batch slot)
    prefill_seconds: float = 0.0  # reading the prompt and choosing the first token

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per target step (accepted drafts + the target's own token)."""
        if self.num_steps == 0:
            return 0.0
        return (self.num_accepted_tokens + self.num_steps) / self.num_steps

    @property
    def speedup_over_target_only(self) -> float | None:
        """Decoding speedup, from measured step times: what target-only decoding would have taken / took."""
        return self.target_only_seconds / self.decode_seconds if self.decode_seconds > 0 else None


@dataclass(frozen=True, slots=True)
class StepTrace:
    """One verification step as the trainer needs it; maps field for field onto ``borealis.wire.TraceStep``.

    Nodes are the proposal tree without its root, parents before children. ``accepted`` counts the
    accepted nodes that reached the output, so the accepted path is
    ``output_ids[position:position + accepted]``; every other node is a rejected proposal.
    """

    position: int  # output tokens emitted before this step
    tokens: tuple[int, ...]
    parents: tuple[int, ...]  # index into ``tokens`` of each node's parent, -1 for the root
    draft_probs: tuple[float, ...]  # the draft's probability of the node given its parent; 0.0 if not drafted
    accepted: int


@dataclass(frozen=True)
class TokenEvent:
    request_id: str
    token_ids: list[int]  # tokens emitted by this step, in order (may be several with speculation)
    finish_reason: FinishReason | None = None
    stats: SpecStats | None = None  # set on the final event
    trace: tuple[StepTrace, ...] | None = None  # set on the final event when the engine records traces
    trace_exact: bool = True  # False: ``trace`` could not be rebuilt step by step and is empty
    error: str | None = None  # why this sequence failed (finish_reason "error"); its batch continues
    # set on the final event when the engine records features: [N, 4H] float16, the three draft
    # feature layers and the final normed hidden state of the first N tokens (prompt + output)
    features: torch.Tensor | None = None


class Engine(Protocol):
    """A step-driven decoder over many concurrent sequences."""

    def submit(self, request: GenerationRequest) -> None: ...

    def abort(self, request_id: str) -> None:
        """Drop a sequence now (client gone); it produces no further events."""
        ...

    def finish(self, request_id: str) -> TokenEvent | None:
        """End a sequence as a stop token would (a stop string matched): its final event, with the
        statistics and trace so far; None if it is not running (already finished, or unknown)."""
        ...

    def has_work(self) -> bool: ...

    def step(self) -> list[TokenEvent]:
        """Advance every active sequence by one decoding step and report what each produced."""
        ...


class Drafter(Protocol):
    """What the engine needs of a learned draft (``worker.draft.runner.DraftRunner`` is the one there
    is): the engine proposes with it, it knows nothing of how the draft was built or trained."""

    version: str | None
    spec: LlamaSpec  # the draft layer's attention shape, for its KV cache
    draft_to_target: torch.Tensor  # [draft_vocab] target token id of each draft token

    def new_cache(self, batch: int, max_len: int) -> KVCache: ...

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., 3H]`` target features of three layers → ``[..., H]`` draft input."""
        ...

    def forward(
        self,
        step: StepInput,
        hidden: torch.Tensor,
        cache: KVCache,
        first_slot: int = 0,
        head_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draft pass: next hidden states ``[B, T, H]`` and log-probs ``[B, T, draft_vocab]``; of
        row ``head_rows[b]`` of each sequence alone (``[B, 1, ...]``) when given."""
        ...

    def advance(self, step: StepInput, hidden: torch.Tensor, cache: KVCache, first_slot: int = 0) -> None:
        """The same pass writing only its cache rows (catching up on committed positions)."""
        ...
