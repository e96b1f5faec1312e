"""The engine's compiled kernels: right products, each output row from its own input row alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.engine.test_int4 import q4_1_dequantized
from worker.engine import native
from worker.engine.linear import (
    INT4_FORM,
    TILES_FORM,
    VECTOR_FORM,
    AmxWeight,
    NativeWeight,
    amx_tiles,
    linear,
    pack,
    quantize_int4,
)
from worker.engine.llama import (
    LlamaModel,
    StepInput,
    apply_rotary,
    causal_step_input,
    flat_cache_index,
    group_mask,
    rotary_tables,
)

pytestmark = pytest.mark.skipif(
    not native.supports(torch.bfloat16, 64), reason="no AVX-512 BF16 CPU or no C++ compiler here"
)


def bf16(*shape: int, seed: int) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05).to(torch.bfloat16)


amx = pytest.mark.skipif(not native.amx(), reason="no AMX tiles on this CPU (or not allowed here)")
KERNELS = ["vector", pytest.param("amx", marks=amx)]
# what serves a model: bf16 in vectors or AMX tiles, fp32 (a float32 model's) in vectors
MODEL_KERNELS = [
    ("vector", torch.bfloat16),
    pytest.param("amx", torch.bfloat16, marks=amx),
    ("vector", torch.float32),
]


def product(kernel: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` through the vector kernel or AMX tiles."""
    if kernel == "amx":
        return native.product_amx(x, amx_tiles(weight), weight.shape[0])
    return native.product(x, weight)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("out_features", "in_features"), [(576, 1536), (960, 576), (37, 64), (16, 32)])
@pytest.mark.parametrize("rows", [1, 3, 4, 16, 17, 150])
def test_the_product_is_a_float64_product_rounded_to_bf16(
    kernel: str, out_features: int, in_features: int, rows: int
) -> None:
    weight, x = bf16(out_features, in_features, seed=1), bf16(rows, in_features, seed=2)
    exact = x.double() @ weight.double().T
    got = product(kernel, x, weight)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    # fp32 accumulation, then one bf16 rounding: within a bf16 ulp of the exact value
    assert torch.allclose(got.double(), exact, rtol=2**-7, atol=1e-6)
    assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("out_features", [576, 37])
def test_an_output_row_is_the_same_alone_and_among_any_number_of_rows(kernel: str, out_features: int) -> None:
    # SmolLM2's down projection: oneDNN rounded a lone row apart from the same row among others
    weight, x = bf16(out_features, 1536, seed=3), bf16(40, 1536, seed=4)
    alone = torch.cat([product(kernel, x[i : i + 1], weight) for i in range(40)])
    for start, stop in ((0, 2), (0, 4), (1, 8), (0, 16), (1, 17), (3, 20), (0, 33), (5, 40)):
        assert torch.equal(product(kernel, x[start:stop], weight), alone[start:stop]), (start, stop)
    batched = product(kernel, x[:30].view(3, 10, 1536), weight)
    assert torch.equal(batched.view(30, -1), alone[:30])


def test_bf16_weights_pack_for_the_kernel_unless_switched_off() -> None:
    weight = bf16(64, 96, seed=5)
    x = bf16(5, 96, seed=6)
    with native.switched(True, amx=False):
        packed = pack(weight)
    assert isinstance(packed, NativeWeight)
    assert torch.equal(linear(x, packed), native.product(x, weight))
    if native.amx():  # AMX tiles where the CPU has them, unless switched off
        tiled = pack(weight)
        assert isinstance(tiled, AmxWeight)
        assert torch.equal(linear(x, tiled), native.product_amx(x, amx_tiles(weight), 64))
    fp32 = pack(weight.float())  # the vector kernel, never AMX tiles (bf16 only)
    assert isinstance(fp32, NativeWeight) and fp32.weight.dtype == torch.float32
    assert torch.equal(linear(x.float(), fp32), native.product(x.float(), weight.float()))
    assert not isinstance(pack(bf16(64, 80, seed=7)), NativeWeight | AmxWeight)  # 80: not a multiple of 32
    with native.switched(False):
        assert not isinstance(pack(weight), NativeWeight | AmxWeight)
        assert not isinstance(pack(weight.float()), NativeWeight | AmxWeight)
        assert native.kernels_name(torch.bfloat16) == native.kernels_name(torch.float32) == "onednn"
    assert native.kernels_name(torch.bfloat16) == ("amx" if native.amx() else "native")
    assert native.kernels_name(torch.float32) == "native"


@pytest.mark.parametrize(("out_features", "in_features"), [(576, 1536), (960, 576), (37, 64), (16, 32)])
@pytest.mark.parametrize("rows", [1, 3, 4, 16, 17, 150])
def test_the_fp32_product_is_a_float64_product_to_fp32_accuracy(
    out_features: int, in_features: int, rows: int
) -> None:
    weight, x = bf16(out_features, in_features, seed=8).float(), bf16(rows, in_features, seed=9).float()
    exact = x.double() @ weight.double().T
    got = native.product(x, weight)
    assert got.dtype == torch.float32 and got.shape == (rows, out_features)
    # an fp32 sum of in_features products (each exact in fp32: bf16 values), rounding at each add
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-7)
    assert not torch.equal(got, torch.zeros_like(got))


def test_an_fp32_output_row_is_the_same_alone_and_among_any_number_of_rows() -> None:
    weight = torch.randn(37, 1536, generator=torch.Generator().manual_seed(10))
    x = torch.randn(40, 1536, generator=torch.Generator().manual_seed(11))
    alone = torch.cat([native.product(x[i : i + 1], weight) for i in range(40)])
    for start, stop in ((0, 2), (0, 4), (1, 8), (0, 16), (1, 17), (3, 20), (0, 33), (5, 40)):
        assert torch.equal(native.product(x[start:stop], weight), alone[start:stop]), (start, stop)


def test_the_build_is_cached_and_a_failing_compiler_leaves_onednn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert list(native.cache_dir().glob("skinny-*.so"))
    code = native.source()
    assert code is not None
    monkeypatch.setenv("CXX", "false")  # a "compiler" that exits 1: a different cache key, a failed build
    with caplog.at_level(logging.WARNING, logger="worker.engine.native"):
        assert native._library(code) is None
    assert "build failed" in caplog.text
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert native._library(code) is None


KV, GROUPS, DIM, LENGTH, PAST = 2, 3, 64, 96, 40  # a layer's attention: 6 query heads over 2 KV heads


def attend_inputs(
    count: int, seed: int, dim: int = DIM, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, ...]:
    """qkv of ``count`` new tokens per sequence (2 sequences), their rotary tables, a cache holding
    ``PAST`` positions, and a mask letting token t see a random part of the history and itself."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(2, count, KV * GROUPS + 2 * KV, dim, generator=generator).to(dtype)
    cos, sin = rotary_tables(dim, 10000.0, LENGTH)
    positions = PAST + torch.arange(count).expand(2, count)
    cache_k, cache_v = (torch.randn(2, KV, LENGTH, dim, generator=generator).to(dtype) for _ in range(2))
    span = PAST + count
    allowed = torch.rand(2, count, span, generator=generator) > 0.3
    allowed[..., 0] = True
    allowed[..., PAST:] = torch.eye(count, dtype=torch.bool)  # itself among the new tokens
    return (
        qkv,
        cos[positions].unsqueeze(2).to(dtype),
        sin[positions].unsqueeze(2).to(dtype),
        cache_k,
        cache_v,
        allowed,
    )


def run_attend(kernel: str, qkv, cos, sin, cache_k, cache_v, allowed, rows: slice, span_pad: int = 0):  # type: ignore[no-untyped-def]
    """``attend`` (scores in vectors or AMX tiles) for the new tokens ``rows`` alone, writing at their
    own positions."""
    count = qkv[:, rows].shape[1]
    write = PAST + torch.arange(rows.start, rows.start + count).expand(2, count)
    mask = torch.nn.functional.pad(allowed[:, rows], (0, span_pad), value=False)
    return native.attend(
        qkv[:, rows].contiguous(),
        cos[:, rows].contiguous(),
        sin[:, rows].contiguous(),
        cache_k,
        cache_v,
        flat_cache_index(write, KV, cache_k.shape[2]),
        group_mask(mask, GROUPS, qkv.dtype, native_kernels=True),
        tiles=kernel == "amx",
    )


@pytest.mark.parametrize(("kernel", "dtype"), MODEL_KERNELS)
@pytest.mark.parametrize("dim", [64, 96])  # heads of 96: a last value chunk of 32 dims
def test_attend_is_rotary_cache_writes_and_softmax_attention_within_its_rounding(
    kernel: str, dtype: torch.dtype, dim: int
) -> None:
    qkv, cos, sin, cache_k, cache_v, allowed = attend_inputs(5, seed=8, dim=dim, dtype=dtype)
    rtol, atol = (2**-7, 2e-2) if dtype == torch.bfloat16 else (1e-5, 1e-5)
    old_k, old_v = cache_k.double(), cache_v.double()
    got = run_attend(kernel, qkv, cos, sin, cache_k, cache_v, allowed, slice(0, 5))
    x = qkv.double()
    heads = KV * GROUPS
    q = apply_rotary(x[:, :, :heads], cos.double(), sin.double())
    k = apply_rotary(x[:, :, heads : heads + KV], cos.double(), sin.double())
    keys, values = old_k.clone(), old_v.clone()
    keys[:, :, PAST : PAST + 5], values[:, :, PAST : PAST + 5] = (
        k.transpose(1, 2),
        x[:, :, heads + KV :].transpose(1, 2),
    )
    assert torch.allclose(
        cache_k[:, :, PAST : PAST + 5].double(), keys[:, :, PAST : PAST + 5], rtol=rtol, atol=1e-6
    )
    assert torch.equal(cache_v[:, :, PAST : PAST + 5].double(), values[:, :, PAST : PAST + 5])
    assert torch.equal(cache_k[:, :, :PAST].double(), old_k[:, :, :PAST])  # history untouched
    span = PAST + 5
    expanded = [t.repeat_interleave(GROUPS, dim=1)[:, :, :span] for t in (keys, values)]
    bias = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, float("-inf")).unsqueeze(1)
    exact = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), *expanded, attn_mask=bias)
    exact = exact.transpose(1, 2).reshape(2, 5, heads * dim)
    assert got.dtype == dtype and got.shape == exact.shape
    assert torch.allclose(got.double(), exact, rtol=rtol, atol=atol)


@pytest.mark.parametrize(("kernel", "dtype"), MODEL_KERNELS)
def test_a_token_attends_alike_alone_among_tokens_and_over_a_padded_span(
    kernel: str, dtype: torch.dtype
) -> None:
    inputs = attend_inputs(12, seed=9, dtype=dtype)
    qkv, cos, sin, cache_k, cache_v, allowed = inputs
    together = run_attend(kernel, qkv, cos, sin, cache_k.clone(), cache_v.clone(), allowed, slice(0, 12))
    k_alone, v_alone = cache_k.clone(), cache_v.clone()
    alone = torch.cat(
        [run_attend(kernel, qkv, cos, sin, k_alone, v_alone, allowed, slice(i, i + 1)) for i in range(12)], 1
    )
    assert torch.equal(alone, together)
    padded = run_attend(
        kernel, qkv, cos, sin, cache_k.clone(), cache_v.clone(), allowed, slice(0, 12), span_pad=10
    )
    assert torch.equal(padded, together)
    # a span that ends the cache, 4 positions past its last whole 16-row tile of keys
    short_k, short_v = (t[:, :, : PAST + 12].contiguous() for t in (cache_k, cache_v))
    assert torch.equal(run_attend(kernel, qkv, cos, sin, short_k, short_v, allowed, slice(0, 12)), together)


@pytest.mark.parametrize(("kernel", "dtype"), MODEL_KERNELS)
def test_a_row_attends_alike_wherever_its_keys_sit_among_masked_ones(kernel: str, dtype: torch.dtype) -> None:
    """The same keys in the same order, packed at the start of the cache or scattered among masked rows
    of junk (each gap a different length, so keys change place within every 16- and 32-key chunk): a
    masked key must add exactly 0 to every sum, as a tree's nodes sit apart from their ancestors."""
    generator = torch.Generator().manual_seed(21)
    qkv, cos, sin, _, _, _ = attend_inputs(1, seed=22, dtype=dtype)
    keys, values = (torch.randn(2, KV, 30, DIM, generator=generator).to(dtype) for _ in range(2))
    outputs = []
    for where in (torch.arange(30), torch.randperm(PAST, generator=generator)[:30].sort().values):
        cache_k, cache_v = (
            torch.randn(2, KV, LENGTH, DIM, generator=generator).mul(50).to(dtype) for _ in range(2)
        )
        cache_k[:, :, where], cache_v[:, :, where] = keys, values
        allowed = torch.zeros(2, 1, PAST + 1, dtype=torch.bool)
        allowed[..., where] = True
        allowed[..., PAST] = True
        outputs.append(run_attend(kernel, qkv, cos, sin, cache_k, cache_v, allowed, slice(0, 1)))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_argmax_is_torchs_first_maximum_or_first_nan_for_every_row(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(14)
    logits = torch.randn(9, 49152, generator=generator).to(dtype)
    ties = torch.randint(-3, 3, (40, 37), generator=generator).to(dtype)  # many equal maxima
    odd = torch.full((4, 40), float("-inf"), dtype=dtype)  # all -inf; NaNs; a tail maximum
    odd[1, 7] = odd[1, 9] = odd[2, 3] = float("nan")
    odd[2, 1] = odd[3, 39] = 5.0
    for rows in (logits, ties, odd, logits[0], logits[:0]):
        assert torch.equal(native.argmax(rows), rows.argmax(dim=-1))
    assert native.argmax(odd).tolist() == [0, 7, 3, 39]


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.bfloat16, 2**-7), (torch.float32, 1e-6)])
def test_the_norm_is_a_float64_rms_norm_rounded_to_its_dtype_and_each_row_its_own(
    dtype: torch.dtype, rtol: float
) -> None:
    x, weight = (bf16(70, 576, seed=12) * 40).to(dtype), (bf16(576, seed=13) * 20).to(dtype)
    exact = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5) * weight.double()
    got = native.rms_norm(x, weight, 1e-5)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.allclose(got.double(), exact, rtol=rtol, atol=1e-6)
    alone = torch.cat([native.rms_norm(x[i : i + 1], weight, 1e-5) for i in range(70)])
    assert torch.equal(alone, got)
    assert torch.equal(native.rms_norm(x.view(7, 10, 576), weight, 1e-5).view(70, 576), got)
    zeros = native.rms_norm(torch.zeros(2, 576, dtype=dtype), weight, 1e-5)
    assert torch.equal(zeros, torch.zeros_like(zeros))  # eps keeps an all-zero row finite


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_model_rounds_a_token_alike_in_any_step_at_any_context(
    smollm2_dir: Path, dtype: torch.dtype
) -> None:
    # torch's attention and oneDNN rounded 64-token steps and steps past a context of ~200 apart
    model = LlamaModel.load(smollm2_dir, dtype=dtype)
    assert model.native_kernels and isinstance(model.layers[0].down, NativeWeight | AmxWeight)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 20000, (1, 260), generator=generator)
    new = torch.randint(100, 20000, (1, 70), generator=generator)

    def hidden(chunks: list[int], neighbour: int = 0) -> torch.Tensor:
        """Hidden states of ``new`` fed in ``chunks``; with ``neighbour``, each step shares its forward
        with a second sequence whose span is that many tokens longer."""
        slots = 2 if neighbour else 1
        cache = model.new_cache(slots, 512)
        model.forward(causal_step_input(prompt.expand(slots, -1), [0] * slots), cache)
        if neighbour:
            model.forward(causal_step_input(new[:, :neighbour], [260]), cache, first_slot=1)
        out, done = [], 0
        for size in chunks:
            tokens = new[:, done : done + size].expand(slots, -1)
            lengths = [260 + done, 260 + neighbour + done][:slots]
            h, _ = model.forward(causal_step_input(tokens, lengths), cache)
            out.append(h[:1])
            done += size
        return torch.cat(out, dim=1)

    one_by_one = hidden([1] * 70)
    for chunks in ([64, 6], [16] * 4 + [6], [3, 67]):
        assert torch.equal(hidden(chunks), one_by_one), chunks
    assert torch.equal(hidden([1] * 10 + [4] * 15, neighbour=60)[:, :70], one_by_one)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.bfloat16, 2**-7), (torch.float32, 1e-6)])
def test_silu_mul_is_a_float64_silu_times_up_rounded_to_its_dtype_and_each_row_its_own(
    dtype: torch.dtype, rtol: float
) -> None:
    gate_up = (bf16(9, 2 * 1536, seed=15) * 80).to(dtype)  # gates far into both tails of silu
    gate, up = gate_up.double().chunk(2, dim=-1)
    exact = torch.nn.functional.silu(gate) * up
    got = native.silu_mul(gate_up)
    assert got.dtype == dtype and got.shape == (9, 1536)
    assert torch.allclose(got.double(), exact, rtol=rtol, atol=1e-6)
    alone = torch.cat([native.silu_mul(gate_up[i : i + 1]) for i in range(9)])
    assert torch.equal(alone, got)
    assert torch.equal(native.silu_mul(gate_up.view(3, 3, -1)).view(9, -1), got)


@pytest.mark.parametrize(("kernel", "dtype"), [*MODEL_KERNELS, ("int4", torch.bfloat16)])
def test_the_layers_in_one_call_are_the_same_bits_as_their_composition(
    smollm2_dir: Path, kernel: str, dtype: torch.dtype
) -> None:
    with native.switched(True, amx=kernel != "vector"):
        model = LlamaModel.load(smollm2_dir, dtype=dtype, int4=kernel == "int4")
    layers = model.native_layers
    form = {"vector": VECTOR_FORM, "amx": TILES_FORM, "int4": INT4_FORM}[kernel]
    assert layers is not None and layers.form == form and layers.amx == model.native_amx
    generator = torch.Generator().manual_seed(16)

    def run(
        tokens: torch.Tensor, lengths: list[int], rows: torch.Tensor | None, fused: bool
    ) -> list[torch.Tensor]:
        model.native_layers = layers if fused else None
        cache = model.new_cache(tokens.shape[0], 256)
        for t in (cache.k, cache.v):  # a history to attend to
            t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(17)).to(dtype))
        hidden, features = model.forward(causal_step_input(tokens, lengths), cache, rows=rows)
        return [hidden, features, cache.k, cache.v]

    decode, verify, prompt = (
        torch.randint(100, 20000, shape, generator=generator) for shape in ((1, 1), (2, 5), (1, 37))
    )
    cases = [
        (decode, [128], None),
        (verify, [40, 90], None),
        (verify, [40, 90], torch.tensor([0, 1, 2, 5, 6])),
        (prompt, [0], None),
    ]
    for tokens, lengths, rows in cases:
        fused, composed = run(tokens, lengths, rows, True), run(tokens, lengths, rows, False)
        assert all(torch.equal(a, b) for a, b in zip(fused, composed, strict=True)), (tokens.shape, rows)


@pytest.mark.parametrize(("kernel", "dtype"), MODEL_KERNELS)
def test_a_token_verified_behind_other_tree_nodes_rounds_as_decoded_alone(
    smollm2_dir: Path, kernel: str, dtype: torch.dtype
) -> None:
    # a tree's nodes sit at other cache positions than the same tokens decoded one at a time (here the
    # chain comes after other children of the root, then moves to its own positions, as a commit does);
    # attention that summed its weights in lanes of the key position rounded them apart (12 of 15 steps)
    with native.switched(True, amx=kernel == "amx"):
        model = LlamaModel.load(smollm2_dir, dtype=dtype)
    generator = torch.Generator().manual_seed(19)
    prompt, chain = (
        torch.randint(100, 20000, (1, 90), generator=generator),
        torch.randint(100, 20000, (40,), generator=generator),
    )
    cache = model.new_cache(1, 512)
    model.forward(causal_step_input(prompt, [0]), cache)
    alone = torch.cat(
        [
            model.forward(causal_step_input(chain[t : t + 1].view(1, 1), [90 + t]), cache)[0][0]
            for t in range(40)
        ]
    )
    cache = model.new_cache(1, 512)
    model.forward(causal_step_input(prompt, [0]), cache)
    done, others = 0, torch.randint(100, 20000, (40,), generator=generator)
    while done < 40:
        extra, k, kv = 3 + done % 10, min(1 + done % 4, 40 - done), 90 + done
        size = extra + k
        mask = torch.zeros(1, size, kv + size, dtype=torch.bool)
        mask[..., :kv] = True
        mask[0, :, kv:] = torch.eye(size, dtype=torch.bool)
        mask[0, extra:, kv + extra :] = torch.ones(k, k, dtype=torch.bool).tril()  # the chain's own prefix
        step = StepInput(
            tokens=torch.cat([others[:extra], chain[done : done + k]]).view(1, size),
            positions=torch.tensor([[kv] * extra + list(range(kv, kv + k))]),
            write_index=kv + torch.arange(size).view(1, size),
            mask=mask,
        )
        hidden, _ = model.forward(step, cache)
        assert torch.equal(hidden[0, extra:], alone[done : done + k]), done
        for t in (cache.k, cache.v):  # commit the chain to its own positions
            t[:, 0, :, kv : kv + k] = t[:, 0, :, kv + extra : kv + size].clone()
        done += k


def test_a_prompt_prefills_int4_weights_in_q4_1_layout_as_their_bf16_values() -> None:
    weight = q4_1_dequantized(80, 1536, seed=10)  # values exact in bf16: the product is checkable
    quantized = quantize_int4(weight)
    assert quantized.prefill is not None
    x = bf16(19, 1536, seed=11)
    got = linear(x, quantized, prefill=True)
    exact = x.double() @ weight.double().T
    assert torch.allclose(got.double(), exact, rtol=2**-7, atol=1e-6)
    alone = torch.cat([linear(x[i : i + 1], quantized, prefill=True) for i in range(19)])
    assert torch.equal(alone, got)
    # decoding keeps torch's int4 kernel: cheapest for one row
    torch.testing.assert_close(linear(x, quantized).double(), exact, rtol=0.02, atol=0.05)
