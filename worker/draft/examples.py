"""Training examples: a token sequence plus what the target thinks of it.

Offline data and online traces become the same ``Example``: the target's three-layer features at
every position, its next-token distribution restricted to the draft vocabulary (top-k, renormalised:
all the KL needs, at ~1% of the full row's memory), its greedy choice (for simulated acceptance),
and the rejected proposals of the trace, placed where the draft made them. The target's view comes
from the features its worker shipped (``draft train``: that its generation recorded), or else from
one prefill forward. The final hidden state is kept too, so that when the draft's vocabulary changes
(an online remap) an example is carried over by the target's head alone (:func:`for_vocab`), not
rebuilt by a prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from borealis.wire import TraceRecord, TraceStep
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel, causal_step_input

DEFAULT_TOPK = 32


@dataclass(frozen=True)
class Example:
    """Row ``t`` describes the prediction of token ``t + 1`` (the target's logits at position ``t``)."""

    tokens: torch.Tensor  # [T] target ids
    features: torch.Tensor  # [T, 3H] float16 (halves the cache; the draft computes in float32)
    target_ids: torch.Tensor  # [T, k] draft ids of the target's top-k within the draft vocabulary
    target_logp: torch.Tensor  # [T, k] their log-probabilities, renormalised over the k
    target_argmax: torch.Tensor  # [T] target ids: the target's greedy next token
    prompt_len: int
    domain: str
    negatives: torch.Tensor  # [N, 3] (unroll step, row, draft id): proposals the target rejected
    hidden: torch.Tensor  # [T, H] float16: the target's final normed hidden state
    vocab: DraftVocab  # what the draft ids above index

    def __len__(self) -> int:
        return int(self.tokens.numel())


@torch.no_grad()
def build_example(
    target: LlamaModel,
    vocab: DraftVocab,
    tokens: Sequence[int],
    prompt_len: int,
    domain: str,
    steps: Sequence[TraceStep] = (),
    topk: int = DEFAULT_TOPK,
) -> Example:
    """One prefill forward over ``tokens``, for a trace whose features were not shipped."""
    ids = torch.tensor([list(tokens)], dtype=torch.long)
    hidden, features = target.forward(causal_step_input(ids, [0]), target.new_cache(1, ids.shape[1]))
    return _assemble(target, vocab, ids[0], features[0], hidden[0], prompt_len, domain, steps, topk)


@torch.no_grad()
def example_from_features(
    target: LlamaModel,
    vocab: DraftVocab,
    tokens: Sequence[int],
    stored: torch.Tensor,
    prompt_len: int,
    domain: str,
    steps: Sequence[TraceStep] = (),
    topk: int = DEFAULT_TOPK,
) -> Example:
    """The same example from features the inference worker shipped: only the target's head runs.

    ``stored`` is ``[N, 4H]`` (three feature layers, then the final normed hidden state) for the
    first ``N`` tokens; the example covers those ``N``.
    """
    width = 3 * target.spec.hidden_size
    ids = torch.tensor(list(tokens[: stored.shape[0]]), dtype=torch.long)
    hidden = stored[:, width:].to(target.dtype)
    return _assemble(target, vocab, ids, stored[:, :width], hidden, prompt_len, domain, steps, topk)


def _assemble(
    target: LlamaModel,
    vocab: DraftVocab,
    ids: torch.Tensor,
    features: torch.Tensor,
    hidden: torch.Tensor,
    prompt_len: int,
    domain: str,
    steps: Sequence[TraceStep],
    topk: int,
) -> Example:
    """Target logits from the final hidden states; results are cloned out of inference mode for autograd."""
    logits = target.logits(hidden)
    restricted = torch.log_softmax(logits[:, vocab.draft_to_target], dim=-1)
    top_logp, top_ids = restricted.topk(min(topk, vocab.size), dim=-1)
    argmax = logits.argmax(dim=-1)
    tokens = ids.tolist()
    return Example(
        tokens=ids.clone(),
        features=features.to(torch.float16).clone(),
        target_ids=top_ids.clone(),
        target_logp=torch.log_softmax(top_logp, dim=-1).clone(),
        target_argmax=argmax.clone(),
        prompt_len=prompt_len,
        domain=domain,
        negatives=rejected_proposals(tokens, prompt_len, steps, vocab, argmax.tolist()),
        hidden=hidden.to(torch.float16).clone(),
        vocab=vocab,
    )


@torch.no_grad()
def head_rows(target: LlamaModel, target_ids: torch.Tensor) -> torch.Tensor:
    """``[n, H]`` float32: the target's output-embedding rows of ``target_ids``, whatever form its
    head is packed in (the head applied to the identity)."""
    eye = torch.eye(target.spec.hidden_size, dtype=target.dtype)
    return target.logits(eye).T[target_ids].float()


@torch.no_grad()
def for_vocab(example: Example, vocab: DraftVocab, head: torch.Tensor) -> Example:
    """``example`` for another draft vocabulary; ``head`` is ``head_rows(target, vocab.draft_to_target)``.

    The top-k (the example's own k) is recomputed from the kept hidden state over the new vocabulary's
    rows (about a sixth of the target's head, a few percent of a prefill). A rejected proposal keeps
    its place if its token is still in the vocabulary; one whose token only now entered it was never
    recorded.
    """
    if example.vocab is vocab or example.vocab.same_as(vocab):
        return example
    restricted = torch.log_softmax(example.hidden.float() @ head.T, dim=-1)
    top_logp, top_ids = restricted.topk(min(example.target_ids.shape[1], vocab.size), dim=-1)
    negatives = example.negatives
    if negatives.numel():
        moved = vocab.target_to_draft[example.vocab.draft_to_target[negatives[:, 2]]]
        negatives = torch.cat([negatives[:, :2], moved.unsqueeze(1)], dim=1)[moved >= 0]
    return replace(
        example,
        target_ids=top_ids,
        target_logp=torch.log_softmax(top_logp, dim=-1),
        negatives=negatives,
        vocab=vocab,
    )


def example_from_record(
    target: LlamaModel,
    vocab: DraftVocab,
    record: TraceRecord,
    topk: int = DEFAULT_TOPK,
    stored: torch.Tensor | None = None,
) -> Example:
    """From the record's shipped features when given, else with one prefill."""
    tokens = record.prompt_ids + record.output_ids
    prompt_len, domain = len(record.prompt_ids), record.domain
    if stored is not None:
        return example_from_features(target, vocab, tokens, stored, prompt_len, domain, record.steps, topk)
    return build_example(target, vocab, tokens, prompt_len, domain, record.steps, topk)


def rejected_proposals(
    tokens: list[int], prompt_len: int, steps: Sequence[TraceStep], vocab: DraftVocab, argmax: list[int]
) -> torch.Tensor:
    """Rejected children of the root and of accepted nodes: their context is the true sequence.

    A node at depth ``d`` below a root at absolute index ``r`` was predicted by the draft's unroll
    step ``d - 1`` at row ``r + d - 2``. Nodes under a rejected node saw a context that never
    happened and are skipped, as are tokens the target itself would have chosen there (possible
    under sampling) and tokens outside the draft vocabulary.
    """
    out: list[tuple[int, int, int]] = []
    length = len(tokens)
    for step in steps:
        root = prompt_len + step.position - 1
        parents = step.parents if step.parents is not None else list(range(-1, len(step.proposed) - 1))
        on_path = {-1: 0}  # node index -> depth, for the root and the accepted nodes
        node = -1
        for depth in range(1, min(step.accepted, length - 1 - root) + 1):
            node = next(
                (i for i, p in enumerate(parents) if p == node and step.proposed[i] == tokens[root + depth]),
                -2,
            )
            if node == -2:
                break
            on_path[node] = depth
        for i, (token, parent) in enumerate(zip(step.proposed, parents, strict=True)):
            if parent not in on_path or i in on_path:
                continue
            depth = on_path[parent] + 1
            predicted_at = root + depth - 1
            if predicted_at + 1 >= length or token in (tokens[predicted_at + 1], argmax[predicted_at]):
                continue
            draft_id = int(vocab.target_to_draft[token])
            if draft_id >= 0:
                out.append((depth - 1, root + depth - 2, draft_id))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 3)
