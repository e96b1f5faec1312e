"""An inference worker's engine when ``BOREALIS_ENGINE=sglang``: SGLang, started and re-started here.

On CUDA the engine speculates with the live Borealis draft exported to EAGLE-3. A new draft with the
same vocabulary map is swapped in place (``worker.sglang.swap``); the first draft, a changed map, or
going back to no draft needs a new engine: ``SGLangEngine.restart`` drains the requests in flight,
stops SGLang and starts it again, while new requests wait in the runner's queue. The control plane
sees one slow swap and its ack, as for any other.

On CPU (SGLang's light install) speculation does not run (its kernels need Triton on CUDA): the
engine serves target-only, takes no draft, and says so in ``fallback_reason``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from borealis.settings import ServingSettings
from worker.draft.eagle3_format import WEIGHTS, export_eagle3
from worker.draft.io import load_draft
from worker.sglang.engine import SGLangEngine, SGLangRuntime
from worker.sglang.session import TokenizerManagerSession
from worker.sglang.swap import DraftWeights, SGLangDraftSwapper, VocabularyChanged

log = logging.getLogger(__name__)

CPU_STAND_INS = Path(__file__).parent / "cpu_stand_ins"


@dataclass(frozen=True)
class SGLangDraft:
    weights: DraftWeights  # what an in-place swap sends
    directory: Path  # the same draft as an EAGLE-3 checkpoint, for an engine (re)start


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def put_cpu_stand_ins_on_path() -> None:
    """For this process and SGLang's spawned children (they inherit ``PYTHONPATH``)."""
    path = str(CPU_STAND_INS)
    if path not in sys.path:
        sys.path.insert(0, path)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([path, *paths])


def _engine_arguments(
    settings: ServingSettings, model_dir: Path, device: str, draft_dir: Path | None
) -> dict[str, Any]:
    """``sglang.Engine`` keyword arguments (names as in SGLang 0.5.23's ``ServerArgs``)."""
    s = settings.sglang
    arguments: dict[str, Any] = {
        "model_path": str(model_dir),
        "device": device,
        "dtype": settings.dtype,
        "context_length": settings.context_limit,
        "max_running_requests": settings.max_batch,
        "mem_fraction_static": s.mem_fraction,
        "skip_tokenizer_init": True,  # token ids in and out: the worker tokenizes and detokenizes
        "incremental_streaming_output": True,  # each chunk holds only its new tokens
        "stream_interval": 1,  # one chunk per verify step: per-step acceptance from chunk sizes
        "log_level": "warning",
    }
    if device == "cpu":
        arguments |= {"attention_backend": "torch_native", "disable_cuda_graph": True}
    if draft_dir is not None:
        arguments |= {
            "speculative_algorithm": "EAGLE3",
            "speculative_draft_model_path": str(draft_dir),
            "speculative_num_steps": s.spec_steps,
            "speculative_eagle_topk": s.spec_topk,
            "speculative_num_draft_tokens": s.spec_draft_tokens,
        }
    return arguments


def launcher(
    settings: ServingSettings, model_dir: Path, device: str, draft_dir: Path | None
) -> Callable[[], SGLangRuntime]:
    """Starts SGLang on ``device``, speculating with the EAGLE-3 export in ``draft_dir`` if given."""
    arguments = _engine_arguments(settings, model_dir, device, draft_dir)

    def launch() -> SGLangRuntime:
        import sglang

        runtime: SGLangRuntime = sglang.Engine(**arguments)
        return runtime

    return launch


class SGLangDrafts:
    """Loads drafts off the engine thread and installs them on it (in place, or by a restart)."""

    def __init__(
        self, engine: SGLangEngine, settings: ServingSettings, model_dir: Path, device: str, root: Path
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.model_dir = model_dir
        self.device = device
        self.root = root
        shutil.rmtree(root, ignore_errors=True)  # exports a crash left behind
        self.current: SGLangDraft | None = None
        self.swapper: SGLangDraftSwapper | None = None

    def load(self, path: Path) -> SGLangDraft:
        draft, manifest = load_draft(path)
        if manifest.version is None:
            raise ValueError(f"the draft at {path} has no version; only registered drafts are served")
        directory = export_eagle3(draft, self.model_dir, self.root / manifest.version)
        tensors = load_file(str(directory / WEIGHTS))
        return SGLangDraft(DraftWeights(manifest.version, tensors), directory)

    def install(self, draft: SGLangDraft | None) -> None:
        if draft is not None and self.swapper is not None:
            try:
                self.engine.call(self.swapper.install(draft.weights))
            except VocabularyChanged as exc:
                log.info("%s; restarting SGLang on it", exc)
            else:
                self._keep(draft)
                return
        self._restart(draft)

    def _restart(self, draft: SGLangDraft | None) -> None:
        directory = draft.directory if draft is not None else None
        self.engine.restart(launcher(self.settings, self.model_dir, self.device, directory))
        self.swapper = None
        if draft is not None:
            session = TokenizerManagerSession(self.engine.runtime.tokenizer_manager)
            self.swapper = SGLangDraftSwapper(session, draft.weights)
        self._keep(draft)

    def _keep(self, draft: SGLangDraft | None) -> None:
        """Keep the serving draft's export (a restart needs it); drop the others."""
        previous, self.current = self.current, draft
        if previous is not None and (draft is None or previous.directory != draft.directory):
            shutil.rmtree(previous.directory, ignore_errors=True)
