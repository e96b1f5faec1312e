// What skinny.cpp and skinny_avx2.cpp share at their end, written once over the functions each defines
// before including it for its own CPU (silu_mul_row, norm_row, row_argmax, kBlock, kGroup,
// dequantize_block, bf16_block, project, attend_of): the row-wise operations, attention's dtype dispatch,
// 4-bit products, each row's argmax, a whole decoder layer in one call, and their registration.
#pragma once

// silu(gate) * up of rows [.., 2 I] holding gate then up, in fp32, rounded to the rows' dtype once (bf16 or
// fp32, a float32 model's): one call where torch took four (chunk, silu, mul, and the copy the next product
// made of the strided halves).
template <typename T>
at::Tensor silu_mul_of(const at::Tensor& gate_up) {
  const int64_t width = gate_up.size(-1) / 2;
  TORCH_CHECK(gate_up.size(-1) == 2 * width && width % 16 == 0, "silu_mul: rows of gate then up, each a multiple of 16 wide");
  const at::Tensor flat = gate_up.reshape({-1, 2 * width}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty({rows, width}, flat.options());
  const auto* xp = flat.data_ptr<T>();
  auto* op = out.data_ptr<T>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) silu_mul_row(xp + r * 2 * width, width, op + r * width);
  });
  return out.view(output_shape(gate_up, width));
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  if (gate_up.scalar_type() == at::kFloat) return silu_mul_of<float>(gate_up);
  TORCH_CHECK(gate_up.scalar_type() == at::kBFloat16, "silu_mul: bf16 or fp32 rows");
  return silu_mul_of<c10::BFloat16>(gate_up);
}

// RMS norm of rows scaled by a ``weight`` of their dtype (bf16 or fp32; norm_row), each row's result from
// that row alone: one call instead of torch's half dozen ops per norm.
template <typename T>
at::Tensor rms_norm_of(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t d = x.size(-1);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && d % 16 == 0 && weight.numel() == d && weight.is_contiguous(),
              "rms_norm: a weight of the rows' dtype, width a multiple of 16");
  const at::Tensor flat = x.reshape({-1, d}).contiguous();
  const int64_t rows = flat.size(0);
  at::Tensor out = at::empty_like(flat);
  const auto* xp = flat.data_ptr<T>();
  const auto* wp = weight.data_ptr<T>();
  auto* op = out.data_ptr<T>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) norm_row(xp + r * d, wp, d, eps, op + r * d);
  });
  return out.view(x.sizes());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (x.scalar_type() == at::kFloat) return rms_norm_of<float>(x, weight, eps);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "rms_norm: bf16 or fp32 rows");
  return rms_norm_of<c10::BFloat16>(x, weight, eps);
}

// A decoder layer's attention after its projection (the source's ``attend_of``) for bf16 or fp32 rows.
at::Tensor attend(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& cache_k,
                  const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask, bool amx) {
  skinny::check_attend(qkv, cos, cache_k, cache_v, flat_index, mask);
  if (qkv.scalar_type() == at::kFloat) {
    TORCH_CHECK(!amx, "attend: AMX tiles take bf16 only");
    return attend_of<float>(qkv, cos, sin, cache_k, cache_v, flat_index, mask, false);
  }
  return attend_of<c10::BFloat16>(qkv, cos, sin, cache_k, cache_v, flat_index, mask, amx);
}

// ``x @ w.T`` for 4-bit weights in Q4_1's layout (see skinny.cpp's dequantize_block): each kBlock-row block
// dequantized to bf16 and multiplied as a bf16 weight is, the same values and order for any number of rows.
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
      bf16_block(weights.data(), xp, o, rows, k, n, n0);
    }
  });
  return out.view(output_shape(x, n));
}

// Each row's argmax of bf16 or fp32 rows [rows, n]: torch's took 170 us per 49k-entry row of logits here, a
// twentieth of a one-row step and more of a verification step's.
template <typename T>
at::Tensor argmax_of(const at::Tensor& x) {
  const at::Tensor flat = x.contiguous();
  const int64_t rows = flat.size(0), n = flat.size(1);
  at::Tensor out = at::empty({rows}, flat.options().dtype(at::kLong));
  const auto* xp = flat.data_ptr<T>();
  auto* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) op[r] = row_argmax(xp + r * n, n);
  });
  return out;
}

at::Tensor argmax_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0, "argmax: rows [rows, n > 0]");
  if (x.scalar_type() == at::kFloat) return argmax_of<float>(x);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "argmax: bf16 or fp32 rows");
  return argmax_of<c10::BFloat16>(x);
}

// How a layer's four weights are held (``form``): plain [n, K] for the vector product, AMX tiles, or 4-bit
// codes in torch's int4 layout with their scales and zeros (two tensors a weight, torch's int4 kernel,
// which computes each output row from its own input row too).
constexpr int64_t kVectorForm = 0, kTilesForm = 1, kInt4Form = 2;

// ``x @ w.T`` for the layer's weight ``i`` of ``n`` outputs, in its form.
at::Tensor layer_product(const at::Tensor& x, at::TensorList weights, int64_t i, int64_t n, int64_t form) {
  if (form == kInt4Form) {
    const at::Tensor flat = x.reshape({-1, x.size(-1)}).contiguous();
    return at::_weight_int4pack_mm_for_cpu(flat, weights[2 * i], kGroup, weights[2 * i + 1]).view(output_shape(x, n));
  }
  return project(x, weights[i], n, form == kTilesForm);
}

// A decoder layer of a model whose products these kernels serve (bf16 or fp32, or int4 weights with bf16
// activations), in one call: the composition in worker/engine/llama.py (norm, q/k/v, attention, out +
// residual, norm, gate/up, silu(gate) * up, down + residual) op for op, the residual adds torch's own, so
// the result is the same bits, without a Python round trip per op (about 1.7 ms of a SmolLM2 step went to
// the interpreter and dispatch). ``weights``: qkv, out, gate_up, down in ``form`` (see kVectorForm);
// ``amx``: attention's scores in AMX tiles. ``rows`` as in LlamaModel.forward: x holds those rows of the
// [B, T] step; attention runs padded. ``normed``: the attention's input where it is not the input norm of
// ``x`` (an EAGLE-3 draft layer reads its normed token embedding beside its normed hidden state, ``x``
// being the residual).
at::Tensor decoder_layer(const at::Tensor& x, const at::Tensor& input_norm, const at::Tensor& post_norm, double eps,
                         at::TensorList weights, c10::IntArrayRef outputs, int64_t form, bool amx,
                         const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& cache_k,
                         const at::Tensor& cache_v, const at::Tensor& flat_index, const at::Tensor& mask,
                         const c10::optional<at::Tensor>& rows, const c10::optional<at::Tensor>& normed) {
  TORCH_CHECK(outputs.size() == 4, "layer: the output widths of qkv, out, gate_up and down");
  TORCH_CHECK(form >= kVectorForm && form <= kInt4Form && weights.size() == (form == kInt4Form ? 8u : 4u),
              "layer: four weights (int4: codes and scales of each) in a known form");
  const int64_t batch = cos.size(0), count = cos.size(1), d = cos.size(3);
  at::Tensor q = layer_product(normed.has_value() ? *normed : rms_norm(x, input_norm, eps), weights, 0, outputs[0], form);
  if (rows.has_value()) {  // padding rows get zeros: only their own row attends to them
    const at::Tensor packed = q.view({-1, outputs[0]});
    q = at::zeros({batch * count, outputs[0]}, q.options()).index_copy_(0, *rows, packed);
  }
  TORCH_CHECK(outputs[0] % d == 0 && outputs[0] / d > 2 * cache_k.size(1), "layer: q/k/v width");
  at::Tensor attn = attend(q.view({batch, count, outputs[0] / d, d}), cos, sin, cache_k, cache_v, flat_index, mask, amx);
  if (rows.has_value()) attn = attn.view({batch * count, -1}).index_select(0, *rows).view({x.size(0), x.size(1), -1});
  const at::Tensor h = x + layer_product(attn, weights, 1, outputs[1], form);
  const at::Tensor gate_up = layer_product(rms_norm(h, post_norm, eps), weights, 2, outputs[2], form);
  return h + layer_product(silu_mul(gate_up), weights, 3, outputs[3], form);
}

// Every decoder layer of a model in one call: ``decoder_layer`` over each in turn, layer i's norms being
// norms[2 i] and norms[2 i + 1], its weights the i-th run of four (eight in int4 form) in ``weights``, its
// cache cache_k[i] and cache_v[i] ([layers, B, KV, L, D], the step's slots). Returns the last layer's output
// and the outputs of the ``features`` layers side by side (the draft's features), as the model's Python loop
// over ``decoder_layer`` did: the same bits, without the interpreter's round trip per layer.
std::tuple<at::Tensor, at::Tensor> decoder_layers(const at::Tensor& x, at::TensorList norms, double eps,
                                                  at::TensorList weights, c10::IntArrayRef outputs, int64_t form,
                                                  bool amx, const at::Tensor& cos, const at::Tensor& sin,
                                                  const at::Tensor& cache_k, const at::Tensor& cache_v,
                                                  const at::Tensor& flat_index, const at::Tensor& mask,
                                                  const c10::optional<at::Tensor>& rows, c10::IntArrayRef features) {
  const int64_t layers = cache_k.size(0), per_layer = form == kInt4Form ? 8 : 4;
  TORCH_CHECK(cache_v.size(0) == layers && static_cast<int64_t>(norms.size()) == 2 * layers &&
                  static_cast<int64_t>(weights.size()) == per_layer * layers,
              "layers: two norms and the weights of each cached layer");
  TORCH_CHECK(!features.empty() && std::all_of(features.begin(), features.end(),
                                               [&](int64_t f) { return f >= 0 && f < layers; }),
              "layers: feature layers among the layers");
  std::vector<at::Tensor> featured(features.size());
  at::Tensor h = x;
  for (int64_t i = 0; i < layers; ++i) {
    h = decoder_layer(h, norms[2 * i], norms[2 * i + 1], eps, weights.slice(i * per_layer, per_layer), outputs, form,
                      amx, cos, sin, cache_k[i], cache_v[i], flat_index, mask, rows, c10::nullopt);
    for (size_t j = 0; j < features.size(); ++j)
      if (features[j] == i) featured[j] = h;
  }
  return {h, at::cat(featured, -1)};
}

// The CPU implementations every build registers, beside its own ``linear``.
inline void implement_ops(torch::Library& m) {
  m.impl("linear_q4", &q4_linear);
  m.impl("rms_norm", &rms_norm);
  m.impl("attend", &attend);
  m.impl("argmax", &argmax_rows);
  m.impl("silu_mul", &silu_mul);
  m.impl("decoder_layer", &decoder_layer);
  m.impl("decoder_layers", &decoder_layers);
}
