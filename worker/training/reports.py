"""What a training round reports (the Celery task's result, and the test's and operator's view of it)."""

from __future__ import annotations

from typing import Literal, Required, TypedDict

RoundStatus = Literal["paused", "idle", "trained", "error", "superseded", "duplicate", "unsupported"]


class TrainingReport(TypedDict):
    loss: float  # mean of the round's optimizer steps
    top1: float  # first-step top-1 agreement with the target, mean of the steps
    lr_boost: bool  # the shift boost was on
    steps: int  # optimizer steps taken (fewer when learning was paused mid-round)


class ExampleSourceCounts(TypedDict):
    from_features: int  # examples built from features the inference worker shipped (no prefill)
    by_prefill: int  # examples that needed a target prefill (no features, or they expired)
    revocabulary: int  # kept examples carried to a remapped draft vocabulary by the target's head


class RemapReport(TypedDict):
    vocab_version: int  # the draft vocabulary's version after this remap
    rows: int  # draft rows given to new tokens
    coverage_before: float  # of this round's new output tokens
    coverage_after: float


class CandidateReport(TypedDict, total=False):
    published: Required[bool]
    reason: str  # why not published
    shadow_eval: dict[str, dict[str, float]]
    version: str
    status: str  # the status the control plane's policy gave it


class RoundReport(TypedDict, total=False):
    status: Required[RoundStatus]
    round: int
    read: int  # traces read this round
    training: TrainingReport
    examples: ExampleSourceCounts  # since the trainer started
    candidate: CandidateReport
    remap: RemapReport
    error: str
