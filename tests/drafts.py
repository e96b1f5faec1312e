"""Random-weight draft artifacts that fit a given target model directory."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from worker.draft.io import save_draft
from worker.draft.model import new_draft
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaSpec


def make_draft_artifact(target_dir: Path, out_dir: Path, seed: int, draft_vocab: int = 512) -> Path:
    spec = LlamaSpec.from_config(json.loads((target_dir / "config.json").read_text()))
    vocab = DraftVocab.from_counts(Counter(), draft_vocab, spec.vocab_size)
    save_draft(new_draft(spec, vocab, seed=seed), out_dir)
    return out_dir
