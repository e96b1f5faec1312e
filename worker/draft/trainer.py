"""The draft's training step, shared by offline training and the online trainer.

Loss = sum over unroll steps ``k`` of ``decay**k`` x forward KL(target || draft) on the target's
top-k distribution within the draft vocabulary, plus (switchable, for the ablation) a margin term on
the rejected proposals of served traces: at the position where the target rejected token ``r``, the
draft's log-probability of the target's choice must exceed that of ``r`` by ``rejected_margin``.
KL alone spreads its pull over the whole distribution; the margin aims at the exact confusions that
cost acceptance at serving, which is where a learned head is weakest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F

from borealis.settings import TrainerSettings
from worker.draft.examples import Example
from worker.draft.head_loss import head_kl
from worker.draft.model import Eagle3Draft
from worker.draft.remap import Remap, apply_remap
from worker.draft.ttt import unroll_hidden
from worker.engine.llama import LlamaModel


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    warmup_steps: int = 0  # linear learning-rate warmup from lr / warmup_steps
    decay_steps: int = 0  # > 0: after warmup, linear decay to lr / 10 at this step (ablation knob)
    average: float = 0.0  # > 0: candidates are an exponential moving average of the weights, this decay
    ttt_steps: int = 3
    step_decay: float = 0.8
    rejected_weight: float = 0.0  # > 0 switches the rejected-proposal term on (ablation: no gain yet)
    rejected_margin: float = 1.0
    batch_tokens: int = 2048
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = False  # bf16 autocast for the draft's matmuls (AVX512-BF16 / AMX CPUs); losses in fp32
    prompt_rows: bool = True  # rows inside the prompt train too (serving drafts only after it)
    uncovered_rows: bool = True  # rows whose target argmax is outside the draft vocabulary train too
    device: str = "cpu"  # where the draft trains ("cuda" on a GPU training worker)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def online(cls, settings: TrainerSettings) -> TrainConfig:
        """The online trainer's recipe (``BOREALIS_TRAINER_*``); other knobs keep these defaults."""
        return cls(
            lr=settings.lr,
            warmup_steps=settings.warmup_steps,
            average=settings.weight_average,
            rejected_weight=settings.rejected_weight,
            batch_tokens=settings.batch_tokens,
            bf16=settings.bf16,
            device=settings.device,
        )


@dataclass(frozen=True)
class StepMetrics:
    loss: float
    kl: list[float]  # per unroll step
    top1: list[float]  # per unroll step: draft argmax == target argmax (a training-time acceptance proxy)
    rejected_loss: float
    rejected_count: int
    tokens: int


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # [B, T]
    features: torch.Tensor  # [B, T, 3H]
    target_ids: torch.Tensor  # [B, T, k]
    target_logp: torch.Tensor  # [B, T, k]
    target_argmax: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B]
    negatives: torch.Tensor  # [N, 4] (batch row, unroll step, row, draft id)
    prompt_lengths: torch.Tensor  # [B]

    def to(self, device: torch.device) -> Batch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(examples: Sequence[Example]) -> Batch:
    """Right-pad to the longest; causal attention keeps padding out of every real row."""
    size, length = len(examples), max(len(e) for e in examples)
    first = examples[0]
    tokens = torch.zeros(size, length, dtype=torch.long)
    features = torch.zeros(size, length, first.features.shape[1], dtype=first.features.dtype)
    target_ids = torch.zeros(size, length, first.target_ids.shape[1], dtype=torch.long)
    target_logp = torch.full((size, length, first.target_logp.shape[1]), -1e4)
    target_argmax = torch.zeros(size, length, dtype=torch.long)
    negatives = []
    for b, e in enumerate(examples):
        n = len(e)
        tokens[b, :n], features[b, :n], target_argmax[b, :n] = e.tokens, e.features, e.target_argmax
        target_ids[b, :n], target_logp[b, :n] = e.target_ids, e.target_logp
        if e.negatives.numel():
            negatives.append(F.pad(e.negatives, (1, 0), value=b))
    return Batch(
        tokens,
        features,
        target_ids,
        target_logp,
        target_argmax,
        torch.tensor([len(e) for e in examples]),
        torch.cat(negatives) if negatives else torch.zeros(0, 4, dtype=torch.long),
        torch.tensor([e.prompt_len for e in examples]),
    )


def training_rows(
    firsts: torch.Tensor, lengths: torch.Tensor, covered: torch.Tensor | None, width: int
) -> torch.Tensor:
    """``[B, width - 1]``: which rows train at the first unroll step (at step ``k``, those from ``k``
    on). Row ``i`` is trained against the target's distribution at position ``i + 1``, so it trains
    when ``first <= i < length - 1`` and (given ``covered``, ``[B, width]``) the draft vocabulary holds
    the target's choice at ``i + 1``. The one statement of the rule, for the loss and its scale."""
    rows = torch.arange(width - 1, device=lengths.device).view(1, -1)
    trained = (rows >= firsts.view(-1, 1)) & (rows < lengths.view(-1, 1) - 1)
    return trained if covered is None else trained & covered[:, 1:]


@dataclass(frozen=True)
class StepScale:
    """What one optimizer step's loss terms are divided by: rows per unroll step (:func:`training_rows`)
    and rejected proposals within the unroll, over every example of the step, so parts of it can be
    computed apart and their losses summed."""

    rows: list[int]  # per unroll step, at least 1
    negatives: int  # at least 1

    @classmethod
    def of(cls, trained: Sequence[torch.Tensor], negative_steps: torch.Tensor, ttt_steps: int) -> StepScale:
        """``trained``: per example, its rows that train at the first unroll step (:func:`training_rows`);
        ``negative_steps``: the unroll step of every rejected proposal."""
        rows = [max(1, sum(int(mask[step:].sum()) for mask in trained)) for step in range(ttt_steps)]
        return cls(rows, max(1, int((negative_steps < ttt_steps).sum())))


LENGTH_GROUP_RATIO = 0.7  # an example joins a part while at least this share of its longest one


def length_groups(examples: Sequence[Example]) -> list[list[Example]]:
    """The examples of one step in parts of similar length, longest first.

    A step samples traces of any length; padded to the longest, the draft's layer runs on every
    padded row and its attention over ``ttt_steps`` x the padded length. Computed in parts whose
    gradients add up (:class:`StepScale`), a step costs what its real rows cost.
    """
    groups: list[list[Example]] = []
    for example in sorted(examples, key=len, reverse=True):
        if groups and len(example) >= LENGTH_GROUP_RATIO * len(groups[-1][0]):
            groups[-1].append(example)
        else:
            groups.append([example])
    return groups


def merged(parts: Sequence[StepMetrics]) -> StepMetrics:
    """One step's metrics from its parts' (each already divided by the whole step's :class:`StepScale`)."""
    return StepMetrics(
        loss=sum(p.loss for p in parts),
        kl=[sum(values) for values in zip(*(p.kl for p in parts), strict=True)],
        top1=[sum(values) for values in zip(*(p.top1 for p in parts), strict=True)],
        rejected_loss=sum(p.rejected_loss for p in parts),
        rejected_count=sum(p.rejected_count for p in parts),
        tokens=sum(p.tokens for p in parts),
    )


def batches(examples: Sequence[Example], batch_tokens: int) -> list[list[Example]]:
    """Group examples of similar length (less padding) under a padded-token budget."""
    ordered = sorted(examples, key=len)
    groups: list[list[Example]] = []
    for example in ordered:
        if groups and (len(groups[-1]) + 1) * len(example) <= batch_tokens:
            groups[-1].append(example)
        else:
            groups.append([example])
    return groups


class DraftTrainer:
    """Owns the optimizer; ``lr_scale`` lets the online trainer raise the rate after a domain shift.

    The draft and its optimizer live on ``config.device``; checkpoints take ``snapshot()``, a CPU
    draft, and what is judged and published takes ``candidate()``: with ``config.average`` the
    exponential moving average of the weights (Polyak averaging: a constant online learning rate leaves
    the weights jittering around where a decayed one would settle; their average settles without
    slowing the learning), else the same snapshot.
    """

    def __init__(self, draft: Eagle3Draft, embed: torch.Tensor, config: TrainConfig):
        self.device = torch.device(config.device)
        self.draft = draft.to(self.device)
        self.embed = embed.detach().float()  # on CPU, for evaluation
        self._device_embed = self.embed.to(self.device)
        self.config = config
        self.lr_scale = 1.0
        draft.requires_grad_(True)
        draft.train()
        self.optimizer = torch.optim.AdamW(draft.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_done = 0
        self.average = draft.copy().to(self.device).requires_grad_(False) if config.average else None

    def _schedule(self, step: int) -> float:
        """The learning rate's factor at ``step`` (from 1): warmup, then flat or a linear decay."""
        warmup, decay = self.config.warmup_steps, self.config.decay_steps
        if warmup and step < warmup:
            return step / warmup
        start = max(warmup, 1)
        if decay <= start:
            return 1.0
        return 1.0 - 0.9 * min(1.0, (step - start) / (decay - start))

    def snapshot(self) -> Eagle3Draft:
        """The draft as it stands, on CPU (the draft itself where it trains on CPU)."""
        return self.draft if self.device.type == "cpu" else self.draft.copy()

    def candidate(self) -> Eagle3Draft:
        """The draft to judge and publish, on CPU: the weight average where one is kept."""
        if self.average is None:
            return self.snapshot()
        return self.average if self.device.type == "cpu" else self.average.copy()

    @torch.no_grad()
    def _update_average(self) -> None:
        """Average with decay ``min(average, (1 + t) / (10 + t))``: a young average follows the weights
        closely instead of dragging the starting draft along. A checkpoint keeps the weights, not their
        average: after a restart the average starts again from the weights."""
        if self.average is None:
            return
        t = self.steps_done
        keep = min(self.config.average, (1 + t) / (10 + t))
        for mean, weight in zip(self.average.parameters(), self.draft.parameters(), strict=True):
            mean.lerp_(weight, 1.0 - keep)

    @torch.no_grad()
    def remap(self, plan: Remap, target: LlamaModel) -> None:
        """Give the plan's rows their new tokens in the draft and its optimizer moments
        (:func:`apply_remap`), and in the average, which takes the new rows as they are: an average of
        another token's row would propose the wrong token."""
        apply_remap(self.draft, plan, target, self.optimizer)
        if self.average is None or not plan.rows:
            return
        index = torch.tensor(plan.rows, device=self.device)
        self.average.lm_head[index] = self.draft.lm_head[index]
        self.average.vocab = self.draft.vocab

    def train_step(self, examples: Sequence[Example]) -> StepMetrics:
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * self.lr_scale * self._schedule(self.steps_done + 1)
        metrics = self.gradients(examples)
        torch.nn.utils.clip_grad_norm_(self.draft.parameters(), config.grad_clip)
        self.optimizer.step()
        self.steps_done += 1
        self._update_average()
        return metrics

    def _training_rows(
        self, prompt_lengths: list[int], lengths: list[int], target_argmax: torch.Tensor
    ) -> torch.Tensor:
        """:func:`training_rows` under this trainer's config, for examples padded to ``target_argmax``'s
        width."""
        device = target_argmax.device
        firsts = torch.tensor([self.first_row(n) for n in prompt_lengths], device=device)
        covered = self.covered(target_argmax)
        return training_rows(firsts, torch.tensor(lengths, device=device), covered, target_argmax.shape[1])

    def first_row(self, prompt_len: int) -> int:
        """The first row that trains: 0, or without prompt rows the one predicting the first output."""
        return 0 if self.config.prompt_rows else max(0, prompt_len - 1)

    def covered(self, target_argmax: torch.Tensor) -> torch.Tensor | None:
        """Without ``uncovered_rows``, which positions of ``target_argmax`` (target ids, any shape) hold a
        token the draft vocabulary has: only their rows train (elsewhere the draft cannot propose the
        target's choice). None where every row trains."""
        if self.config.uncovered_rows:
            return None
        return self.draft.vocab.target_to_draft.to(target_argmax.device)[target_argmax] >= 0

    def gradients(self, examples: Sequence[Example]) -> StepMetrics:
        """Fresh gradients of one step's loss over ``examples``, computed in parts of similar length
        (:func:`length_groups`): the gradient of the whole padded batch, without its padding."""
        self.optimizer.zero_grad(set_to_none=True)
        negative_steps = torch.cat([e.negatives[:, 0] for e in examples])
        trained = [
            self._training_rows([e.prompt_len], [len(e)], e.target_argmax.view(1, -1))[0] for e in examples
        ]
        scale = StepScale.of(trained, negative_steps, self.config.ttt_steps)
        parts = []
        for group in length_groups(examples):
            loss, metrics = self.loss(collate(group).to(self.device), scale)
            loss.backward()  # type: ignore[no-untyped-call]
            parts.append(metrics)
        return merged(parts)

    def loss(self, batch: Batch, scale: StepScale | None = None) -> tuple[torch.Tensor, StepMetrics]:
        """The head runs on the rows that train alone (no padding, no row before its unroll step), and
        the KL with it in chunks of rows (:func:`worker.draft.head_loss.head_kl`).
        Terms are divided by ``scale`` (default: this batch's own rows and rejected proposals)."""
        config = self.config
        trained = self._training_rows(
            batch.prompt_lengths.tolist(), batch.lengths.tolist(), batch.target_argmax
        )  # [B, T - 1]
        if scale is None:
            scale = StepScale.of(list(trained), batch.negatives[:, 1], config.ttt_steps)
        device = batch.tokens.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
        with autocast:
            outputs = unroll_hidden(
                self.draft, self._device_embed, batch.tokens, batch.features, config.ttt_steps
            )
        rows = torch.arange(batch.tokens.shape[1] - 1, device=device).view(1, -1)
        wheres = [(trained & (rows >= step)).nonzero(as_tuple=True) for step in range(len(outputs))]

        def targets(values: torch.Tensor) -> torch.Tensor:
            """The target's side of every step's training rows, in the order their hidden states go."""
            return torch.cat([values[:, 1:][where] for where in wheres])

        hidden = torch.cat([out[:, :-1][where] for out, where in zip(outputs, wheres, strict=True)])
        with autocast:  # every step's rows through the head in one call: one cast of its weight each way
            kl_rows, argmax = head_kl(
                self.draft.head_input(hidden),
                self.draft.lm_head,
                targets(batch.target_ids),  # the target's top-k, renormalised: sums to one
                targets(batch.target_logp),
            )
        d2t = self.draft.vocab.draft_to_target.to(device)
        hits = d2t[argmax] == targets(batch.target_argmax)
        counts = [len(where[0]) for where in wheres]
        total = torch.zeros((), device=device)
        kls, top1s = [], []
        for step, (step_kl, step_hits) in enumerate(
            zip(kl_rows.split(counts), hits.split(counts), strict=True)
        ):
            kl = step_kl.sum() / scale.rows[step]
            total = total + config.step_decay**step * kl
            kls.append(float(kl.detach()))
            top1s.append(float(step_hits.sum()) / scale.rows[step])
        rejected, used = self._rejected_term(batch, outputs, autocast, scale.negatives)
        if config.rejected_weight > 0 and used:
            total = total + config.rejected_weight * rejected
        metrics = StepMetrics(
            loss=float(total.detach()),
            kl=kls,
            top1=top1s,
            rejected_loss=float(rejected.detach()),
            rejected_count=used,
            tokens=int(batch.lengths.sum()),
        )
        return total, metrics

    def _rejected_term(
        self, batch: Batch, outputs: list[torch.Tensor], autocast: torch.autocast, total: int
    ) -> tuple[torch.Tensor, int]:
        """Hinge on ``margin - (log q(target's choice) - log q(rejected))`` at each rejected proposal
        (the head runs again on those few rows), summed and divided by the step's ``total``."""
        negatives = batch.negatives
        negatives = negatives[negatives[:, 1] < len(outputs)]
        if not negatives.numel():
            return torch.zeros((), device=negatives.device), 0
        b, step, row, rejected = negatives.unbind(1)
        hidden = torch.stack(outputs)[step, b, row]  # [N, H]
        with autocast:
            logp = torch.log_softmax(self.draft.logits(hidden).float(), dim=-1)
        chosen = batch.target_ids[b, row + 1, 0]  # the target's top token within the draft vocabulary
        picks = torch.arange(len(negatives), device=logp.device)
        gap = logp[picks, chosen] - logp[picks, rejected]
        return F.relu(self.config.rejected_margin - gap).sum() / total, int(negatives.shape[0])
