"""The speculative engine: batched decoding where each step verifies one proposal tree per sequence.

Every step, for all active sequences at once: propose (n-gram lookup and/or the learned draft,
merged into one tree per sequence), run the target once over every tree, accept by the lossless
rule in :mod:`worker.engine.verify`, and roll the caches to the accepted path. With speculation
off (or not paying) the tree is just the root and this is plain batched decoding.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from worker.engine import native
from worker.engine.adaptive import Plan, SpeculationController
from worker.engine.cpu_wait import waited_seconds
from worker.engine.llama import KVCache, LlamaModel, StepInput, causal_step_input, real_rows
from worker.engine.ngram import NgramIndex, UnverifiedLookup
from worker.engine.proposals import DraftBatch, Proposals, draft_paths
from worker.engine.sampling import is_greedy, make_generator, sample, target_probs
from worker.engine.tracelog import step_trace
from worker.engine.tree import ProposalTree
from worker.engine.types import Drafter, FinishReason, GenerationRequest, SpecStats, StepTrace, TokenEvent
from worker.engine.verify import Verdict, verify_tree

SpecMode = Literal["off", "chain", "tree"]
DraftRule = Literal["auto", "sampled", "point_mass"]

log = logging.getLogger(__name__)

BATCHED_CATCH_UP_ROWS = 16  # a sequence further behind than this catches up alone first


@dataclass(frozen=True)
class SpecConfig:
    mode: SpecMode = "tree"
    use_ngram: bool = True
    use_draft: bool = True
    max_draft_depth: int = 5
    tree_topk: int = 3  # children per expanded draft node (tree mode)
    tree_width: int = 3  # draft nodes expanded per depth, and draft nodes kept per depth (tree mode)
    max_ngram_tokens: int = 8
    ngram_max_n: int = 3
    adaptive: bool = True
    # sampled requests: "sampled" draws the draft's children from q and accepts them with min(1, p/q);
    # "point_mass" keeps its top-k as guesses accepted with p; "auto" lets the controller pick per step
    # by measured acceptance. All lossless; which accepts most depends on how well q matches p, and in
    # two runs of `bench speedup --temperature 0.7` neither fixed rule won both times, nor did "auto"
    draft_rule: DraftRule = "sampled"

    def draft_shape(self) -> tuple[int, int]:
        """(top-k, width) of the draft expansion: a chain is a tree of width one."""
        return (1, 1) if self.mode == "chain" else (self.tree_topk, self.tree_width)


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 8
    max_seq_len: int = 2048
    prefill_chunk: int = 256
    spec: SpecConfig = field(default_factory=SpecConfig)
    record_traces: bool = True  # final events carry the per-step proposal log (the trainer's data)
    record_features: bool = False  # final events carry the committed positions' target features too


@dataclass(frozen=True)
class StepRecord:
    """One decoding step as the controller planned and timed it (kept in ``SpecEngine.step_log``)."""

    batch: int  # sequences decoded together
    plan: Plan
    rows: int  # tree nodes verified, every sequence's
    predicted_ms: float  # the controller's cost of verifying ``rows`` when it planned the step
    verify_seconds: float  # the forward with accepting and committing, as the controller times it
    step_seconds: float  # the whole step: lookups, planning, drafting, verifying
    tokens: int  # emitted, every sequence's accepted tokens and the one from the target


@dataclass
class _Sequence:
    request: GenerationRequest
    generator: torch.Generator | None
    tokens: list[int]
    kv_len: int  # tokens[:kv_len] are in the target cache; tokens[kv_len] is the next root
    ngram: NgramIndex
    draft_len: int = 0  # positions with a valid draft cache entry
    generated: int = 0
    stats: SpecStats = field(default_factory=SpecStats)
    trace: list[StepTrace] = field(default_factory=list)
    unverified: UnverifiedLookup | None = None  # a lookup a step left out, until committed tokens score it


class SpecEngine:
    """Implements :class:`worker.engine.types.Engine` over a lean Llama target and an optional draft."""

    def __init__(self, target: LlamaModel, config: EngineConfig | None = None, draft: Drafter | None = None):
        self.target = target
        self.config = config or EngineConfig()
        spec = self.config.spec
        self.margin = 1 + spec.max_ngram_tokens + spec.max_draft_depth * max(spec.draft_shape()[1], 1) + 64
        batch, length = self.config.max_batch, self.config.max_seq_len + self.margin
        self.cache = target.new_cache(batch, length)
        self.features = torch.zeros(batch, length, 3 * target.spec.hidden_size, dtype=target.dtype)
        # the final normed hidden state of committed positions, kept only to ship to the trainer
        hidden_rows = length if self.config.record_features else 0
        self.final_hidden = torch.zeros(batch, hidden_rows, target.spec.hidden_size, dtype=torch.float16)
        self.controller = SpeculationController(
            spec.max_draft_depth, spec.max_ngram_tokens, spec.draft_shape()[1]
        )
        self.draft: Drafter | None = None
        self.draft_cache: KVCache | None = None
        self.swap_draft(draft)
        self._waiting: deque[GenerationRequest] = deque()
        self._active: list[_Sequence] = []
        # a list to append every decoding step to (benchmarks: which plans a run chose, what each cost)
        self.step_log: list[StepRecord] | None = None

    # -- Engine protocol ---------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        params = request.params
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        if params.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if len(request.prompt_ids) + params.max_new_tokens > self.config.max_seq_len:
            raise ValueError(f"prompt + max_new_tokens exceeds {self.config.max_seq_len} tokens")
        if not 0.0 < params.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        vocab = self.target.spec.vocab_size
        if min(request.prompt_ids) < 0 or max(request.prompt_ids) >= vocab:
            raise ValueError("prompt holds token ids outside the vocabulary")
        self._waiting.append(request)

    def abort(self, request_id: str) -> None:
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)
        for slot, seq in enumerate(self._active):
            if seq.request.request_id == request_id:
                self._release(slot)
                return

    def finish(self, request_id: str) -> TokenEvent | None:
        traced = self.config.record_traces
        for request in self._waiting:
            if request.request_id == request_id:
                self.abort(request_id)
                return TokenEvent(request_id, [], "stop", SpecStats(), () if traced else None)
        for slot, seq in enumerate(self._active):
            if seq.request.request_id == request_id:
                event = TokenEvent(
                    request_id,
                    [],
                    "stop",
                    seq.stats,
                    tuple(seq.trace) if traced else None,
                    features=self._committed_features(slot),
                )
                self._release(slot)
                return event
        return None

    def has_work(self) -> bool:
        return bool(self._waiting or self._active)

    def step(self) -> list[TokenEvent]:
        events = self._admit()
        if self._active:
            events += self._decode()
        return events

    def swap_draft(self, draft: Drafter | None) -> None:
        """Install another draft between steps; each sequence's draft cache is rebuilt lazily."""
        self.draft = draft if self.config.spec.use_draft and self.config.spec.mode != "off" else None
        if self.draft is not None:
            shape = (self.config.max_batch, self.config.max_seq_len + self.margin)
            cache = self.draft_cache
            if (
                cache is None
                or cache.k.shape[1] != shape[0]
                or cache.k.shape[2:] != (self.draft.spec.num_kv_heads, shape[1], self.draft.spec.head_dim)
            ):
                self.draft_cache = self.draft.new_cache(*shape)
        for seq in getattr(self, "_active", []):
            seq.draft_len = 0
        self.controller.draft_changed()

    # -- admission and prefill ---------------------------------------------------------------

    def _admit(self) -> list[TokenEvent]:
        events = []
        while self._waiting and len(self._active) < self.config.max_batch:
            request = self._waiting.popleft()
            try:
                seq, token = self._start(request, slot=len(self._active))
            except Exception as exc:  # this request fails; the slot was never taken
                events.append(_failed(request.request_id, SpecStats(), exc))
                continue
            self._active.append(seq)
            events.append(self._emit(len(self._active) - 1, [token]))
        return self._drop_finished(events)

    def _start(self, request: GenerationRequest, slot: int) -> tuple[_Sequence, int]:
        """Prefill a request into ``slot`` and choose its first token."""
        prompt = request.prompt_ids
        queued = time.monotonic() - request.submitted_at
        started = time.perf_counter()
        hidden = self._prefill(slot, prompt)
        seq = _Sequence(
            request=request,
            generator=make_generator(request.params),
            tokens=list(prompt),
            kv_len=len(prompt),
            ngram=NgramIndex(max_n=self.config.spec.ngram_max_n),
        )
        seq.stats.queue_seconds = queued
        seq.ngram.extend(prompt)
        logits = self.target.logits(hidden)[0]
        token = (
            int(native.argmax(logits))
            if is_greedy(request.params)
            else sample(target_probs(logits, request.params), seq.generator)
        )
        seq.stats.prefill_seconds = time.perf_counter() - started
        return seq, token

    def _prefill(self, slot: int, prompt: list[int]) -> torch.Tensor:
        """Fill the slot's cache and feature history in chunks; returns the last position's hidden state."""
        chunk = self.config.prefill_chunk
        hidden = torch.empty(0)
        for start in range(0, len(prompt), chunk):
            ids = torch.tensor([prompt[start : start + chunk]])
            step = causal_step_input(ids, [start])
            hidden, features = self.target.forward(step, self.cache, slot, prefill=True)
            self.features[slot, start : start + ids.shape[1]] = features[0]
            if self.config.record_features:
                self.final_hidden[slot, start : start + ids.shape[1]] = hidden[0]
        return hidden[:, -1]

    # -- one speculative step ------------------------------------------------------------------

    def _decode(self) -> list[TokenEvent]:
        """Propose, verify in one target forward, accept losslessly, roll caches to the accepted path."""
        active = self._active
        started = time.perf_counter()
        lookups = self._lookups()
        plan = self._plan([len(lookup) for lookup in lookups])
        proposals = self._propose(plan, lookups)
        verify_started, waited_before = time.perf_counter(), waited_seconds()
        trees = [prop.tree for prop in proposals]
        rows = sum(map(len, trees))
        predicted_ms = self.controller.target_ms(rows) if self.step_log is not None else 0.0
        logits, features, hidden = self._verify_forward(trees)
        events = []
        for slot, seq in enumerate(active):
            try:
                event = self._accept(slot, proposals[slot], logits[slot], (features[slot], hidden[slot]))
            except Exception as exc:  # one sequence's sampling or stopping fails that sequence only
                event = _failed(seq.request.request_id, seq.stats, exc)
            events.append(event)
        # the cost of verifying these rows is the forward plus accepting and committing every sequence:
        # wider trees cost Python work too, and a cost model without it speculated at a loss at batch 8
        waited = waited_seconds() - waited_before
        verify_seconds = time.perf_counter() - verify_started
        self.controller.observe_target(rows, verify_seconds, waited)
        emitted = [len(event.token_ids) for event in events]
        step_seconds = time.perf_counter() - started
        self._account_time(step_seconds, emitted)
        if self.step_log is not None:
            self.step_log.append(
                StepRecord(len(events), plan, rows, predicted_ms, verify_seconds, step_seconds, sum(emitted))
            )
        return self._drop_finished(events)

    def _accept(
        self, slot: int, prop: Proposals, logits: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor]
    ) -> TokenEvent:
        """Verify one sequence's tree, commit the accepted path and emit its tokens."""
        seq = self._active[slot]
        tree, draft_nodes = prop.tree, prop.draft_nodes
        verdict = verify_tree(tree, logits, seq.request.params, seq.generator, prop.samples, prop.ngram_nodes)
        if draft_nodes and not is_greedy(seq.request.params):  # draws were recorded iff this step drew
            from_draft = sum(node in draft_nodes for node in verdict.accepted)
            self.controller.observe_draft_rule(bool(prop.samples), from_draft)
        self._record(seq, tree, verdict, draft_nodes, prop.ngram_nodes)
        self._observe_acceptance(prop, verdict)
        self._commit(slot, tree, verdict, *rows)
        position = seq.generated
        event = self._emit(slot, [tree.tokens[node] for node in verdict.accepted] + [verdict.next_token])
        self._score_unverified(seq)
        if self.config.record_traces:
            accepted = min(len(verdict.accepted), len(event.token_ids))
            seq.trace.append(step_trace(tree, draft_nodes, position, accepted))
            if event.finish_reason is not None:
                event = replace(event, trace=tuple(seq.trace))
        return event

    def _leave_unverified(self, lookups: list[list[int]]) -> None:
        """Keep the lookups this step leaves out for scoring, one a sequence at a time (see
        :class:`UnverifiedLookup`)."""
        for lookup, seq in zip(lookups, self._active, strict=True):
            if lookup and seq.unverified is None:
                seq.unverified = UnverifiedLookup(len(seq.tokens), lookup)

    def _score_unverified(self, seq: _Sequence) -> None:
        if seq.unverified is None:
            return
        run = seq.unverified.accepted_run(seq.tokens)
        if run is not None:
            self.controller.observe_ngram_acceptance(len(seq.unverified.guess), run)
            seq.unverified = None

    def _account_time(self, seconds: float, emitted: list[int]) -> None:
        """Each sequence's share of a step's time, and what target-only decoding would spend on its tokens.

        Target-only decoding emits one token per sequence per plain step of the same batch, whose
        cost is measured (see :meth:`_plan`); a sequence's share of a step is 1/batch.
        """
        batch = len(self._active)
        plain_seconds = self.controller.target_ms(batch) / 1000
        for seq, tokens in zip(self._active, emitted, strict=True):
            seq.stats.decode_seconds += seconds / batch
            seq.stats.target_only_seconds += tokens * plain_seconds / batch

    def _lookups(self) -> list[list[int]]:
        """Each sequence's n-gram continuation at the longest length a plan may use, looked up before
        planning so the planner knows how many rows each lookup adds."""
        spec = self.config.spec
        use = spec.use_ngram and spec.mode != "off"
        return [seq.ngram.propose(spec.max_ngram_tokens) if use else [] for seq in self._active]

    def _plan(self, ngram_found: list[int]) -> Plan:
        spec = self.config.spec
        if spec.mode == "off" or self.controller.baseline_due(len(self._active)):
            return Plan(0, 0)  # a plain step now and then keeps the target-only cost measured
        ngram = spec.max_ngram_tokens if spec.use_ngram else 0
        has_draft = self.draft is not None
        if not spec.adaptive:
            return Plan(spec.max_draft_depth, ngram, spec.draft_shape()[1]) if has_draft else Plan(0, ngram)
        return self.controller.plan(len(self._active), ngram_found, has_draft)

    def _propose(self, plan: Plan, lookups: list[list[int]]) -> list[Proposals]:
        """One tree per sequence: the n-gram continuation and the draft's best paths, sharing prefixes."""
        proposals = [
            Proposals(ProposalTree.root(seq.tokens[seq.kv_len]), ngram_budget=plan.ngram_tokens)
            for seq in self._active
        ]
        if plan.ngram_tokens:
            for lookup, prop in zip(lookups, proposals, strict=True):
                guess = lookup[: plan.ngram_tokens]
                prop.ngram_nodes.update(prop.tree.add_path(guess, budget=1 + plan.ngram_tokens))
        else:
            self._leave_unverified(lookups)
        if plan.draft_depth and self.draft is not None and self.draft_cache is not None:
            topk, width = self.config.spec.draft_shape() if plan.draft_width > 1 else (1, 1)
            started = time.perf_counter()
            steady = self._draft_catch_up()
            proposing = time.perf_counter()
            sampled = [not is_greedy(seq.request.params) for seq in self._active]
            draw = any(sampled) and self._draws_this_step()
            batch = DraftBatch(
                tokens=[seq.tokens for seq in self._active],
                kv_lens=[seq.kv_len for seq in self._active],
                draft_lens=[seq.draft_len for seq in self._active],
                features=self.features,
                temperatures=tuple(
                    seq.request.params.temperature if draw and is_sampled else 0.0
                    for seq, is_sampled in zip(self._active, sampled, strict=True)
                ),
                generators=tuple(seq.generator for seq in self._active),
            )
            ends: list[float] = []
            drafted = draft_paths(self.draft, self.draft_cache, batch, plan.draft_depth, topk, width, ends)
            for seq in self._active:
                seq.draft_len = seq.kv_len
            # A catch-up over more rows than one step commits (a new prompt, a new draft, steps taken
            # without the draft) is a one-off, not the cost of drafting: counted, it made every probe
            # after steps without the draft look dear, which can keep the draft off for a whole run.
            rows = len(proposals) * width
            since = started if steady else proposing
            later = ends[-1] - ends[0]  # the passes after the first
            self.controller.observe_draft(
                rows,
                time.perf_counter() - since - later,
                later / (plan.draft_depth - 1) if plan.draft_depth > 1 else None,
            )
            if not steady:
                self.controller.observe_catch_up(len(proposals), proposing - started)
            for prop, proposal in zip(proposals, drafted, strict=True):
                prop.draft_width = width
                prop.add_draft(proposal, budget=len(prop.tree) + plan.draft_depth * width)
        return proposals

    def _draws_this_step(self) -> bool:
        """Whether sampled sequences verify the draft's draws (min(1, p/q)) or its top-k (point masses)."""
        rule = self.config.spec.draft_rule
        return self.controller.draft_rule_draws() if rule == "auto" else rule == "sampled"

    def _draft_catch_up(self) -> bool:
        """Bring every draft cache within ``BATCHED_CATCH_UP_ROWS`` of the target's; whether that was
        steady state (no sequence further behind than one step commits).

        A sequence far behind (a new prompt, a new draft, steps taken without the draft) catches up
        alone, in chunks; the last few positions of every sequence (the tokens accepted since its
        previous draft) go into the first pass of :func:`draft_paths`, which also yields the first
        proposal: one pass per step, not one per sequence.
        """
        assert self.draft is not None and self.draft_cache is not None
        spec = self.config.spec
        steady = all(
            seq.kv_len - 1 - seq.draft_len <= max(spec.max_draft_depth, spec.max_ngram_tokens)
            for seq in self._active
        )
        chunk = self.config.prefill_chunk
        for slot, seq in enumerate(self._active):
            while seq.kv_len - 1 - seq.draft_len > BATCHED_CATCH_UP_ROWS:
                start = seq.draft_len
                count = min(chunk, seq.kv_len - 1 - start)
                ids = torch.tensor([seq.tokens[start + 1 : start + 1 + count]])
                hidden = self.draft.fuse(self.features[slot : slot + 1, start : start + count])
                self.draft.advance(causal_step_input(ids, [start]), hidden, self.draft_cache, slot)
                seq.draft_len = start + count
        return steady

    def _verify_forward(
        self, trees: list[ProposalTree]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """All trees in one target forward: node ``i`` of slot ``b`` sits at cache row ``kv_len + i``.

        Returns each slot's logits, features and final hidden states, one row per tree node. Trees
        are padded to the widest for attention only: the projections and the head run on real nodes.
        """
        kv_lens = [seq.kv_len for seq in self._active]
        width = max(len(tree) for tree in trees)
        span = max(kv_lens) + width
        batch = len(trees)
        tokens = torch.zeros(batch, width, dtype=torch.long)
        positions = torch.zeros(batch, width, dtype=torch.long)
        mask = torch.zeros(batch, width, span, dtype=torch.bool)
        for b, (tree, kv_len) in enumerate(zip(trees, kv_lens, strict=True)):
            size = len(tree)
            tokens[b, :size] = torch.tensor(tree.tokens)
            positions[b] = kv_len + torch.arange(width)
            positions[b, :size] = kv_len + torch.tensor(tree.depths)
            mask[b, :, :kv_len] = True
            mask[b, :size, kv_len : kv_len + size] = tree.ancestor_mask()
            mask[b, size:, kv_len + size : kv_len + width] = torch.eye(width - size, dtype=torch.bool)
        write = torch.tensor(kv_lens).unsqueeze(1) + torch.arange(width)
        sizes = [len(tree) for tree in trees]
        rows = real_rows(sizes, width) if min(sizes) < width else None
        step = StepInput(tokens, positions, write, mask)
        hidden, features = self.target.forward(step, self.cache, rows=rows)
        logits = self.target.logits(hidden)
        if rows is None:
            return list(logits), list(features), list(hidden)
        return logits[0].split(sizes), features[0].split(sizes), hidden[0].split(sizes)

    def _commit(
        self, slot: int, tree: ProposalTree, verdict: Verdict, features: torch.Tensor, hidden: torch.Tensor
    ) -> None:
        """Keep the root and the accepted path (compacting tree rows) in the target cache and features;
        the final hidden states of those rows too when the engine records features for the trainer."""
        seq = self._active[slot]
        path = [0, *verdict.accepted]
        if path != list(range(len(path))):
            self.cache.gather_positions(slot, seq.kv_len + torch.tensor(path[1:]), seq.kv_len + 1)
        rows = slice(seq.kv_len, seq.kv_len + len(path))
        self.features[slot, rows] = features[path]
        if self.config.record_features:
            self.final_hidden[slot, rows] = hidden[path]
        seq.kv_len += len(path)

    def _committed_features(self, slot: int) -> torch.Tensor | None:
        """``[N, 4H]`` float16 for the sequence's first ``N`` tokens (every position the target has read)."""
        if not self.config.record_features:
            return None
        seq = self._active[slot]
        count = min(seq.kv_len, len(seq.tokens))
        return torch.cat([self.features[slot, :count].half(), self.final_hidden[slot, :count]], dim=-1)

    def _record(
        self,
        seq: _Sequence,
        tree: ProposalTree,
        verdict: Verdict,
        draft_nodes: dict[int, float],
        ngram_nodes: set[int],
    ) -> None:
        stats = seq.stats
        stats.num_steps += 1
        proposed = len(tree) - 1
        if proposed:
            stats.num_drafts += 1
            stats.num_draft_tokens += proposed
            stats.num_accepted_tokens += len(verdict.accepted)
            depth = max(tree.depths)
            if len(stats.accepted_per_position) < depth:
                stats.accepted_per_position.extend([0] * (depth - len(stats.accepted_per_position)))
            for position in range(len(verdict.accepted)):
                stats.accepted_per_position[position] += 1
            stats.accepted_from_draft += sum(node in draft_nodes for node in verdict.accepted)
            stats.accepted_from_ngram += sum(node in ngram_nodes for node in verdict.accepted)

    def _observe_acceptance(self, prop: Proposals, verdict: Verdict) -> None:
        """Tell the controller how far each proposer's chain was accepted.

        The n-gram chain is rated on the tokens the lookup found: the planner knows each sequence's
        lookup length before it plans, and the verification forward computes only the rows found (a
        batch's trees are no longer padded to the widest but in attention)."""
        draft_depth = max((prop.tree.depths[n] for n in prop.draft_nodes), default=0)
        draft_run = _accepted_run(verdict, prop.draft_nodes)
        ngram_run = _accepted_run(verdict, prop.ngram_nodes)
        if draft_depth and prop.ngram_budget:
            self.controller.observe_both(prop.draft_width, draft_depth, ngram_run, draft_run)
        if draft_depth:
            self.controller.observe_draft_acceptance(prop.draft_width, draft_depth, draft_run)
        if draft_depth and prop.draft_width > 1:  # what the chain of first choices would have accepted
            chain_run = _accepted_run(verdict, prop.top_chain)
            self.controller.observe_draft_acceptance(1, draft_depth, chain_run)
        if prop.ngram_nodes:
            self.controller.observe_ngram_acceptance(len(prop.ngram_nodes), ngram_run)

    # -- output and bookkeeping ----------------------------------------------------------------

    def _emit(self, slot: int, tokens: list[int]) -> TokenEvent:
        """Append new tokens, cut at a stop token or the length limit, and build the event."""
        seq = self._active[slot]
        params = seq.request.params
        finish: FinishReason | None = None
        kept: list[int] = []
        for token in tokens:
            kept.append(token)
            if token in params.stop_token_ids:
                finish = "stop"
                break
            if seq.generated + len(kept) >= params.max_new_tokens:
                finish = "length"
                break
        seq.generated += len(kept)
        seq.tokens.extend(kept)
        seq.ngram.extend(kept)
        if finish is None:
            return TokenEvent(seq.request.request_id, kept, None)
        return TokenEvent(
            seq.request.request_id, kept, finish, seq.stats, features=self._committed_features(slot)
        )

    def _drop_finished(self, events: list[TokenEvent]) -> list[TokenEvent]:
        finished = {event.request_id for event in events if event.finish_reason is not None}
        for slot in reversed(range(len(self._active))):
            if self._active[slot].request.request_id in finished:
                self._release(slot)
        return events

    def _release(self, slot: int) -> None:
        """Free a slot; the last sequence moves into it to keep active slots dense."""
        last = len(self._active) - 1
        if slot != last:
            moved = self._active[last]
            self.cache.move_slot(last, slot, moved.kv_len + 1)
            self.features[slot, : moved.kv_len] = self.features[last, : moved.kv_len]
            if self.config.record_features:
                self.final_hidden[slot, : moved.kv_len] = self.final_hidden[last, : moved.kv_len]
            if self.draft_cache is not None:
                self.draft_cache.move_slot(last, slot, moved.draft_len + 1)
            self._active[slot] = moved
        self._active.pop()


def _accepted_run(verdict: Verdict, nodes: set[int] | dict[int, float]) -> int:
    """How many of the accepted path's first tokens came from ``nodes`` (one proposer's chain)."""
    accepted = 0
    while accepted < len(verdict.accepted) and verdict.accepted[accepted] in nodes:
        accepted += 1
    return accepted


def _failed(request_id: str, stats: SpecStats, exc: Exception) -> TokenEvent:
    """The final event of a sequence that raised: it ends with an error, the batch goes on."""
    log.exception("request %s failed in the engine", request_id, exc_info=exc)
    return TokenEvent(request_id, [], "error", stats, error=f"{type(exc).__name__}: {exc}"[:500])
