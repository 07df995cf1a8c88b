// Per-point math of the multi-resolution hash encoding (Instant-NGP, Mueller et al. 2022, Sec. 3),
// shared by the CPU implementation (hash_grid_cpu.cpp) and the CUDA one (hash_grid_cuda.cu).
// Reference twin: _hash_grid_encode in _torch_impl.py, this folder (same semantics, same names).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HG_HOST_DEVICE inline
#endif

namespace sds3d_hash_grid {

// Upper bound on levels so the level table can be passed by value to CUDA kernels.
constexpr int kMaxLevels = 64;

// One level of the encoding: table rows [start, start + size), `res` cells per axis.
struct Level {
  int64_t start;
  int64_t size;
  int32_t res;
  int32_t dense;  // 1: index c0 + (R+1)(c1 + (R+1)c2); 0: spatial hash & (size - 1)
};

struct Levels {
  Level level[kMaxLevels];
  int32_t n_levels;
};

// Voxel of one point at one level. Bit k of a corner index selects +1 along axis k.
template <typename scalar_t>
struct Voxel {
  int64_t cell[3];     // lower corner, min(floor(pos), R - 1)
  scalar_t frac[3];    // pos - cell, in [0, 1]
  bool inside[3];      // 0 <= x_k <= 1: the clamp passes the gradient on the closed cube (_torch_impl.py's rule)
};

template <typename scalar_t>
HG_HOST_DEVICE Voxel<scalar_t> locate(const scalar_t* x, int32_t res) {
  Voxel<scalar_t> v;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const scalar_t xk = x[k];
    v.inside[k] = xk >= scalar_t(0) && xk <= scalar_t(1);
    const scalar_t xc = xk < scalar_t(0) ? scalar_t(0) : (xk > scalar_t(1) ? scalar_t(1) : xk);
    const scalar_t pos = xc * scalar_t(res);
    // Points at x = 1 fall into the last cell with fraction 1, not outside the grid.
    int64_t c = static_cast<int64_t>(floor(pos));
    c = c > res - 1 ? res - 1 : c;
    v.cell[k] = c;
    v.frac[k] = pos - scalar_t(c);
  }
  return v;
}

// Table row (relative to the level's start) of corner `corner` of the voxel (Eq. 4 when hashed).
HG_HOST_DEVICE int64_t vertex_index(const int64_t* cell, int corner, const Level& lv) {
  const int64_t c0 = cell[0] + (corner & 1);
  const int64_t c1 = cell[1] + ((corner >> 1) & 1);
  const int64_t c2 = cell[2] + ((corner >> 2) & 1);
  if (lv.dense) {
    const int64_t side = lv.res + 1;
    return c0 + side * (c1 + side * c2);
  }
  // uint32 arithmetic, as Instant-NGP; the twin's int64 products agree modulo T = 2^k <= 2^32.
  const uint32_t h = static_cast<uint32_t>(c0) ^ (static_cast<uint32_t>(c1) * 2654435761u) ^
                     (static_cast<uint32_t>(c2) * 805459861u);
  return static_cast<int64_t>(h & static_cast<uint32_t>(lv.size - 1));
}

// Trilinear weight of a corner: prod_k (frac_k if bit_k else 1 - frac_k).
template <typename scalar_t>
HG_HOST_DEVICE scalar_t corner_weight(const scalar_t* frac, int corner) {
  scalar_t w = scalar_t(1);
#pragma unroll
  for (int k = 0; k < 3; ++k) w *= ((corner >> k) & 1) ? frac[k] : scalar_t(1) - frac[k];
  return w;
}

// d(corner_weight)/d(frac_axis): the other two factors, signed by the corner's bit on `axis`.
template <typename scalar_t>
HG_HOST_DEVICE scalar_t corner_weight_dfrac(const scalar_t* frac, int corner, int axis) {
  scalar_t w = ((corner >> axis) & 1) ? scalar_t(1) : scalar_t(-1);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    if (k != axis) w *= ((corner >> k) & 1) ? frac[k] : scalar_t(1) - frac[k];
  }
  return w;
}

// Forward of one point at one level: out[f] = sum_corners w * table[row, f].
// F > 0 fixes the feature count at compile time (unrolled, accumulated in registers); F == 0 reads
// it from n_features.
template <typename scalar_t, int F>
HG_HOST_DEVICE void encode_point_level(const scalar_t* x, const scalar_t* embeddings, const Level& lv,
                                       int n_features, scalar_t* out) {
  const Voxel<scalar_t> v = locate(x, lv.res);
  if constexpr (F > 0) {
    scalar_t acc[F];
#pragma unroll
    for (int f = 0; f < F; ++f) acc[f] = scalar_t(0);
#pragma unroll
    for (int corner = 0; corner < 8; ++corner) {
      const scalar_t w = corner_weight(v.frac, corner);
      const scalar_t* row = embeddings + (lv.start + vertex_index(v.cell, corner, lv)) * F;
#pragma unroll
      for (int f = 0; f < F; ++f) acc[f] += w * row[f];
    }
#pragma unroll
    for (int f = 0; f < F; ++f) out[f] = acc[f];
  } else {
    for (int f = 0; f < n_features; ++f) out[f] = scalar_t(0);
    for (int corner = 0; corner < 8; ++corner) {
      const scalar_t w = corner_weight(v.frac, corner);
      const scalar_t* row = embeddings + (lv.start + vertex_index(v.cell, corner, lv)) * n_features;
      for (int f = 0; f < n_features; ++f) out[f] += w * row[f];
    }
  }
}

// d(loss)/dx of one point at one level, added to grad_x[3]: R * sum_corners dw/dfrac * <g, row>.
// The clamp's zero gradient outside [0, 1] is applied by the caller (Voxel::inside).
template <typename scalar_t>
HG_HOST_DEVICE void grad_x_point_level(const Voxel<scalar_t>& v, const scalar_t* embeddings, const Level& lv,
                                       int n_features, const scalar_t* grad_out, scalar_t* grad_x) {
  scalar_t gx[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
#pragma unroll
  for (int corner = 0; corner < 8; ++corner) {
    const scalar_t* row = embeddings + (lv.start + vertex_index(v.cell, corner, lv)) * n_features;
    scalar_t dot = scalar_t(0);
    for (int f = 0; f < n_features; ++f) dot += grad_out[f] * row[f];
#pragma unroll
    for (int k = 0; k < 3; ++k) gx[k] += dot * corner_weight_dfrac(v.frac, corner, k);
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) grad_x[k] += gx[k] * scalar_t(lv.res);
}

}  // namespace sds3d_hash_grid
