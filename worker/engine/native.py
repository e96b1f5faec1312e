"""The engine's own C++ kernels, compiled once per machine and loaded into torch: ``kernels/skinny.cpp``
on CPUs with AVX-512 BF16, ``kernels/skinny_avx2.cpp`` (the same operations in 8 fp32 lanes) on other
AVX2 + FMA CPUs, where bf16 weights then halve what a decoding step streams against fp32.

For bfloat16 and float32 models they compute ``x @ w.T`` (bf16 in AMX tiles where the CPU has them),
attention, RMS norm and a whole decoder layer so that every output row depends on its own input row
alone (see the source): decoding and verification then round alike however many rows share a step and
however long the span, which oneDNN's products and torch's attention do not, and a one-row step streams
the weights faster than oneDNN's (measured in docs/benchmarks.md: its packed fp32 products streamed a one-row
step at about half the memory's speed) without a Python round trip per operation.
It is built with ``-march=native`` on first use into ``$XDG_CACHE_HOME/borealis/kernels`` (about 15
seconds), keyed by the source, torch's version and this CPU's flags; where no compiler is found, the
build fails, or the CPU has neither AVX-512 nor AVX2, the engine keeps oneDNN and logs why once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from borealis.cpu import bf16_native

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
BUILD_TIMEOUT_S = 600

_enabled = True
_amx = True


def enable(on: bool, amx: bool = True) -> None:
    """Whether models and drafts loaded from now on use the kernels (``BOREALIS_NATIVE_KERNELS``), and
    their bf16 products AMX tiles where the CPU has them (``BOREALIS_NATIVE_AMX``)."""
    global _enabled, _amx
    _enabled, _amx = on, amx


def serves(dtype: torch.dtype) -> bool:
    """Whether the kernels serve models of this dtype here (bfloat16 and float32, on AVX-512 BF16 or AVX2
    CPUs), and are on."""
    return _enabled and _loaded() and bool(torch.ops.borealis_skinny.supports(dtype))


def serves_low_precision() -> bool:
    """Whether bf16 and int4 models serve here: on CPUs that compute bf16 natively (through oneDNN where
    the kernels are off), or through the kernels (on AVX2 CPUs, in fp32 lanes: torch's own bf16 there
    is emulated and oneDNN refuses to pack bf16 weights)."""
    return bf16_native() or serves(torch.bfloat16)


def supports(dtype: torch.dtype, width: int) -> bool:
    """Whether the kernels serve rows of this dtype and width here (a product's inputs, attention's
    head dimension: multiples of 32, one bf16 vector): one-row fp32 products streamed 1.7x as fast as
    oneDNN's packed ones."""
    return width % 32 == 0 and serves(dtype)


@contextlib.contextmanager
def switched(on: bool, amx: bool = True) -> Iterator[None]:
    """:func:`enable` for what is loaded inside, then back to what was set before."""
    saved = _enabled, _amx
    enable(on, amx)
    try:
        yield
    finally:
        enable(*saved)


def amx() -> bool:
    """Whether bf16 products run in AMX tiles here: kernels on, AMX allowed, and the CPU and the
    operating system let this process use the tiles."""
    return _amx and serves(torch.bfloat16) and bool(torch.ops.borealis_skinny.amx())


def tiles(dtype: torch.dtype) -> bool:
    """Whether a model of ``dtype`` loaded now multiplies and scores attention in AMX tiles: a bf16 one
    where :func:`amx` holds (the tiles take bf16 pairs only; float32 models stay in vectors)."""
    return dtype == torch.bfloat16 and amx()


def kernels_name(dtype: torch.dtype) -> str:
    """What serves the products of a model of ``dtype`` loaded now: ``amx`` (bf16 only), ``native`` (the
    vector kernel) or ``onednn``."""
    if not supports(dtype, 32):
        return "onednn"
    return "amx" if tiles(dtype) else "native"


def serves_model(dtype: torch.dtype, head_dim: int, hidden_size: int) -> bool:
    """Whether a model's attention and norms run here (its head and hidden widths both qualify)."""
    return supports(dtype, head_dim) and supports(dtype, hidden_size)


def product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for a contiguous ``[out, in]`` weight that :func:`supports` accepts."""
    return torch.ops.borealis_skinny.linear(x, weight)  # type: ignore[no-any-return]


def product_amx(x: torch.Tensor, tiles: torch.Tensor, out_features: int) -> torch.Tensor:
    """``x @ w.T`` for a bf16 weight packed by :func:`worker.engine.linear.amx_tiles`: up to 16 rows cost
    about what one row does (the weights' streaming)."""
    return torch.ops.borealis_skinny.linear_amx(x, tiles, out_features)  # type: ignore[no-any-return]


def product_q4(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor
) -> torch.Tensor:
    """``x @ w.T`` for 4-bit weights in Q4_1's layout (see the source), each 16-row block dequantized
    to bf16 once per call: cheap per extra row, so a prompt's prefill runs here."""
    return torch.ops.borealis_skinny.linear_q4(x, codes, scales, mins)  # type: ignore[no-any-return]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS norm of bf16 or fp32 rows (width a multiple of 16) scaled by a ``weight`` of their dtype, in one
    call."""
    return torch.ops.borealis_skinny.rms_norm(x, weight, eps)  # type: ignore[no-any-return]


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(-1)`` (the first maximum; the first NaN if any), over bf16 or fp32 rows in one
    vectorized pass where the kernels serve their dtype: torch's took 170 us per row of SmolLM2's 49k
    logits here, and a greedy step takes one per sequence, a verification step one per tree node."""
    if not logits.numel() or not serves(logits.dtype):
        return logits.argmax(dim=-1)
    rows = logits.reshape(-1, logits.shape[-1])
    return torch.ops.borealis_skinny.argmax(rows).view(logits.shape[:-1])  # type: ignore[no-any-return]


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of bf16 or fp32 rows ``[.., 2 I]`` (gate, then up) in fp32, rounded to their
    dtype once."""
    return torch.ops.borealis_skinny.silu_mul(gate_up)  # type: ignore[no-any-return]


def decoder_layer(
    x: torch.Tensor,
    norms: tuple[torch.Tensor, torch.Tensor],
    eps: float,
    weights: tuple[torch.Tensor, ...],
    outputs: tuple[int, ...],
    form: int,
    amx: bool,
    attention: tuple[torch.Tensor, ...],
    rows: torch.Tensor | None,
    normed: torch.Tensor | None = None,
) -> torch.Tensor:
    """A whole decoder layer in one call, the same bits as its composition in
    :meth:`worker.engine.llama.LlamaModel.forward`: ``norms`` (input, post), ``weights`` (qkv, out,
    gate_up, down as :func:`worker.engine.linear.native_operand` gives them, all in one ``form``) with
    their ``outputs``, ``attention`` = (cos, sin, cache_k, cache_v, flat_index, mask) as :func:`attend`
    takes them, its scores in AMX tiles with ``amx``. ``normed``: the attention's input where it is not
    ``x``'s input norm (a draft layer's: see :meth:`worker.draft.runner.DraftRunner.forward`); ``x`` is
    then the residual alone."""
    return torch.ops.borealis_skinny.decoder_layer(  # type: ignore[no-any-return]
        x, *norms, eps, list(weights), list(outputs), form, amx, *attention, rows, normed
    )


def decoder_layers(
    x: torch.Tensor,
    norms: tuple[torch.Tensor, ...],
    eps: float,
    weights: tuple[torch.Tensor, ...],
    outputs: tuple[int, ...],
    form: int,
    amx: bool,
    attention: tuple[torch.Tensor, ...],
    rows: torch.Tensor | None,
    features: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every decoder layer of a model in one call, :func:`decoder_layer` over each in turn: ``norms`` two
    a layer, ``weights`` a layer's run in ``form`` (all layers alike, with the same ``outputs``),
    ``attention`` as :func:`decoder_layer`'s with the cache of every layer (``[layers, B, KV, L, D]``).
    Returns the last layer's output and the outputs of the ``features`` layers, concatenated."""
    hidden, featured = torch.ops.borealis_skinny.decoder_layers(
        x, list(norms), eps, list(weights), list(outputs), form, amx, *attention, rows, list(features)
    )
    return hidden, featured


MASK_DTYPE = torch.float32  # what :func:`attend` reads its mask as: build it so, once per forward


def attend(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
    flat_index: torch.Tensor,
    mask: torch.Tensor,
    tiles: bool = False,
) -> torch.Tensor:
    """A layer's attention after its projection, in one call: rotary on ``qkv [B, T, H + 2 KV, D]``
    (``cos``, ``sin`` ``[B, T, 1, D]``), the new keys and values written to the rows ``flat_index``
    gives of ``cache_k``, ``cache_v [B, KV, L, D]`` viewed as ``[B KV L, D]`` (``[B, KV, T]`` order),
    then softmax attention of each query row on its own over the keys its additive ``mask [B, 1, G T, S]``
    allows (row ``g T + t``). Returns ``[B, T, H D]``, head ``kv G + g``. All bf16 or all fp32 (the mask
    fp32). With ``tiles`` (bf16, where :func:`amx` holds) the scores are computed in AMX tiles; a model
    decides once, as its products do."""
    return torch.ops.borealis_skinny.attend(qkv, cos, sin, cache_k, cache_v, flat_index, mask, tiles)  # type: ignore[no-any-return]


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "borealis" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def source() -> Path | None:
    """The kernels' source for this CPU (as torch reads it): ``skinny.cpp`` where AVX-512 computes bf16
    natively (AVX-512 BF16, AMX), ``skinny_avx2.cpp`` on any other AVX2 CPU (AVX-512 ones without BF16
    included: there ``skinny.cpp`` serves nothing), none below AVX2."""
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith(("AVX512", "AVX2")):
        return None
    native_bf16 = capability.startswith("AVX512") and bf16_native()
    return KERNELS / ("skinny.cpp" if native_bf16 else "skinny_avx2.cpp")


def _build_command(compiler: str, output: Path, code: Path) -> list[str]:
    from torch.utils import cpp_extension

    library = cpp_extension.library_paths()[0]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    return [
        compiler,
        "-O3",
        "-march=native",
        "-fopenmp",  # at::parallel_for's pool: torch's own libgomp, already loaded
        "-std=c++20",
        "-shared",
        "-fPIC",
        "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *includes,
        str(code),
        "-o",
        str(output),
        f"-L{library}",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        f"-Wl,-rpath,{library}",
    ]


def _library(code: Path) -> Path | None:
    """The compiled kernel for this source, torch and CPU: built now unless cached."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.info("native kernels: no C++ compiler (g++ or $CXX) found; using oneDNN")
        return None
    headers = b"".join(path.read_bytes() for path in sorted(code.parent.glob("*.h")))
    key = hashlib.sha256(
        code.read_bytes() + headers + torch.__version__.encode() + _cpu_flags().encode() + compiler.encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"skinny-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = _build_command(compiler, built, code)
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=BUILD_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            log.warning("native kernels: build failed (%s); using oneDNN\n%s", exc, stderr.decode()[-2000:])
            return None
        os.replace(built, target)  # atomic: a process building at the same time finds one whole file
    _prune(target.parent)
    return target


KEEP_BUILDS = 4  # builds for other sources, torches or compilers kept (another install may still use one)


def _prune(directory: Path) -> None:
    """Remove all but the newest :data:`KEEP_BUILDS` builds: each source change adds one."""
    builds = sorted(directory.glob("skinny-*.so"), key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in builds[KEEP_BUILDS:]:
        stale.unlink(missing_ok=True)  # a process that loaded it keeps its mapping


@functools.cache
def _loaded() -> bool:
    code = source()
    if code is None:
        log.info("native kernels: this CPU has neither AVX-512 nor AVX2; using oneDNN")
        return False
    library = _library(code)
    if library is None:
        return False
    torch.ops.load_library(str(library))
    return True
