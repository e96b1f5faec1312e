"""A lean Llama-family forward pass for CPU decoding.

Hugging Face's implementation pays for generality on every step (dynamic caches, hooks, per-layer
Python bookkeeping). Speculative decoding needs something narrower and faster: a static KV cache
whose per-sequence length is a pointer (so rejected tokens are dropped by moving it back), several
new tokens per sequence with an arbitrary attention mask (tree verification), and the hidden
states of three layers that the EAGLE-3 draft consumes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from worker.engine import native
from worker.engine.linear import (
    Int4Weight,
    Weight,
    int4_supported,
    linear,
    native_operand,
    pack,
    quantize_int4,
)

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")  # qwen2: a Llama with biased q/k/v projections


class UnsupportedModelError(ValueError):
    """The checkpoint is not a plain Llama-family causal LM this lean path can run."""


@dataclass(frozen=True)
class Llama3Rope:
    """Llama-3.x RoPE scaling: long wavelengths slowed by ``factor``, short ones kept, a smooth
    blend between (the ``llama3`` rope type of Hugging Face configs)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_positions: int

    def scale(self, inv_freq: torch.Tensor) -> torch.Tensor:
        low_wavelen = self.original_max_positions / self.low_freq_factor
        high_wavelen = self.original_max_positions / self.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / self.factor, inv_freq)
        smooth = (self.original_max_positions / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, blended, scaled)


@dataclass(frozen=True)
class LlamaSpec:
    """Architecture hyperparameters read from a Hugging Face ``config.json``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    rope_llama3: Llama3Rope | None = None  # Llama-3.x frequency scaling; None: plain RoPE
    qkv_bias: bool = False  # Qwen2: the q/k/v projections carry biases

    @classmethod
    def from_config(cls, config: dict[str, object]) -> LlamaSpec:
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported (want one of {SUPPORTED_MODEL_TYPES})"
            )
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise UnsupportedModelError("biased projections are not supported (beyond Qwen2's q/k/v)")
        if config.get("use_sliding_window"):
            raise UnsupportedModelError("sliding-window attention is not supported")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if not isinstance(rope, dict):
            raise UnsupportedModelError(f"unreadable rope parameters: {rope!r}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise UnsupportedModelError(f"rope_type {rope_type!r} is not supported (default, llama3)")
        llama3 = None
        if rope_type == "llama3":
            llama3 = Llama3Rope(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_positions=int(rope["original_max_position_embeddings"]),
            )
        hidden = _int(config, "hidden_size")
        heads = _int(config, "num_attention_heads")
        head_dim = config.get("head_dim") or hidden // heads
        return cls(
            vocab_size=_int(config, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_int(config, "intermediate_size"),
            num_layers=_int(config, "num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),  # type: ignore[call-overload]
            head_dim=int(head_dim),  # type: ignore[call-overload]
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),  # type: ignore[arg-type]
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_llama3=llama3,
            qkv_bias=model_type == "qwen2",
        )

    def feature_layers(self) -> tuple[int, int, int]:
        """Layers (low, middle, high) whose outputs feed the draft, as in EAGLE-3."""
        last = self.num_layers - 1
        return (min(2, last), min(self.num_layers // 2, last), max(self.num_layers - 3, 0))


def _int(config: dict[str, object], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int):
        raise UnsupportedModelError(f"config.json lacks an integer {key!r}")
    return value


@dataclass
class LayerWeights:
    """One decoder layer, with q/k/v and gate/up fused so each is a single matmul (weights packed)."""

    input_norm: torch.Tensor
    qkv: Weight
    out: Weight
    post_norm: torch.Tensor
    gate_up: Weight
    down: Weight
    qkv_bias: torch.Tensor | None = None  # [(heads + 2 x kv_heads) x head_dim] where the model has one


@dataclass(frozen=True)
class NativeLayer:
    """A layer as :func:`worker.engine.native.decoder_layer` takes it."""

    weights: tuple[torch.Tensor, ...]  # qkv, out, gate_up, down (int4: codes and scales of each)
    outputs: tuple[int, ...]  # their output widths
    form: int  # how they are held (:data:`worker.engine.linear.VECTOR_FORM` ...)
    amx: bool  # attention's scores in AMX tiles
    norms: tuple[torch.Tensor, torch.Tensor]  # input, post-attention

    def __call__(
        self,
        x: torch.Tensor,
        eps: float,
        attention: tuple[torch.Tensor, ...],
        rows: torch.Tensor | None = None,
        normed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer in one kernel call (the arguments as :func:`worker.engine.native.decoder_layer`'s)."""
        return native.decoder_layer(
            x, self.norms, eps, self.weights, self.outputs, self.form, self.amx, attention, rows, normed
        )


@dataclass(frozen=True)
class NativeStack:
    """Every layer of a model as :func:`worker.engine.native.decoder_layers` takes them, in one call."""

    weights: tuple[torch.Tensor, ...]  # each layer's run, as :class:`NativeLayer` holds it
    norms: tuple[torch.Tensor, ...]  # each layer's input and post-attention norms
    outputs: tuple[int, ...]  # the output widths of a layer's projections (every layer alike)
    form: int
    amx: bool

    @classmethod
    def of(cls, layers: list[NativeLayer]) -> NativeStack | None:
        """The stack of ``layers`` where all hold their weights alike (one form, widths, tile use)."""
        if len({(layer.outputs, layer.form, layer.amx) for layer in layers}) != 1:
            return None
        first = layers[0]
        weights = tuple(t for layer in layers for t in layer.weights)
        norms = tuple(t for layer in layers for t in layer.norms)
        return cls(weights, norms, first.outputs, first.form, first.amx)

    def __call__(
        self,
        x: torch.Tensor,
        eps: float,
        attention: tuple[torch.Tensor, ...],
        rows: torch.Tensor | None,
        features: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All layers (``attention`` with every layer's cache): the last output and the features."""
        return native.decoder_layers(
            x, self.norms, eps, self.weights, self.outputs, self.form, self.amx, attention, rows, features
        )


def native_layer(layer: LayerWeights, amx: bool) -> NativeLayer | None:
    """The layer for the one-call native path, where the kernels take all four of its projections in the
    same form and it has no q/k/v bias; ``amx``: its attention's scores in AMX tiles."""
    operands = [native_operand(w) for w in (layer.qkv, layer.out, layer.gate_up, layer.down)]
    present = [op for op in operands if op is not None]
    if layer.qkv_bias is not None or len(present) < 4 or len({op[2] for op in present}) != 1:
        return None
    return NativeLayer(
        tuple(tensor for op in present for tensor in op[0]),
        tuple(op[1] for op in present),
        present[0][2],
        amx,
        (layer.input_norm, layer.post_norm),
    )


class KVCache:
    """Static keys/values for ``batch`` sequence slots; a slot's length lives with its owner.

    Layout ``[layer, slot, kv_head, position, head_dim]`` keeps one slot's history contiguous so
    the attention of the first ``n`` slots is a view, never a copy.
    """

    def __init__(self, spec: LlamaSpec, num_layers: int, batch: int, max_len: int, dtype: torch.dtype):
        if dtype == torch.bfloat16:
            max_len = bf16_span(max_len)  # room for the padded key span of the last positions
        shape = (num_layers, batch, spec.num_kv_heads, max_len, spec.head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.max_len = max_len

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of one slot into another (keeps active slots dense)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def gather_positions(self, slot: int, src: torch.Tensor, dst_start: int) -> None:
        """Move the kept tree positions ``src`` of a slot to ``dst_start...`` (after tree verification)."""
        dst = torch.arange(dst_start, dst_start + src.numel())
        self.k[:, slot, :, dst] = self.k[:, slot, :, src]
        self.v[:, slot, :, dst] = self.v[:, slot, :, src]


@dataclass(frozen=True)
class StepInput:
    """New tokens for the first ``B`` cache slots.

    ``positions`` are rotary positions, ``write_index`` the cache rows they are stored in (they differ
    inside a tree), and ``mask[b, t, s]`` says whether token ``t`` may attend cache row ``s``
    (rows ``< span`` only; the new tokens are already written when attention runs).
    """

    tokens: torch.Tensor  # [B, T] int64
    positions: torch.Tensor  # [B, T] int64
    write_index: torch.Tensor  # [B, T] int64
    mask: torch.Tensor  # [B, T, span] bool


def real_rows(sizes: list[int], width: int) -> torch.Tensor:
    """Flat indices into ``B x width`` of each sequence's first ``sizes[b]`` rows: the ``rows`` to give
    :meth:`LlamaModel.forward` for a step whose sequences are padded to ``width``."""
    return torch.cat([b * width + torch.arange(size) for b, size in enumerate(sizes)])


def causal_step_input(tokens: torch.Tensor, lengths: list[int]) -> StepInput:
    """Plain causal input: ``tokens[b]`` extend slot ``b`` contiguously from ``lengths[b]``."""
    count = tokens.shape[1]
    start = torch.tensor(lengths, dtype=torch.long).unsqueeze(1)
    positions = start + torch.arange(count)
    span = max(lengths) + count
    mask = torch.arange(span).view(1, 1, span) <= positions.unsqueeze(2)
    return StepInput(tokens=tokens, positions=positions, write_index=positions, mask=mask)


def rotary_tables(
    head_dim: int, theta: float, max_len: int, llama3: Llama3Rope | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if llama3 is not None:
        inv_freq = llama3.scale(inv_freq)
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's non-interleaved rotary embedding; ``cos``/``sin`` broadcast over heads."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attention_block(
    x: torch.Tensor,
    layer: LayerWeights,
    spec: LlamaSpec,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    flat_index: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor | None = None,
    native_kernels: bool = False,
    prefill: bool = False,
    native_amx: bool = False,
) -> torch.Tensor:
    """Self-attention over cached history plus the new tokens (GQA by folding query groups).

    ``cache_k``/``cache_v`` are ``[B, kv_heads, max_len, head_dim]`` for one layer; queries of
    one KV group are stacked along the sequence axis so keys and values are never repeated.
    With ``rows`` (see :meth:`LlamaModel.forward`) ``x`` holds only those rows of the ``[B, T]``
    step, and so does the result: the projections skip the padding, attention runs padded. With
    ``native_kernels`` rotary, the cache writes and attention are one call of the engine's kernel
    (its scores in AMX tiles with ``native_amx``).
    """
    batch, count = cos.shape[:2]
    heads, kv_heads, dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
    groups = heads // kv_heads
    qkv = linear(x, layer.qkv, prefill)
    if layer.qkv_bias is not None:
        qkv = qkv + layer.qkv_bias
    if rows is not None:  # padding rows get zeros: only their own row attends to them
        packed = qkv.view(-1, qkv.shape[-1])
        qkv = packed.new_zeros(batch * count, packed.shape[-1]).index_copy_(0, rows, packed)
    qkv = qkv.view(batch, count, heads + 2 * kv_heads, dim)
    if native_kernels:  # rotary, cache writes and attention in one call
        attn = native.attend(qkv, cos, sin, cache_k, cache_v, flat_index, mask, native_amx)
    else:
        qk = apply_rotary(qkv[:, :, : heads + kv_heads], cos, sin)
        q, k = qk[:, :, :heads], qk[:, :, heads:]
        v = qkv[:, :, heads + kv_heads :]
        cache_rows = batch * kv_heads * cache_k.shape[2]
        cache_k.view(cache_rows, dim).index_copy_(0, flat_index, k.transpose(1, 2).reshape(-1, dim))
        cache_v.view(cache_rows, dim).index_copy_(0, flat_index, v.transpose(1, 2).reshape(-1, dim))
        span = mask.shape[-1]
        keys, values = cache_k[:, :, :span], cache_v[:, :, :span]
        q = q.view(batch, count, kv_heads, groups, dim).permute(0, 2, 3, 1, 4)
        attn = attention(q.reshape(batch, kv_heads, -1, dim), keys, values, mask)
        attn = attn.view(batch, kv_heads, groups, count, dim).permute(0, 3, 1, 2, 4).reshape(batch, count, -1)
    if rows is not None:
        attn = attn.view(batch * count, -1).index_select(0, rows).view(x.shape)
    return linear(attn, layer.out, prefill)


BF16_MIN_QUERY_ROWS = 4  # torch's CPU attention rounds bf16 differently below this many query rows
BF16_SPAN_MULTIPLE = 16  # ... and when the key span is not a multiple of this


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA padded so a bf16 query row rounds alike alone and among a short step's rows.

    A token decoded alone (3 query rows: its head groups) and the same token verified inside a tree
    (many rows) must round alike, or bf16 speculation drifts from bf16 target-only decoding; so
    bf16 calls get at least ``BF16_MIN_QUERY_ROWS`` rows (the key span is padded in
    :meth:`LlamaModel.forward`). Measured bitwise on torch 2.13 CPU for steps of up to 16 tokens
    per sequence at contexts under about 200; a 64-token step, multi-token steps past that context
    and a batch neighbour with a far longer span still round apart, so bf16 greedy output can still
    drift there. fp32 is left as it was and stays the lossless default. Where the engine's own
    kernels serve the model (:mod:`worker.engine.native`: bf16 and fp32), attention runs there instead
    and none of this applies: every row rounds alike.
    """
    rows = q.shape[2]
    if q.dtype != torch.bfloat16 or rows >= BF16_MIN_QUERY_ROWS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    extra = BF16_MIN_QUERY_ROWS - rows
    padded_q = F.pad(q, (0, 0, 0, extra))
    padded_mask = F.pad(mask, (0, 0, 0, extra))
    return F.scaled_dot_product_attention(padded_q, k, v, attn_mask=padded_mask)[:, :, :rows]


def bf16_span(span: int) -> int:
    return -(-span // BF16_SPAN_MULTIPLE) * BF16_SPAN_MULTIPLE


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, native_kernels: bool) -> torch.Tensor:
    """``F.rms_norm`` over the last axis, or the engine's kernel where it serves the model: one call
    instead of torch's half dozen ops (about 20 us each norm, 61 norms per SmolLM2 step)."""
    if native_kernels:
        return native.rms_norm(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def mlp_block(
    x: torch.Tensor, layer: LayerWeights, prefill: bool = False, native_kernels: bool = False
) -> torch.Tensor:
    """``down(silu(gate) * up)``; with ``native_kernels`` the middle in one call of the engine's kernel."""
    gate_up = linear(x, layer.gate_up, prefill)
    if native_kernels and gate_up.shape[-1] % 32 == 0:
        return linear(native.silu_mul(gate_up), layer.down, prefill)
    gate, up = gate_up.chunk(2, dim=-1)
    return linear(F.silu(gate) * up, layer.down, prefill)


def flat_cache_index(write_index: torch.Tensor, kv_heads: int, max_len: int) -> torch.Tensor:
    """Row of each new (slot, kv_head, token) in a layer cache viewed as ``[slots*kv_heads*max_len, dim]``."""
    batch = write_index.shape[0]
    base = torch.arange(batch).view(batch, 1, 1) * kv_heads + torch.arange(kv_heads).view(1, kv_heads, 1)
    return (base * max_len + write_index.unsqueeze(1)).reshape(-1)


def group_mask(mask: torch.Tensor, groups: int, dtype: torch.dtype, native_kernels: bool) -> torch.Tensor:
    """Additive ``[B, 1, groups*T, S]`` mask for the folded query groups, built once per forward.

    Passing SDPA (or the native kernel, in :data:`native.MASK_DTYPE`) a float mask of the dtype it
    reads spares it converting one in every layer.
    """
    batch, count, span = mask.shape
    allowed = mask.unsqueeze(1).expand(batch, groups, count, span).reshape(batch, 1, groups * count, span)
    dtype = native.MASK_DTYPE if native_kernels else dtype
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))


# ``BOREALIS_DTYPE`` -> (dtype of activations and unquantized weights, int4 layer projections)
SERVING_DTYPES: dict[str, tuple[torch.dtype, bool]] = {
    "float32": (torch.float32, False),
    "bfloat16": (torch.bfloat16, False),
    "int4": (torch.bfloat16, True),
}


class LlamaModel:
    """Inference-only Llama forward with a caller-managed static KV cache."""

    def __init__(
        self,
        spec: LlamaSpec,
        embed: torch.Tensor,
        layers: list[LayerWeights],
        norm: torch.Tensor,
        lm_head: Weight,
        max_positions: int = 8192,
    ):
        self.spec = spec
        self.embed = embed
        self.layers = layers
        self.norm = norm
        self.lm_head = lm_head
        self.feature_layers = spec.feature_layers()
        self.cos, self.sin = rotary_tables(spec.head_dim, spec.rope_theta, max_positions, spec.rope_llama3)
        self.cos, self.sin = self.cos.to(embed.dtype), self.sin.to(embed.dtype)
        # decided once, with the weights' packing: a model keeps the kernels it was loaded with
        self.native_kernels = native.serves_model(embed.dtype, spec.head_dim, spec.hidden_size)
        self.native_amx = self.native_kernels and native.tiles(embed.dtype)
        natives = [native_layer(layer, self.native_amx) for layer in layers] if self.native_kernels else []
        # every layer in one call of the kernels, where they take every layer's projections alike
        self.native_layers = (
            NativeStack.of([n for n in natives if n is not None]) if natives and all(natives) else None
        )
        # int4 prompts: torch's int4 kernel adds about a one-row product per row, the Q4_1 one does not
        self.prefill_composed = any(isinstance(layer.qkv, Int4Weight) for layer in layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @classmethod
    def load(
        cls, model_dir: Path | str, dtype: torch.dtype = torch.float32, int4: bool = False
    ) -> LlamaModel:
        """Load ``config.json`` + ``model.safetensors`` from a local Hugging Face directory."""
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        spec = LlamaSpec.from_config(config)
        state = load_file(str(model_dir / "model.safetensors"))
        return cls.from_state_dict(spec, state, dtype, int4)

    @classmethod
    def load_named(cls, model_dir: Path | str, name: str) -> LlamaModel:
        """Load in one of :data:`SERVING_DTYPES` (the ``BOREALIS_DTYPE`` values)."""
        dtype, int4 = SERVING_DTYPES[name]
        return cls.load(model_dir, dtype, int4)

    @classmethod
    def from_state_dict(
        cls,
        spec: LlamaSpec,
        state: dict[str, torch.Tensor],
        dtype: torch.dtype = torch.float32,
        int4: bool = False,
    ) -> LlamaModel:
        """Build from HF ``LlamaForCausalLM`` parameter names (fusing projections once, here).

        ``int4``: the decoder layers' projections become 4-bit group-wise weights (quantized from the
        checkpoint's own values, so the shipped Q4_1 codes come back exactly); embedding, norms and
        the head stay in ``dtype``, which must then be bfloat16, the activations the int4 kernel takes.
        """
        if int4 and dtype != torch.bfloat16:
            raise ValueError("int4 weights compute with bfloat16 activations")

        def get(name: str) -> torch.Tensor:
            # A copy: ``load_file`` tensors are views of the whole mapped file, so keeping any of
            # them (embedding, norms) would keep every weight's pages resident a second time.
            return state[name].to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)

        def projection(*names: str) -> Weight:
            weight = torch.cat([state[name] for name in names])
            if int4 and int4_supported(weight):
                return quantize_int4(weight)
            return pack(weight.to(dtype=dtype, memory_format=torch.contiguous_format))

        layers = []
        for i in range(spec.num_layers):
            p = f"model.layers.{i}."
            layers.append(
                LayerWeights(
                    input_norm=get(p + "input_layernorm.weight"),
                    qkv=projection(*(p + f"self_attn.{n}_proj.weight" for n in ("q", "k", "v"))),
                    out=projection(p + "self_attn.o_proj.weight"),
                    post_norm=get(p + "post_attention_layernorm.weight"),
                    gate_up=projection(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
                    down=projection(p + "mlp.down_proj.weight"),
                    qkv_bias=torch.cat([get(p + f"self_attn.{n}_proj.bias") for n in ("q", "k", "v")])
                    if spec.qkv_bias
                    else None,
                )
            )
        embed = get("model.embed_tokens.weight")
        tied = spec.tie_word_embeddings or "lm_head.weight" not in state
        lm_head = pack(embed if tied else get("lm_head.weight"))
        return cls(spec, embed, layers, get("model.norm.weight"), lm_head)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(self.spec, self.spec.num_layers, batch, max_len, self.dtype)

    @torch.inference_mode()
    def forward(
        self,
        step: StepInput,
        cache: KVCache,
        first_slot: int = 0,
        rows: torch.Tensor | None = None,
        prefill: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run new tokens for cache slots ``first_slot...`` through the model, caching their keys/values.

        Returns the final normed hidden states ``[B, T, H]`` (feed to :meth:`logits`) and the
        draft features ``[B, T, 3H]`` (outputs of the low, middle and high feature layers).

        ``rows``: ascending flat indices into ``B x T`` of the rows worth computing; the outputs are
        then ``[1, len(rows), ...]``, those rows in that order. Trees of one batch differ in size and
        are padded to the widest; every projection (and the head after) costs per row, so padding
        rows skip all but attention, where they attend only to themselves.

        ``prefill``: the rows are a prompt's (see :func:`worker.engine.linear.linear`); a position
        must be computed the same way in every decoding of it, so only prompts may say so.
        """
        spec = self.spec
        x = F.embedding(step.tokens if rows is None else step.tokens.view(1, -1)[:, rows], self.embed)
        cos = self.cos[step.positions].unsqueeze(2)
        sin = self.sin[step.positions].unsqueeze(2)
        flat_index = flat_cache_index(step.write_index, spec.num_kv_heads, cache.max_len)
        mask = group_mask(step.mask, spec.num_heads // spec.num_kv_heads, self.dtype, self.native_kernels)
        if self.dtype == torch.bfloat16 and not self.native_kernels:
            span = mask.shape[-1]
            mask = F.pad(mask, (0, bf16_span(span) - span), value=float("-inf"))
        slots = slice(first_slot, first_slot + step.tokens.shape[0])
        if self.native_layers is not None and not (prefill and self.prefill_composed):
            # the composition below, the same bits, in one call
            attention = (cos, sin, cache.k[:, slots], cache.v[:, slots], flat_index, mask)
            x, features = self.native_layers(x, spec.rms_norm_eps, attention, rows, self.feature_layers)
            return rms_norm(x, self.norm, spec.rms_norm_eps, self.native_kernels), features
        outputs: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            h = rms_norm(x, layer.input_norm, spec.rms_norm_eps, self.native_kernels)
            x = x + attention_block(
                h,
                layer,
                spec,
                cache.k[i, slots],
                cache.v[i, slots],
                cos,
                sin,
                flat_index,
                mask,
                rows,
                self.native_kernels,
                prefill,
                self.native_amx,
            )
            h = rms_norm(x, layer.post_norm, spec.rms_norm_eps, self.native_kernels)
            x = x + mlp_block(h, layer, prefill, self.native_kernels)
            if i in self.feature_layers:
                outputs[i] = x
        hidden = rms_norm(x, self.norm, spec.rms_norm_eps, self.native_kernels)
        return hidden, torch.cat([outputs[i] for i in self.feature_layers], dim=-1)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(hidden, self.lm_head)
