// The engine's kernels for the skinny shapes of decoding and verification (AVX-512, AMX where the CPU has
// it), for bf16 models and float32 ones alike: x @ w.T for bf16 or fp32 weights and for 4-bit Q4_1
// weights, RMS norm, silu(gate) * up, a layer's rotary, cache writes and attention in one call, a whole
// decoder layer in one call, and a row's argmax. Every output row depends on its own input row alone, bit
// for bit, so decoding a token and verifying it among many rows round alike.
//
// A product computes each output as one weight row's dot product with one input row, accumulated
// along K in 16 fp32 lanes in the same order whatever the number of rows (16-row weight blocks, as
// 4 x 4 register tiles of weight and input rows or one input row against all 16), then reduced across
// lanes by one fixed tree. A weight block streams from memory once per call and stays in cache for
// the other input rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "ops.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using skinny::output_shape;

constexpr int64_t kBlock = 16;  // weight rows per block: one reduction tree, one 16-lane store

// The first ``count`` of 16 lanes (all 16 from 16 on): a row's tail, a block's live outputs.
inline __mmask16 first_lanes(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
}

// Lane sums of 16 vectors as one vector, lane j the sum of a[j]'s lanes (a fixed tree per lane).
inline __m512 lane_sums(__m512 (&a)[kBlock]) {
  __m512 t[8], u[4], v[2];
  for (int i = 0; i < 8; ++i) {
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  }
  for (int i = 0; i < 4; ++i) {
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
  }
  for (int i = 0; i < 2; ++i) {
    v[i] = _mm512_add_ps(_mm512_unpacklo_ps(u[2 * i], u[2 * i + 1]), _mm512_unpackhi_ps(u[2 * i], u[2 * i + 1]));
  }
  const __m512 w = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 2, 3, 2)));
  // lane 4q + j of w holds output 4j + q
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_ps(order, w);
}

#if defined(__AVX512BF16__)
struct BFloat16 {  // the element type: how K is loaded, dotted and stored
  using Scalar = c10::BFloat16;
  static constexpr int64_t kStep = 32;  // K elements per vector
  static inline __m512bh load(const c10::BFloat16* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static inline __m512 dot(__m512 acc, __m512bh w, __m512bh x) { return _mm512_dpbf16_ps(acc, w, x); }
  static inline void store(c10::BFloat16* out, __m512 v, __mmask16 live) {
    _mm256_mask_storeu_epi16(out, live, (__m256i)_mm512_cvtneps_pbh(v));
  }
};

struct Float32 {  // fp32 weights (a float32 model's): 16 inputs per vector, one FMA per pair
  using Scalar = float;
  static constexpr int64_t kStep = 16;
  static inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static inline __m512 dot(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
  static inline void store(float* out, __m512 v, __mmask16 live) { _mm512_mask_storeu_ps(out, live, v); }
};

// acc = dot(acc, w[i], x[i]) along K for each (weight row, input row) pair of a tile.
template <typename F, int RN, int RM>
inline void tile(const typename F::Scalar* const (&w)[RN], const typename F::Scalar* const (&x)[RM], int64_t k,
                 __m512 (&acc)[kBlock]) {
  for (int a = 0; a < kBlock; ++a) acc[a] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += F::kStep) {
    decltype(F::load(x[0])) xv[RM];
#pragma GCC unroll 16
    for (int b = 0; b < RM; ++b) xv[b] = F::load(x[b] + i);
#pragma GCC unroll 16
    for (int a = 0; a < RN; ++a) {
      // the same row of the next block, into L2: prefetching the next rows into L1 held the one-row
      // product of every SmolLM2 layer to ~22 GB/s on an EPYC (2 threads); this reached ~28, and 1.4x
      // as fast at 4 input rows (paired runs of both builds in one process)
      _mm_prefetch(reinterpret_cast<const char*>(w[a] + kBlock * k + i), _MM_HINT_T1);
      const auto wv = F::load(w[a] + i);
#pragma GCC unroll 16
      for (int b = 0; b < RM; ++b) acc[b * RN + a] = F::dot(acc[b * RN + a], wv, xv[b]);
    }
  }
}

// A one-row product's block, into L2 in address order before the pass reads it across its 16 rows (the
// tile's own prefetches, one line per row per step, go on for the next block). On a Zen 4 EPYC a one-row
// pass streamed slower than two passes over the same block (head 1.34 vs 1.05 ms for two rows), as if the
// tile's prefetches were dropped while its 16 misses were outstanding; this burst took 8-24 % off one-row
// products there (bf16 head, gate/up, down) and 8-11 % off a bf16 one-token step (in-process A/B, same bits).
inline void prefetch_block(const void* block, int64_t bytes) {
  const char* base = static_cast<const char*>(block);
  for (int64_t at = 0; at < bytes; at += 64) _mm_prefetch(base + at, _MM_HINT_T1);
}

// Outputs [rows, n0 .. n0 + width) of x @ w.T: input rows four at a time against four weight rows at a
// time, then the rest one at a time against all sixteen. Each output accumulates in the same order
// and reduces through the same tree either way, so it does not depend on ``rows``.
template <typename F>
void block(const typename F::Scalar* wb, const typename F::Scalar* x, typename F::Scalar* out, int64_t rows,
           int64_t k, int64_t n, int64_t n0) {
  using S = typename F::Scalar;
  const int64_t width = std::min<int64_t>(kBlock, n - n0);
  __m512 acc[kBlock];
  alignas(64) S sums[kBlock];
  int64_t m = 0;
  if (width == kBlock) {
    for (; m + 4 <= rows; m += 4) {
      const S* const xs[4] = {x + m * k, x + (m + 1) * k, x + (m + 2) * k, x + (m + 3) * k};
      for (int64_t a = 0; a < kBlock; a += 4) {
        const S* const ws[4] = {wb + a * k, wb + (a + 1) * k, wb + (a + 2) * k, wb + (a + 3) * k};
        tile<F, 4, 4>(ws, xs, k, acc);
        F::store(sums, lane_sums(acc), 0xFFFF);
        for (int b = 0; b < 4; ++b)
          for (int j = 0; j < 4; ++j) out[(m + b) * n + n0 + a + j] = sums[b * 4 + j];
      }
    }
  }
  const S* ws[kBlock];
  for (int a = 0; a < kBlock; ++a) ws[a] = wb + std::min<int64_t>(a, width - 1) * k;
  if (rows == 1) prefetch_block(wb, width * k * static_cast<int64_t>(sizeof(S)));
  for (; m < rows; ++m) {
    const S* const xs[1] = {x + m * k};
    tile<F, kBlock, 1>(reinterpret_cast<const S* const (&)[kBlock]>(ws), xs, k, acc);
    F::store(out + m * n + n0, lane_sums(acc), first_lanes(width));
  }
}

template <typename F>
at::Tensor product(const at::Tensor& x, const at::Tensor& weight) {
  const int64_t k = x.size(-1);
  const int64_t n = weight.size(0);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == k && k % F::kStep == 0, "skinny: K must match and divide");
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == x.scalar_type(), "skinny: contiguous, same dtype");
  const at::Tensor flat = x.reshape({-1, k}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty({rows, n}, flat.options());
  using S = typename F::Scalar;
  const S* w = reinterpret_cast<const S*>(weight.data_ptr());
  const S* xp = reinterpret_cast<const S*>(flat.data_ptr());
  S* o = reinterpret_cast<S*>(out.data_ptr());
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) block<F>(w + b * kBlock * k, xp, o, rows, k, n, b * kBlock);
  });
  return out.view(output_shape(x, n));
}

// 4-bit weights in Q4_1's layout: per group of 32 inputs an fp16 scale s and minimum m and 16 bytes of
// codes q (code i in the low nibble of byte i, code i + 16 in its high nibble), w = s q + m. Each
// 16-row block is dequantized to bf16 (the fp32 value s q + m, rounded once) and multiplied as a bf16
// weight is: the same weight values and the same order of operations for any number of rows.
constexpr int64_t kGroup = 32;

void dequantize_block(const uint8_t* codes, const at::Half* scales, const at::Half* mins, int64_t k,
                      int64_t width, c10::BFloat16* out) {
  const int64_t groups = k / kGroup;
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  alignas(64) float s[16], m[16];
  for (int64_t a = 0; a < width; ++a) {
    for (int64_t g0 = 0; g0 < groups; g0 += 16) {
      const int64_t count = std::min<int64_t>(16, groups - g0);
      const __mmask16 live = first_lanes(count);
      _mm512_store_ps(s, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, scales + a * groups + g0)));
      _mm512_store_ps(m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, mins + a * groups + g0)));
      for (int64_t i = 0; i < count; ++i) {
        const int64_t g = g0 + i;
        const __m128i bytes =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + a * (k / 2) + g * (kGroup / 2)));
        const __m512 scale = _mm512_set1_ps(s[i]), low = _mm512_set1_ps(m[i]);
        const __m512 first =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, low_nibbles))), scale, low);
        const __m512 second = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibbles))), scale,
            low);
        _mm512_storeu_si512(out + a * k + g * kGroup, (__m512i)_mm512_cvtne2ps_pbh(second, first));
      }
    }
  }
}

// A block of a bf16 product, as layer.h's q4_linear multiplies its dequantized blocks.
inline void bf16_block(const c10::BFloat16* wb, const c10::BFloat16* x, c10::BFloat16* out, int64_t rows, int64_t k,
                       int64_t n, int64_t n0) {
  block<BFloat16>(wb, x, out, rows, k, n, n0);
}

// bf16 products in AMX tiles, where the CPU has them (Intel Sapphire Rapids and later). One tile
// instruction multiplies up to 16 input rows by 16 weight rows over 32 inputs, each output from its own
// input row alone, so a product of 1 row and one of 16 cost about the same: weight streaming. Every
// output accumulates its 32-input chunks in input order in an fp32 tile, then rounds to bf16 once.
// Weights are packed once (``amx_tiles`` in worker/engine/linear.py) as [N / 16, K / 32, 16 pairs, 16 rows, 2]: one
// 1 KB tile per 16 weight rows and 32 inputs, the pairs of inputs interleaved as the instruction reads.
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tiles 0-3: outputs [rows, 16] fp32 of four weight blocks; tile 4: inputs [rows, 32] bf16; tiles 5-7:
// weights [16 pairs, 32] bf16 (attention's scores use tiles 0, 4 and 5 alike: keys as inputs, queries as
// weights)
inline void configure(int64_t rows) {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = static_cast<uint8_t>(t < 5 ? rows : 16);
    config.colsb[t] = 64;
  }
  _tile_loadconfig(&config);
}

// NB (1-4) weight blocks against one chunk of input rows, each block accumulating in its own tile: one
// block's chain of tile products waits on each product (a tile product's latency is several times its
// throughput), so the chains of four blocks run interleaved. Each block's outputs still accumulate their
// 32-input chunks in input order. sums: [NB, 16 rows, 16] fp32.
template <int NB>
void amx_blocks(const c10::BFloat16* x, int64_t k, const c10::BFloat16* w, int64_t chunks, float* sums) {
  _tile_zero(0);
  if constexpr (NB > 1) _tile_zero(1);
  if constexpr (NB > 2) _tile_zero(2);
  if constexpr (NB > 3) _tile_zero(3);
  for (int64_t c = 0; c < chunks; ++c) {
    _tile_loadd(4, x + c * 32, k * 2);
    _tile_loadd(5, w + c * 512, 64);
    _tile_dpbf16ps(0, 4, 5);
    if constexpr (NB > 1) {
      _tile_loadd(6, w + (chunks + c) * 512, 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if constexpr (NB > 2) {
      _tile_loadd(7, w + (2 * chunks + c) * 512, 64);
      _tile_dpbf16ps(2, 4, 7);
    }
    if constexpr (NB > 3) {
      _tile_loadd(5, w + (3 * chunks + c) * 512, 64);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, sums, 64);
  if constexpr (NB > 1) _tile_stored(1, sums + 256, 64);
  if constexpr (NB > 2) _tile_stored(2, sums + 512, 64);
  if constexpr (NB > 3) _tile_stored(3, sums + 768, 64);
}

bool amx_ready() {
  static const bool ready = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ready;
}

at::Tensor amx_linear(const at::Tensor& x, const at::Tensor& packed, int64_t n) {
  const int64_t k = x.size(-1), blocks = packed.size(0), chunks = packed.size(1);
  TORCH_CHECK(amx_ready(), "amx: the kernel may not use tiles in this process");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && packed.scalar_type() == at::kBFloat16 && packed.is_contiguous() &&
                  chunks * 32 == k && blocks * kBlock >= n && packed.numel() == blocks * chunks * 512,
              "amx: bf16 input, weights packed [N / 16, K / 32, 16, 16, 2]");
  const at::Tensor flat = x.reshape({-1, k}).contiguous();
  const int64_t rows = flat.size(0);
  // one tile configuration per call, so each weight block streams from memory once: up to 16 rows as
  // they come, more padded with zero rows to a multiple of 16 (a zero row costs a tile row, no bytes)
  const int64_t count = std::min<int64_t>(rows, kBlock);
  if (rows == 0) return at::empty(output_shape(x, n), flat.options());
  at::Tensor input = flat;
  if (rows % count) {  // by hand: at::constant_pad_nd dispatches a fill and a copy, in every projection of the step
    const int64_t padded = rows + count - rows % count;
    input = at::empty({padded, k}, flat.options());
    std::memcpy(input.data_ptr(), flat.data_ptr(), rows * k * sizeof(c10::BFloat16));
    std::memset(input.data_ptr<c10::BFloat16>() + rows * k, 0, (padded - rows) * k * sizeof(c10::BFloat16));
  }
  at::Tensor out = at::empty({rows, n}, flat.options());
  const auto* xp = input.data_ptr<c10::BFloat16>();
  const auto* wp = packed.data_ptr<c10::BFloat16>();
  auto* op = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    alignas(64) float sums[4 * kBlock * kBlock];
    configure(count);
    for (int64_t b = begin; b < end; b += 4) {
      const int64_t group = std::min<int64_t>(4, end - b);
      for (int64_t m = 0; m < rows; m += count) {
        const c10::BFloat16* xm = xp + m * k;
        const c10::BFloat16* wb = wp + b * chunks * 512;
        switch (group) {
          case 4: amx_blocks<4>(xm, k, wb, chunks, sums); break;
          case 3: amx_blocks<3>(xm, k, wb, chunks, sums); break;
          case 2: amx_blocks<2>(xm, k, wb, chunks, sums); break;
          default: amx_blocks<1>(xm, k, wb, chunks, sums); break;
        }
        for (int64_t i = 0; i < group; ++i) {
          const int64_t width = std::min<int64_t>(kBlock, n - (b + i) * kBlock);
          const __mmask16 live = first_lanes(width);
          for (int64_t r = 0; r < std::min(count, rows - m); ++r) {
            _mm256_mask_storeu_epi16(op + (m + r) * n + (b + i) * kBlock, live,
                                     (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(sums + (i * kBlock + r) * kBlock)));
          }
        }
      }
    }
    _tile_release();
  });
  return out.view(output_shape(x, n));
}
#endif

// The row-wise operations and attention read 16 elements of their dtype as 16 fp32 lanes (``widen``) and
// store 16 lanes as their dtype (``narrow``: rounded to bf16 once, or fp32 as they are).
inline __m512 widen(const c10::BFloat16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 widen(const float* p) { return _mm512_loadu_ps(p); }
inline void narrow(c10::BFloat16* out, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(v));
}
inline void narrow(float* out, __m512 v) { _mm512_storeu_ps(out, v); }

// How a product reads the element type T (c10::BFloat16 or float).
template <typename T>
using ElementsOf = std::conditional_t<std::is_same_v<T, float>, Float32, BFloat16>;

// Rotary embedding of one head vector (Hugging Face's halves layout) in fp32, stored as T once.
template <typename T>
inline void rotate(const T* x, const T* cos, const T* sin, int64_t d, T* out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i += 16) {
    const __m512 a = widen(x + i), b = widen(x + half + i);
    narrow(out + i, _mm512_fmsub_ps(a, widen(cos + i), _mm512_mul_ps(b, widen(sin + i))));
    narrow(out + half + i, _mm512_fmadd_ps(b, widen(cos + half + i), _mm512_mul_ps(a, widen(sin + half + i))));
  }
}

// Attention works on the query rows that share a KV head (their head groups and new tokens), up to 16
// at a time, in three passes: every score of a row against every key of the span (fp32), the row's
// softmax, then the rows' weighted sums of the values in key order. Whatever the pass shares between
// rows (a key tile, a value row), each result depends on its own query row and the keys its mask allows
// alone: a score is one row's dot product with one key, a masked key weighs exactly 0 and adds exactly 0,
// so a row rounds alike alone, among a tree's rows and over a padded span.
constexpr int64_t kRows = 16;  // query rows per pass
constexpr int64_t kMaxChunks = 8;  // 32-dim chunks of a head in AMX scores: heads up to 256 wide

// e^x for fp32 lanes: 2^n e^r with n = round(x log2 e), |r| <= ln 2 / 2, and a degree-7 Taylor
// polynomial for e^r (relative error about 1e-7); lanes below -87, -inf and NaN give 0, above 88.7 inf.
inline __m512 exp_lanes(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);  // ln 2 in two parts: r exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  return _mm512_maskz_scalef_ps(live, p, n);
}

// Scores of ``rows`` query rows q[n] against keys [0, span) of one KV head kh ([span, d]) into w[n stride + j]:
// for each row, 16 keys at a time, each key's dot product in 16 lanes along d, reduced by one fixed tree.
template <typename T>
void scores_vector(const T* const* q, int64_t rows, const T* kh, int64_t span, int64_t d, float* w, int64_t stride) {
  __m512 acc[kBlock];
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t j0 = 0; j0 < span; j0 += kBlock) {
      const T* keys[kBlock];
      for (int64_t a = 0; a < kBlock; ++a) keys[a] = kh + std::min(j0 + a, span - 1) * d;
      const T* const xs[1] = {q[n]};
      tile<ElementsOf<T>, kBlock, 1>(reinterpret_cast<const T* const (&)[kBlock]>(keys), xs, d, acc);
      _mm512_storeu_ps(w + n * stride + j0, lane_sums(acc));
    }
  }
}

// The softmax of one row of scores over [0, span): w becomes e^(s - max) (0 where masked), scaled and
// masked by the additive row mr first. Sets the range [first, end) of keys with a nonzero weight (empty,
// and w left unnormalised, if every key is masked); :func:`row_totals` sums the weights.
void softmax_row(float* w, const float* mr, int64_t span, float scale, int64_t& first, int64_t& end) {
  const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
  __m512 top = minus_inf;
  for (int64_t j = 0; j < span; j += kBlock) {
    const __mmask16 live = first_lanes(span - j);
    const __m512 s = _mm512_mask_fmadd_ps(_mm512_maskz_loadu_ps(live, w + j), live, _mm512_set1_ps(scale),
                                          _mm512_maskz_loadu_ps(live, mr + j));
    const __m512 kept = _mm512_mask_blend_ps(live, minus_inf, s);
    _mm512_storeu_ps(w + j, kept);
    top = _mm512_max_ps(top, kept);
  }
  const float highest = _mm512_reduce_max_ps(top);
  first = end = 0;
  if (highest == -INFINITY) return;
  first = span;
  const __m512 shift = _mm512_set1_ps(highest);
  for (int64_t j = 0; j < span; j += kBlock) {
    const __m512 e = exp_lanes(_mm512_sub_ps(_mm512_loadu_ps(w + j), shift));
    _mm512_storeu_ps(w + j, e);
    const uint32_t nonzero = _mm512_cmp_ps_mask(e, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    if (nonzero) {
      first = std::min<int64_t>(first, j + __builtin_ctz(nonzero));
      end = j + 32 - __builtin_clz(nonzero);
    }
  }
}

// Each row's sum of its softmax weights, in key order: lanes of j % 16 would make it depend on where the
// keys sit in the cache, and a tree's nodes sit elsewhere than the same positions decoded one at a time (a
// masked key adds 0 exactly). Lane r of one vector sums row r, key after key over every row's range: the
// additions of a scalar sum per row, in its order (the keys outside a row's range add exact zeros), but
// one chain of adds for 16 rows, where a chain per row made the sums most of a 16-row step's attention.
void row_totals(const float* w, int64_t stride, int64_t rows, const int64_t* first, const int64_t* end,
                float* total) {
  int64_t begin = INT64_MAX, stop = 0;
  __mmask16 live = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (end[r] > first[r]) {  // a row with every key masked keeps its scores: it sums to 0
      begin = std::min(begin, first[r]);
      stop = std::max(stop, end[r]);
      live |= static_cast<__mmask16>(1u << r);
    }
  }
  const __m512i rows_at = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                             _mm512_set1_epi32(static_cast<int32_t>(stride)));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = begin; j < stop; ++j) {
    sum = _mm512_add_ps(sum, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, rows_at, w + j, 4));
  }
  _mm512_mask_storeu_ps(total, first_lanes(rows), sum);
}

// acc[n][dims] += w[n][j] v_j for keys j in [begin, end) and QG rows, over 32 C dims from dim0: a value row
// is split into its even and odd dims (each a shift or a mask of the bf16 pairs), so ``acc`` holds
// [n][32 c + 2 i] in even[n][c][i] and [n][32 c + 2 i + 1] in odd[n][c][i].
template <int C, int QG>
void weighted_values(const float* w, int64_t stride, const c10::BFloat16* vh, int64_t d, int64_t dim0,
                     int64_t begin, int64_t end, float* acc) {
  __m512 even[QG][C], odd[QG][C];
  for (int n = 0; n < QG; ++n)
    for (int c = 0; c < C; ++c) even[n][c] = odd[n][c] = _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  for (int64_t j = begin; j < end; ++j) {
    __m512 ev[C], od[C];
    for (int c = 0; c < C; ++c) {
      const __m512i pairs = _mm512_loadu_si512(vh + j * d + dim0 + c * 32);
      ev[c] = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
      od[c] = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
    }
    for (int n = 0; n < QG; ++n) {
      const __m512 p = _mm512_set1_ps(w[n * stride + j]);
      for (int c = 0; c < C; ++c) {
        even[n][c] = _mm512_fmadd_ps(p, ev[c], even[n][c]);
        odd[n][c] = _mm512_fmadd_ps(p, od[c], odd[n][c]);
      }
    }
  }
  const __m512i low_dims = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i high_dims = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  for (int n = 0; n < QG; ++n) {
    for (int c = 0; c < C; ++c) {
      float* out = acc + n * d + dim0 + c * 32;
      _mm512_storeu_ps(out, _mm512_permutex2var_ps(even[n][c], low_dims, odd[n][c]));
      _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(even[n][c], high_dims, odd[n][c]));
    }
  }
}

// The same for fp32 values (a float32 model's cache): C vectors of 16 dims from dim0, each loaded as it is.
template <int C, int QG>
void weighted_values(const float* w, int64_t stride, const float* vh, int64_t d, int64_t dim0, int64_t begin,
                     int64_t end, float* acc) {
  __m512 sums[QG][C];
  for (int n = 0; n < QG; ++n)
    for (int c = 0; c < C; ++c) sums[n][c] = _mm512_setzero_ps();
  for (int64_t j = begin; j < end; ++j) {
    __m512 v[C];
    for (int c = 0; c < C; ++c) v[c] = _mm512_loadu_ps(vh + j * d + dim0 + c * 16);
    for (int n = 0; n < QG; ++n) {
      const __m512 p = _mm512_set1_ps(w[n * stride + j]);
      for (int c = 0; c < C; ++c) sums[n][c] = _mm512_fmadd_ps(p, v[c], sums[n][c]);
    }
  }
  for (int n = 0; n < QG; ++n)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(acc + n * d + dim0 + c * 16, sums[n][c]);
}

// weighted_values over every dim for rows [n, n + QG), over the keys any of them weighs: 64 dims a call
// (two 32-dim bf16 chunks, four 16-dim fp32 vectors), then the last 32 if any.
template <int QG, typename T>
void values_of_group(const float* w, int64_t stride, const T* vh, int64_t d, const int64_t* first,
                     const int64_t* end, float* acc) {
  constexpr int kPerVector = std::is_same_v<T, float> ? 16 : 32;  // dims one weighted_values vector covers
  int64_t begin = INT64_MAX, stop = 0;
  for (int m = 0; m < QG; ++m) {
    if (end[m] > first[m]) {
      begin = std::min(begin, first[m]);
      stop = std::max(stop, end[m]);
    }
  }
  begin = std::min(begin, stop);
  int64_t dim0 = 0;
  for (; dim0 + 64 <= d; dim0 += 64) weighted_values<64 / kPerVector, QG>(w, stride, vh, d, dim0, begin, stop, acc);
  if (dim0 < d) weighted_values<32 / kPerVector, QG>(w, stride, vh, d, dim0, begin, stop, acc);
}

// weighted_values for ``rows`` rows, four at a time, then the rest together.
template <typename T>
void values_of_rows(const float* w, int64_t stride, int64_t rows, const T* vh, int64_t d, const int64_t* first,
                    const int64_t* end, float* acc) {
  int64_t n = 0;
  for (; n + 4 <= rows; n += 4) values_of_group<4>(w + n * stride, stride, vh, d, first + n, end + n, acc + n * d);
  switch (rows - n) {
    case 3: values_of_group<3>(w + n * stride, stride, vh, d, first + n, end + n, acc + n * d); break;
    case 2: values_of_group<2>(w + n * stride, stride, vh, d, first + n, end + n, acc + n * d); break;
    case 1: values_of_group<1>(w + n * stride, stride, vh, d, first + n, end + n, acc + n * d); break;
    default: break;
  }
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
// scores_vector in AMX tiles: 16 keys (tile rows, as the cache holds them) by 16 query rows (the queries'
// pairs of dims interleaved, as the instruction reads its second operand), 32 dims per instruction.
void scores_amx(const c10::BFloat16* const* q, int64_t rows, const c10::BFloat16* kh, int64_t span, int64_t length,
                int64_t d, float* w, int64_t stride, int64_t& configured) {
  const int64_t chunks = d / 32;
  alignas(64) uint32_t pairs[kMaxChunks * kRows * kRows];  // [chunk, pair of dims, query row]
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t i = 0; i < kRows; ++i) {
      for (int64_t n = 0; n < kRows; ++n) {
        pairs[(c * kRows + i) * kRows + n] = n < rows ? reinterpret_cast<const uint32_t*>(q[n])[c * kRows + i] : 0;
      }
    }
  }
  alignas(64) float block[kRows * kRows];
  for (int64_t j0 = 0; j0 < span; j0 += kRows) {
    const int64_t keys = std::min<int64_t>(kRows, length - j0);  // whole tiles while the cache has rows
    if (keys != configured) {
      configure(keys);
      configured = keys;
    }
    _tile_zero(0);
    for (int64_t c = 0; c < chunks; ++c) {
      _tile_loadd(4, kh + j0 * d + c * 32, d * 2);
      _tile_loadd(5, pairs + c * kRows * kRows, 64);
      _tile_dpbf16ps(0, 4, 5);
    }
    _tile_stored(0, block, 64);
    const int64_t live = std::min<int64_t>(kRows, span - j0);
    for (int64_t n = 0; n < rows; ++n)
      for (int64_t k = 0; k < live; ++k) w[n * stride + j0 + k] = block[k * kRows + n];
  }
}
#endif

// A decoder layer's attention after its q/k/v projection, in one call: rotary on queries and keys, the
// new keys and values written to the cache rows ``flat_index`` gives, then every query row attends as
// one query row at a time does. qkv [B, T, H + 2 KV, D]; cos, sin [B, T, 1, D]; cache_k, cache_v
// [B, KV, L, D] contiguous; flat_index [B, KV, T] rows of the cache viewed as [B KV L, D]; mask
// [B, 1, G T, S] additive, query row g T + t. Returns [B, T, H D], head h = kv G + g. Scores in AMX tiles
// when ``amx`` (the process may use them; bf16 only), else in vectors. T: every tensor's element type but
// the mask's (checked by layer.h's ``attend``).
template <typename T>
at::Tensor attend_of(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& cache_k,
                     const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask, bool amx) {
  const int64_t batch = qkv.size(0), count = qkv.size(1), d = qkv.size(3);
  const int64_t kv = cache_k.size(1), heads = qkv.size(2) - 2 * kv, groups = heads / kv, span = mask.size(-1);
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  TORCH_CHECK(!amx || (amx_ready() && d <= 32 * kMaxChunks), "attend: tiles not allowed here, or heads too wide");
#else
  TORCH_CHECK(!amx, "attend: built without AMX");
#endif
  const at::Tensor q = skinny::rotate_into_cache<T>(qkv, cos, sin, cache_k, cache_v, flat_index,
                                                    [](auto... args) { rotate<T>(args...); });
  const at::Tensor m = mask.contiguous();
  const auto* qp = q.data_ptr<T>();
  const auto* kp = cache_k.data_ptr<T>();
  const auto* vp = cache_v.data_ptr<T>();
  at::Tensor out = at::empty({batch, count, heads * d}, qkv.options());
  const auto* mp = m.data_ptr<float>();
  auto* op = out.data_ptr<T>();
  const int64_t length = cache_k.size(2), per_head = groups * count, parts = (per_head + kRows - 1) / kRows;
  const int64_t stride = (span + kBlock - 1) / kBlock * kBlock;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, batch * kv * parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> w(kRows * stride), acc(kRows * d);
    int64_t configured = 0;  // rows of the tile configuration this thread loaded (0: none)
    for (int64_t item = begin; item < end; ++item) {
      const int64_t part = item % parts, h = (item / parts) % kv, b = item / (parts * kv);
      const int64_t n0 = part * kRows, rows = std::min(kRows, per_head - n0);  // query row n = g T + t
      const T* queries[kRows];
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r, g = n / count, t = n % count;
        queries[r] = qp + ((b * count + t) * heads + h * groups + g) * d;
      }
      const int64_t cache = (b * kv + h) * length * d;
      const float* masks = mp + (b * per_head + n0) * span;
      const int64_t reach = skinny::mask_reach(masks, rows, span);
      bool tiled = false;  // scores in AMX tiles: bf16 only
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        if (amx) scores_amx(queries, rows, kp + cache, reach, length, d, w.data(), stride, configured);
        tiled = amx;
      }
#endif
      if (!tiled) scores_vector(queries, rows, kp + cache, reach, d, w.data(), stride);
      int64_t first[kRows] = {}, last[kRows] = {};
      float total[kRows];
      for (int64_t r = 0; r < rows; ++r) {
        softmax_row(w.data() + r * stride, masks + r * span, reach, scale, first[r], last[r]);
      }
      row_totals(w.data(), stride, rows, first, last, total);
      values_of_rows(w.data(), stride, rows, vp + cache, d, first, last, acc.data());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r, g = n / count, t = n % count;
        const __m512 norm = _mm512_set1_ps(total[r] > 0.0f ? 1.0f / total[r] : 0.0f);
        T* o = op + (b * count + t) * heads * d + (h * groups + g) * d;
        for (int64_t i = 0; i < d; i += 16) narrow(o + i, _mm512_mul_ps(_mm512_loadu_ps(acc.data() + r * d + i), norm));
      }
    }
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    if (configured) _tile_release();
#endif
  });
  return out;
}

// One row of layer.h's silu_mul: gate [I] then up [I] in, silu(gate) * up in fp32 out, stored as T once.
template <typename T>
inline void silu_mul_row(const T* gate_up, int64_t width, T* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < width; i += 16) {
    const __m512 gate = widen(gate_up + i), up = widen(gate_up + width + i);
    const __m512 silu = _mm512_div_ps(gate, _mm512_add_ps(one, exp_lanes(_mm512_sub_ps(_mm512_setzero_ps(), gate))));
    narrow(out + i, _mm512_mul_ps(silu, up));
  }
}

// One row of layer.h's rms_norm: the mean square in fp32 (16 lanes in input order, one fixed reduction),
// then x / sqrt(mean + eps) * w in fp32, stored as T once.
template <typename T>
inline void norm_row(const T* xr, const T* wp, int64_t d, double eps, T* out) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; c += 16) {
    const __m512 v = widen(xr + c);
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const float mean = _mm512_reduce_add_ps(squares) / static_cast<float>(d);
  const __m512 inverse = _mm512_set1_ps(1.0f / std::sqrt(mean + static_cast<float>(eps)));
  for (int64_t c = 0; c < d; c += 16) {
    narrow(out + c, _mm512_mul_ps(_mm512_mul_ps(widen(xr + c), inverse), widen(wp + c)));
  }
}

// 16 elements -> 16 fp32 of which only ``live`` lanes are read; the others are -inf.
inline __m512 widen_live(const c10::BFloat16* p, __mmask16 live) {
  const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, p)), 16));
  return _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), v);
}
inline __m512 widen_live(const float* p, __mmask16 live) {
  return _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), _mm512_maskz_loadu_ps(live, p));
}

// One row's argmax as torch gives it: the first NaN if the row holds one, else the first index of its
// largest value. Two passes, the second over the row still in cache.
template <typename T>
int64_t row_argmax(const T* x, int64_t n) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  bool nan = false;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = first_lanes(n - i);
    const __m512 v = widen_live(x + i, live);
    nan = nan || _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    top = _mm512_max_ps(top, v);
  }
  if (nan) {
    for (int64_t i = 0; i < n; ++i)
      if (std::isnan(static_cast<float>(x[i]))) return i;
  }
  const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = first_lanes(n - i);
    const uint32_t hit = _mm512_mask_cmp_ps_mask(live, widen_live(x + i, live), best, _CMP_EQ_OQ);
    if (hit) return i + __builtin_ctz(hit);
  }
  return 0;
}

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  if (x.scalar_type() == at::kFloat) return product<Float32>(x, weight);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "skinny: bf16 or fp32");
  return product<BFloat16>(x, weight);
}

// ``x @ w.T`` for a layer's weight: AMX tiles (``tiles``, n outputs, bf16) or a plain [n, K] weight.
at::Tensor project(const at::Tensor& x, const at::Tensor& weight, int64_t n, bool tiles) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  if (tiles) return amx_linear(x, weight, n);
#else
  TORCH_CHECK(!tiles, "layer: built without AMX");
#endif
  return skinny_linear(x, weight);
}

#include "layer.h"
#endif

bool skinny_amx() {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  return amx_ready();
#else
  return false;
#endif
}

bool skinny_supports(at::ScalarType dtype) {
#if defined(__AVX512BF16__)
  return dtype == at::kBFloat16 || dtype == at::kFloat;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(borealis_skinny, m) { skinny::define_ops(m); }

#if defined(__AVX512BF16__)
TORCH_LIBRARY_IMPL(borealis_skinny, CPU, m) {
  m.impl("linear", &skinny_linear);
  implement_ops(m);
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
TORCH_LIBRARY_IMPL(borealis_skinny, CPU, m) { m.impl("linear_amx", &amx_linear); }
#endif

TORCH_LIBRARY_IMPL(borealis_skinny, CatchAll, m) {
  m.impl("supports", &skinny_supports);
  m.impl("amx", &skinny_amx);
}
