"""Per-step trace log: the proposal tree of each verification step, in the shape trace records carry.

Built on the serving path, so it only copies lists the step already made (a few dozen ints per step).
"""

from __future__ import annotations

from collections.abc import Sequence

from borealis.wire import TraceStep
from worker.engine.tree import ProposalTree
from worker.engine.types import StepTrace


def step_trace(tree: ProposalTree, draft_probs: dict[int, float], position: int, accepted: int) -> StepTrace:
    """Node ``i`` of the tree (root excluded) becomes entry ``i - 1``; parent indices shift likewise."""
    nodes = range(1, len(tree))
    return StepTrace(
        position=position,
        tokens=tuple(tree.tokens[1:]),
        parents=tuple(tree.parents[n] - 1 for n in nodes),
        draft_probs=tuple(min(1.0, draft_probs.get(n, 0.0)) for n in nodes),
        accepted=accepted,
    )


def wire_steps(steps: Sequence[StepTrace], output_length: int) -> list[TraceStep]:
    """The engine's log as ``TraceRecord.steps``: the one conversion, for serving and offline alike.

    Steps that proposed nothing stay (they are target steps: acceptance length per trace counts
    them, as the served statistics do); a request cut short by a stop string ends mid-step, so steps
    past its ``output_length`` tokens are dropped.
    """
    return [
        TraceStep(
            position=s.position,
            proposed=list(s.tokens),
            draft_probs=list(s.draft_probs),
            parents=list(s.parents),
            accepted=s.accepted,
        )
        for s in steps
        if s.position < output_length
    ]
