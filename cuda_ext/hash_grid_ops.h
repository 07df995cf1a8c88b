// Declarations of the per-device entry points (CPU: hash_grid_cpu.cpp, CUDA: hash_grid_cuda.cu),
// called by the device dispatch in bindings.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "hash_grid.h"

namespace sds3d_hash_grid {

// x: (N, 3), embeddings: (rows, F), both contiguous and of one floating dtype -> (N, L * F).
at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& embeddings, const Levels& levels);
// grad_out: (N, L * F) -> (d/d embeddings (rows, F), d/dx (N, 3) or an undefined tensor).
std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                const at::Tensor& embeddings, const Levels& levels,
                                                bool need_grad_x);

#ifdef SDS3D_WITH_CUDA
at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& embeddings, const Levels& levels);
std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                 const at::Tensor& embeddings, const Levels& levels,
                                                 bool need_grad_x);
#endif

}  // namespace sds3d_hash_grid
