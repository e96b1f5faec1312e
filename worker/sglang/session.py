"""``DraftWeightSession`` on a live ``sglang.Engine``: its TokenizerManager's weight-update requests.

The coroutines run on the engine's own event loop (``SGLangEngine.call``). Tensors are serialised
once per tensor-parallel rank, as ``sglang.Engine.update_weights_from_tensor`` does, but the request
carries the ``selector`` that convenience method does not pass on.
"""

from __future__ import annotations

from typing import Any

import torch


class TokenizerManagerSession:
    def __init__(self, tokenizer_manager: Any, tp_size: int = 1) -> None:
        self.manager = tokenizer_manager
        self.tp_size = tp_size

    async def pause_generation(self, mode: str) -> None:
        from sglang.srt.managers.io_struct import PauseGenerationReqInput

        await self.manager.pause_generation(PauseGenerationReqInput(mode=mode))

    async def begin_weight_update(self, selector: str) -> tuple[bool, str]:
        from sglang.srt.managers.io_struct import BeginWeightUpdateReqInput

        ok, message = await self.manager.begin_weight_update(BeginWeightUpdateReqInput(selector=selector))
        return bool(ok), str(message)

    async def update_weights_from_tensor(
        self,
        named_tensors: list[tuple[str, torch.Tensor]],
        selector: str,
        flush_cache: bool,
        weight_version: str,
    ) -> tuple[bool, str]:
        from sglang.srt.managers.io_struct import UpdateWeightsFromTensorReqInput
        from sglang.srt.utils.common import MultiprocessingSerializer

        payload = MultiprocessingSerializer.serialize(named_tensors)
        request = UpdateWeightsFromTensorReqInput(
            serialized_named_tensors=[payload] * self.tp_size,
            flush_cache=flush_cache,
            weight_version=weight_version,
            selector=selector,
        )
        ok, message = await self.manager.update_weights_from_tensor(request, None)
        return bool(ok), str(message)

    async def end_weight_update(self) -> tuple[bool, str]:
        from sglang.srt.managers.io_struct import EndWeightUpdateReqInput

        ok, message = await self.manager.end_weight_update(EndWeightUpdateReqInput())
        return bool(ok), str(message)

    async def continue_generation(self) -> None:
        from sglang.srt.managers.io_struct import ContinueGenerationReqInput

        await self.manager.continue_generation(ContinueGenerationReqInput())
