// CPU implementation of the fused hash-grid encoding: at::parallel_for over points (forward, d/dx)
// and over levels (d/d embeddings: each level owns a disjoint slice of the table, so threads never
// write the same row -- no atomics, no per-thread copies, and the sums are deterministic).
#include <ATen/Parallel.h>

#include <vector>

#include "hash_grid_ops.h"

namespace sds3d_hash_grid {
namespace {

// Points per task; within a task the loop is level-outer so one level's table stays in cache.
constexpr int64_t kChunk = 512;

// Rows and weights of the 8 corners of kBlock points, computed (and prefetched) before they are
// read: the hashed tables are larger than the caches, so issuing all loads of a block first lets
// the misses overlap instead of serialising on each point's gather.
constexpr int kBlock = 16;

template <typename scalar_t>
struct CornerBlock {
  int64_t row[kBlock][8];
  scalar_t weight[kBlock][8];
};

template <typename scalar_t>
inline void locate_block(const scalar_t* x, int64_t begin, int count, const Level& lv, int nf, const scalar_t* table,
                         CornerBlock<scalar_t>& block) {
  for (int p = 0; p < count; ++p) {
    const Voxel<scalar_t> v = locate(x + 3 * (begin + p), lv.res);
    for (int corner = 0; corner < 8; ++corner) {
      const int64_t row = (lv.start + vertex_index(v.cell, corner, lv)) * nf;
      block.row[p][corner] = row;
      block.weight[p][corner] = corner_weight(v.frac, corner);
      __builtin_prefetch(table + row);
    }
  }
}

template <typename scalar_t, int F>
void forward_kernel(const scalar_t* x, const scalar_t* embeddings, const Levels& levels, int n_features,
                    int64_t n_points, scalar_t* out) {
  const int nf = F > 0 ? F : n_features;
  const int64_t stride = static_cast<int64_t>(levels.n_levels) * nf;
  at::parallel_for(0, (n_points + kChunk - 1) / kChunk, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    CornerBlock<scalar_t> block;
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      const int64_t begin = chunk * kChunk;
      const int64_t end = std::min(n_points, begin + kChunk);
      for (int l = 0; l < levels.n_levels; ++l) {
        const Level lv = levels.level[l];
        for (int64_t b = begin; b < end; b += kBlock) {
          const int count = static_cast<int>(std::min<int64_t>(kBlock, end - b));
          locate_block(x, b, count, lv, nf, embeddings, block);
          for (int p = 0; p < count; ++p) {
            scalar_t* o = out + (b + p) * stride + l * nf;
            if constexpr (F > 0) {
              scalar_t acc[F] = {};  // in registers: `o` may alias the table as far as the compiler knows
              for (int corner = 0; corner < 8; ++corner) {
                const scalar_t w = block.weight[p][corner];
                const scalar_t* row = embeddings + block.row[p][corner];
                for (int f = 0; f < F; ++f) acc[f] += w * row[f];
              }
              for (int f = 0; f < F; ++f) o[f] = acc[f];
            } else {
              for (int f = 0; f < nf; ++f) o[f] = scalar_t(0);
              for (int corner = 0; corner < 8; ++corner) {
                const scalar_t w = block.weight[p][corner];
                const scalar_t* row = embeddings + block.row[p][corner];
                for (int f = 0; f < nf; ++f) o[f] += w * row[f];
              }
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t, int F>
void backward_embeddings_kernel(const scalar_t* grad_out, const scalar_t* x, const Levels& levels, int n_features,
                                int64_t n_points, scalar_t* grad_embeddings) {
  const int nf = F > 0 ? F : n_features;
  const int n_levels = levels.n_levels;
  const int64_t stride = static_cast<int64_t>(n_levels) * nf;
  // Task i handles level order[i]; interleaving spreads the cheap dense (coarse) levels over the
  // contiguous blocks of tasks that at::parallel_for hands to each thread.
  const int n_threads = std::max(1, std::min<int>(at::get_num_threads(), n_levels));
  std::vector<int> order;
  for (int t = 0; t < n_threads; ++t)
    for (int l = t; l < n_levels; l += n_threads) order.push_back(l);
  at::parallel_for(0, n_levels, 1, [&](int64_t task_begin, int64_t task_end) {
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int l = order[task];
      const Level lv = levels.level[l];
      CornerBlock<scalar_t> block;
      for (int64_t b = 0; b < n_points; b += kBlock) {
        const int count = static_cast<int>(std::min<int64_t>(kBlock, n_points - b));
        locate_block(x, b, count, lv, nf, grad_embeddings, block);
        for (int p = 0; p < count; ++p) {
          const scalar_t* g = grad_out + (b + p) * stride + l * nf;
          for (int corner = 0; corner < 8; ++corner) {
            const scalar_t w = block.weight[p][corner];
            scalar_t* row = grad_embeddings + block.row[p][corner];
            for (int f = 0; f < nf; ++f) row[f] += w * g[f];
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_x_kernel(const scalar_t* grad_out, const scalar_t* x, const scalar_t* embeddings, const Levels& levels,
                       int n_features, int64_t n_points, scalar_t* grad_x) {
  const int64_t stride = static_cast<int64_t>(levels.n_levels) * n_features;
  at::parallel_for(0, n_points, kChunk, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      scalar_t gx[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
      bool inside[3] = {true, true, true};
      for (int l = 0; l < levels.n_levels; ++l) {
        const Voxel<scalar_t> v = locate(x + 3 * n, levels.level[l].res);
        for (int k = 0; k < 3; ++k) inside[k] = v.inside[k];
        grad_x_point_level(v, embeddings, levels.level[l], n_features, grad_out + n * stride + l * n_features, gx);
      }
      for (int k = 0; k < 3; ++k) grad_x[3 * n + k] = inside[k] ? gx[k] : scalar_t(0);
    }
  });
}

// Calls body.template operator()<F>() with F fixed for the common feature counts, 0 otherwise.
template <typename Body>
void dispatch_features(int n_features, Body&& body) {
  switch (n_features) {
    case 1: body(std::integral_constant<int, 1>()); break;
    case 2: body(std::integral_constant<int, 2>()); break;
    case 4: body(std::integral_constant<int, 4>()); break;
    case 8: body(std::integral_constant<int, 8>()); break;
    default: body(std::integral_constant<int, 0>()); break;
  }
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& embeddings, const Levels& levels) {
  const int64_t n_points = x.size(0);
  const int n_features = static_cast<int>(embeddings.size(1));
  at::Tensor out = at::empty({n_points, levels.n_levels * n_features}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_grid_forward_cpu", [&] {
    dispatch_features(n_features, [&](auto f) {
      forward_kernel<scalar_t, decltype(f)::value>(x.data_ptr<scalar_t>(), embeddings.data_ptr<scalar_t>(), levels,
                                                   n_features, n_points, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                const at::Tensor& embeddings, const Levels& levels,
                                                bool need_grad_x) {
  const int64_t n_points = x.size(0);
  const int n_features = static_cast<int>(embeddings.size(1));
  at::Tensor grad_embeddings = at::zeros_like(embeddings);
  at::Tensor grad_x;
  if (need_grad_x) grad_x = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hash_grid_backward_cpu", [&] {
    dispatch_features(n_features, [&](auto f) {
      backward_embeddings_kernel<scalar_t, decltype(f)::value>(grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                               levels, n_features, n_points,
                                                               grad_embeddings.data_ptr<scalar_t>());
    });
    if (need_grad_x) {
      backward_x_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                  embeddings.data_ptr<scalar_t>(), levels, n_features, n_points,
                                  grad_x.data_ptr<scalar_t>());
    }
  });
  return {grad_embeddings, grad_x};
}

}  // namespace sds3d_hash_grid
