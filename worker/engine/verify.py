"""Lossless verification of a proposal tree against the target's logits.

All proposals are treated as deterministic guesses (a point mass per proposed token), which makes
one rule cover greedy and sampled decoding, chains and trees, and any mix of proposers:

* greedy: follow the child whose token is the target's argmax; stop where none matches.
* sampling: at a node with proposed children c1..cm, accept c1 with probability p(c1); if
  rejected, remove c1 from p and renormalise, then try c2 with its new probability, and so on; if
  every child is rejected, sample the emitted token from what is left of p. Each token x is then
  emitted with probability exactly p(x) (sampling without replacement, one draw), so the output
  distribution equals the target's whatever the proposers guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.sampling import is_greedy, sample, target_probs
from worker.engine.tree import ProposalTree
from worker.engine.types import SamplingParams


@dataclass(frozen=True)
class Verdict:
    accepted: list[int]  # accepted tree nodes, root excluded, in depth order
    next_token: int  # the target's own token after the accepted path (the "bonus" token)


def verify_tree(
    tree: ProposalTree,
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
) -> Verdict:
    """Walk the tree from the root, accepting children by the rule above; ``logits`` is ``[nodes, V]``."""
    accepted: list[int] = []
    node = 0
    if is_greedy(params):
        choices = logits[: len(tree)].argmax(dim=-1).tolist()
        while (child := tree.children[node].get(choices[node])) is not None:
            accepted.append(child)
            node = child
        return Verdict(accepted, choices[node])
    while True:
        probs = target_probs(logits[node], params)
        child = _accept_one_child(tree.children[node], probs, generator)
        if child is None:
            return Verdict(accepted, sample(probs, generator))
        accepted.append(child)
        node = child


def _accept_one_child(
    children: dict[int, int], probs: torch.Tensor, generator: torch.Generator | None
) -> int | None:
    """Try each proposed child in turn; ``probs`` is left as the residual distribution (in place)."""
    for token, child in children.items():
        mass = float(probs[token])
        if mass <= 0.0:
            continue
        if float(torch.rand((), generator=generator)) < mass:
            return child
        probs[token] = 0.0
        remaining = float(probs.sum())
        if remaining <= 0.0:  # only reachable by rounding when the child held all the mass
            return child
        probs /= remaining
    return None
