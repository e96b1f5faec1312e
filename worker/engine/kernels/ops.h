// What skinny.cpp and skinny_avx2.cpp share at their top: the operations' schema (one for every CPU; an
// operation a build cannot serve is defined and left without a CPU implementation), a product's output
// shape, and attention's checks and its rotation and cache writes.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace skinny {

// ``x``'s shape with its last dimension ``n``: a product's output for ``x``'s leading dimensions.
inline std::vector<int64_t> output_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
}

// The shapes and dtypes every build's ``attend`` takes (see skinny.cpp's): qkv [B, T, H + 2 KV, D], rotary
// tables and cache all bf16 or all fp32 (a float32 model's), an fp32 mask [B, 1, G T, S] over a span the
// cache holds.
inline void check_attend(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& cache_k,
                         const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask) {
  const int64_t batch = qkv.size(0), count = qkv.size(1), d = qkv.size(3);
  const int64_t kv = cache_k.size(1), heads = qkv.size(2) - 2 * kv, groups = heads / kv, span = mask.size(-1);
  const at::ScalarType dtype = qkv.scalar_type();
  TORCH_CHECK((dtype == at::kBFloat16 || dtype == at::kFloat) && cache_k.scalar_type() == dtype &&
                  cache_v.scalar_type() == dtype && cos.scalar_type() == dtype && mask.scalar_type() == at::kFloat,
              "attend: bf16 or fp32 throughout, an fp32 mask");
  TORCH_CHECK(d % 32 == 0 && heads % kv == 0 && cache_k.is_contiguous() && cache_v.is_contiguous() &&
                  flat_index.numel() == batch * kv * count && mask.size(-2) == groups * count &&
                  span <= cache_k.size(2), "attend: shapes");
}

// What every build's ``attend`` does before attending: rotary on the step's queries and keys (``rotate``
// one head vector, as the build computes it: ``rotate(x, cos, sin, d, out)``), and the new keys and values
// written to the cache rows ``flat_index`` gives ([B, KV, T] of the cache viewed as [B KV L, D]).
// Returns the rotated queries [B, T, H, D]. ``T``: the element type (c10::BFloat16 or float).
template <typename T, typename Rotate>
at::Tensor rotate_into_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                             const at::Tensor& cache_k, const at::Tensor& cache_v, const at::Tensor& flat_index,
                             Rotate rotate) {
  const int64_t batch = qkv.size(0), count = qkv.size(1), d = qkv.size(3);
  const int64_t kv = cache_k.size(1), heads = qkv.size(2) - 2 * kv;
  const at::Tensor x = qkv.contiguous(), c = cos.contiguous(), sn = sin.contiguous();
  const at::Tensor index = flat_index.to(at::kLong).contiguous();
  at::Tensor q = at::empty({batch, count, heads, d}, qkv.options());
  const auto* xp = x.data_ptr<T>();
  const auto* cp = c.data_ptr<T>();
  const auto* sp = sn.data_ptr<T>();
  const auto* ip = index.data_ptr<int64_t>();
  auto* qp = q.data_ptr<T>();
  auto* kp = cache_k.data_ptr<T>();
  auto* vp = cache_v.data_ptr<T>();
  const int64_t width = heads + 2 * kv;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < count; ++t) {
      const T* row = xp + (b * count + t) * width * d;
      const T* cr = cp + (b * count + t) * d;
      const T* sr = sp + (b * count + t) * d;
      for (int64_t h = 0; h < heads; ++h) rotate(row + h * d, cr, sr, d, qp + ((b * count + t) * heads + h) * d);
      for (int64_t h = 0; h < kv; ++h) {
        const int64_t at = ip[(b * kv + h) * count + t];
        rotate(row + (heads + h) * d, cr, sr, d, kp + at * d);
        std::copy(row + (heads + kv + h) * d, row + (heads + kv + h + 1) * d, vp + at * d);
      }
    }
  }
  return q;
}

// One past the last key that any of ``rows`` additive mask rows of ``span`` keys allows (-inf masks a
// key). The keys past it weigh exactly 0 in every row, so attention scores no further: a prompt's early
// rows see a short prefix of its span.
inline int64_t mask_reach(const float* mask, int64_t rows, int64_t span) {
  int64_t reach = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = mask + r * span;
    int64_t end = span;
    while (end > reach && row[end - 1] == -INFINITY) --end;
    reach = std::max(reach, end);
  }
  return reach;
}

inline void define_ops(torch::Library& m) {
  m.def("linear(Tensor x, Tensor weight) -> Tensor");
  m.def("linear_q4(Tensor x, Tensor codes, Tensor scales, Tensor mins) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def(
      "attend(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor flat_index, "
      "Tensor mask, bool amx) -> Tensor");
  m.def("argmax(Tensor x) -> Tensor");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
  m.def(
      "decoder_layer(Tensor x, Tensor input_norm, Tensor post_norm, float eps, Tensor[] weights, int[] outputs, "
      "int form, bool amx, Tensor cos, Tensor sin, Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor flat_index, "
      "Tensor mask, Tensor? rows, Tensor? normed=None) -> Tensor");
  m.def(
      "decoder_layers(Tensor x, Tensor[] norms, float eps, Tensor[] weights, int[] outputs, int form, bool amx, "
      "Tensor cos, Tensor sin, Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor flat_index, Tensor mask, "
      "Tensor? rows, int[] features) -> (Tensor, Tensor)");
  m.def("supports(ScalarType dtype) -> bool");
  m.def("amx() -> bool");
  m.def("linear_amx(Tensor x, Tensor packed, int n) -> Tensor");
}

}  // namespace skinny
