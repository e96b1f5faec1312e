"""Stand-in for torchvision on SGLang's light CPU install (no CPU build of torchvision matches torch
2.13.0, and the CUDA one does not load on a CPU torch).

SGLang imports torchvision's image transforms at module level for multimodal processors only; a text
model never calls them. Every name resolves to a placeholder that fails loudly if it is ever used.
"""

from __future__ import annotations

from typing import Any, NoReturn

__version__ = "0.0"  # below any real release: transformers then keeps its own non-torchvision paths


class Unavailable:
    def __getattr__(self, name: str) -> Unavailable:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("torchvision is not installed (SGLang's light CPU install serves text only)")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


def __getattr__(name: str) -> Unavailable:
    if name.startswith("__"):
        raise AttributeError(name)
    return Unavailable()
