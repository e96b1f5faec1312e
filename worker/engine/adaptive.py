"""When and how far to speculate, from measured costs and recent acceptance.

Speculating pays only when the expected tokens per step outgrow the extra cost of drafting and of
verifying a wider forward. Both sides are measured online (per batch size and row count), so the
same rule gives long drafts on repetitive code, short ones on chat, and none for a useless draft.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import accumulate
from operator import mul

EMA = 0.1
# share of decoding time that probing a switched-off draft may add: at 2 % the probes of a random draft
# at batch 8 (each first catching the draft's caches up) took 1.4 % of chat's decoding time, most of
# the margin "never slower than target-only" allows
PROBE_BUDGET = 0.01
PROBE_NOW = 1 << 30  # steps without the draft that any probe interval has reached
# past the widest measured row count, costs follow the slope from a count at most this share of it
EXTRAPOLATION_SPAN = 0.5
# a step whose thread waited this share of its time for a core was timed under another process's load
CONTENDED = 0.1


@dataclass(frozen=True)
class Plan:
    draft_depth: int  # draft forwards this step (0: no learned draft)
    ngram_tokens: int  # longest n-gram proposal to include (0: none)
    draft_width: int = 0  # draft nodes per depth: 1 a chain of its first choices, more a tree (0: no draft)


class _Ema:
    def __init__(self, value: float):
        self.value = value
        self.samples = 1

    def update(self, sample: float) -> None:
        self.value += EMA * (sample - self.value)
        self.samples += 1


class _CostTable:
    """Milliseconds per row count: an average per measured count, made non-decreasing in rows, and the
    rule that costs the others (see :meth:`__call__`). The planner costs up to a hundred row counts a
    step, most unmeasured at batch 8, so the fit is kept until the next measurement."""

    def __init__(self, default: float, slope: float):
        self.default = default
        self.slope = slope
        self.measured: dict[int, _Ema] = {}
        self._counts: list[int] = []  # the measured counts, ascending
        self._fit: list[float] | None = None  # their costs, non-decreasing (see :meth:`fitted`)

    def observe(self, rows: int, ms: float) -> None:
        if rows in self.measured:
            self.measured[rows].update(ms)
        else:
            self.measured[rows] = _Ema(ms)
            insort(self._counts, rows)
        self._fit = None

    def fitted(self) -> list[float]:
        """The measured counts' costs made non-decreasing in rows: adjacent counts that measured out of
        order pooled into their weighted mean (each weighted by its samples, up to the average's window).
        A wider step never costs less than a narrower one, but noise said so: with 3 and 4 rows measured
        below 1 row, a random draft was planned on 92 of 473 steps (code, batch 1), as a step that drafted
        and verified 4 rows looked cheaper than a plain one."""
        if self._fit is None:
            pools: list[tuple[float, float, int]] = []  # (weight, mean, counts pooled)
            for count in self._counts:
                known = self.measured[count]
                weight, mean, pooled = min(known.samples, 1.0 / EMA), known.value, 1
                while pools and pools[-1][1] > mean:
                    before, before_mean, before_pooled = pools.pop()
                    mean = (before * before_mean + weight * mean) / (before + weight)
                    weight, pooled = before + weight, before_pooled + pooled
                pools.append((weight, mean, pooled))
            self._fit = [mean for _, mean, pooled in pools for _ in range(pooled)]
        return self._fit

    def lower_bound(self) -> Callable[[int], float]:
        """A function of ``rows`` no greater than the cost of any count from ``rows`` up: a cost between
        (or past) measured counts is at least the lower of the two it is drawn from, and below the
        first one it grows with the count. For the planner to skip plans that cannot pay."""
        counts, values = self._counts, self.fitted()

        def bound(rows: int) -> float:
            above = bisect_right(counts, rows)
            if above:
                return values[above - 1]
            return min(self(rows), values[0]) if counts else self(rows)

        return bound

    def __call__(self, rows: int) -> float:
        """Fitted cost for a measured ``rows``; else interpolated between the measured row counts around
        it, extrapolated past the widest along a segment spanning at least ``EXTRAPOLATION_SPAN`` of
        it, or (below the narrowest, or no such segment) scaled by ``slope`` per row.

        A fixed slope from one measurement under-estimated wide verification steps by up to 1.6x
        (64 rows at batch 8), so the controller kept trying unmeasured widths at a loss."""
        counts = self._counts
        if not counts:
            return self._scaled(self.default, 1, rows)
        values = self.fitted()
        above = bisect_right(counts, rows)
        if above and counts[above - 1] == rows:
            return values[above - 1]
        if above == 0:
            return self._scaled(values[0], counts[0], rows)
        if above < len(counts):
            per_row = (values[above] - values[above - 1]) / (counts[above] - counts[above - 1])
            return values[above - 1] + per_row * (rows - counts[above - 1])
        # past the widest count, along a segment spanning at least half of it: the slope between
        # neighbouring counts is mostly their noise (8 and 9 rows pooled to one cost at batch 8 made
        # every wider step cost what 8 rows do), and without such a segment, the prior slope
        widest = counts[-1]
        base = bisect_right(counts, widest * EXTRAPOLATION_SPAN) - 1
        if base < 0:
            return self._scaled(values[-1], widest, rows)
        per_row = (values[-1] - values[base]) / (widest - counts[base])
        return values[-1] + per_row * (rows - widest)

    def _scaled(self, cost: float, rows: int, to_rows: int) -> float:
        """``cost`` of ``rows`` carried to ``to_rows`` by the prior ``slope`` per row."""
        return cost * (1.0 + self.slope * (to_rows - 1)) / (1.0 + self.slope * (rows - 1))


class SpeculationController:
    """Keeps conditional acceptance rates per depth, per source and per draft width (the configured
    tree and the chain of the draft's first choices), and cost tables per row count."""

    def __init__(
        self,
        max_draft_depth: int,
        max_ngram_tokens: int,
        draft_width: int,
        probe_every: int = 16,
        baseline_every: int = 256,
    ):
        self.max_draft_depth = max_draft_depth
        self.max_ngram_tokens = max_ngram_tokens
        self.draft_width = draft_width
        # the configured tree, and its top-1 chain: a fraction of the rows where rows cost (batch 8)
        self.widths = sorted({1, draft_width})
        self.probe_every = probe_every
        self.baseline_every = baseline_every
        self._steps_since_baseline = 0
        self.draft_accept = {width: [_Ema(0.5) for _ in range(max_draft_depth)] for width in self.widths}
        self.ngram_accept = [_Ema(0.5) for _ in range(max_ngram_tokens)]
        # the draft's accepted tokens where the n-gram chain fell short, and what its overall rates
        # predicted there: their ratio rates the draft beside the lookup (see :meth:`rated_plans`). It
        # starts at 1 (the draft beside the lookup as good as alone): it only moves on steps that propose
        # from both, and a start at 0.5 made such steps rare, so it took tens of requests to rise
        self._draft_after_miss = _Ema(1.0)
        self._draft_after_miss_predicted = _Ema(1.0)
        self.target_ms = _CostTable(default=30.0, slope=0.02)
        # a step's first draft pass (with the step's drafting overhead: the accepted tokens' catch-up,
        # the tree's bookkeeping) and each further one apart: serving at batch 1 the first cost about
        # 1.5 ms and each further one 1.0-1.3, and charging every depth the first's kept deeper plans out
        self.draft_ms = _CostTable(default=2.0, slope=0.05)
        self.draft_later_ms = _CostTable(default=2.0, slope=0.05)
        self._draft_steps = 0  # steps that drafted: one in ``probe_every`` goes a depth deeper
        self._catch_up_ms = _CostTable(default=0.0, slope=1.0)  # per batch: bringing the draft's caches up
        self._steps_without_draft = 0
        # accepted draft tokens per sampled sequence-step, verifying the draft's draws (True) or its top-k
        self.draft_rule_accept = {True: _Ema(1.0), False: _Ema(1.0)}
        self._rule_choices = 0

    def observe_target(self, rows: int, seconds: float, waited: float = 0.0) -> None:
        """A verification of ``rows`` that took ``seconds``, ``waited`` of them for a core.

        Steps timed under another process's load are kept out of a count already measured: a count the
        planner stops choosing keeps its average, and wide steps timed while the trainer loaded the cores
        kept a fresh appliance's n-gram lookup off in 26 of the last 31 of 72 code requests (about 65
        tok/s; 150-240 where it verified lookups). A first measurement is kept whatever the load."""
        if waited > CONTENDED * seconds and rows in self.target_ms.measured:
            return
        self.target_ms.observe(rows, seconds * 1000)

    def observe_draft(self, rows: int, seconds: float, later_seconds: float | None = None) -> None:
        """A step's drafting over ``rows``: ``seconds`` all but its passes after the first, which took
        ``later_seconds`` each (None: it drafted one depth)."""
        self.draft_ms.observe(rows, seconds * 1000)
        if later_seconds is not None:
            self.draft_later_ms.observe(rows, later_seconds * 1000)

    def drafting_ms(self, rows: int) -> list[float]:
        """Drafting over ``rows`` to each depth, 0 up to the controller's deepest; further passes cost
        as the first until one is measured."""
        first = self.draft_ms(rows)
        later = self.draft_later_ms(rows) if self.draft_later_ms.measured else first
        return [0.0, *(first + depth * later for depth in range(self.max_draft_depth))]

    def observe_catch_up(self, batch: int, seconds: float) -> None:
        """A one-off catch-up of the draft caches (after steps without the draft, or a new prompt)."""
        self._catch_up_ms.observe(batch, seconds * 1000)

    def observe_draft_acceptance(self, width: int, proposed: int, accepted: int) -> None:
        """The draft's ``proposed`` levels at ``width``, of which the first ``accepted`` were accepted."""
        self._observe_chain(self.draft_accept[width], proposed, accepted)

    def observe_ngram_acceptance(self, proposed: int, accepted: int) -> None:
        self._observe_chain(self.ngram_accept, proposed, accepted)

    @staticmethod
    def _observe_chain(rates: list[_Ema], proposed: int, accepted: int) -> None:
        for depth in range(min(proposed, len(rates))):
            rates[depth].update(1.0 if depth < accepted else 0.0)
            if depth >= accepted:
                break

    def observe_both(self, width: int, draft_depth: int, ngram_run: int, draft_run: int) -> None:
        """A step that proposed from both: at each depth the n-gram chain did not reach, whether the
        draft's chain did, against what the draft's overall rates predicted."""
        hits = predicted = 0.0
        survive = 1.0
        for depth in range(draft_depth):
            survive *= self.draft_accept[width][depth].value
            if ngram_run <= depth:
                hits += 1.0 if draft_run > depth else 0.0
                predicted += survive
        if predicted > 0.0:
            self._draft_after_miss.update(hits)
            self._draft_after_miss_predicted.update(predicted)

    def rated_plans(
        self,
        max_ngram: int,
        widths: list[int],
        coverage: list[float] | None = None,
        worth: Callable[[int, int, float, float], bool] | None = None,
    ) -> Iterator[tuple[int, int, int, float]]:
        """Every plan up to ``max_ngram`` n-gram tokens and the controller's draft depth at ``widths``,
        as ``(draft_depth, ngram_tokens, draft_width, accepted tokens expected, the bonus aside)``.
        ``coverage[d - 1]``: the share of sequences whose lookup found at least ``d`` tokens (all, if
        not given); the n-gram rates are per token found.

        Tokens both proposers put in the tree count once, so proposing from both accepts the n-gram
        chain plus, at each depth it does not reach, the draft's chance of reaching it. Where the
        lookup falls short the draft accepts less than on average (the tokens are harder), so that
        chance is its overall one scaled by how it measured beside the lookup (more where the two miss
        different tokens, less where they miss the same ones), never more than the draft alone. Rating
        a plan with both by the better proposer alone kept a learned draft off wherever the lookup was
        good (code). Built incrementally over depths: the planner rates ~100 plans every step.
        ``worth(ngram, width, n-gram tokens expected, the draft's tokens expected at full depth)``:
        whether any depth of the draft at ``width`` beside ``ngram`` lookup tokens may pay (all, if
        not given)."""
        survive = accumulate((rate.value for rate in self.ngram_accept[:max_ngram]), mul)
        ngram_survive = [s * c for s, c in zip(survive, coverage or [1.0] * max_ngram, strict=True)]
        ngram_expected = [0.0, *accumulate(ngram_survive)]
        scale = self._draft_after_miss.value / self._draft_after_miss_predicted.value
        drafts = {w: list(accumulate((rate.value for rate in self.draft_accept[w]), mul)) for w in widths}
        for ngram in range(max_ngram + 1):
            yield 0, ngram, 0, ngram_expected[ngram]
            for width, draft_survive in drafts.items():
                if worth is not None and not worth(ngram, width, ngram_expected[ngram], sum(draft_survive)):
                    continue
                draft = extra = 0.0
                for depth, survive in enumerate(draft_survive, start=1):
                    draft += survive
                    if not ngram:
                        yield depth, 0, width, draft
                        continue
                    reached = ngram_survive[depth - 1] if depth <= ngram else 0.0
                    extra += (1.0 - reached) * survive
                    yield depth, ngram, width, ngram_expected[ngram] + min(scale * extra, draft)

    def observe_draft_rule(self, drew: bool, accepted_from_draft: int) -> None:
        self.draft_rule_accept[drew].update(float(accepted_from_draft))

    def draft_rule_draws(self) -> bool:
        """Whether sampled sequences verify the draft's draws this step: the rule that accepted more
        lately, the other one step in ``probe_every`` so both estimates stay fresh. Choosing from past
        steps only keeps every step lossless."""
        self._rule_choices += 1
        best = self.draft_rule_accept[True].value >= self.draft_rule_accept[False].value
        return best if self._rule_choices % self.probe_every else not best

    def baseline_due(self, batch: int) -> bool:
        """Whether this step should decode plainly: the first at each batch size, then one in
        ``baseline_every``, so the cost of target-only decoding (the speedup's baseline) is measured."""
        self._steps_since_baseline += 1
        if batch in self.target_ms.measured and self._steps_since_baseline < self.baseline_every:
            return False
        self._steps_since_baseline = 0
        return True

    def plan(self, batch: int, ngram_found: list[int], has_draft: bool) -> Plan:
        """Pick the draft's depth and width and the n-gram length with the best expected tokens per
        millisecond. ``ngram_found``: how many tokens each sequence's lookup found (the verification
        forward computes found tokens only, so a plan's rows count those, not the planned length)."""
        best = self._best_plan(batch, ngram_found, has_draft)
        if has_draft and best.draft_depth == 0:
            self._steps_without_draft += 1
            probe = Plan(1, best.ngram_tokens, self.draft_width)
            if self._steps_without_draft >= self.probe_interval(batch, probe):  # keep acceptance fresh
                self._steps_without_draft = 0
                return probe
            return best
        self._steps_without_draft = 0
        if best.draft_depth:
            self._draft_steps += 1
            if best.draft_depth < self.max_draft_depth and self._draft_steps % self.probe_every == 0:
                # a depth's rate moves only on steps that draft to it: without this, one bad stretch
                # at depth 2 kept a draft at depth 1 for good
                return replace(best, draft_depth=best.draft_depth + 1)
        return best

    def _best_plan(self, batch: int, ngram_found: list[int], has_draft: bool) -> Plan:
        """The plan with the most expected tokens per millisecond. A draft's plans beside an n-gram
        length are skipped where even its every depth accepted at no extra rows' cost would not beat
        the best so far (a switched-off draft at batch 8: most of the ~100 plans, half the planner's
        time there)."""
        widths = self.widths if has_draft else []
        costs: dict[int, float] = {}  # each row count's cost looked up once per step
        drafting = {width: self.drafting_ms(batch * width) for width in widths}
        best, best_value = Plan(0, 0), 1.0 / self.target_ms(batch)
        max_ngram = min(max(ngram_found, default=0), self.max_ngram_tokens)
        reaching = [sum(found >= d for found in ngram_found) for d in range(1, max_ngram + 1)]
        coverage = [count / batch for count in reaching]
        ngram_rows = [0, *accumulate(reaching)]  # rows the lookups add at each planned length
        floor = self.target_ms.lower_bound()

        def worth(ngram: int, width: int, ngram_tokens: float, draft_tokens: float) -> bool:
            least_ms = floor(batch * (1 + width) + ngram_rows[ngram]) + drafting[width][1]
            return (1.0 + ngram_tokens + draft_tokens) / least_ms > best_value

        for depth, ngram, width, tokens in self.rated_plans(max_ngram, widths, coverage, worth):
            rows = batch * (1 + depth * width) + ngram_rows[ngram]
            if rows not in costs:
                costs[rows] = self.target_ms(rows)
            value = (1.0 + tokens) / (costs[rows] + (drafting[width][depth] if depth else 0.0))
            if value > best_value:
                best, best_value = Plan(depth, ngram, width), value
        return best

    def draft_changed(self) -> None:
        """A new draft: if the old one was off, probe the new one at the next step, not a long interval on."""
        self._steps_without_draft = PROBE_NOW

    def probe_interval(self, batch: int, probe: Plan) -> int:
        """Steps between probes of a switched-off draft: at least ``probe_every``, and as many more as
        keep a probe's extra cost within ``PROBE_BUDGET`` of the plain steps between probes.

        A probe verifies ``batch x (1 + width + n-gram)`` rows; where wide steps cost several plain ones
        (batch 8, or int4 weights, whose kernel grows faster with rows) probing every 16 steps cost
        about a tenth of the throughput while speculation was off. A probe also first brings the
        draft's caches over every position decoded without it: at batch 8 on chat that catch-up
        (170 ms) cost three plain steps more than the probe's own forward."""
        plain = self.target_ms(batch)
        rows = batch * (1 + probe.draft_depth * probe.draft_width + probe.ngram_tokens)
        catch_up = self._catch_up_ms(batch)  # unmeasured: as the nearest batch, ~ rows to catch up
        extra = self.target_ms(rows) + self.draft_ms(batch * probe.draft_width) + catch_up - plain
        return max(self.probe_every, math.ceil(extra / (PROBE_BUDGET * plain)))
