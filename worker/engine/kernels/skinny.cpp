// The engine's bf16 kernels for the skinny shapes of decoding and verification (AVX-512, AMX where the
// CPU has it): x @ w.T for bf16 weights and for 4-bit Q4_1 weights, RMS norm, and a layer's rotary,
// cache writes and attention in one call. Every output row depends on its own input row alone, bit for
// bit, so decoding a token and verifying it among many rows round alike.
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

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;  // weight rows per block: one reduction tree, one 16-lane store

std::vector<int64_t> output_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
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
      _mm_prefetch(reinterpret_cast<const char*>(w[a] + RN * k + i), _MM_HINT_T0);  // the next RN rows
      const auto wv = F::load(w[a] + i);
#pragma GCC unroll 16
      for (int b = 0; b < RM; ++b) acc[b * RN + a] = F::dot(acc[b * RN + a], wv, xv[b]);
    }
  }
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
  for (; m < rows; ++m) {
    const S* const xs[1] = {x + m * k};
    tile<F, kBlock, 1>(reinterpret_cast<const S* const (&)[kBlock]>(ws), xs, k, acc);
    F::store(out + m * n + n0, lane_sums(acc), static_cast<__mmask16>((1u << width) - 1));
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
      const __mmask16 live = static_cast<__mmask16>((1u << count) - 1);
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

at::Tensor q4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins) {
  const int64_t k = x.size(-1);
  const int64_t n = codes.size(0);
  const int64_t groups = k / kGroup;
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && k % kGroup == 0, "q4: bf16 input, K a multiple of 32");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.size(1) * 2 == k && codes.is_contiguous(), "q4: codes");
  TORCH_CHECK(scales.scalar_type() == at::kHalf && mins.scalar_type() == at::kHalf && scales.size(1) == groups &&
                  scales.is_contiguous() && mins.is_contiguous(), "q4: fp16 scales and minimums per group");
  const at::Tensor flat = x.reshape({-1, k}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty({rows, n}, flat.options());
  const auto* xp = flat.data_ptr<c10::BFloat16>();
  auto* o = out.data_ptr<c10::BFloat16>();
  const auto* c = codes.data_ptr<uint8_t>();
  const auto* sc = scales.data_ptr<at::Half>();
  const auto* mn = mins.data_ptr<at::Half>();
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    std::vector<c10::BFloat16> weights(kBlock * k);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kBlock;
      const int64_t width = std::min<int64_t>(kBlock, n - n0);
      dequantize_block(c + n0 * (k / 2), sc + n0 * groups, mn + n0 * groups, k, width, weights.data());
      block<BFloat16>(weights.data(), xp, o, rows, k, n, n0);
    }
  });
  return out.view(output_shape(x, n));
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

// tile 0: outputs [rows, 16] fp32; tile 1: inputs [rows, 32] bf16; tile 2: weights [16 pairs, 32] bf16
inline void configure(int64_t rows) {
  TileConfig config;
  config.rows[0] = config.rows[1] = static_cast<uint8_t>(rows);
  config.rows[2] = 16;
  config.colsb[0] = config.colsb[1] = config.colsb[2] = 64;
  _tile_loadconfig(&config);
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
  at::Tensor out = at::empty({rows, n}, flat.options());
  const auto* xp = flat.data_ptr<c10::BFloat16>();
  const auto* wp = packed.data_ptr<c10::BFloat16>();
  auto* op = out.data_ptr<c10::BFloat16>();
  // full 16-row chunks first, then the rest: one tile configuration each, whatever the weight blocks
  const int64_t full = rows / kBlock * kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float sums[kBlock * kBlock];
    for (const auto [first, last] : {std::pair{int64_t{0}, full}, std::pair{full, rows}}) {
      if (first == last) continue;
      const int64_t count = std::min<int64_t>(kBlock, last - first);
      configure(count);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t width = std::min<int64_t>(kBlock, n - b * kBlock);
        const __mmask16 live = static_cast<__mmask16>((1u << width) - 1);
        for (int64_t m = first; m < last; m += count) {
          _tile_zero(0);
          for (int64_t c = 0; c < chunks; ++c) {
            _tile_loadd(1, xp + m * k + c * 32, k * 2);
            _tile_loadd(2, wp + (b * chunks + c) * 512, 64);
            _tile_dpbf16ps(0, 1, 2);
          }
          _tile_stored(0, sums, 64);
          for (int64_t r = 0; r < count; ++r) {
            _mm256_mask_storeu_epi16(op + (m + r) * n + b * kBlock, live,
                                     (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(sums + r * kBlock)));
          }
        }
      }
    }
    _tile_release();
  });
  return out.view(output_shape(x, n));
}
#endif

// Attention for bf16 queries, keys and values, one query row at a time: scores in fp32 (each a 64-lane
// dot product reduced by one fixed tree), a softmax over the allowed keys in key order, and the
// weighted sum of values in key order, rounded to bf16 once. A row's result depends on its own query
// and the keys its mask allows, never on how many rows share the call or how far the span is padded.
inline float dot_bf16(const c10::BFloat16* a, const c10::BFloat16* b, int64_t d) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 32) {
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(a + i), (__m512bh)_mm512_loadu_si512(b + i));
  }
  return _mm512_reduce_add_ps(acc);
}

inline __m512 widen(const c10::BFloat16* p) {  // 16 bf16 -> 16 fp32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// One query row's attention over a head's keys kh and values vh ([span, d]) under an additive mask row mr.
inline void attend_row(const c10::BFloat16* qr, const c10::BFloat16* kh, const c10::BFloat16* vh, const float* mr,
                       int64_t span, int64_t d, float scale, float* weights, __m512* acc, c10::BFloat16* out) {
  float top = -INFINITY;
  for (int64_t j = 0; j < span; ++j) {
    if (std::isinf(mr[j]) && mr[j] < 0) continue;
    weights[j] = dot_bf16(qr, kh + j * d, d) * scale + mr[j];
    top = std::fmax(top, weights[j]);
  }
  for (int64_t c = 0; c < d / 16; ++c) acc[c] = _mm512_setzero_ps();
  float total = 0.0f;
  for (int64_t j = 0; j < span; ++j) {
    if (std::isinf(mr[j]) && mr[j] < 0) continue;
    const float p = std::exp(weights[j] - top);
    total += p;
    const __m512 pv = _mm512_set1_ps(p);
    const c10::BFloat16* vr = vh + j * d;
    for (int64_t c = 0; c < d / 16; ++c) acc[c] = _mm512_fmadd_ps(pv, widen(vr + c * 16), acc[c]);
  }
  const __m512 norm = _mm512_set1_ps(total > 0.0f ? 1.0f / total : 0.0f);
  for (int64_t c = 0; c < d / 16; ++c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c * 16),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[c], norm)));
  }
}

// Rotary embedding of one head vector (Hugging Face's halves layout) in fp32, rounded to bf16 once.
inline void rotate(const c10::BFloat16* x, const c10::BFloat16* cos, const c10::BFloat16* sin, int64_t d,
                   c10::BFloat16* out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; i += 16) {
    const __m512 a = widen(x + i), b = widen(x + half + i);
    const __m512 first = _mm512_fmsub_ps(a, widen(cos + i), _mm512_mul_ps(b, widen(sin + i)));
    const __m512 second = _mm512_fmadd_ps(b, widen(cos + half + i), _mm512_mul_ps(a, widen(sin + half + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(first));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + half + i), (__m256i)_mm512_cvtneps_pbh(second));
  }
}

// A decoder layer's attention after its q/k/v projection, in one call: rotary on queries and keys, the
// new keys and values written to the cache rows ``flat_index`` gives, then every query row attends as
// one query row at a time does. qkv [B, T, H + 2 KV, D]; cos, sin [B, T, 1, D]; cache_k, cache_v
// [B, KV, L, D] contiguous; flat_index [B, KV, T] rows of the cache viewed as [B KV L, D]; mask
// [B, 1, G T, S] additive, query row g T + t. Returns [B, T, H D], head h = kv G + g.
at::Tensor attend(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& cache_k,
                  const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask) {
  const int64_t batch = qkv.size(0), count = qkv.size(1), d = qkv.size(3);
  const int64_t kv = cache_k.size(1), heads = qkv.size(2) - 2 * kv, groups = heads / kv, span = mask.size(-1);
  TORCH_CHECK(qkv.scalar_type() == at::kBFloat16 && cache_k.scalar_type() == at::kBFloat16 &&
                  cos.scalar_type() == at::kBFloat16 && mask.scalar_type() == at::kFloat, "attend: bf16, fp32 mask");
  TORCH_CHECK(d % 32 == 0 && heads % kv == 0 && cache_k.is_contiguous() && cache_v.is_contiguous() &&
                  flat_index.numel() == batch * kv * count && mask.size(-2) == groups * count &&
                  span <= cache_k.size(2), "attend: shapes");
  const at::Tensor x = qkv.contiguous(), c = cos.contiguous(), sn = sin.contiguous(), m = mask.contiguous();
  const at::Tensor index = flat_index.to(at::kLong).contiguous();
  at::Tensor q = at::empty({batch, count, heads, d}, qkv.options());
  const auto* xp = x.data_ptr<c10::BFloat16>();
  const auto* cp = c.data_ptr<c10::BFloat16>();
  const auto* sp = sn.data_ptr<c10::BFloat16>();
  const auto* ip = index.data_ptr<int64_t>();
  auto* qp = q.data_ptr<c10::BFloat16>();
  auto* kp = cache_k.data_ptr<c10::BFloat16>();
  auto* vp = cache_v.data_ptr<c10::BFloat16>();
  const int64_t width = heads + 2 * kv;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < count; ++t) {
      const c10::BFloat16* row = xp + (b * count + t) * width * d;
      const c10::BFloat16* cr = cp + (b * count + t) * d;
      const c10::BFloat16* sr = sp + (b * count + t) * d;
      for (int64_t h = 0; h < heads; ++h) rotate(row + h * d, cr, sr, d, qp + ((b * count + t) * heads + h) * d);
      for (int64_t h = 0; h < kv; ++h) {
        const int64_t at = ip[(b * kv + h) * count + t];
        rotate(row + (heads + h) * d, cr, sr, d, kp + at * d);
        std::copy(row + (heads + kv + h) * d, row + (heads + kv + h + 1) * d, vp + at * d);
      }
    }
  }
  at::Tensor out = at::empty({batch, count, heads * d}, qkv.options());
  const auto* mp = m.data_ptr<float>();
  auto* op = out.data_ptr<c10::BFloat16>();
  const int64_t length = cache_k.size(2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, batch * kv * groups * count, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weights(span);
    std::vector<__m512> acc(d / 16);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item % count, g = (item / count) % groups, h = (item / (count * groups)) % kv;
      const int64_t b = item / (count * groups * kv), head = h * groups + g;
      const int64_t cache = (b * kv + h) * length * d;
      attend_row(qp + ((b * count + t) * heads + head) * d, kp + cache, vp + cache,
                 mp + (b * groups * count + g * count + t) * span, span, d, scale, weights.data(), acc.data(),
                 op + (b * count + t) * heads * d + head * d);
    }
  });
  return out;
}

// RMS norm of bf16 rows: a row's mean square in fp32 (16 lanes in input order, one fixed reduction), then
// x / sqrt(mean + eps) * w in fp32, rounded to bf16 once. One call instead of torch's half dozen ops per
// norm, and a row's result depends on that row alone.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t d = x.size(-1);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16 && d % 16 == 0 &&
                  weight.numel() == d && weight.is_contiguous(), "rms_norm: bf16 rows, width a multiple of 16");
  const at::Tensor flat = x.reshape({-1, d}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty_like(flat);
  const auto* xp = flat.data_ptr<c10::BFloat16>();
  const auto* wp = weight.data_ptr<c10::BFloat16>();
  auto* op = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const c10::BFloat16* xr = xp + r * d;
      __m512 squares = _mm512_setzero_ps();
      for (int64_t c = 0; c < d; c += 16) {
        const __m512 v = widen(xr + c);
        squares = _mm512_fmadd_ps(v, v, squares);
      }
      const float mean = _mm512_reduce_add_ps(squares) / static_cast<float>(d);
      const __m512 inverse = _mm512_set1_ps(1.0f / std::sqrt(mean + static_cast<float>(eps)));
      for (int64_t c = 0; c < d; c += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(widen(xr + c), inverse), widen(wp + c));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(op + r * d + c), (__m256i)_mm512_cvtneps_pbh(v));
      }
    }
  });
  return out.view(x.sizes());
}

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "skinny: bf16 only");
  return product<BFloat16>(x, weight);
}
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
  return dtype == at::kBFloat16;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(borealis_skinny, m) {
  m.def("linear(Tensor x, Tensor weight) -> Tensor");
  m.def("linear_q4(Tensor x, Tensor codes, Tensor scales, Tensor mins) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("attend(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor flat_index, Tensor mask) -> Tensor");
  m.def("supports(ScalarType dtype) -> bool");
  m.def("amx() -> bool");
  m.def("linear_amx(Tensor x, Tensor packed, int n) -> Tensor");
}

#if defined(__AVX512BF16__)
TORCH_LIBRARY_IMPL(borealis_skinny, CPU, m) {
  m.impl("linear", &skinny_linear);
  m.impl("linear_q4", &q4_linear);
  m.impl("rms_norm", &rms_norm);
  m.impl("attend", &attend);
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
TORCH_LIBRARY_IMPL(borealis_skinny, CPU, m) { m.impl("linear_amx", &amx_linear); }
#endif

TORCH_LIBRARY_IMPL(borealis_skinny, CatchAll, m) {
  m.impl("supports", &skinny_supports);
  m.impl("amx", &skinny_amx);
}
