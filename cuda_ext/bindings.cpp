// Python bindings of the fused hash-grid encoding: argument checks, the level table, and the
// dispatch to the CPU or CUDA implementation. Wrapped by sds3d/cuda_ext/__init__.py.
#include <torch/extension.h>

#include <vector>

#include "hash_grid_ops.h"

namespace sds3d_hash_grid {
namespace {

Levels make_levels(const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions, int64_t rows) {
  const int64_t n_levels = static_cast<int64_t>(resolutions.size());
  TORCH_CHECK(n_levels >= 1 && n_levels <= kMaxLevels, "hash grid: need 1 to ", kMaxLevels, " levels, got ",
              n_levels);
  TORCH_CHECK(static_cast<int64_t>(offsets.size()) == n_levels + 1, "hash grid: offsets must have L + 1 entries");
  TORCH_CHECK(offsets.back() == rows, "hash grid: offsets[-1] (", offsets.back(), ") != embedding rows (", rows, ")");
  Levels levels{};
  levels.n_levels = static_cast<int32_t>(n_levels);
  for (int64_t l = 0; l < n_levels; ++l) {
    const int64_t res = resolutions[l], size = offsets[l + 1] - offsets[l];
    TORCH_CHECK(res >= 1, "hash grid: resolutions must be >= 1");
    // Same rule as _torch_impl.level_is_dense.
    const bool dense = (res + 1) * (res + 1) * (res + 1) <= size;
    TORCH_CHECK(dense || (size > 0 && (size & (size - 1)) == 0 && size <= (int64_t(1) << 32)),
                "hash grid: hashed level ", l, " needs a power-of-two table size <= 2^32, got ", size);
    levels.level[l] = Level{offsets[l], size, static_cast<int32_t>(res), dense ? 1 : 0};
  }
  return levels;
}

void check_inputs(const at::Tensor& x, const at::Tensor& embeddings) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "hash grid: x must be (N, 3)");
  TORCH_CHECK(embeddings.dim() == 2, "hash grid: embeddings must be (rows, F)");
  TORCH_CHECK(x.scalar_type() == embeddings.scalar_type(), "hash grid: x and embeddings must share a dtype");
  TORCH_CHECK(x.device() == embeddings.device(), "hash grid: x and embeddings must be on one device");
  TORCH_CHECK(x.is_contiguous() && embeddings.is_contiguous(), "hash grid: inputs must be contiguous");
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& embeddings, const std::vector<int64_t>& offsets,
                   const std::vector<int64_t>& resolutions) {
  check_inputs(x, embeddings);
  const Levels levels = make_levels(offsets, resolutions, embeddings.size(0));
  if (x.is_cuda()) {
#ifdef SDS3D_WITH_CUDA
    return forward_cuda(x, embeddings, levels);
#else
    TORCH_CHECK(false, "hash grid: this build of sds3d.cuda_ext has no CUDA target");
#endif
  }
  return forward_cpu(x, embeddings, levels);
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& x,
                                            const at::Tensor& embeddings, const std::vector<int64_t>& offsets,
                                            const std::vector<int64_t>& resolutions, bool need_grad_x) {
  check_inputs(x, embeddings);
  const Levels levels = make_levels(offsets, resolutions, embeddings.size(0));
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.size(0) == x.size(0) &&
                  grad_out.size(1) == levels.n_levels * embeddings.size(1),
              "hash grid: grad_out must be contiguous (N, L * F)");
  if (x.is_cuda()) {
#ifdef SDS3D_WITH_CUDA
    return backward_cuda(grad_out, x, embeddings, levels, need_grad_x);
#else
    TORCH_CHECK(false, "hash grid: this build of sds3d.cuda_ext has no CUDA target");
#endif
  }
  return backward_cpu(grad_out, x, embeddings, levels, need_grad_x);
}

}  // namespace
}  // namespace sds3d_hash_grid

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sds3d fused multi-resolution hash encoding (CPU and CUDA)";
  m.def("hash_grid_encode_forward", &sds3d_hash_grid::forward, "x (N,3), embeddings (rows,F) -> (N, L*F)");
  m.def("hash_grid_encode_backward", &sds3d_hash_grid::backward,
        "grad_out (N,L*F) -> (grad_embeddings, grad_x or None)");
  m.def("with_cuda", []() {
#ifdef SDS3D_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
