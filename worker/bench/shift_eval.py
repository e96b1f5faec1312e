"""Draft-only acceptance for ``bench shift``: every live draft scored on a reserved evaluation set.

Served acceptance mixes the n-gram proposer with the draft; this isolates the draft. Per phase, a
few prompts are reserved (never served, never trained on), the target decodes them greedily once,
and each draft version an arm served is scored on those sequences by simulated chain acceptance
(``worker.draft.shadow``): tokens emitted per target step, one count pair per evaluation trace, so
two arms compare trace by trace.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.draft.examples import Example, build_example
from worker.draft.generate import greedy_outputs
from worker.draft.io import load_draft
from worker.draft.model import Eagle3Draft
from worker.draft.shadow import per_trace_counts
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.workloads import Prompt

Counts = list[tuple[int, int]]  # (tokens emitted, target steps) per evaluation trace, in order


@dataclass(frozen=True)
class EvalTrace:
    phase: str
    prompt: Prompt
    ids: list[int]  # prompt then the target's greedy output
    prompt_len: int


def reserved_traces(
    target: LlamaModel,
    reserved: dict[str, list[Prompt]],
    encode: Callable[[Prompt], list[int]],
    max_new_tokens: int,
    eos: tuple[int, ...],
) -> list[EvalTrace]:
    """The target's greedy continuation of every reserved prompt (those with an empty one dropped)."""
    traces = []
    for phase, prompts in reserved.items():
        ids = [encode(p) for p in prompts]
        outputs = greedy_outputs(target, ids, max_new_tokens, 8, eos)
        traces += [
            EvalTrace(phase, prompt, p + o, len(p))
            for prompt, p, o in zip(prompts, ids, outputs, strict=True)
            if o
        ]
    return traces


class DraftScorer:
    """Scores drafts on the evaluation traces, each prefilled once: a score reads nothing of the draft
    vocabulary an example was built for (:func:`worker.draft.shadow.per_trace_counts`)."""

    def __init__(self, target: LlamaModel, traces: Sequence[EvalTrace], depth: int) -> None:
        self.target = target
        self.traces = list(traces)
        self.depth = depth
        self._examples: list[Example] | None = None

    def _examples_for(self, vocab: DraftVocab) -> list[Example]:
        if self._examples is None:
            self._examples = [
                build_example(self.target, vocab, t.ids, t.prompt_len, t.prompt.domain) for t in self.traces
            ]
        return self._examples

    def score(self, draft: Eagle3Draft) -> Counts:
        examples = self._examples_for(draft.vocab)
        return per_trace_counts(draft, self.target.embed, examples, self.depth)

    def phase_rows(self, phase: str) -> list[int]:
        return [i for i, t in enumerate(self.traces) if t.phase == phase]


def score_versions(
    scorer: DraftScorer, versions: set[str], fetch: Callable[[str, Path], object]
) -> dict[str, Counts]:
    """Per-trace counts of every version (fetched from the arm's control plane, then scored)."""
    scores: dict[str, Counts] = {}
    for version in sorted(versions):
        directory = Path(tempfile.mkdtemp(prefix=f"borealis-shift-{version}-"))
        try:
            fetch(version, directory)
            draft, _ = load_draft(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        scores[version] = scorer.score(draft)
    return scores


def no_draft_counts(scorer: DraftScorer) -> Counts:
    """Without a draft every target step emits one token: tau 1 by definition."""
    steps = (max(0, len(t.ids) - 1 - t.prompt_len) for t in scorer.traces)
    return [(n, n) for n in steps]


def pooled_tau(columns: Sequence[tuple[int, int]]) -> float | None:
    steps = sum(s for _, s in columns)
    return sum(e for e, _ in columns) / steps if steps else None


def column_totals(per_checkpoint: Sequence[Counts], rows: Sequence[int]) -> np.ndarray:
    """[len(rows), 2] (emitted, steps) of each evaluation trace, summed over the checkpoints."""
    totals = np.zeros((len(rows), 2), dtype=np.int64)
    for counts in per_checkpoint:
        totals += np.asarray([counts[r] for r in rows], dtype=np.int64).reshape(len(rows), 2)
    return totals


def paired_ratio_interval(
    ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % bootstrap interval of pooled-tau(ours) / pooled-tau(theirs) (or of any pooled rate: rows
    of tokens and seconds give a tok/s ratio).

    Each array is one stratum (a phase's traces, or a phase's requests): [n, 2] rows of (emitted,
    steps), row i of ``ours`` and of ``theirs`` the same trace or request. Rows are resampled within
    each stratum and the same draw serves both arms, so per-item difficulty cancels in the ratio.
    """
    if not ours or any(a.shape != b.shape or not len(a) for a, b in zip(ours, theirs, strict=True)):
        return None
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for k in range(resamples):
        a = np.zeros(2)
        b = np.zeros(2)
        for mine, other in zip(ours, theirs, strict=True):
            draw = rng.integers(0, len(mine), size=len(mine))
            a += mine[draw].sum(axis=0)
            b += other[draw].sum(axis=0)
        ratios[k] = (a[0] / a[1]) / (b[0] / b[1]) if a[1] and b[1] and b[0] else np.nan
    low, high = np.nanquantile(ratios, [0.025, 0.975])
    return round(float(low), 4), round(float(high), 4)


def pooled_interval(
    rows: Sequence[tuple[int, int]], resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % bootstrap interval of one pooled tau (rows of (emitted, steps) resampled): a plot's band."""
    data = np.asarray([r for r in rows if r[1]], dtype=np.float64).reshape(-1, 2)
    if len(data) < 2:
        return None
    draws = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    sums = data[draws].sum(axis=1)
    low, high = np.quantile(sums[:, 0] / sums[:, 1], [0.025, 0.975])
    return round(float(low), 4), round(float(high), 4)
