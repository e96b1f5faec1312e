"""Turn target logits into the distribution a request samples from (temperature, nucleus).

Degenerate values are normal input: a temperature below ``GREEDY_BELOW`` is greedy (dividing by
it would overflow float32 into NaN), any seed maps onto the generator's 64-bit range, and a
distribution that is not finite falls back to the argmax instead of failing the draw.
"""

from __future__ import annotations

import torch

from worker.engine.types import SamplingParams

GREEDY_BELOW = 1e-5  # the threshold vLLM uses; logits / 1e-5 stays far inside float32's range
SEED_MODULUS = 2**64  # torch.Generator.manual_seed takes [0, 2**64)


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities ``[..., V]`` after temperature and top-p; speculative sampling must match these."""
    probs = torch.softmax(logits.float() / max(params.temperature, GREEDY_BELOW), dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the token that crosses it stays)
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = kept / kept.sum(dim=-1, keepdim=True)
    if not bool(torch.isfinite(probs).all()):
        return _argmax_one_hot(logits)
    return probs


def _argmax_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """The limit of any temperature → 0: all mass on the most likely token (NaN logits count as -inf)."""
    clean = torch.nan_to_num(logits.float(), nan=float("-inf"))
    return torch.zeros_like(clean).scatter_(-1, clean.argmax(dim=-1, keepdim=True), 1.0)


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private RNG per request so a seeded request replays identically whatever else is batched."""
    if is_greedy(params):
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed % SEED_MODULUS)
    else:
        generator.seed()
    return generator


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator).item())
