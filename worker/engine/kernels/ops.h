// What skinny.cpp and skinny_avx2.cpp share at their top: the operations' schema (one for every CPU; an
// operation a build cannot serve is defined and left without a CPU implementation) and a helper.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace skinny {

// ``x``'s shape with its last dimension ``n``: a product's output for ``x``'s leading dimensions.
inline std::vector<int64_t> output_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
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
      "decoder_layer(Tensor x, Tensor input_norm, Tensor post_norm, float eps, Tensor qkv, Tensor out, "
      "Tensor gate_up, Tensor down, int[] outputs, bool tiles, Tensor cos, Tensor sin, Tensor(a!) cache_k, "
      "Tensor(b!) cache_v, Tensor flat_index, Tensor mask, Tensor? rows, Tensor? normed=None) -> Tensor");
  m.def("supports(ScalarType dtype) -> bool");
  m.def("amx() -> bool");
  m.def("linear_amx(Tensor x, Tensor packed, int n) -> Tensor");
}

}  // namespace skinny
