"""Target-only decoding on a Hugging Face model: the simplest correct ``Engine``.

Each sequence keeps its own KV cache and advances one token per step. It is the reference the
speculative engine is checked against, and what serves when no faster engine is configured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel

from worker.engine.sampling import is_greedy, make_generator, sample, target_probs
from worker.engine.types import FinishReason, GenerationRequest, SpecStats, TokenEvent

log = logging.getLogger(__name__)


@dataclass
class _Sequence:
    request: GenerationRequest
    cache: DynamicCache
    pending: list[int]  # tokens not yet fed to the model (the prompt, then the last sampled token)
    generated: int
    generator: torch.Generator | None
    stats: SpecStats


def load_hf_model(model_dir: Path) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


class PlainHFEngine:
    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self._sequences: dict[str, _Sequence] = {}

    def submit(self, request: GenerationRequest) -> None:
        if request.request_id in self._sequences:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        self._sequences[request.request_id] = _Sequence(
            request=request,
            cache=DynamicCache(),
            pending=list(request.prompt_ids),
            generated=0,
            generator=make_generator(request.params),
            stats=SpecStats(),
        )

    def abort(self, request_id: str) -> None:
        self._sequences.pop(request_id, None)

    def finish(self, request_id: str) -> TokenEvent | None:
        seq = self._sequences.pop(request_id, None)
        return TokenEvent(request_id, [], "stop", seq.stats) if seq is not None else None

    def has_work(self) -> bool:
        return bool(self._sequences)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        events = []
        for request_id in list(self._sequences):
            seq = self._sequences[request_id]
            try:
                event = self._advance(seq)
            except Exception as exc:  # one sequence's failure ends that sequence only
                log.exception("request %s failed in the engine", request_id)
                event = TokenEvent(
                    request_id, [], "error", seq.stats, error=f"{type(exc).__name__}: {exc}"[:500]
                )
            if event.finish_reason is not None:
                del self._sequences[request_id]
            events.append(event)
        return events

    def _advance(self, seq: _Sequence) -> TokenEvent:
        params = seq.request.params
        started = time.perf_counter()
        if seq.generated == 0:
            seq.stats.queue_seconds = time.monotonic() - seq.request.submitted_at
        output = self.model(input_ids=torch.tensor([seq.pending]), past_key_values=seq.cache, use_cache=True)
        logits = output.logits[0, -1]
        if is_greedy(params):
            token = int(torch.argmax(logits).item())
        else:
            token = sample(target_probs(logits, params), seq.generator)
        seq.pending = [token]
        if seq.generated == 0:
            seq.stats.prefill_seconds = time.perf_counter() - started
        seq.generated += 1
        seq.stats.num_steps += 1
        finish: FinishReason | None = None
        if token in params.stop_token_ids:
            finish = "stop"
        elif seq.generated >= params.max_new_tokens:
            finish = "length"
        return TokenEvent(seq.request.request_id, [token], finish, seq.stats if finish else None)
