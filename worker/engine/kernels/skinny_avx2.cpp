// The engine's kernels for CPUs with AVX2 and FMA but without AVX-512 BF16 (AMD Zen 2 / 3, Intel before
// Cooper Lake, AVX-512 ones without BF16 included): the same operations and guarantees as skinny.cpp, in
// 8 fp32 lanes. A bf16 model's weights, activations and cache stay bf16 (half the bytes a decoding step
// streams in fp32), a float32 model's fp32; every product, sum and exponential is fp32, rounded to bf16
// once per output where the model is bf16.
// Every output row depends on its own input row alone, bit for bit, so decoding a token and verifying
// it among many rows round alike.
//
// A product computes each output as one weight row's dot product with one input row: 16 inputs at a time
// split into their even and odd elements (a shift and a mask of the bf16 pairs), both added into the same
// 8 fp32 lanes (fp32 weights, a float32 model's: 8 inputs at a time, one FMA), in the same order whatever
// the number of rows, then reduced across lanes by one fixed tree. Weight rows go 8 to a block, as 4 x 2
// register tiles of weight and input rows or one input row against all 8; a block streams from memory
// once per call and stays in cache for the other input rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

#if defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kBlock = 8;  // weight rows (or keys) per block: one reduction tree, one 8-lane store

using Bf16 = c10::BFloat16;

using skinny::output_shape;

inline __m256i load16(const Bf16* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// The even elements of 16 bf16 as fp32 (each pair's low half shifted up), then the odd ones (masked).
inline __m256 evens(__m256i pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)); }
inline __m256 odds(__m256i pairs) {
  return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u))));
}

inline __m256 widen(const Bf16* p) {  // 8 bf16 -> 8 fp32 in order
  const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}
inline __m256 widen(const float* p) { return _mm256_loadu_ps(p); }  // fp32 rows (a float32 model's) as they are

// 8 fp32 -> 8 bf16, rounded to nearest even as torch rounds (a NaN stays a quiet NaN).
inline __m128i narrow(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  rounded = _mm256_blendv_epi8(rounded, quiet, nan);
  const __m256i packed = _mm256_packus_epi32(rounded, rounded);  // lanes [0-3, 0-3 | 4-7, 4-7]
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

inline void store8(Bf16* out, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), narrow(v)); }
inline void store8(float* out, __m256 v) { _mm256_storeu_ps(out, v); }

// Lane sums of 8 vectors as one vector, lane j the sum of a[j]'s lanes: ((0 + 1) + (2 + 3)) + ((4 + 5) +
// (6 + 7)) for every j, whichever slot it is in.
inline __m256 lane_sums(const __m256 (&a)[kBlock]) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 low = _mm256_hadd_ps(h01, h23), high = _mm256_hadd_ps(h45, h67);  // [a0..3 | a0..3], [a4..7 | ..]
  return _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31));
}

inline float lanes_total(__m256 v) {  // one vector's lane sum, by lane_sums' tree
  const __m256 h = _mm256_hadd_ps(v, v);
  const __m256 quads = _mm256_hadd_ps(h, h);
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(quads), _mm256_extractf128_ps(quads, 1)));
}

// How a product reads one element type: ``kStep`` inputs of a row per step along K, loaded once as ``Part``
// (bf16: even and odd elements, two FMAs into the same lanes; fp32: one vector, one FMA), and an 8-lane
// result stored to 8 outputs.
struct Bf16Elements {
  using Scalar = Bf16;
  static constexpr int64_t kStep = 16;  // one 256-bit load of bf16
  struct Part {
    __m256 even, odd;
  };
  static inline Part load(const Bf16* p) {
    const __m256i pairs = load16(p);
    return {evens(pairs), odds(pairs)};
  }
  static inline __m256 madd(__m256 acc, Part w, Part x) {
    return _mm256_fmadd_ps(w.odd, x.odd, _mm256_fmadd_ps(w.even, x.even, acc));
  }
  static inline void store(Bf16* out, __m256 v) { store8(out, v); }
};

struct Float32Elements {  // fp32 weights (a float32 model's)
  using Scalar = float;
  static constexpr int64_t kStep = 8;  // one 256-bit load of fp32
  using Part = __m256;
  static inline Part load(const float* p) { return _mm256_loadu_ps(p); }
  static inline __m256 madd(__m256 acc, Part w, Part x) { return _mm256_fmadd_ps(w, x, acc); }
  static inline void store(float* out, __m256 v) { _mm256_storeu_ps(out, v); }
};

// acc[b RN + a] = the dot product of weight row w[a] with input row x[b] along K, in 8 lanes.
template <typename E, int RN, int RM>
inline void tile(const typename E::Scalar* const (&w)[RN], const typename E::Scalar* const (&x)[RM], int64_t k,
                 __m256 (&acc)[kBlock]) {
  for (int a = 0; a < kBlock; ++a) acc[a] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += E::kStep) {
    typename E::Part xs[RM];
#pragma GCC unroll 8
    for (int b = 0; b < RM; ++b) xs[b] = E::load(x[b] + i);
#pragma GCC unroll 8
    for (int a = 0; a < RN; ++a) {
      // the same row of the next block, into L2, as skinny.cpp does: one-row products of SmolLM2's weights
      // ran 18 % slower here without it (Zen 3); into L1, or farther ahead, no faster
      _mm_prefetch(reinterpret_cast<const char*>(w[a] + kBlock * k + i), _MM_HINT_T1);
      const typename E::Part ws = E::load(w[a] + i);
#pragma GCC unroll 8
      for (int b = 0; b < RM; ++b) acc[b * RN + a] = E::madd(acc[b * RN + a], ws, xs[b]);
    }
  }
}

// Outputs [rows, n0 .. n0 + width) of x @ w.T: input rows two at a time against four weight rows at a
// time, then the rest one at a time against all eight. Each output accumulates in the same order and
// reduces through the same tree either way, so it does not depend on ``rows``.
template <typename E>
void block(const typename E::Scalar* wb, const typename E::Scalar* x, typename E::Scalar* out, int64_t rows,
           int64_t k, int64_t n, int64_t n0) {
  using S = typename E::Scalar;
  const int64_t width = std::min<int64_t>(kBlock, n - n0);
  __m256 acc[kBlock];
  alignas(32) S sums[kBlock];
  int64_t m = 0;
  if (width == kBlock) {
    for (; m + 2 <= rows; m += 2) {
      const S* const xs[2] = {x + m * k, x + (m + 1) * k};
      for (int64_t a = 0; a < kBlock; a += 4) {
        const S* const ws[4] = {wb + a * k, wb + (a + 1) * k, wb + (a + 2) * k, wb + (a + 3) * k};
        tile<E, 4, 2>(ws, xs, k, acc);
        E::store(sums, lane_sums(acc));
        for (int b = 0; b < 2; ++b)
          for (int j = 0; j < 4; ++j) out[(m + b) * n + n0 + a + j] = sums[b * 4 + j];
      }
    }
  }
  const S* ws[kBlock];
  for (int a = 0; a < kBlock; ++a) ws[a] = wb + std::min<int64_t>(a, width - 1) * k;
  for (; m < rows; ++m) {
    const S* const xs[1] = {x + m * k};
    tile<E, kBlock, 1>(reinterpret_cast<const S* const (&)[kBlock]>(ws), xs, k, acc);
    E::store(sums, lane_sums(acc));
    std::copy(sums, sums + width, out + m * n + n0);
  }
}

void bf16_block(const Bf16* wb, const Bf16* x, Bf16* out, int64_t rows, int64_t k, int64_t n, int64_t n0) {
  block<Bf16Elements>(wb, x, out, rows, k, n, n0);
}

template <typename E>
at::Tensor product_of(const at::Tensor& x, const at::Tensor& weight) {
  using S = typename E::Scalar;
  const int64_t k = x.size(-1);
  const int64_t n = weight.size(0);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == k && k % E::kStep == 0, "skinny: K must match and divide");
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == x.scalar_type(), "skinny: contiguous, same dtype");
  const at::Tensor flat = x.reshape({-1, k}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty({rows, n}, flat.options());
  const auto* w = weight.data_ptr<S>();
  const auto* xp = flat.data_ptr<S>();
  auto* o = out.data_ptr<S>();
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) block<E>(w + b * kBlock * k, xp, o, rows, k, n, b * kBlock);
  });
  return out.view(output_shape(x, n));
}

at::Tensor product(const at::Tensor& x, const at::Tensor& weight) {
  if (x.scalar_type() == at::kFloat) return product_of<Float32Elements>(x, weight);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "skinny: bf16 or fp32");
  return product_of<Bf16Elements>(x, weight);
}

// 4-bit weights in Q4_1's layout, as layer.h's ``q4_linear`` takes them: per group of 32 inputs an fp16
// scale s and minimum m and 16 bytes of codes q (code i in the low nibble of byte i, code i + 16 in its high
// nibble), w = s q + m. Each 8-row block is dequantized to bf16 (the fp32 value s q + m, rounded once) and
// multiplied as a bf16 weight is: the same weight values and order of operations for any number of rows.
constexpr int64_t kGroup = 32;

void dequantize_block(const uint8_t* codes, const at::Half* scales, const at::Half* mins, int64_t k,
                      int64_t width, Bf16* out) {
  const int64_t groups = k / kGroup;
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  for (int64_t a = 0; a < width; ++a) {
    for (int64_t g = 0; g < groups; ++g) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + a * (k / 2) + g * (kGroup / 2)));
      const __m256 scale = _mm256_set1_ps(static_cast<float>(scales[a * groups + g]));
      const __m256 low = _mm256_set1_ps(static_cast<float>(mins[a * groups + g]));
      const __m128i nibbles[2] = {_mm_and_si128(bytes, low_nibbles), _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibbles)};
      for (int half = 0; half < 2; ++half) {
        for (int part = 0; part < 2; ++part) {
          const __m128i eight = part ? _mm_srli_si128(nibbles[half], 8) : nibbles[half];
          const __m256 value = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight)), scale, low);
          store8(out + a * k + g * kGroup + half * 16 + part * 8, value);
        }
      }
    }
  }
}

// How a product reads the element type T (Bf16 or float).
template <typename T>
using ElementsOf = std::conditional_t<std::is_same_v<T, float>, Float32Elements, Bf16Elements>;

// Rotary embedding of one head vector (Hugging Face's halves layout) in fp32, stored as T once.
template <typename T>
inline void rotate(const T* x, const T* cos, const T* sin, int64_t d, T* out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i += 8) {
    const __m256 a = widen(x + i), b = widen(x + half + i);
    store8(out + i, _mm256_fmsub_ps(a, widen(cos + i), _mm256_mul_ps(b, widen(sin + i))));
    store8(out + half + i, _mm256_fmadd_ps(b, widen(cos + half + i), _mm256_mul_ps(a, widen(sin + half + i))));
  }
}

// e^x for fp32 lanes: 2^n e^r with n = round(x log2 e), |r| <= ln 2 / 2, and a degree-7 Taylor polynomial
// for e^r (relative error about 1e-7); lanes below -87, -inf and NaN give 0, above 88.7 inf.
inline __m256 exp_lanes(__m256 x) {
  const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  const __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(88.7f), _CMP_GT_OQ);
  const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), clamped);  // ln 2 in two parts: r exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) {
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  }
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 value = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  return _mm256_and_ps(live, _mm256_blendv_ps(value, _mm256_set1_ps(INFINITY), over));
}

// Attention works on the query rows that share a KV head (their head groups and new tokens), up to 16 at a
// time, in three passes: every score of a row against every key of the span (fp32), the row's softmax,
// then each row's weighted sum of the values in key order. Whatever the pass shares between rows (a key
// row, a value row), each result depends on its own query row and the keys its mask allows alone: a score
// is one row's dot product with one key, a masked key weighs exactly 0 and adds exactly 0, so a row rounds
// alike alone, among a tree's rows and over a padded span.
constexpr int64_t kRows = 16;  // query rows per pass

// Scores of ``rows`` query rows q[n] against keys [0, span) of one KV head kh ([span, d]) into w[n stride + j]:
// for each row, 8 keys at a time, each key's dot product as a product's output is.
template <typename T>
void scores(const T* const* q, int64_t rows, const T* kh, int64_t span, int64_t d, float* w, int64_t stride) {
  __m256 acc[kBlock];
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t j0 = 0; j0 < span; j0 += kBlock) {
      const T* keys[kBlock];
      for (int64_t a = 0; a < kBlock; ++a) keys[a] = kh + std::min(j0 + a, span - 1) * d;
      const T* const xs[1] = {q[n]};
      tile<ElementsOf<T>, kBlock, 1>(reinterpret_cast<const T* const (&)[kBlock]>(keys), xs, d, acc);
      _mm256_storeu_ps(w + n * stride + j0, lane_sums(acc));
    }
  }
}

inline __m256i first_lanes(int64_t count) {  // all-ones in the first ``count`` of 8 lanes
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(std::min<int64_t>(count, 8))), index);
}

// The softmax of one row of scores over [0, span): w becomes e^(s - max) (0 where masked), scaled and
// masked by the additive row mr first, then divided by nothing: ``total`` gets the sum of the weights in
// key order (a scalar sum: lanes of j % 8 would make it depend on where the keys sit in the cache, and a
// tree's nodes sit elsewhere than the same positions decoded one at a time; a masked key adds 0 exactly).
// [first, end) is the range of keys with a nonzero weight (empty, total 0, if every key is masked).
void softmax_row(float* w, const float* mr, int64_t span, float scale, int64_t& first, int64_t& end, float& total) {
  const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
  __m256 top = minus_inf;
  for (int64_t j = 0; j < span; j += kBlock) {
    const __m256i live = first_lanes(span - j);
    const __m256 s = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_set1_ps(scale), _mm256_maskload_ps(mr + j, live));
    const __m256 kept = _mm256_blendv_ps(minus_inf, s, _mm256_castsi256_ps(live));
    _mm256_storeu_ps(w + j, kept);
    top = _mm256_max_ps(top, kept);
  }
  alignas(32) float tops[kBlock];
  _mm256_store_ps(tops, top);
  const float highest = *std::max_element(tops, tops + kBlock);
  first = end = 0;
  total = 0.0f;
  if (highest == -INFINITY || std::isnan(highest)) return;
  first = span;
  const __m256 shift = _mm256_set1_ps(highest);
  for (int64_t j = 0; j < span; j += kBlock) {
    const __m256 e = exp_lanes(_mm256_sub_ps(_mm256_loadu_ps(w + j), shift));
    _mm256_storeu_ps(w + j, e);
    const uint32_t nonzero = _mm256_movemask_ps(_mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_NEQ_OQ));
    if (nonzero) {
      first = std::min<int64_t>(first, j + __builtin_ctz(nonzero));
      end = j + 32 - __builtin_clz(nonzero);
    }
  }
  for (int64_t j = first; j < end; ++j) total += w[j];
}

// acc[n][dims] += w[n][j] v_j for keys j in [begin, end) and QG rows, 16 dims at a time, in key order.
template <int QG, typename T>
void weighted_values(const float* w, int64_t stride, const T* vh, int64_t d, int64_t begin, int64_t end,
                     float* acc) {
  for (int64_t dim0 = 0; dim0 < d; dim0 += 16) {
    __m256 low[QG], high[QG];
    for (int n = 0; n < QG; ++n) low[n] = high[n] = _mm256_setzero_ps();
    for (int64_t j = begin; j < end; ++j) {
      const __m256 lv = widen(vh + j * d + dim0), hv = widen(vh + j * d + dim0 + 8);
      for (int n = 0; n < QG; ++n) {
        const __m256 p = _mm256_set1_ps(w[n * stride + j]);
        low[n] = _mm256_fmadd_ps(p, lv, low[n]);
        high[n] = _mm256_fmadd_ps(p, hv, high[n]);
      }
    }
    for (int n = 0; n < QG; ++n) {
      _mm256_storeu_ps(acc + n * d + dim0, low[n]);
      _mm256_storeu_ps(acc + n * d + dim0 + 8, high[n]);
    }
  }
}

// weighted_values for rows [n, n + QG), over the keys any of them weighs.
template <int QG, typename T>
void values_of_group(const float* w, int64_t stride, const T* vh, int64_t d, const int64_t* first,
                     const int64_t* end, float* acc) {
  int64_t begin = INT64_MAX, stop = 0;
  for (int m = 0; m < QG; ++m) {
    if (end[m] > first[m]) {
      begin = std::min(begin, first[m]);
      stop = std::max(stop, end[m]);
    }
  }
  weighted_values<QG>(w, stride, vh, d, std::min(begin, stop), stop, acc);
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

// A decoder layer's attention after its q/k/v projection, as skinny.cpp's ``attend_of`` (same arguments and
// layout, T Bf16 or float; ``amx`` must be false here).
template <typename T>
at::Tensor attend_of(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& cache_k,
                     const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask, bool amx) {
  const int64_t batch = qkv.size(0), count = qkv.size(1), d = qkv.size(3);
  const int64_t kv = cache_k.size(1), heads = qkv.size(2) - 2 * kv, groups = heads / kv, span = mask.size(-1);
  TORCH_CHECK(!amx, "attend: built without AMX");
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
      scores(queries, rows, kp + cache, reach, d, w.data(), stride);
      int64_t first[kRows] = {}, last[kRows] = {};
      float total[kRows];
      for (int64_t r = 0; r < rows; ++r) {
        softmax_row(w.data() + r * stride, masks + r * span, reach, scale, first[r], last[r], total[r]);
      }
      values_of_rows(w.data(), stride, rows, vp + cache, d, first, last, acc.data());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r, g = n / count, t = n % count;
        const __m256 norm = _mm256_set1_ps(total[r] > 0.0f ? 1.0f / total[r] : 0.0f);
        T* o = op + (b * count + t) * heads * d + (h * groups + g) * d;
        for (int64_t i = 0; i < d; i += 8) store8(o + i, _mm256_mul_ps(_mm256_loadu_ps(acc.data() + r * d + i), norm));
      }
    }
  });
  return out;
}

// One row of layer.h's silu_mul: gate [I] then up [I] in, silu(gate) * up in fp32 out, stored as T once.
template <typename T>
inline void silu_mul_row(const T* gate_up, int64_t width, T* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < width; i += 8) {
    const __m256 gate = widen(gate_up + i), up = widen(gate_up + width + i);
    const __m256 silu = _mm256_div_ps(gate, _mm256_add_ps(one, exp_lanes(_mm256_sub_ps(_mm256_setzero_ps(), gate))));
    store8(out + i, _mm256_mul_ps(silu, up));
  }
}

// One row of layer.h's rms_norm: the mean square in fp32 (8 lanes in input order, one fixed reduction),
// then x / sqrt(mean + eps) * w in fp32, stored as T once.
template <typename T>
inline void norm_row(const T* xr, const T* wp, int64_t d, double eps, T* out) {
  __m256 squares = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; c += 8) {
    const __m256 v = widen(xr + c);
    squares = _mm256_fmadd_ps(v, v, squares);
  }
  const float mean = lanes_total(squares) / static_cast<float>(d);
  const __m256 inverse = _mm256_set1_ps(1.0f / std::sqrt(mean + static_cast<float>(eps)));
  for (int64_t c = 0; c < d; c += 8) store8(out + c, _mm256_mul_ps(_mm256_mul_ps(widen(xr + c), inverse), widen(wp + c)));
}

// One row's argmax as torch gives it: the first NaN if the row holds one, else the first index of its
// largest value. Two passes, the second over the row still in cache.
template <typename T>
int64_t row_argmax(const T* x, int64_t n) {
  const int64_t whole = n / 8 * 8;
  __m256 top = _mm256_set1_ps(-INFINITY);
  __m256 nan = _mm256_setzero_ps();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 v = widen(x + i);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    top = _mm256_max_ps(top, v);
  }
  alignas(32) float tops[8];
  _mm256_store_ps(tops, top);
  float highest = *std::max_element(tops, tops + 8);
  bool any_nan = _mm256_movemask_ps(nan) != 0;
  for (int64_t i = whole; i < n; ++i) {
    const float v = static_cast<float>(x[i]);
    any_nan = any_nan || std::isnan(v);
    highest = std::max(highest, v);
  }
  if (any_nan) {
    for (int64_t i = 0; i < n; ++i)
      if (std::isnan(static_cast<float>(x[i]))) return i;
  }
  const __m256 best = _mm256_set1_ps(highest);
  for (int64_t i = 0; i < whole; i += 8) {
    const uint32_t hit = _mm256_movemask_ps(_mm256_cmp_ps(widen(x + i), best, _CMP_EQ_OQ));
    if (hit) return i + __builtin_ctz(hit);
  }
  for (int64_t i = whole; i < n; ++i)
    if (static_cast<float>(x[i]) == highest) return i;
  return 0;
}

// ``x @ w.T`` for a layer's weight (no AMX tiles here), as layer.h's decoder layer takes it.
at::Tensor project(const at::Tensor& x, const at::Tensor& weight, int64_t n, bool tiles) {
  TORCH_CHECK(!tiles && weight.size(0) == n, "layer: built without AMX");
  return product(x, weight);
}

#include "layer.h"
#endif

bool skinny_supports(at::ScalarType dtype) {
#if defined(__AVX2__) && defined(__FMA__)
  return dtype == at::kBFloat16 || dtype == at::kFloat;
#else
  return false;
#endif
}

bool skinny_amx() { return false; }

}  // namespace

TORCH_LIBRARY(borealis_skinny, m) { skinny::define_ops(m); }

#if defined(__AVX2__) && defined(__FMA__)
TORCH_LIBRARY_IMPL(borealis_skinny, CPU, m) {
  m.impl("linear", &product);
  implement_ops(m);
}
#endif

TORCH_LIBRARY_IMPL(borealis_skinny, CatchAll, m) {
  m.impl("supports", &skinny_supports);
  m.impl("amx", &skinny_amx);
}
