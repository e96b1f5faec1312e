"""Lossless verification of a proposal tree against the target's logits.

Greedy: follow the child whose token is the target's argmax; stop where none matches.

Sampling: at each node the rule below emits one token whose law is exactly the target's p; if the
token is a child in the tree, verification descends into it, otherwise it is the step's last token.

* Guesses (n-gram lookup, and any child the draft did not sample) are point masses: accept guess
  g1 with probability p(g1); if rejected, remove g1 from p and renormalise, try g2, and so on.
* Then the draft's samples x1..xk, drawn without replacement from its distribution q, in draw order
  (recursive rejection sampling): accept xi with probability min(1, p(xi) / q(xi)); if rejected,
  p <- normalise(max(0, p - q)) and q <- q without xi, renormalised. With k = 1 this is standard
  speculative sampling. A sample that was also a rejected guess has p(xi) = 0 and is rejected,
  but still updates p and q, as the rule requires.
* If nothing was accepted, sample the token from what is left of p.

Each stage returns a token distributed as the p it started from, or passes on a residual that the
next stage serves exactly, so the emitted token follows the target whatever the proposers did. The
draft's samples are all its draws at the node, kept in the tree or not: which ones the tree kept
depends on the draws, so verifying only the kept ones would bias the law.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine import native
from worker.engine.sampling import is_greedy, sample, target_probs
from worker.engine.tree import ProposalTree
from worker.engine.types import SamplingParams


@dataclass(frozen=True)
class DraftSample:
    """The draft's draws at one tree node, without replacement, from ``q`` over its own vocabulary."""

    tokens: list[int]  # target ids, in draw order
    q: torch.Tensor  # [draft_vocab] float32: the distribution they were drawn from
    draft_to_target: torch.Tensor  # [draft_vocab] target id of each draft token

    def target_q(self, vocab: int) -> torch.Tensor:
        """``q`` over the target's vocabulary (zero outside the draft's)."""
        return torch.zeros(vocab).index_copy_(0, self.draft_to_target, self.q.float())


@dataclass(frozen=True)
class Verdict:
    accepted: list[int]  # accepted tree nodes, root excluded, in depth order
    next_token: int  # the target's own token after the accepted path (the "bonus" token)


def verify_tree(
    tree: ProposalTree,
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    samples: dict[int, DraftSample] | None = None,
    guesses: set[int] | None = None,
) -> Verdict:
    """Walk the tree from the root by the rules above; ``logits`` is ``[nodes, V]``.

    ``samples`` maps a node to the draft's draws below it; ``guesses`` are nodes a deterministic
    proposer (n-gram lookup) put in the tree, verified as point masses even where the draft drew them.
    """
    accepted: list[int] = []
    node = 0
    if is_greedy(params):
        choices = native.argmax(logits[: len(tree)]).tolist()
        while (child := tree.children[node].get(choices[node])) is not None:
            accepted.append(child)
            node = child
        return Verdict(accepted, choices[node])
    samples = samples or {}
    guesses = guesses or set()
    while True:
        drawn = samples.get(node)
        children = tree.children[node]
        point_masses = [
            token
            for token, child in children.items()
            if drawn is None or child in guesses or token not in drawn.tokens
        ]
        probs = target_probs(logits[node], params)
        token = _emit(point_masses, drawn, probs, generator)
        child = children.get(token)
        if child is None:
            return Verdict(accepted, token)
        accepted.append(child)
        node = child


def _emit(
    point_masses: list[int], drawn: DraftSample | None, probs: torch.Tensor, generator: torch.Generator | None
) -> int:
    """One token with law ``probs``: guesses, then the draft's draws, then the residual."""
    for token in point_masses:
        mass = float(probs[token])
        if mass <= 0.0:
            continue
        if _coin(generator) < mass:
            return token
        probs[token] = 0.0
        remaining = float(probs.sum())
        if remaining <= 0.0:  # only reachable by rounding when the guess held all the mass
            return token
        probs /= remaining
    if drawn is not None:
        q = drawn.target_q(probs.shape[-1])
        for token in drawn.tokens:
            q_token = float(q[token])
            if q_token <= 0.0:
                continue
            if _coin(generator) * q_token < float(probs[token]):
                return token
            residual = (probs - q).clamp_min_(0.0)
            remaining = float(residual.sum())
            if remaining <= 0.0:  # p <= q everywhere means p == q: a rejection only happens by rounding
                return token
            probs = residual / remaining
            q[token] = 0.0
            left = float(q.sum())
            if left <= 0.0:
                break
            q /= left
    return sample(probs, generator)


def _coin(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))
