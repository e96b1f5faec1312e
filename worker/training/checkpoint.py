"""Round checkpoints: draft weights, optimizer moments, replay, held-out and probation traces, and
trainer state.

Each checkpoint is a fresh ``round-N`` directory made complete and fsynced before ``LATEST`` (replaced
atomically) points at it, so a trainer killed at any instant, even by a power loss, resumes from the
last complete round, and traces are acked only once the round that holds them is on disk. The
previous checkpoint is kept until the next one is durable: a checkpoint that does not load (a
corrupt file) is logged and the one before it used. Safetensors and JSON only: nothing here is
unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from borealis.wire import TraceRecord
from worker.draft.io import load_draft, save_draft
from worker.draft.model import Eagle3Draft

LATEST = "LATEST"

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    round: int = 0
    optimizer_steps: int = 0
    boost_rounds_left: int = 0
    live_version: str | None = None  # the version candidates descend from
    last_candidate: str | None = None
    acked_ids: list[str] = field(default_factory=list)  # in this checkpoint; ack again on resume
    trained_records: int = 0
    heldout_records: int = 0
    vocab_version: int = 0  # bumped by every online remap of the draft vocabulary
    rows_remapped: int = 0
    trained_rows: int = 0  # token positions optimizer steps have trained on, repeats counted
    acked_records: int = 0  # every trace finished with: trained on, held out, skipped or rejected
    last_candidate_round: int | None = None
    window_start: float | None = None  # finished_at of the oldest trace since the last candidate
    window_end: float | None = None


@dataclass
class Checkpoint:
    state: TrainerState
    draft: Eagle3Draft
    optimizer: dict[str, Any] | None
    replay: list[TraceRecord]
    heldout: list[TraceRecord]
    probation: list[TraceRecord]


def save_checkpoint(
    root: Path,
    state: TrainerState,
    draft: Eagle3Draft,
    optimizer: torch.optim.Optimizer,
    replay: list[TraceRecord],
    heldout: list[TraceRecord],
    probation: list[TraceRecord],
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"round-{state.round:08d}"
    if target.exists():
        shutil.rmtree(target)
    work = root / f".tmp-{state.round:08d}"
    shutil.rmtree(work, ignore_errors=True)
    save_draft(draft, work / "draft", parent_version=state.live_version)
    tensors, meta = _flatten_optimizer(optimizer)
    save_file(tensors, str(work / "optimizer.safetensors"))
    (work / "optimizer.json").write_text(json.dumps(meta))
    _write_records(work / "replay.jsonl", replay)
    _write_records(work / "heldout.jsonl", heldout)
    _write_records(work / "probation.jsonl", probation)
    (work / "state.json").write_text(json.dumps(state.__dict__))
    _fsync_tree(work)
    os.replace(work, target)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(target.name)
    _fsync_file(pointer)
    previous = _pointed(root)
    os.replace(pointer, root / LATEST)
    _fsync_file(root)
    for old in root.glob("round-*"):
        if old not in (target, previous):
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(root: Path) -> Checkpoint | None:
    """The newest checkpoint that loads: ``LATEST``'s, else the older one kept beside it."""
    latest = _pointed(root)
    candidates = sorted(root.glob("round-*"), reverse=True) if root.is_dir() else []
    if latest is not None:
        candidates = [latest, *(c for c in candidates if c != latest)]
    for directory in candidates:
        try:
            return _load(directory)
        except Exception as exc:  # corrupt or partial: fall back to the previous round
            log.error(
                "checkpoint %s does not load (%s: %s); trying an older one",
                directory,
                type(exc).__name__,
                exc,
            )
    return None


def _load(directory: Path) -> Checkpoint:
    """A checkpoint written before traces waited on probation has no ``probation.jsonl``: none wait."""
    draft, _ = load_draft(directory / "draft")
    meta = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    return Checkpoint(
        state=TrainerState(**json.loads((directory / "state.json").read_text())),
        draft=draft,
        optimizer=_unflatten_optimizer(tensors, meta),
        replay=_read_records(directory / "replay.jsonl"),
        heldout=_read_records(directory / "heldout.jsonl"),
        probation=_read_records(path) if (path := directory / "probation.jsonl").is_file() else [],
    )


def _pointed(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    return root / pointer.read_text().strip()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    """Every file, then every directory, so the renamed checkpoint is whole after a crash."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            _fsync_file(path)
    for path in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        _fsync_file(path)
    _fsync_file(directory)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors to safetensors, everything else (step counts, hyperparameters) to JSON."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state_dict["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()  # from a GPU trainer too
            else:
                scalars.setdefault(str(index), {})[name] = float(value)
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta["scalars"].items():
        for name, value in slots.items():
            state.setdefault(int(index), {})[name] = torch.tensor(value)
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_records(path: Path, records: list[TraceRecord]) -> None:
    """One line per record, streamed: a full replay buffer is never one string in memory."""
    with path.open("w") as handle:
        for record in records:
            handle.write(record.model_dump_json(exclude_none=True) + "\n")


def _read_records(path: Path) -> list[TraceRecord]:
    with path.open() as handle:
        return [TraceRecord.model_validate_json(line) for line in handle if line.strip()]
