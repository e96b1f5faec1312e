"""SGLang's per-request speculative statistics, in the shape every Borealis engine reports.

SGLang (0.5.23, ``TokenizerManager``'s spec metrics) puts these in a request's final ``meta_info``:
``spec_verify_ct`` (verify steps), ``spec_num_correct_drafts`` (draft tokens accepted, bonus
excluded), ``spec_num_proposed_drafts`` (verify steps x (num_draft_tokens - 1)),
``spec_correct_drafts_histogram`` (``[k]``: steps that accepted k drafts) and ``spec_accept_length``
(completion tokens / verify steps: it counts the prefill's token too). Borealis's convention, shared
with the CPU engine, is tokens per target step over verify steps only: ``(correct + verify_ct) /
verify_ct``; the prefill's token is not a speculative step. Every accepted token came from the draft
(SGLang's EAGLE-3 has no n-gram proposer beside it).

SGLang sends no per-step proposals. With ``stream_interval=1`` each streamed chunk is one verify
step's commit, but chunks can coalesce, and the last step may be cut by a stop or the length limit;
``reconstruct_steps`` rebuilds the per-step accepted counts from chunk sizes and calls them exact
only when they agree with the histogram.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.engine.types import SpecStats, StepTrace


def spec_stats(meta: Mapping[str, Any], decode_seconds: float = 0.0) -> SpecStats:
    """The request's ``SpecStats`` from its final ``meta_info`` (all zero when it was not speculated)."""
    steps = int(meta.get("spec_verify_ct") or 0)
    correct = int(meta.get("spec_num_correct_drafts") or 0)
    histogram = [int(n) for n in meta.get("spec_correct_drafts_histogram") or []]
    # position k was accepted in every step that accepted more than k drafts
    per_position = [sum(histogram[k + 1 :]) for k in range(max(0, len(histogram) - 1))]
    return SpecStats(
        num_steps=steps,
        num_drafts=steps,
        num_draft_tokens=int(meta.get("spec_num_proposed_drafts") or 0),
        num_accepted_tokens=correct,
        accepted_per_position=per_position,
        accepted_from_draft=correct,
        decode_seconds=decode_seconds,
    )


@dataclass(frozen=True)
class ReconstructedSteps:
    accepted: list[int]  # per verify step, draft tokens accepted (the bonus token excluded)
    exact: bool  # agrees with SGLang's histogram and step count: safe to learn per-step acceptance from
    truncated_last: bool = False  # the last step committed more than the client received (stop/length)


def reconstruct_steps(chunk_tokens: Sequence[int], meta: Mapping[str, Any]) -> ReconstructedSteps:
    """Per-step accepted counts from the number of new tokens in each streamed chunk.

    The first token of the first chunk is the prefill's; each later token run of one chunk is one
    verify step's commit (accepted drafts + the bonus token). A final step cut short by a stop or
    the length limit shows fewer tokens than it accepted: when that single difference is all that
    separates the chunks from the histogram, the last step takes the histogram's value.
    """
    sizes = [chunk_tokens[0] - 1, *chunk_tokens[1:]] if chunk_tokens else []
    accepted = [size - 1 for size in sizes if size > 0]
    verify_ct = int(meta.get("spec_verify_ct") or 0)
    histogram = Counter(
        {k: int(n) for k, n in enumerate(meta.get("spec_correct_drafts_histogram") or []) if n}
    )
    if len(accepted) != verify_ct or not histogram:
        return ReconstructedSteps(accepted, exact=False)
    seen = Counter(accepted)
    if seen == histogram:
        return ReconstructedSteps(accepted, exact=True)
    missing, extra = histogram - seen, seen - histogram
    last = accepted[-1]
    if sum(missing.values()) == 1 and dict(extra) == {last: 1}:
        (cut_from,) = missing
        if cut_from > last:
            return ReconstructedSteps([*accepted[:-1], cut_from], exact=True, truncated_last=True)
    return ReconstructedSteps(accepted, exact=False)


def step_traces(output_ids: Sequence[int], steps: ReconstructedSteps) -> tuple[StepTrace, ...]:
    """The accepted path of each verify step, for the trainer; none unless the steps are exact.

    SGLang reports no rejected proposals, so each step is its accepted chain only (probabilities
    unknown, 0.0); the first output token is the prefill's and belongs to no step.
    """
    if not steps.exact:
        return ()
    traces, position = [], 1
    for accepted in steps.accepted:
        tokens = tuple(output_ids[position : position + accepted])
        traces.append(
            StepTrace(
                position=position,
                tokens=tokens,
                parents=tuple(range(-1, len(tokens) - 1)),
                draft_probs=(0.0,) * len(tokens),
                accepted=len(tokens),
            )
        )
        position += accepted + 1
    return tuple(traces)
