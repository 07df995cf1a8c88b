"""Parity of the fused hash-grid kernel (sds3d.cuda_ext) with its torch twin and with hand-computed values."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from sds3d import cuda_ext
from sds3d.cuda_ext._torch_impl import HASH_PRIMES, _gather_dense_level, _hash_grid_encode, level_is_dense

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ext():
    """Builds the extension once per session (cached on disk by torch afterwards)."""
    if os.environ.get("SDS3D_DISABLE_CUDA_EXT") or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler (or SDS3D_DISABLE_CUDA_EXT set)")
    return cuda_ext.build()


def make_levels(n_levels: int, log2_table: int, base: int = 4, scale: float = 2.0) -> tuple[list[int], list[int]]:
    """Resolutions base * scale^l; tables min(2^log2_table, (R+1)^3) as in HashGridEncoding."""
    resolutions = [int(base * scale**level) for level in range(n_levels)]
    offsets = [0]
    for res in resolutions:
        offsets.append(offsets[-1] + min(2**log2_table, ((res + 1) ** 3 + 7) // 8 * 8))
    return offsets, resolutions


def reference(x, embeddings, offsets, resolutions):
    """Twin semantics with dense levels by explicit corner gathering (no grid_sample), level by level."""
    outputs = []
    for level, res in enumerate(resolutions):
        start, size = offsets[level], offsets[level + 1] - offsets[level]
        table = embeddings[start : start + size]
        if level_is_dense(res, size):
            outputs.append(_gather_dense_level(x, table, res))
        else:
            outputs.append(_hash_grid_encode(x, table, torch.tensor([0, size]), torch.tensor([res])))
    return torch.cat(outputs, dim=-1)


def grads(fn, x, embeddings, grad_out):
    x = x.detach().clone().requires_grad_()
    embeddings = embeddings.detach().clone().requires_grad_()
    y = fn(x, embeddings)
    g_emb, g_x = torch.autograd.grad(y, [embeddings, x], grad_out)
    return y.detach(), g_emb, g_x


def random_inputs(n, offsets, n_features, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=gen, dtype=dtype) * 1.2 - 0.1  # ~25% of points have a clamped axis
    embeddings = torch.randn(offsets[-1], n_features, generator=gen, dtype=dtype)
    return x, embeddings


# (n_levels, n_features, log2_table): dense-only, mixed and hashed-only levels, 2^8 .. 2^19 tables.
CONFIGS = [
    (1, 1, 8),
    (1, 2, 19),
    (1, 4, 12),
    (4, 1, 10),
    (4, 2, 8),
    (4, 4, 14),
    (4, 2, 19),
    (16, 1, 8),
    (16, 2, 12),
    (16, 4, 10),
    (16, 2, 16),
]


@pytest.mark.parametrize("n_points", [0, 1, 7, 4096])
@pytest.mark.parametrize("n_levels,n_features,log2_table", CONFIGS)
def test_forward_and_gradients_match_twin(ext, n_points, n_levels, n_features, log2_table):
    offsets, resolutions = make_levels(n_levels, log2_table, base=3, scale=1.7)
    x, embeddings = random_inputs(n_points, offsets, n_features, torch.float64, seed=n_points + n_levels)
    grad_out = torch.randn(n_points, n_levels * n_features, dtype=torch.float64)

    def twin(x, e):
        return _hash_grid_encode(x, e, torch.tensor(offsets), torch.tensor(resolutions))

    def fused(x, e):
        return cuda_ext.hash_grid_encode(x, e, offsets, resolutions)

    y_t, ge_t, gx_t = grads(twin, x, embeddings, grad_out)
    y_f, ge_f, gx_f = grads(fused, x, embeddings, grad_out)
    assert y_f.shape == (n_points, n_levels * n_features)
    torch.testing.assert_close(y_f, y_t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ge_f, ge_t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_f, gx_t, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("n_levels,n_features,log2_table", [(16, 2, 19), (4, 4, 16)])
def test_float32_matches_twin(ext, n_levels, n_features, log2_table):
    offsets, resolutions = make_levels(n_levels, log2_table, base=16, scale=1.38)
    x, embeddings = random_inputs(4096, offsets, n_features, torch.float32, seed=3)
    grad_out = torch.randn(4096, n_levels * n_features)
    y_t, ge_t, _ = grads(lambda x, e: _hash_grid_encode(x, e, torch.tensor(offsets), torch.tensor(resolutions)),
                         x, embeddings, grad_out)
    y_f, ge_f, _ = grads(lambda x, e: cuda_ext.hash_grid_encode(x, e, offsets, resolutions), x, embeddings, grad_out)
    torch.testing.assert_close(y_f, y_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ge_f, ge_t, rtol=1e-5, atol=1e-5)


def boundary_points(resolutions, dtype):
    """Points on cell faces (k / R exactly, R powers of two), at 0 and 1, and outside [0, 1]."""
    r = max(resolutions)
    grid = torch.arange(0, r + 1, dtype=dtype) / r
    gen = torch.Generator().manual_seed(1)
    on_faces = grid[torch.randint(0, r + 1, (64, 3), generator=gen)]
    special = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.5, 0.5, 0.5], [-0.3, 0.5, 1.2], [1.5, -2.0, 0.25], [0.25, 1.0, 0.0]],
        dtype=dtype,
    )
    return torch.cat([on_faces, special])


def test_boundary_points_match_reference(ext):
    offsets, resolutions = make_levels(5, 10, base=2, scale=2.0)  # R = 2..32, dense up to R=8, hashed after
    assert [level_is_dense(r, offsets[i + 1] - offsets[i]) for i, r in enumerate(resolutions)] == [
        True, True, True, False, False
    ]
    x = boundary_points(resolutions, torch.float64)
    embeddings = torch.randn(offsets[-1], 2, dtype=torch.float64)
    grad_out = torch.randn(x.shape[0], 10, dtype=torch.float64)
    y_r, ge_r, gx_r = grads(lambda x, e: reference(x, e, offsets, resolutions), x, embeddings, grad_out)
    y_f, ge_f, gx_f = grads(lambda x, e: cuda_ext.hash_grid_encode(x, e, offsets, resolutions), x, embeddings, grad_out)
    torch.testing.assert_close(y_f, y_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ge_f, ge_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-10, atol=1e-10)
    # The twin itself (grid_sample on the dense levels) agrees too, at x = 1 included.
    y_t, ge_t, gx_t = grads(lambda x, e: _hash_grid_encode(x, e, torch.tensor(offsets), torch.tensor(resolutions)),
                            x, embeddings, grad_out)
    torch.testing.assert_close(y_f, y_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ge_f, ge_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_t, rtol=1e-10, atol=1e-10)
    # Clamped axes have zero gradient; x exactly 0 or 1 still passes it (the closed cube is inside).
    outside = (x < 0) | (x > 1)
    assert (gx_f[outside] == 0).all()
    assert (gx_f[~outside] != 0).float().mean() > 0.9


def vertex_row(c0: int, c1: int, c2: int, res: int, size: int) -> int:
    """Table row of a vertex, written out independently of both implementations (Eq. 4 when hashed)."""
    if level_is_dense(res, size):
        return c0 + (res + 1) * (c1 + (res + 1) * c2)
    return ((c0 * HASH_PRIMES[0]) ^ ((c1 * HASH_PRIMES[1]) % 2**32) ^ ((c2 * HASH_PRIMES[2]) % 2**32)) & (size - 1)


@pytest.mark.parametrize("impl", ["twin", "kernel"])
@pytest.mark.parametrize("res,size", [(4, 125), (8, 729), (32, 2**8)])  # dense, dense, hashed
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_x_gradient_convention_on_faces_and_bounds(request, impl, res, size, axis):
    # The convention (cuda_ext/_torch_impl.py): the derivative of the trilinear polynomial of the
    # point's cell, cells [k/R, (k+1)/R) with the last one closed; 0 outside the closed cube. With
    # the other two coordinates on vertices the encoding is linear along `axis` between the two
    # vertices of that cell, so the x-gradient is R (v(upper) - v(lower)), read off the table.
    if impl == "kernel":
        request.getfixturevalue("ext")
    table = torch.randn(size, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(res + axis))
    others = (3, 1)  # vertex coordinates of the two other axes
    along = torch.tensor([k / res for k in range(res + 1)] + [-0.25, 1.25], dtype=torch.float64)
    x = torch.empty(along.shape[0], 3, dtype=torch.float64)
    x[:, axis] = along
    for k, c in zip([a for a in range(3) if a != axis], others):
        x[:, k] = c / res
    x.requires_grad_()
    if impl == "twin":
        y = _hash_grid_encode(x, table, torch.tensor([0, size]), torch.tensor([res]))
    else:
        y = cuda_ext.hash_grid_encode(x, table, [0, size], [res])
    gx, = torch.autograd.grad(y.sum(), x)

    def value(c_axis: int) -> float:
        c = [0, 0, 0]
        c[axis] = c_axis
        for k, o in zip([a for a in range(3) if a != axis], others):
            c[k] = o
        return float(table[vertex_row(*c, res, size), 0])

    expected = [res * (value(min(k, res - 1) + 1) - value(min(k, res - 1))) for k in range(res + 1)] + [0.0, 0.0]
    torch.testing.assert_close(gx[:, axis], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_hashed_vertex_reads_the_hashed_row(ext):
    # One hashed level, table row i holds the value i: at a vertex the output is its row index.
    res, size = 128, 2**8
    embeddings = torch.arange(size, dtype=torch.float64)[:, None]
    cells = torch.tensor([[0, 0, 0], [1, 2, 3], [127, 5, 64], [77, 127, 1], [128, 128, 128]])
    x = cells.double() / res
    y = cuda_ext.hash_grid_encode(x, embeddings, [0, size], [res])
    expected = []
    for c0, c1, c2 in cells.tolist():
        h = (c0 * HASH_PRIMES[0]) ^ ((c1 * HASH_PRIMES[1]) % 2**32) ^ ((c2 * HASH_PRIMES[2]) % 2**32)
        expected.append(h & (size - 1))
    assert y[:, 0].tolist() == expected


def test_dense_vertex_reads_the_dense_row(ext):
    res = 4
    size = (res + 1) ** 3
    embeddings = torch.arange(size, dtype=torch.float64)[:, None]
    cells = torch.tensor([[0, 0, 0], [1, 2, 3], [4, 4, 4], [4, 0, 1]])
    y = cuda_ext.hash_grid_encode(cells.double() / res, embeddings, [0, size], [res])
    expected = [c0 + 5 * (c1 + 5 * c2) for c0, c1, c2 in cells.tolist()]
    assert y[:, 0].tolist() == expected


def test_interpolates_linearly_between_vertices(ext):
    # Table values linear in the vertex coordinates => the encoding reproduces the linear function.
    res = 8
    side = torch.arange(res + 1, dtype=torch.float64)
    c2, c1, c0 = torch.meshgrid(side, side, side, indexing="ij")
    embeddings = (2 * c0 - 3 * c1 + 0.5 * c2).reshape(-1, 1)
    x = torch.rand(100, 3, dtype=torch.float64)
    y = cuda_ext.hash_grid_encode(x, embeddings, [0, embeddings.shape[0]], [res])
    torch.testing.assert_close(y[:, 0], res * (2 * x[:, 0] - 3 * x[:, 1] + 0.5 * x[:, 2]))


def test_backward_is_deterministic_across_thread_counts(ext):
    offsets, resolutions = make_levels(6, 8, base=4, scale=1.5)  # small tables: many colliding writes
    x, embeddings = random_inputs(20000, offsets, 2, torch.float32, seed=5)
    grad_out = torch.randn(20000, 12)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            results.append(grads(lambda x, e: cuda_ext.hash_grid_encode(x, e, offsets, resolutions),
                                 x, embeddings, grad_out))
        finally:
            torch.set_num_threads(1)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_gradcheck_of_kernel(ext):
    offsets, resolutions = make_levels(3, 6, base=2, scale=2.0)
    x, embeddings = random_inputs(5, offsets, 2, torch.float64, seed=7)
    x = x.clamp(0.05, 0.95).requires_grad_()  # away from the clamp's kinks
    embeddings.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, e: cuda_ext.hash_grid_encode(x, e, offsets, resolutions), (x, embeddings))


def test_x_gradient_only_when_requested(ext):
    offsets, resolutions = make_levels(2, 8)
    x, embeddings = random_inputs(10, offsets, 2, torch.float32)
    embeddings.requires_grad_()
    cuda_ext.hash_grid_encode(x, embeddings, offsets, resolutions).sum().backward()
    assert x.grad is None and embeddings.grad is not None


def test_bad_level_table_is_rejected(ext):
    x, embeddings = random_inputs(4, [0, 100], 2, torch.float32)
    with pytest.raises(RuntimeError, match="offsets"):
        cuda_ext.hash_grid_encode(x, embeddings, [0, 50], [3])
    with pytest.raises(RuntimeError, match="power-of-two"):
        cuda_ext.hash_grid_encode(x, embeddings, [0, 100], [16])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    cuda_ext.build(with_cuda=True)
    offsets, resolutions = make_levels(16, 16, base=16, scale=1.38)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        x, embeddings = random_inputs(4096, offsets, 2, dtype, seed=11)
        grad_out = torch.randn(4096, 32, dtype=dtype)

        def fused(x, e):
            return cuda_ext.hash_grid_encode(x, e, offsets, resolutions)

        cpu = grads(fused, x, embeddings, grad_out)
        gpu = grads(fused, x.cuda(), embeddings.cuda(), grad_out.cuda())
        for a, b in zip(cpu, gpu):
            torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol)
