"""Turn target logits into the distribution a request samples from (temperature, nucleus)."""

from __future__ import annotations

import torch

from worker.engine.types import SamplingParams


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature <= 0.0


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities ``[..., V]`` after temperature and top-p; speculative sampling must match these."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # keep the smallest prefix whose mass reaches top_p (the token that crosses it stays)
    drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private RNG per request so a seeded request replays identically whatever else is batched."""
    if is_greedy(params):
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator).item())
