// CUDA implementation of the fused hash-grid encoding: one thread per (point, level) for the
// forward and the embedding gradient (scatter-add with atomicAdd), one thread per point for d/dx.
// c10's stream/guard headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers,
// which a minimal CUDA toolkit (nvcc + runtime) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "hash_grid_ops.h"

namespace sds3d_hash_grid {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, int F>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ embeddings,
                               const Levels levels, int n_features, int64_t n_points, scalar_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_points * levels.n_levels) return;
  const int64_t n = i / levels.n_levels;
  const int l = static_cast<int>(i % levels.n_levels);
  encode_point_level<scalar_t, F>(x + 3 * n, embeddings, levels.level[l], n_features,
                                  out + (n * levels.n_levels + l) * n_features);
}

template <typename scalar_t>
__global__ void backward_embeddings_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                           const Levels levels, int n_features, int64_t n_points,
                                           scalar_t* __restrict__ grad_embeddings) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_points * levels.n_levels) return;
  const int64_t n = i / levels.n_levels;
  const int l = static_cast<int>(i % levels.n_levels);
  const Level lv = levels.level[l];
  const Voxel<scalar_t> v = locate(x + 3 * n, lv.res);
  const scalar_t* g = grad_out + (n * levels.n_levels + l) * n_features;
  for (int corner = 0; corner < 8; ++corner) {
    const scalar_t w = corner_weight(v.frac, corner);
    scalar_t* row = grad_embeddings + (lv.start + vertex_index(v.cell, corner, lv)) * n_features;
    for (int f = 0; f < n_features; ++f) atomicAdd(row + f, w * g[f]);
  }
}

template <typename scalar_t>
__global__ void backward_x_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                  const scalar_t* __restrict__ embeddings, const Levels levels, int n_features,
                                  int64_t n_points, scalar_t* __restrict__ grad_x) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= n_points) return;
  scalar_t gx[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
  bool inside[3] = {true, true, true};
  for (int l = 0; l < levels.n_levels; ++l) {
    const Voxel<scalar_t> v = locate(x + 3 * n, levels.level[l].res);
    for (int k = 0; k < 3; ++k) inside[k] = v.inside[k];
    grad_x_point_level(v, embeddings, levels.level[l], n_features,
                       grad_out + (n * levels.n_levels + l) * n_features, gx);
  }
  for (int k = 0; k < 3; ++k) grad_x[3 * n + k] = inside[k] ? gx[k] : scalar_t(0);
}

int64_t blocks_for(int64_t work) { return (work + kThreads - 1) / kThreads; }

}  // namespace

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& embeddings, const Levels& levels) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_points = x.size(0);
  const int n_features = static_cast<int>(embeddings.size(1));
  at::Tensor out = at::empty({n_points, levels.n_levels * n_features}, x.options());
  const int64_t work = n_points * levels.n_levels;
  if (work == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_grid_forward_cuda", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ep = embeddings.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    switch (n_features) {
      case 1: forward_kernel<scalar_t, 1><<<blocks_for(work), kThreads, 0, stream>>>(xp, ep, levels, 1, n_points, op); break;
      case 2: forward_kernel<scalar_t, 2><<<blocks_for(work), kThreads, 0, stream>>>(xp, ep, levels, 2, n_points, op); break;
      case 4: forward_kernel<scalar_t, 4><<<blocks_for(work), kThreads, 0, stream>>>(xp, ep, levels, 4, n_points, op); break;
      case 8: forward_kernel<scalar_t, 8><<<blocks_for(work), kThreads, 0, stream>>>(xp, ep, levels, 8, n_points, op); break;
      default:
        forward_kernel<scalar_t, 0><<<blocks_for(work), kThreads, 0, stream>>>(xp, ep, levels, n_features, n_points, op);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                 const at::Tensor& embeddings, const Levels& levels,
                                                 bool need_grad_x) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_points = x.size(0);
  const int n_features = static_cast<int>(embeddings.size(1));
  at::Tensor grad_embeddings = at::zeros_like(embeddings);
  at::Tensor grad_x;
  if (need_grad_x) grad_x = at::empty_like(x);
  if (n_points == 0) {
    if (need_grad_x) grad_x.zero_();
    return {grad_embeddings, grad_x};
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_grid_backward_cuda", [&] {
    const int64_t work = n_points * levels.n_levels;
    backward_embeddings_kernel<scalar_t><<<blocks_for(work), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), levels, n_features, n_points,
        grad_embeddings.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (need_grad_x) {
      backward_x_kernel<scalar_t><<<blocks_for(n_points), kThreads, 0, stream>>>(
          grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), embeddings.data_ptr<scalar_t>(), levels, n_features,
          n_points, grad_x.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_embeddings, grad_x};
}

}  // namespace sds3d_hash_grid
