"""Shadow evaluation: the chain acceptance length a draft would reach on held-out sequences, per domain.

Greedy verification is simulated teacher-forced from one target forward: a drafted token is accepted
when it equals the target's greedy choice there and that choice is what the sequence holds (true for
every output position of a greedy trace). Decoding is walked as the engine does it: a step at root
``r`` accepts ``L`` drafted tokens and emits ``L + 1``; the next root is ``L + 1`` tokens on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from worker.draft.examples import Example
from worker.draft.model import Eagle3Draft
from worker.draft.ttt import unroll_hidden


@torch.no_grad()
def chain_counts(draft: Eagle3Draft, embed: torch.Tensor, example: Example, depth: int) -> tuple[int, int]:
    """(tokens emitted, verification steps) over the example's output."""
    outputs = unroll_hidden(draft, embed, example.tokens.unsqueeze(0), example.features.unsqueeze(0), depth)
    d2t = draft.vocab.draft_to_target
    # guesses[k][i]: predicts token i + 2; only rows from the first root on are read (no head on the prompt)
    first = max(0, example.prompt_len - 1)
    guesses = [[0] * first + d2t[draft.logits(out[0, first:]).argmax(-1)].tolist() for out in outputs]
    tokens = example.tokens.tolist()
    argmax = example.target_argmax.tolist()
    last = len(tokens) - 1
    root = example.prompt_len
    emitted = steps = 0
    while root < last:
        accepted = 0
        for d in range(1, depth + 1):
            row = root + d - 2
            if root + d > last or not guesses[d - 1][row] == argmax[root + d - 1] == tokens[root + d]:
                break
            accepted = d
        advance = min(accepted + 1, last - root)
        emitted += advance
        steps += 1
        root += advance
    return emitted, steps


def per_trace_counts(
    draft: Eagle3Draft, embed: torch.Tensor, examples: Sequence[Example], depth: int
) -> list[tuple[int, int]]:
    """(tokens emitted, verification steps) of each example, in order. Reads the examples' tokens,
    target features and target greedy choices only, none of which depends on a draft vocabulary: one
    set of examples scores every draft."""
    was_training = draft.training
    draft.eval()
    counts = [chain_counts(draft, embed, example, depth) for example in examples]
    draft.train(was_training)
    return counts


def pooled_acceptance(examples: Sequence[Example], counts: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Mean acceptance length (tokens per target step) per domain, and ``"all"`` pooled."""
    emitted: dict[str, int] = defaultdict(int)
    steps: dict[str, int] = defaultdict(int)
    for example, (e, s) in zip(examples, counts, strict=True):
        for key in (example.domain, "all"):
            emitted[key] += e
            steps[key] += s
    return {key: emitted[key] / steps[key] for key in sorted(steps) if steps[key]}


def simulated_acceptance(
    draft: Eagle3Draft, embed: torch.Tensor, examples: Sequence[Example], depth: int
) -> dict[str, float]:
    """Mean acceptance length (tokens per target step) per domain, and ``"all"`` pooled."""
    return pooled_acceptance(examples, per_trace_counts(draft, embed, examples, depth))


def paired_interval(
    candidate: Sequence[float], live: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap interval of the mean per-trace difference ``candidate - live``.

    Paired: both drafts are scored on the same traces, so trace-to-trace variation (a long easy code
    trace against a short hard chat one) cancels, and the interval says whether the candidate is
    better on this traffic, not whether its pooled mean happens to sit above a margin.
    """
    if len(candidate) != len(live) or not candidate:
        raise ValueError("paired_interval needs two equally long, non-empty samples")
    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(live, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDiff:
    traces: int  # traces with at least one verification step
    mean: float  # mean per-trace acceptance difference, ours - theirs
    low: float  # its paired 95 % bootstrap interval
    high: float


def paired_by_domain(
    examples: Sequence[Example], ours: Sequence[tuple[int, int]], theirs: Sequence[tuple[int, int]]
) -> dict[str, PairedDiff]:
    """Per domain and ``"all"``: two drafts' per-trace acceptance (``per_trace_counts`` of each on the
    same examples) compared trace by trace."""
    report = {}
    for domain in [*sorted({e.domain for e in examples}), "all"]:
        rows = [i for i, e in enumerate(examples) if domain in ("all", e.domain) and ours[i][1]]
        a = [ours[i][0] / ours[i][1] for i in rows]
        b = [theirs[i][0] / theirs[i][1] for i in rows]
        low, high = paired_interval(a, b)
        mean = sum(x - y for x, y in zip(a, b, strict=True)) / len(rows)
        report[domain] = PairedDiff(len(rows), mean, low, high)
    return report


DOMAIN_WEIGHT_FLOOR = 0.1  # a judged domain absent from recent traffic still weighs this much: it may return
MIN_STRATUM_TRACES = 5  # a domain judged on fewer traces joins the pooled rest (one trace shows no spread)


def traffic_weights(recent: Sequence[str], judged: Sequence[str]) -> dict[str, float]:
    """Each judged domain's weight in the promotion statistic: its share of ``recent`` traffic (the
    domains of the traces read since the last candidate), at least :data:`DOMAIN_WEIGHT_FLOOR`,
    normalised over the judged domains. No recent traffic: each domain by its judged traces."""
    judged_domains = sorted(set(judged))
    counts = Counter(d for d in recent if d in judged_domains) or Counter(judged)
    total = sum(counts.values())
    raw = {d: max(counts[d] / total, DOMAIN_WEIGHT_FLOOR) for d in judged_domains}
    norm = sum(raw.values())
    return {d: w / norm for d, w in raw.items()}


@dataclass(frozen=True)
class WeightedDiff:
    candidate: float  # traffic-weighted pooled acceptance of each arm
    live: float
    traces: int
    low: float  # stratified paired 95 % bootstrap interval of the weighted per-trace difference
    high: float


def _strata(rows_by_domain: dict[str, list[int]], weights: dict[str, float]) -> list[tuple[float, list[int]]]:
    """(weight, trace rows) per domain with enough traces; smaller domains pooled into one stratum,
    which joins the largest one while it is still too small to show a spread."""
    strata = [(weights[d], rows) for d, rows in rows_by_domain.items() if len(rows) >= MIN_STRATUM_TRACES]
    small = [(weights[d], rows) for d, rows in rows_by_domain.items() if len(rows) < MIN_STRATUM_TRACES]
    if small:
        rest = (sum(w for w, _ in small), [i for _, rows in small for i in rows])
        if len(rest[1]) >= MIN_STRATUM_TRACES or not strata:
            strata.append(rest)
        else:
            largest = max(range(len(strata)), key=lambda s: len(strata[s][1]))
            weight, rows = strata[largest]
            strata[largest] = (weight + rest[0], rows + rest[1])
    return strata


def traffic_weighted_diff(
    domains: Sequence[str],
    ours: Sequence[tuple[int, int]],
    theirs: Sequence[tuple[int, int]],
    weights: dict[str, float],
    resamples: int = 2000,
    seed: int = 0,
) -> WeightedDiff:
    """Two drafts' counts (``per_trace_counts``) on the same traces, whose domains are ``domains``,
    compared trace by trace, each domain weighted by its share of the traffic (``weights``,
    :func:`traffic_weights`) instead of by its count of judged traces.

    After a shift the judged set holds the new domain's fresh traces beside older held-out ones of a
    domain that no longer arrives; pooled per trace, those dilute a real gain on what is now served.
    The interval is a stratified bootstrap: traces are resampled within their domain.
    """
    rows_by_domain: dict[str, list[int]] = defaultdict(list)
    for i, domain in enumerate(domains):
        if ours[i][1] and theirs[i][1]:
            rows_by_domain[domain].append(i)
    if not rows_by_domain:
        raise ValueError("traffic_weighted_diff needs at least one trace with a verification step")
    strata = _strata(rows_by_domain, weights)
    total = sum(w for w, _ in strata)
    rng = np.random.default_rng(seed)
    candidate = live = 0.0
    boot = np.zeros(resamples)
    for weight, rows in strata:
        share = weight / total
        a = np.array([ours[i][0] / ours[i][1] for i in rows])
        b = np.array([theirs[i][0] / theirs[i][1] for i in rows])
        diffs = a - b
        boot += share * diffs[rng.integers(0, len(rows), size=(resamples, len(rows)))].mean(axis=1)
        candidate += share * sum(ours[i][0] for i in rows) / sum(ours[i][1] for i in rows)
        live += share * sum(theirs[i][0] for i in rows) / sum(theirs[i][1] for i in rows)
    low, high = np.quantile(boot, [0.025, 0.975])
    traces = sum(len(rows) for _, rows in strata)
    return WeightedDiff(candidate, live, traces, float(low), float(high))
