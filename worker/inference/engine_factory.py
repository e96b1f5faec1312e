"""Builds the serving engine for a model directory, and how drafts are loaded into it.

The lean speculative engine serves Llama-family checkpoints; anything else falls back to the
reference Hugging Face engine (correct, slower, no draft).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from borealis.cpu import bf16_native
from borealis.settings import ServingSettings
from worker.draft.io import load_draft
from worker.draft.runner import DraftRunner
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.hf_plain import PlainHFEngine, load_hf_model
from worker.engine.llama import LlamaModel, UnsupportedModelError
from worker.engine.types import Drafter, Engine

log = logging.getLogger(__name__)


@dataclass
class ServingEngine:
    engine: Engine
    max_context_tokens: int
    load_draft: Callable[[Path], Drafter] | None  # None: this engine cannot use a draft
    install_draft: Callable[[Drafter | None], None] | None
    kind: Literal["spec", "hf"] = "spec"
    fallback_reason: str = ""  # why hf serves though spec was configured


def _hf_engine(model_dir: Path, context_limit: int) -> ServingEngine:
    model = load_hf_model(model_dir)
    context = min(int(getattr(model.config, "max_position_embeddings", 2048)), context_limit)
    return ServingEngine(PlainHFEngine(model), context, None, None, kind="hf")


def serving_dtype(settings: ServingSettings) -> torch.dtype:
    if settings.dtype == "float32":
        return torch.float32
    if not bf16_native():
        raise SystemExit("BOREALIS_DTYPE=bfloat16 needs a CPU with AVX512-BF16 or AMX; use float32 here")
    return torch.bfloat16


def build_engine(settings: ServingSettings, model_dir: Path) -> ServingEngine:
    context_limit = settings.context_limit
    if settings.engine == "hf":
        return _hf_engine(model_dir, context_limit)
    try:
        target = LlamaModel.load(model_dir, dtype=serving_dtype(settings))
    except UnsupportedModelError as exc:
        log.warning(
            "lean engine unavailable for %s (%s); serving with the reference HF engine, WITHOUT "
            "speculative decoding or drafts (reported to the control plane and the dashboard)",
            model_dir,
            exc,
        )
        fallback = _hf_engine(model_dir, context_limit)
        return replace(fallback, fallback_reason=f"lean engine unavailable: {exc}"[:300])
    spec = SpecConfig(mode=settings.spec_mode, adaptive=settings.spec_adaptive, use_ngram=settings.spec_ngram)
    engine = SpecEngine(
        target,
        EngineConfig(
            max_batch=settings.max_batch,
            max_seq_len=context_limit,
            spec=spec,
            record_features=settings.record_features,
        ),
    )

    def load(path: Path) -> Drafter:
        draft, manifest = load_draft(path)
        return DraftRunner(draft, target.embed, version=manifest.version)

    def install(draft: Drafter | None) -> None:
        engine.swap_draft(draft)

    return ServingEngine(engine, context_limit, load, install)
