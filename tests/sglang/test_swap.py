"""The draft-only hot swap's call order against a recording stand-in for SGLang's TokenizerManager.

The stand-in records calls and can refuse; the real engine needs a GPU (see README, GPU shape).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from worker.draft.eagle3_format import eagle3_tensors
from worker.draft.model import new_draft
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.sglang.swap import DraftWeights, SGLangDraftSwapper, SwapFailed, VocabularyChanged


class RecordingSession:
    def __init__(self, refuse_update: bool = False, refuse_begin: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.refuse_update, self.refuse_begin = refuse_update, refuse_begin
        self.loaded: dict[str, torch.Tensor] = {}

    async def pause_generation(self, mode: str) -> None:
        self.calls.append(("pause", mode))

    async def begin_weight_update(self, selector: str) -> tuple[bool, str]:
        self.calls.append(("begin", selector))
        return (not self.refuse_begin, "busy" if self.refuse_begin else "ok")

    async def update_weights_from_tensor(
        self,
        named_tensors: list[tuple[str, torch.Tensor]],
        selector: str,
        flush_cache: bool,
        weight_version: str,
    ) -> tuple[bool, str]:
        self.calls.append(("update", (selector, flush_cache, weight_version)))
        if self.refuse_update:
            return False, "shape mismatch"
        self.loaded = dict(named_tensors)
        return True, "ok"

    async def end_weight_update(self) -> tuple[bool, str]:
        self.calls.append(("end", None))
        return True, "ok"

    async def continue_generation(self) -> None:
        self.calls.append(("continue", None))


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """On a thread of its own: the browser tests' session keeps an event loop running on this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def weights(target: LlamaModel, version: str, seed: int, vocab: DraftVocab) -> DraftWeights:
    return DraftWeights(version, eagle3_tensors(new_draft(target.spec, vocab, seed=seed)))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> LlamaModel:
    return LlamaModel.load(tiny_model_dir)


@pytest.fixture
def vocab(tiny_model: LlamaModel) -> DraftVocab:
    return DraftVocab.from_counts(Counter(range(48)), 48, tiny_model.spec.vocab_size)


def test_a_swap_pauses_in_place_sends_draft_tensors_only_and_always_continues(
    tiny_model: LlamaModel, vocab: DraftVocab
) -> None:
    session = RecordingSession()
    swapper = SGLangDraftSwapper(session, weights(tiny_model, "v0001", 0, vocab))
    new = weights(tiny_model, "v0002", 1, vocab)
    run(swapper.install(new))
    assert session.calls == [
        ("pause", "in_place"),
        ("begin", "draft"),
        ("update", ("draft", False, "v0002")),
        ("end", None),
        ("continue", None),
    ]
    assert "d2t" not in session.loaded and "t2d" not in session.loaded  # the map never travels
    assert "embed_tokens.weight" not in session.loaded  # embeddings are the target's
    assert torch.equal(session.loaded["fc.weight"], new.tensors["fc.weight"])
    assert (swapper.current.version, swapper.previous and swapper.previous.version) == ("v0002", "v0001")
    run(swapper.rollback())
    assert swapper.current.version == "v0001" and session.calls[-3][1] == ("draft", False, "v0001")


def test_a_refused_update_keeps_the_old_version_and_still_continues(
    tiny_model: LlamaModel, vocab: DraftVocab
) -> None:
    for session in (RecordingSession(refuse_update=True), RecordingSession(refuse_begin=True)):
        swapper = SGLangDraftSwapper(session, weights(tiny_model, "v0001", 0, vocab))
        with pytest.raises(SwapFailed):
            run(swapper.install(weights(tiny_model, "v0002", 1, vocab)))
        assert session.calls[0] == ("pause", "in_place") and session.calls[-1] == ("continue", None)
        assert ("end", None) in session.calls or session.refuse_begin  # a session opened is closed
        assert swapper.current.version == "v0001" and swapper.previous is None


def test_a_new_vocabulary_map_is_refused_for_a_restart(tiny_model: LlamaModel, vocab: DraftVocab) -> None:
    session = RecordingSession()
    swapper = SGLangDraftSwapper(session, weights(tiny_model, "v0001", 0, vocab))
    other = DraftVocab.from_counts(Counter(range(40, 88)), 48, tiny_model.spec.vocab_size)
    with pytest.raises(VocabularyChanged):
        run(swapper.install(weights(tiny_model, "v0002", 1, other)))
    assert session.calls == []  # nothing paused, nothing sent
