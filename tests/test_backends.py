"""Backend selection behind `auto` (rendering: torch | nerfacc; encoding: torch | cuda_ext | tcnn) and the
packed (nerfacc) rendering path. CUDA-only paths skip here and compare against the batched renderer on a GPU."""

import math

import pytest
import torch

from sds3d.render import RenderConfig, RenderConfigError, orientation_loss, render
from sds3d.render import nerfacc_backend as nb
from sds3d.render.nerfacc_backend import (
    NerfaccConfig,
    PackedRenderer,
    orientation_loss_packed,
    render_packed,
    select_render_backend,
)

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()


def test_auto_picks_torch_on_cpu_and_explicit_choices():
    assert select_render_backend("auto", "cpu")[0] == "torch"
    assert "cpu" in select_render_backend("auto", "cpu")[1]
    assert select_render_backend("torch", "cpu") == ("torch", "requested")
    with pytest.raises(RenderConfigError, match="needs CUDA"):
        select_render_backend("nerfacc", "cpu")
    with pytest.raises(RenderConfigError, match="unknown"):
        select_render_backend("optix", "cpu")


@pytest.mark.parametrize("available", [True, False])
def test_auto_on_cuda_follows_nerfacc_availability(monkeypatch, available):
    monkeypatch.setattr(nb, "nerfacc_cuda_status", lambda build=False: (available, "because"))
    backend, why = select_render_backend("auto", "cuda")
    assert backend == ("nerfacc" if available else "torch") and "because" in why
    if available:
        assert select_render_backend("nerfacc", "cuda:0")[0] == "nerfacc"
    else:
        with pytest.raises(RenderConfigError, match=r"unavailable \(because\)"):
            select_render_backend("nerfacc", "cuda")


def test_nerfacc_status_reasons(monkeypatch):
    if torch.version.cuda is None:  # this machine: a CPU build of torch
        ok, why = nb.nerfacc_cuda_status()
        assert ok is False and "CPU-only build" in why
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(nb.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(nb.shutil, "which", lambda name: None)
    ok, why = nb.nerfacc_cuda_status()
    assert ok is False and "no nvcc" in why
    monkeypatch.setattr(nb.shutil, "which", lambda name: "/usr/local/cuda/bin/nvcc")
    ok, why = nb.nerfacc_cuda_status(build=False)
    assert ok is None and "/usr/local/cuda/bin/nvcc" in why


def test_encoding_auto_never_picks_tcnn_on_cpu(monkeypatch):
    """Coordination with sds3d.fields.encoding: auto on CPU is cuda_ext or torch, even with tinycudann installed."""
    from sds3d import cuda_ext
    from sds3d.fields import encoding

    monkeypatch.setattr(encoding, "_chosen", {})
    monkeypatch.setattr(encoding, "_tcnn_importable", lambda: True)
    monkeypatch.setattr(cuda_ext, "_module", None)
    monkeypatch.setattr(cuda_ext, "_error", "disabled for this test")
    assert encoding.select_backend("auto", "cpu")[0] == "torch"
    monkeypatch.setattr(encoding, "_chosen", {})
    assert encoding.select_backend("auto", "cuda")[0] == "tcnn"


def test_orientation_loss_packed_equals_batched():
    """Packing (R, S) samples into flat arrays (dropping zero-weight ones, as early stop does) keeps the loss."""
    g = torch.Generator().manual_seed(0)
    R, S = 5, 7
    weights = torch.rand(R, S, generator=g)
    weights[1, 3:] = 0.0
    weights[4] = 0.0
    normals = torch.nn.functional.normalize(torch.randn(R, S, 3, generator=g), dim=-1)
    dirs = torch.nn.functional.normalize(torch.randn(R, 3, generator=g), dim=-1)
    keep = weights > 0
    ray_indices = torch.arange(R)[:, None].expand(R, S)[keep]
    packed = orientation_loss_packed(weights[keep], normals[keep], dirs, ray_indices)
    torch.testing.assert_close(packed, orientation_loss(weights, normals, dirs))
    # hand value for one ray, one sample: w * max(0, n.d)^2 / R
    one = orientation_loss_packed(torch.tensor([0.5]), torch.tensor([[0.6, 0.8, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([1]))
    assert one.item() == pytest.approx(0.5 * 0.8**2 / 2)


def test_packed_renderer_state_is_checkpointable_on_cpu():
    packed = PackedRenderer(bound=1.0, cfg=NerfaccConfig(grid_resolution=16, samples_per_ray=256))
    assert packed.render_step_size == pytest.approx(2 * math.sqrt(3) / 256)
    state = packed.state_dict()
    assert state["estimator.binaries"].shape == (1, 16, 16, 16) and state["estimator.occs"].numel() == 16**3
    other = PackedRenderer(bound=1.0, cfg=NerfaccConfig(grid_resolution=16))
    state["estimator.binaries"][0, 3, 4, 5] = True
    other.load_state_dict(state)
    assert bool(other.estimator.binaries[0, 3, 4, 5])


def _small_field(device):
    from sds3d.fields.background import Background, BackgroundConfig
    from sds3d.fields.encoding import HashGridConfig
    from sds3d.fields.nerf import FieldConfig, NeRFField

    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=16, backend="torch"),
                                  hidden_dim=16, density_bias="blob_magic3d"))
    return field.to(device), Background(BackgroundConfig()).to(device)


@pytest.mark.skipif(not CUDA, reason="nerfacc packed ops need a CUDA GPU")
@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_packed_rendering_matches_batched_on_the_same_rays(shading):
    from sds3d.cameras import orbit_cameras

    field, background = _small_field("cuda")
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.0, fov_y_deg=50.0).to("cuda")
    cfg = RenderConfig(resolution=24, num_samples=1024, light="fixed")
    packed = PackedRenderer(field.bound, NerfaccConfig(grid_resolution=32, samples_per_ray=1024, early_stop_eps=0.0)).to("cuda")
    packed.estimator.binaries.fill_(True)  # every cell occupied: the same integral as the batched path
    with torch.no_grad():
        ref = render(field, background, cams, cfg, shading=shading, stratified=False)
        out = render_packed(packed, field, background, cams, cfg, shading=shading, stratified=False)
    for key in ("rgb", "opacity", "normal"):
        torch.testing.assert_close(out[key], ref[key], atol=2e-2, rtol=0)


@pytest.mark.skipif(not CUDA, reason="nerfacc packed ops need a CUDA GPU")
def test_occupancy_update_prunes_empty_space_and_gradients_flow():
    from sds3d.cameras import orbit_cameras

    field, background = _small_field("cuda")
    packed = PackedRenderer(field.bound, NerfaccConfig(grid_resolution=32, update_every=1, warmup_steps=10)).to("cuda")
    packed.update(0, field)
    occupied = packed.estimator.binaries.float().mean().item()
    assert 0.0 < occupied < 0.9  # the blob (radius ~0.5) is occupied, the corners are not
    cams = orbit_cameras(1, elevation_deg=0.0, distance=2.0, fov_y_deg=50.0).to("cuda")
    out = render_packed(packed, field, background, cams, RenderConfig(resolution=16), shading="lambertian")
    out["rgb"].mean().backward()
    assert field.encoding.embeddings.grad.abs().sum() > 0
