"""EAGLE-3-style draft: fuse three target layers, one decoder layer, pruned-vocabulary LM head.

The draft reads the target's hidden states (low, middle, high layers) through ``fc(3H -> H)``, and
at every position consumes [embedding of the next token; fused hidden]; while drafting several
tokens ahead it feeds its own output hidden state back in place of the target's. Token embeddings
are the target's (frozen, never saved with the draft).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel, LlamaSpec, apply_rotary

ARCHITECTURE = "eagle3-llama-1layer"


@dataclass(frozen=True)
class DraftConfig:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    draft_vocab_size: int
    target_vocab_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    architecture: str = ARCHITECTURE

    @classmethod
    def for_target(cls, spec: LlamaSpec, draft_vocab_size: int) -> DraftConfig:
        return cls(
            hidden_size=spec.hidden_size,
            num_heads=spec.num_heads,
            num_kv_heads=spec.num_kv_heads,
            head_dim=spec.head_dim,
            intermediate_size=spec.intermediate_size,
            draft_vocab_size=min(draft_vocab_size, spec.vocab_size),
            target_vocab_size=spec.vocab_size,
            rms_norm_eps=spec.rms_norm_eps,
            rope_theta=spec.rope_theta,
        )

    def attention_spec(self) -> LlamaSpec:
        """The draft layer's attention shape, in the form the lean attention kernel takes."""
        return LlamaSpec(
            vocab_size=self.target_vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=1,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=False,
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Eagle3Draft(nn.Module):
    """Parameters of the draft plus the pieces of its forward shared by training and serving."""

    def __init__(self, config: DraftConfig, vocab: DraftVocab):
        super().__init__()
        if vocab.size != config.draft_vocab_size or vocab.target_vocab_size != config.target_vocab_size:
            raise ValueError("vocabulary does not match the draft config")
        hidden, inter = config.hidden_size, config.intermediate_size
        qkv_rows = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
        self.config = config
        self.vocab = vocab
        self.fc = nn.Parameter(torch.empty(hidden, 3 * hidden))
        self.input_norm = nn.Parameter(torch.ones(hidden))
        self.hidden_norm = nn.Parameter(torch.ones(hidden))
        self.qkv = nn.Parameter(torch.empty(qkv_rows, 2 * hidden))
        self.out = nn.Parameter(torch.empty(hidden, config.num_heads * config.head_dim))
        self.post_norm = nn.Parameter(torch.ones(hidden))
        self.gate_up = nn.Parameter(torch.empty(2 * inter, hidden))
        self.down = nn.Parameter(torch.empty(hidden, inter))
        self.final_norm = nn.Parameter(torch.ones(hidden))
        self.lm_head = nn.Parameter(torch.empty(config.draft_vocab_size, hidden))
        self.reset_parameters()

    def reset_parameters(self, seed: int = 0) -> None:
        """Day-0 random weights (deterministic, so two fresh drafts are the same draft)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in (self.fc, self.qkv, self.out, self.gate_up, self.down, self.lm_head):
                weight.normal_(0.0, 1.0 / math.sqrt(weight.shape[1]), generator=generator)

    def copy(self) -> Eagle3Draft:
        """The same weights and vocabulary in a new draft on CPU (from a draft on any device)."""
        copy = Eagle3Draft(self.config, self.vocab)
        copy.load_state_dict(self.state_dict())
        return copy

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """Target features ``[..., 3H]`` to the draft's hidden width."""
        return F.linear(features, self.fc)

    def layer_input(self, token_embeds: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        eps = self.config.rms_norm_eps
        size = (self.config.hidden_size,)
        return torch.cat(
            [
                F.rms_norm(token_embeds.float(), size, self.input_norm, eps),  # norms in fp32 under autocast
                F.rms_norm(hidden.float(), size, self.hidden_norm, eps),
            ],
            dim=-1,
        )

    def project_qkv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries ``[B, T, heads, D]`` and keys, values ``[B, T, kv_heads, D]``."""
        c = self.config
        qkv = F.linear(x, self.qkv).view(*x.shape[:-1], c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        qk = apply_rotary(qkv[..., : c.num_heads + c.num_kv_heads, :], cos, sin)
        return (
            qk[..., : c.num_heads, :],
            qk[..., c.num_heads :, :],
            qkv[..., c.num_heads + c.num_kv_heads :, :],
        )

    def after_attention(self, hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Output projection, residual over the fused hidden, then the MLP: the draft's next hidden."""
        h = hidden + F.linear(attn, self.out)
        gate, up = F.linear(
            F.rms_norm(h.float(), (self.config.hidden_size,), self.post_norm, self.config.rms_norm_eps),
            self.gate_up,
        ).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, self.down)

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm of the draft's hidden states (fp32): what its head multiplies."""
        return F.rms_norm(
            hidden.float(), (self.config.hidden_size,), self.final_norm, self.config.rms_norm_eps
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the draft vocabulary ``[..., draft_vocab_size]``."""
        return F.linear(self.head_input(hidden), self.lm_head)


def new_draft(spec: LlamaSpec, vocab: DraftVocab, seed: int = 0) -> Eagle3Draft:
    """A random-weight (day-0) draft for a target."""
    draft = Eagle3Draft(DraftConfig.for_target(spec, vocab.size), vocab)
    draft.reset_parameters(seed)
    return draft


@torch.no_grad()
def initialise_from_target(draft: Eagle3Draft, target: LlamaModel) -> None:
    """Head rows from the target's output embedding of the draft vocabulary, final norm from the target's.

    The target's head is read back through its own matmul (``logits(I) = W^T``), whatever layout it
    is packed in.
    """
    eye = torch.eye(target.spec.hidden_size, dtype=target.dtype)
    head = target.logits(eye).T  # [V, H]
    draft.lm_head.copy_(head[draft.vocab.draft_to_target].float())
    draft.final_norm.copy_(target.norm.float())
