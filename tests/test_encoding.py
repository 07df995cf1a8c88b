"""HashGridEncoding: level layout, the torch twin (reference), and backend selection."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from sds3d import cuda_ext
from sds3d.fields import encoding
from sds3d.cuda_ext._torch_impl import _clamp_to_unit_cube, _gather_dense_level, _hash_grid_encode, level_is_dense
from sds3d.fields.encoding import EncodingConfigError, HashGridConfig, HashGridEncoding, level_resolutions, select_backend

torch.set_num_threads(1)


@pytest.fixture
def fresh_selection(monkeypatch):
    """Forget cached backend choices and build results (restored afterwards)."""
    monkeypatch.setattr(encoding, "_chosen", {})
    monkeypatch.setattr(encoding, "_warned_cuda_ext", False)
    monkeypatch.setattr(cuda_ext, "_module", None)
    monkeypatch.setattr(cuda_ext, "_error", None)


def test_level_resolutions_follow_eq3():
    cfg = HashGridConfig(n_levels=16, base_resolution=16, max_resolution=2048)
    res = level_resolutions(cfg)
    assert res[0] == 16 and res[-1] in (2047, 2048) and len(res) == 16
    assert res[1] == 22  # 16 * 128^(1/15) = 22.1
    assert level_resolutions(HashGridConfig(n_levels=1, base_resolution=7)) == [7]


def test_tables_are_dense_while_they_fit():
    enc = HashGridEncoding(HashGridConfig(n_levels=16, log2_hashmap_size=19, backend="torch"))
    sizes = (enc.offsets[1:] - enc.offsets[:-1]).tolist()
    dense = [level_is_dense(r, s) for r, s in zip(enc.resolutions.tolist(), sizes)]
    assert dense == [True] * 5 + [False] * 11  # (R+1)^3 <= 2^19 up to R = 58
    assert sizes[0] == 17**3 + 7 and all(s == 2**19 for s in sizes[5:])
    assert enc.embeddings.shape == (sum(sizes), 2)


def test_twin_dense_fast_path_matches_corner_gathering():
    # grid_sample (the twin's dense levels) vs explicit trilinear interpolation of 8 gathered corners.
    res = 8
    table = torch.randn((res + 1) ** 3, 3, dtype=torch.float64)
    x = torch.cat([torch.rand(200, 3, dtype=torch.float64), torch.tensor([[0.0, 0.5, 0.125], [0.25, 0.375, 0.0]]).double()])
    x.requires_grad_()
    fast = _hash_grid_encode(x, table, torch.tensor([0, table.shape[0]]), torch.tensor([res]))
    slow = _gather_dense_level(x, table, res)
    torch.testing.assert_close(fast, slow)
    g_fast, = torch.autograd.grad(fast.sum(), x)
    g_slow, = torch.autograd.grad(slow.sum(), x)
    torch.testing.assert_close(g_fast, g_slow)


def test_twin_dense_fast_path_at_the_upper_bound_matches_corner_gathering():
    # At x_k == 1 grid_sample's zero padding would give -R v(R); the twin mends those rows' gradient
    # (to the last cell's slope, the gathering's) and keeps grid_sample's values: the values are
    # bit-identical with and without x requiring grad, and first and second derivatives agree.
    res = 4
    table = torch.randn((res + 1) ** 3, 2, dtype=torch.float64)
    offsets, resolutions = torch.tensor([0, table.shape[0]]), torch.tensor([res])
    x = torch.tensor([[1.0, 0.5, 0.3], [0.2, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.7, 0.1], [0.6, 0.2, 0.9]],
                     dtype=torch.float64, requires_grad=True)
    fast = _hash_grid_encode(x, table, offsets, resolutions)
    slow = _gather_dense_level(x, table, res)
    assert torch.equal(fast, _hash_grid_encode(x.detach(), table, offsets, resolutions))
    torch.testing.assert_close(fast, slow)
    weights = torch.randn_like(fast)
    g_fast, = torch.autograd.grad((weights * fast).sum(), x, create_graph=True)
    g_slow, = torch.autograd.grad((weights * slow).sum(), x, create_graph=True)
    torch.testing.assert_close(g_fast, g_slow)
    gg_fast, = torch.autograd.grad(g_fast.square().sum(), x)
    gg_slow, = torch.autograd.grad(g_slow.square().sum(), x)
    torch.testing.assert_close(gg_fast, gg_slow)


def test_twin_clamp_passes_the_gradient_on_the_closed_cube():
    # The rule is the twin's own (torch's clamp changed its gradient at the bounds in 2.14).
    x = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    y = _clamp_to_unit_cube(x)
    assert torch.equal(y, x.detach().clamp(0.0, 1.0))
    g, = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_twin_gradcheck_float64():
    enc = HashGridEncoding(HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=6,
                                          base_resolution=2, max_resolution=8, backend="torch")).double()
    x = (torch.rand(4, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    embeddings = torch.randn_like(enc.embeddings).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, e: _hash_grid_encode(x, e, enc.offsets, enc.resolutions), (x, embeddings))


def test_twin_clamps_outside_points():
    enc = HashGridEncoding(HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=16,
                                          backend="torch"))
    with torch.no_grad():
        enc.embeddings.normal_()
    x = torch.tensor([[-0.5, 1.5, 0.3], [0.0, 1.0, 0.3]], requires_grad=True)
    y = enc(x)
    torch.testing.assert_close(y[0], y[1])
    g, = torch.autograd.grad(y[0].sum(), x)
    assert g[0, 0] == 0 and g[0, 1] == 0 and g[0, 2] != 0


def test_unknown_backend_is_a_user_error():
    with pytest.raises(ValueError, match="unknown"):
        HashGridEncoding(HashGridConfig(backend="cuda"))
    with pytest.raises(EncodingConfigError):
        select_backend("fast", "cpu")


def test_tcnn_on_cpu_is_a_user_error():
    with pytest.raises(EncodingConfigError, match="tcnn"):
        select_backend("tcnn", "cpu")


def test_auto_falls_back_to_torch_when_cuda_ext_cannot_build(fresh_selection, monkeypatch, caplog):
    monkeypatch.setenv("SDS3D_DISABLE_CUDA_EXT", "1")
    with caplog.at_level(logging.INFO, logger="sds3d.fields.encoding"), warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back silently (logged), no warning
        backend, reason = select_backend("auto", "cpu")
        select_backend("auto", "cpu")
    assert backend == "torch" and "SDS3D_DISABLE_CUDA_EXT" in reason
    assert sum("backend on cpu: torch" in r.getMessage() for r in caplog.records) == 1


def test_requested_cuda_ext_warns_once_then_uses_torch(fresh_selection, monkeypatch):
    monkeypatch.setenv("SDS3D_DISABLE_CUDA_EXT", "1")
    enc = HashGridEncoding(HashGridConfig(n_levels=2, log2_hashmap_size=8, max_resolution=32, backend="cuda_ext"))
    x = torch.rand(5, 3)
    with pytest.warns(UserWarning, match="cuda_ext is not available") as record:
        y = enc(x)
        enc(x)
    assert len(record) == 1 and enc.backend == "torch"
    torch.testing.assert_close(y, _hash_grid_encode(x, enc.embeddings, enc.offsets, enc.resolutions))


def test_module_cuda_ext_backend_matches_torch_backend():
    if not cuda_ext.is_available():
        pytest.skip(f"sds3d.cuda_ext not available: {cuda_ext.build_error()}")
    cfg = HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, max_resolution=512, backend="cuda_ext")
    enc = HashGridEncoding(cfg)
    assert enc.backend == "cuda_ext"
    with torch.no_grad():
        enc.embeddings.normal_()
    x = torch.rand(1000, 3)
    y = enc(x)
    y.square().sum().backward()
    g_fused = enc.embeddings.grad.clone()
    enc.embeddings.grad = None
    y_twin = _hash_grid_encode(x, enc.embeddings, enc.offsets, enc.resolutions)
    y_twin.square().sum().backward()
    torch.testing.assert_close(y, y_twin, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fused, enc.embeddings.grad, rtol=1e-4, atol=1e-4)


def test_second_derivatives_work_with_cuda_ext_backend():
    # Autograd normals: x requires grad -> the twin runs that call, so create_graph works.
    if not cuda_ext.is_available():
        pytest.skip(f"sds3d.cuda_ext not available: {cuda_ext.build_error()}")
    enc = HashGridEncoding(HashGridConfig(n_levels=3, log2_hashmap_size=8, base_resolution=4, max_resolution=32,
                                          backend="cuda_ext")).double()
    with torch.no_grad():
        enc.embeddings.normal_()
    x = torch.rand(16, 3, dtype=torch.float64, requires_grad=True)
    grad_x, = torch.autograd.grad(enc(x).square().sum(), x, create_graph=True)
    grad_x.square().sum().backward()
    assert enc.embeddings.grad is not None and enc.embeddings.grad.abs().sum() > 0
