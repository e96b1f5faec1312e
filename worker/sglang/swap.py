"""A draft-only hot swap in a running SGLang engine: the order of calls, and what may not be swapped.

SGLang 0.5.23 updates a draft without a restart through its TokenizerManager: pause generation in
place (running requests keep their KV cache), open a weight-update session for the draft, send the
tensors with ``selector="draft"`` (the default ``"all"`` would let same-shaped draft names overwrite
target weights), close the session, continue generation — the last always, whatever failed.
``update_weights_from_disk`` loads target and draft alike and is never used for drafts.

A draft whose vocabulary map (``d2t``) differs from the running one cannot be swapped in place: the
engine keeps the map it started with, so the new weights would propose the wrong tokens. That swap
is refused with ``VocabularyChanged``, for the control plane to drain and restart the worker on the
new draft. The previous version's tensors are kept so that a rollback is another in-place swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

MAP_KEYS = ("d2t", "t2d")  # the vocabulary map: fixed for the engine's lifetime, never sent


class DraftWeightSession(Protocol):
    """The engine calls a swap makes (SGLang's ``TokenizerManager`` request objects behind them)."""

    async def pause_generation(self, mode: str) -> None: ...

    async def begin_weight_update(self, selector: str) -> tuple[bool, str]: ...

    async def update_weights_from_tensor(
        self,
        named_tensors: list[tuple[str, torch.Tensor]],
        selector: str,
        flush_cache: bool,
        weight_version: str,
    ) -> tuple[bool, str]: ...

    async def end_weight_update(self) -> tuple[bool, str]: ...

    async def continue_generation(self) -> None: ...


class VocabularyChanged(RuntimeError):
    """The new draft maps its vocabulary differently: only a restart of the worker can serve it."""


class SwapFailed(RuntimeError):
    """SGLang refused the weights; the engine still serves the version it had."""


@dataclass(frozen=True)
class DraftWeights:
    version: str
    tensors: dict[str, torch.Tensor]  # EAGLE-3 names (``worker.draft.eagle3_format.eagle3_tensors``)


class SGLangDraftSwapper:
    def __init__(self, session: DraftWeightSession, serving: DraftWeights, selector: str = "draft") -> None:
        """``serving``: the draft the engine was started with (its map is the one it keeps).

        ``selector`` is always ``"draft"`` in serving; ``"target"`` moves target weights the same way,
        which is how this path is exercised where SGLang cannot speculate (its light CPU install).
        """
        self.session = session
        self.current = serving
        self.previous: DraftWeights | None = None
        self.selector = selector

    async def install(self, new: DraftWeights) -> None:
        """Swap ``new`` in between scheduler steps; on success the old version becomes ``previous``."""
        for key in MAP_KEYS:
            if key in self.current.tensors and not torch.equal(new.tensors[key], self.current.tensors[key]):
                raise VocabularyChanged(
                    f"{new.version} maps its vocabulary differently from {self.current.version}"
                )
        weights = [(name, tensor) for name, tensor in new.tensors.items() if name not in MAP_KEYS]
        await self.session.pause_generation(mode="in_place")
        try:
            ok, message = await self.session.begin_weight_update(selector=self.selector)
            if ok:
                try:
                    ok, message = await self.session.update_weights_from_tensor(
                        weights, selector=self.selector, flush_cache=False, weight_version=new.version
                    )
                finally:
                    await self.session.end_weight_update()
        finally:
            await self.session.continue_generation()
        if not ok:
            raise SwapFailed(f"SGLang refused {new.version}: {message}")
        self.previous, self.current = self.current, new

    async def rollback(self) -> None:
        """Serve the previous version again (itself an in-place swap)."""
        if self.previous is None:
            raise SwapFailed("no previous draft version to roll back to")
        await self.install(self.previous)
