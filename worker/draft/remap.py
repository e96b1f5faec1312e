"""Online vocabulary remapping: cold draft rows handed to a new domain's tokens, in place.

Reference systems fix a draft's vocabulary when it is made, so tokens of a domain that arrives
later can never be proposed: the draft's acceptance there has a ceiling below its coverage. Here,
when recent outputs hold tokens outside the vocabulary, the draft rows whose tokens the replay
uses least (and the recent outputs not at all) are given to the most frequent missing tokens.
Rows keep their positions, so every other row's weights and optimizer moments stay as they are;
a remapped row's head weights start from the target's own output embedding of its new token,
rescaled to the draft head's mean row norm, and its optimizer moments start at zero.

Losslessness is untouched: the target verifies every proposal, whatever the draft's vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from worker.draft.examples import head_rows
from worker.draft.model import Eagle3Draft
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel


@dataclass(frozen=True)
class Remap:
    rows: list[int]  # draft rows that changed token
    old_tokens: list[int]
    new_tokens: list[int]
    coverage_before: float  # of the recent outputs
    coverage_after: float


def plan_remap(
    vocab: DraftVocab,
    recent_outputs: Iterable[list[int]],
    usage: Counter[int],
    max_rows: int,
    min_count: int = 2,
) -> Remap:
    """Which rows to give to which tokens: a missing token takes a row only if it occurred more
    often in the recent outputs than the row's token did in ``usage`` (replay outputs)."""
    recent: Counter[int] = Counter()
    for output in recent_outputs:
        recent.update(output)
    total = sum(recent.values())
    in_vocab = vocab.target_to_draft
    missing = [(t, n) for t, n in recent.most_common() if n >= min_count and int(in_vocab[t]) < 0]
    ids = vocab.draft_to_target.tolist()
    cold = sorted(
        (row for row, token in enumerate(ids) if recent[token] == 0), key=lambda row: (usage[ids[row]], row)
    )
    rows, old, new = [], [], []
    for (token, count), row in zip(missing[:max_rows], cold, strict=False):
        if count <= usage[ids[row]]:
            break  # the coldest row left is used more than this token: keep it
        rows.append(row)
        old.append(ids[row])
        new.append(token)
    covered = sum(n for t, n in recent.items() if int(in_vocab[t]) >= 0)
    gained = sum(recent[t] for t in new)
    before = covered / total if total else 1.0
    return Remap(rows, old, new, before, (covered + gained) / total if total else 1.0)


@torch.no_grad()
def apply_remap(
    draft: Eagle3Draft, remap: Remap, target: LlamaModel, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Give ``remap.rows`` their new tokens: vocabulary, head rows, and the rows' optimizer moments."""
    if not remap.rows:
        return
    ids = draft.vocab.draft_to_target.clone()
    rows = torch.tensor(remap.rows)
    ids[rows] = torch.tensor(remap.new_tokens)
    draft.vocab = DraftVocab(ids, draft.vocab.target_vocab_size)
    fresh = head_rows(target, torch.tensor(remap.new_tokens))  # [n, H]: the target's head rows
    fresh = fresh.to(draft.lm_head.device)  # the draft may train on a GPU
    scale = draft.lm_head.norm(dim=1).mean() / fresh.norm(dim=1).clamp_min(1e-6)
    draft.lm_head[rows] = fresh * scale.unsqueeze(1)
    if optimizer is not None:
        state = optimizer.state.get(draft.lm_head, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                state[moment][rows] = 0.0
