"""Draft proposals for a whole batch: a best-first tree expansion (EAGLE-2 style), chains as width one.

At each depth the draft scores children of the current frontier; the ``width`` children with the
best cumulative log-probability become the next frontier and are run through the draft together
(one forward for all sequences and all frontier nodes, under a tree attention mask). The paths
returned are those of the ``depth * width`` best candidates overall, best first.

For a sequence that samples (temperature > 0) the children of a node are not its top-k but k draws
without replacement from the draft's distribution q at the request's temperature (the top-k of
log q plus Gumbel noise, from the request's own generator), recorded with q so verification can
accept them with min(1, p/q) (see :mod:`worker.engine.verify`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from worker.engine.llama import KVCache, StepInput
from worker.engine.tree import ProposalTree
from worker.engine.types import Drafter
from worker.engine.verify import DraftSample

TINY = 1e-20  # keeps log(-log(u)) finite for a uniform draw of exactly 0


@dataclass(frozen=True)
class DraftBatch:
    tokens: list[list[int]]  # each slot's tokens so far; tokens[kv_len], the last, is the tree root
    kv_lens: list[int]  # target cache length per slot
    draft_lens: list[int]  # draft cache rows valid per slot: at most kv_len - 1, and near it
    features: torch.Tensor  # [slots, positions, 3H] target feature history
    temperatures: tuple[float, ...] = ()  # per slot; 0 (or absent): greedy, children are the top-k
    generators: tuple[torch.Generator | None, ...] = ()  # per slot: the request's own generator


@dataclass(frozen=True)
class DraftPath:
    tokens: list[int]
    probs: list[float]  # the draft's probability of each token given the one before it (for trace records)
    nodes: list[int]  # candidate id of each token (keys of :attr:`DraftProposal.samples`)


@dataclass(frozen=True)
class DraftProposal:
    paths: list[DraftPath]
    samples: dict[int, DraftSample]  # candidate id (-1: the root) -> the draft's draws below it
    top_chain: frozenset[int] = frozenset()  # candidate ids of the draft's first choice at each depth


@dataclass
class Proposals:
    """One sequence's proposals for a step: the tree, and which proposer put each node there."""

    tree: ProposalTree
    ngram_nodes: set[int] = field(default_factory=set)
    ngram_budget: int = 0  # the n-gram length planned this step (the lookup may have found fewer)
    draft_nodes: dict[int, float] = field(default_factory=dict)  # node -> draft probability given parent
    samples: dict[int, DraftSample] = field(default_factory=dict)  # node -> the draft's draws below it
    draft_width: int = 0  # the draft's width this step (0: no draft)
    top_chain: set[int] = field(default_factory=set)  # draft nodes a chain of its first choices holds

    def add_draft(self, proposal: DraftProposal, budget: int) -> None:
        """Insert the draft's paths while the tree has fewer than ``budget`` nodes; keep its draws."""
        node_of = {-1: 0}
        for path in proposal.paths:
            nodes = self.tree.add_path(path.tokens, budget)
            self.draft_nodes.update(zip(nodes, path.probs, strict=False))
            node_of.update(zip(path.nodes, nodes, strict=False))
        self.samples = {node_of[c]: drawn for c, drawn in proposal.samples.items() if c in node_of}
        self.top_chain = {node_of[c] for c in proposal.top_chain if c in node_of}


@dataclass
class _Candidates:
    """Candidate nodes of one sequence's draft tree (parent -1 is the root)."""

    scores: list[float]
    parents: list[int]
    tokens: list[int]
    top_chain: set[int] = field(default_factory=set)  # first children of the root and of each other

    def add(self, score: float, parent: int, token: int, first: bool) -> int:
        self.scores.append(score)
        self.parents.append(parent)
        self.tokens.append(token)
        node = len(self.scores) - 1
        if first and (parent < 0 or parent in self.top_chain):
            self.top_chain.add(node)
        return node

    def best_paths(self, count: int) -> list[DraftPath]:
        """Paths to the leaves of the ``count`` best candidates, best leaf first."""
        order = sorted(range(len(self.scores)), key=lambda i: -self.scores[i])[:count]
        chosen = set(order)
        inner = {self.parents[i] for i in chosen}
        paths = []
        for leaf in (i for i in order if i not in inner):
            tokens, probs, nodes, node = [], [], [], leaf
            while node >= 0:
                parent = self.parents[node]
                tokens.append(self.tokens[node])
                probs.append(math.exp(self.scores[node] - (self.scores[parent] if parent >= 0 else 0.0)))
                nodes.append(node)
                node = parent
            paths.append(DraftPath(tokens[::-1], probs[::-1], nodes[::-1]))
        return paths


def _children(
    logp: torch.Tensor, topk: int, batch: DraftBatch, d2t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[int, list[DraftSample]]]:
    """Each frontier node's ``topk`` children ``[B, F, k]`` (log-probs, draft ids), best or drawn first.

    Sampling slots draw their children from q and return, per slot, each frontier node's draws.
    """
    top_logp, top_ids = logp.topk(topk, dim=-1)
    draws: dict[int, list[DraftSample]] = {}
    for b, temperature in enumerate(batch.temperatures):
        if temperature <= 0.0:
            continue
        log_q = torch.log_softmax(logp[b] / temperature, dim=-1)  # [F, draft_vocab]
        uniform = torch.rand(log_q.shape, generator=batch.generators[b]).clamp_(min=TINY)
        ids = (log_q - torch.log(-torch.log(uniform))).topk(topk, dim=-1).indices
        top_ids[b], top_logp[b] = ids, log_q.gather(-1, ids)
        q = log_q.exp()
        draws[b] = [DraftSample(d2t[row].tolist(), q[j], d2t) for j, row in enumerate(ids)]
    return top_logp, top_ids, draws


def draft_paths(
    runner: Drafter,
    cache: KVCache,
    batch: DraftBatch,
    depth: int,
    topk: int,
    width: int,
    pass_ends: list[float] | None = None,
) -> list[DraftProposal]:
    """Run ``depth`` draft forwards over the batch; return each sequence's proposed paths and draws.
    ``pass_ends``: gets the clock after each forward (the controller costs the first pass apart)."""
    size = len(batch.kv_lens)
    kv = torch.tensor(batch.kv_lens)
    span = max(batch.kv_lens) + depth * width
    # First pass: every committed position the draft cache lacks (target features at p, token p + 1),
    # the last being the root's pair at kv_len - 1, whose logits are depth 1's. One pass with the
    # draft's catch-up: a pass of its own cost about as much as a drafting depth at batch 1.
    counts = [kv_len - drafted for kv_len, drafted in zip(batch.kv_lens, batch.draft_lens, strict=True)]
    step = catch_up_input(batch.tokens, batch.draft_lens, counts)
    hidden = runner.fuse(batch.features[torch.arange(size).unsqueeze(1), step.positions])
    hidden, logp = runner.forward(step, hidden, cache, head_rows=torch.tensor(counts) - 1)
    if pass_ends is not None:
        pass_ends.append(time.perf_counter())
    candidates = [_Candidates([], [], []) for _ in range(size)]
    frontier_ids = [[-1] for _ in range(size)]  # candidate index of each frontier node
    frontier_rows: list[list[list[int]]] = [[[]] for _ in range(size)]  # cache rows each node may attend
    frontier_scores = torch.zeros(size, 1)
    d2t = runner.draft_to_target
    samples: list[dict[int, DraftSample]] = [{} for _ in range(size)]
    positions = torch.arange(span).view(1, 1, span)
    for level in range(1, depth + 1):
        top_logp, top_ids, draws = _children(logp, topk, batch, d2t)  # [B, F, k]
        for b, node_draws in draws.items():
            samples[b].update(zip(frontier_ids[b], node_draws, strict=True))
        child_scores = (frontier_scores.unsqueeze(-1) + top_logp).reshape(size, -1)
        child_tokens = d2t[top_ids].reshape(size, -1)
        scores_list, tokens_list = child_scores.tolist(), child_tokens.tolist()
        child_ids = [
            [
                candidates[b].add(
                    scores_list[b][j], frontier_ids[b][j // topk], tokens_list[b][j], j % topk == 0
                )
                for j in range(len(scores_list[b]))
            ]
            for b in range(size)
        ]
        if level == depth:
            break
        keep = min(width, child_scores.shape[1])
        frontier_scores, picked = child_scores.topk(keep, dim=-1)  # [B, keep]
        picked_list = picked.tolist()
        rows = [[kv_len + (level - 1) * width + i for i in range(keep)] for kv_len in batch.kv_lens]
        new_rows = [
            [[*frontier_rows[b][j // topk], rows[b][i]] for i, j in enumerate(chosen)]
            for b, chosen in enumerate(picked_list)
        ]
        if width == 1:  # a chain's path is the rows right after the history: a prefix
            mask = positions < (kv + level).view(size, 1, 1)
        else:  # every node sees the history and its own path: one indexed write for the whole batch
            at = [(b, i, row) for b in range(size) for i in range(keep) for row in new_rows[b][i]]
            mask = (positions < kv.view(size, 1, 1)).expand(size, keep, span).clone()
            mask[tuple(torch.tensor(at).T)] = True
        step = StepInput(
            tokens=child_tokens.gather(1, picked),
            positions=(kv + level - 1).unsqueeze(1).expand(size, keep),
            write_index=torch.tensor(rows),
            mask=mask,
        )
        if hidden.shape[1] == keep == 1:  # one node per sequence, the parent of its one child
            parent_hidden = hidden
        else:
            parent = (picked // topk).unsqueeze(-1).expand(size, keep, hidden.shape[-1])
            parent_hidden = hidden.gather(1, parent)
        hidden, logp = runner.forward(step, parent_hidden, cache)
        if pass_ends is not None:
            pass_ends.append(time.perf_counter())
        frontier_ids = [[child_ids[b][j] for j in picked_list[b]] for b in range(size)]
        frontier_rows = new_rows
    return [
        DraftProposal(c.best_paths(depth * width), s, frozenset(c.top_chain))
        for c, s in zip(candidates, samples, strict=True)
    ]


def catch_up_input(tokens: list[list[int]], starts: list[int], counts: list[int]) -> StepInput:
    """Sequence ``b`` extends its draft cache by ``counts[b]`` rows from ``starts[b]`` (row ``i`` reads
    token ``i + 1``). Padding rows sit at the sequence's first row past them, ``starts[b] + counts[b]``
    (reading the last real row's token), which no real row attends to and a later pass rewrites
    before anything reads it."""
    width = max(counts)
    offsets = torch.arange(width).unsqueeze(0)
    start = torch.tensor(starts).unsqueeze(1)
    count = torch.tensor(counts).unsqueeze(1)
    positions = start + torch.minimum(offsets, count)
    reads = (start + torch.minimum(offsets, (count - 1).clamp(min=0))).tolist()
    ids = [[seq[p + 1] for p in row] for seq, row in zip(tokens, reads, strict=True)]
    span = int(positions.max()) + 1
    mask = torch.arange(span).view(1, 1, span) <= positions.unsqueeze(2)
    return StepInput(tokens=torch.tensor(ids), positions=positions, write_index=positions, mask=mask)
