// What skinny.cpp and skinny_avx2.cpp share at their end, written once over the functions each defines
// before including it for its own CPU (row_argmax, project, rms_norm, attend, silu_mul): each row's argmax
// and a whole decoder layer in one call.
#pragma once

// Each row's argmax of bf16 rows [rows, n]: torch's took 170 us per 49k-entry row of logits here, a
// twentieth of a one-row step and more of a verification step's.
at::Tensor argmax_rows(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.size(1) > 0, "argmax: bf16 rows [rows, n > 0]");
  const at::Tensor flat = x.contiguous();
  const int64_t rows = flat.size(0), n = flat.size(1);
  at::Tensor out = at::empty({rows}, flat.options().dtype(at::kLong));
  const auto* xp = flat.data_ptr<c10::BFloat16>();
  auto* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) op[r] = row_argmax(xp + r * n, n);
  });
  return out;
}

// A decoder layer of a model whose bf16 products these kernels serve, in one call: the composition
// in worker/engine/llama.py (norm, q/k/v, attention, out + residual, norm, gate/up, silu(gate) * up,
// down + residual) op for op, the residual adds torch's own, so the result is the same bits, without a
// Python round trip per op (about 1.7 ms of a SmolLM2 step went to the interpreter and dispatch).
// ``rows`` as in LlamaModel.forward: x holds those rows of the [B, T] step; attention runs padded.
// ``normed``: the attention's input where it is not the input norm of ``x`` (an EAGLE-3 draft layer reads
// its normed token embedding beside its normed hidden state, ``x`` being the residual).
at::Tensor decoder_layer(const at::Tensor& x, const at::Tensor& input_norm, const at::Tensor& post_norm, double eps,
                         const at::Tensor& qkv, const at::Tensor& out, const at::Tensor& gate_up,
                         const at::Tensor& down, c10::IntArrayRef outputs, bool tiles, const at::Tensor& cos,
                         const at::Tensor& sin, const at::Tensor& cache_k, const at::Tensor& cache_v,
                         const at::Tensor& flat_index, const at::Tensor& mask,
                         const c10::optional<at::Tensor>& rows, const c10::optional<at::Tensor>& normed) {
  TORCH_CHECK(outputs.size() == 4, "layer: the output widths of qkv, out, gate_up and down");
  const int64_t batch = cos.size(0), count = cos.size(1), d = cos.size(3);
  at::Tensor q = project(normed.has_value() ? *normed : rms_norm(x, input_norm, eps), qkv, outputs[0], tiles);
  if (rows.has_value()) {  // padding rows get zeros: only their own row attends to them
    const at::Tensor packed = q.view({-1, outputs[0]});
    q = at::zeros({batch * count, outputs[0]}, q.options()).index_copy_(0, *rows, packed);
  }
  TORCH_CHECK(outputs[0] % d == 0 && outputs[0] / d > 2 * cache_k.size(1), "layer: q/k/v width");
  at::Tensor attn = attend(q.view({batch, count, outputs[0] / d, d}), cos, sin, cache_k, cache_v, flat_index, mask,
                           tiles);
  if (rows.has_value()) attn = attn.view({batch * count, -1}).index_select(0, *rows).view({x.size(0), x.size(1), -1});
  const at::Tensor h = x + project(attn, out, outputs[1], tiles);
  return h + project(silu_mul(project(rms_norm(h, post_norm, eps), gate_up, outputs[2], tiles)), down, outputs[3], tiles);
}
