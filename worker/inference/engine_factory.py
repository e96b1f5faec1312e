"""Builds the serving engine for a model directory, and how drafts are loaded into it.

The lean speculative engine serves Llama-family checkpoints; anything else falls back to the
reference Hugging Face engine (correct, slower, no draft).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from borealis.settings import ServingSettings
from worker.draft.io import load_draft
from worker.draft.runner import DraftRunner
from worker.engine import native
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.hf_plain import PlainHFEngine, load_hf_model
from worker.engine.llama import LlamaModel, UnsupportedModelError
from worker.engine.types import Drafter, Engine
from worker.sglang.engine import SGLangEngine
from worker.sglang.serving import SGLangDrafts, launcher, put_cpu_stand_ins_on_path, resolve_device

log = logging.getLogger(__name__)

D = TypeVar("D")  # a loaded draft as the engine takes it: a Drafter here, EAGLE-3 tensors for SGLang


@dataclass
class ServingEngine(Generic[D]):
    engine: Engine
    max_context_tokens: int
    load_draft: Callable[[Path], D] | None  # None: this engine cannot use a draft
    install_draft: Callable[[D | None], None] | None
    kind: Literal["spec", "hf", "sglang"] = "spec"
    fallback_reason: str = ""  # why this engine serves without a draft though one was configured
    close: Callable[[], None] | None = None  # releases what the engine started (SGLang's processes)


def _hf_engine(model_dir: Path, context_limit: int) -> ServingEngine[Any]:
    model = load_hf_model(model_dir)
    context = min(int(getattr(model.config, "max_position_embeddings", 2048)), context_limit)
    return ServingEngine(PlainHFEngine(model), context, None, None, kind="hf")


def _sglang_engine(settings: ServingSettings, model_dir: Path, home: Path) -> ServingEngine[Any]:
    """Starts target-only: the control plane's live draft arrives through the swap protocol."""
    if settings.dtype == "int4":
        raise SystemExit("BOREALIS_DTYPE=int4 is the lean engine's; with BOREALIS_ENGINE=sglang use bfloat16")
    device = resolve_device(settings.sglang.device)
    if device == "cpu":
        put_cpu_stand_ins_on_path()
    config = json.loads((model_dir / "config.json").read_text())
    context = min(settings.context_limit, int(config.get("max_position_embeddings", settings.context_limit)))
    settings = replace(settings, context_limit=context)  # SGLang refuses a context beyond the model's
    engine = SGLangEngine(launcher(settings, model_dir, device, None))
    if device == "cpu":
        reason = "SGLang on CPU serves target-only: its EAGLE-3 kernels need CUDA"
        return ServingEngine(engine, context, None, None, "sglang", reason, engine.shutdown)
    drafts = SGLangDrafts(engine, settings, model_dir, device, home / "sglang-drafts")
    return ServingEngine(engine, context, drafts.load, drafts.install, "sglang", close=engine.shutdown)


def check_dtype(settings: ServingSettings) -> None:
    if settings.dtype != "float32" and not native.serves_low_precision():
        raise SystemExit(
            f"BOREALIS_DTYPE={settings.dtype} needs a CPU with AVX512-BF16 or AMX, or the engine's kernels "
            "(AVX2 and a C++ compiler, BOREALIS_NATIVE_KERNELS on); use float32 here"
        )


def build_engine(settings: ServingSettings, model_dir: Path, home: Path) -> ServingEngine[Any]:
    """``home``: where an engine keeps files of its own (SGLang's EAGLE-3 exports of drafts)."""
    context_limit = settings.context_limit
    if settings.engine == "hf":
        return _hf_engine(model_dir, context_limit)
    if settings.engine == "sglang":
        return _sglang_engine(settings, model_dir, home)
    try:
        check_dtype(settings)
        native.enable(settings.native_kernels, settings.native_amx)
        target = LlamaModel.load_named(model_dir, settings.dtype)
    except UnsupportedModelError as exc:
        log.warning(
            "lean engine unavailable for %s (%s); serving with the reference HF engine, WITHOUT "
            "speculative decoding or drafts (reported to the control plane and the dashboard)",
            model_dir,
            exc,
        )
        fallback = _hf_engine(model_dir, context_limit)
        return replace(fallback, fallback_reason=f"lean engine unavailable: {exc}"[:300])
    log.info(
        "lean engine: %s weights, products through %s", settings.dtype, native.kernels_name(target.dtype)
    )
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
