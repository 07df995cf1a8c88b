"""NeRF field and background: blob bias, activations, normals, config validation."""

import math

import pytest
import torch

from sds3d.fields.background import Background, BackgroundConfig, BackgroundConfigError, frequency_encoding
from sds3d.fields.encoding import HashGridConfig
from sds3d.fields.nerf import FieldConfig, FieldConfigError, NeRFField, density_blob, trunc_exp, volsdf_density

torch.set_num_threads(1)

SMALL = HashGridConfig(n_levels=3, n_features_per_level=2, base_resolution=8, max_resolution=32, log2_hashmap_size=15, backend="torch")


def small_field(**kw) -> NeRFField:
    torch.manual_seed(0)
    return NeRFField(FieldConfig(encoding=SMALL, hidden_dim=16, **kw))


def blob_only(**kw) -> NeRFField:
    """A field whose raw density is exactly the blob (an analytic sphere-like density)."""
    field = small_field(**kw)
    with torch.no_grad():
        field.mlp[-1].weight.zero_()
        field.mlp[-1].bias.zero_()
    return field


def random_points(n: int, lo: float = 0.2, hi: float = 0.8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return d * (lo + (hi - lo) * torch.rand(n, 1, generator=g))


@pytest.mark.parametrize("bias", ["blob_magic3d", "blob_dreamfusion"])
def test_blob_init_is_denser_at_the_centre(bias):
    field = small_field(density_bias=bias)
    sigma = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.95, 0.0, 0.0], [0.0, -0.7, 0.7]]))
    assert sigma[0] > 5.0  # ~ softplus(10)
    # magic3d: softplus(-9) ~ 1e-4; dreamfusion: softplus(10 exp(-0.5 * 0.95^2 / 0.25)) ~ 1.8.
    assert sigma[1] < 0.2 * sigma[0] and sigma[2] < 0.2 * sigma[0]


def test_blob_formulas():
    x = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]])  # |x| = 0, 0.5
    torch.testing.assert_close(density_blob(x, "blob_magic3d", 10.0, 0.5), torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(density_blob(x, "blob_dreamfusion", 5.0, 0.5), torch.tensor([5.0, 5.0 * math.exp(-0.5)]))
    assert torch.equal(density_blob(x, "none", 10.0, 0.5), torch.zeros(2))


def test_outputs_ranges_and_forward_matches_parts():
    field = small_field(density_activation="exp")
    x = random_points(200, 0.0, 1.0)
    sigma, albedo = field(x)
    assert sigma.shape == (200,) and albedo.shape == (200, 3)
    assert (sigma >= 0).all() and (albedo >= 0).all() and (albedo <= 1).all()
    torch.testing.assert_close(sigma, field.density(x))
    torch.testing.assert_close(albedo, field.albedo(x))
    # Raw density at the centre is 10 (blob) plus a small MLP output: exp activation gives ~e^10.
    assert field.density(torch.zeros(1, 3)).item() == pytest.approx(math.exp(10.0), rel=0.5)


def test_trunc_exp_clamps_the_gradient():
    x = torch.tensor([1.0, 30.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([math.e, math.exp(15.0)]))


@pytest.mark.parametrize(
    "normals,scheme", [("finite_difference", "forward"), ("finite_difference", "central"), ("analytic", "forward")]
)
def test_normals_of_a_radial_density_point_outward(normals, scheme):
    field = blob_only(normals=normals, finite_difference_scheme=scheme, finite_difference_eps=1e-3)
    x = random_points(100)
    n = field.normals(x)
    expected = torch.nn.functional.normalize(x, dim=-1)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(100), atol=1e-4, rtol=0)
    assert (n * expected).sum(-1).min() > 0.999


def test_forward_with_normals_is_consistent_and_differentiable():
    field = small_field()
    x = random_points(64)
    sigma, albedo, n = field.forward_with_normals(x)
    torch.testing.assert_close(sigma, field.density(x))
    torch.testing.assert_close(albedo, field.albedo(x))
    n.sum().backward()
    assert field.encoding.embeddings.grad.abs().sum() > 0
    assert field.mlp[0].weight.grad.abs().sum() > 0


def test_analytic_and_finite_difference_normals_agree_on_a_trained_like_field():
    torch.manual_seed(3)
    fd = small_field(finite_difference_eps=1e-4, finite_difference_scheme="central")
    with torch.no_grad():
        fd.encoding.embeddings.uniform_(-0.5, 0.5)  # make the network part non-trivial
    an = small_field(normals="analytic")
    an.load_state_dict(fd.state_dict())
    x = random_points(50)
    cos = (fd.normals(x) * an.normals(x)).sum(-1)
    assert cos.median() > 0.99


@pytest.mark.parametrize(
    "kw", [dict(density_activation="relu"), dict(density_bias="blob"), dict(normals="sobel"), dict(bound=0.0)]
)
def test_invalid_config_raises_value_error(kw):
    with pytest.raises(FieldConfigError, match="field\\."):
        NeRFField(FieldConfig(encoding=SMALL, **kw))
    assert issubclass(FieldConfigError, ValueError)


def test_bound_scales_the_scene_box():
    field = small_field(bound=2.0)
    # x = (1.5, 0, 0) is inside the box [-2, 2]^3 and maps to 0.875 in encoding coordinates.
    assert field.bound == 2.0
    raw = field._raw(torch.tensor([[1.5, 0.0, 0.0]]))
    h = field.mlp(field.encoding(torch.tensor([[0.875, 0.5, 0.5]])))
    torch.testing.assert_close(raw[0, 0], h[0, 0] + 10.0 * (1 - 1.5 / 0.5))


def test_solid_background_and_mlp_background_start_at_the_colour():
    dirs = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    solid = Background(BackgroundConfig(color=(0.2, 0.4, 0.6)))
    torch.testing.assert_close(solid(dirs), torch.tensor([0.2, 0.4, 0.6]).expand(2, 5, 3))
    mlp = Background(BackgroundConfig(kind="mlp", color=(0.2, 0.4, 0.6)))
    out = mlp(dirs)
    assert out.shape == (2, 5, 3)
    torch.testing.assert_close(out, torch.tensor([0.2, 0.4, 0.6]).expand(2, 5, 3), atol=1e-5, rtol=0)
    out.sum().backward()
    assert mlp.mlp[-1].weight.grad.abs().sum() > 0
    with pytest.raises(BackgroundConfigError):
        Background(BackgroundConfig(kind="env"))


def test_frequency_encoding_values():
    x = torch.tensor([[0.25, 0.0, 0.5]])
    enc = frequency_encoding(x, 2)
    assert enc.shape == (1, 15)
    # sin(2 pi * 0.25) = 1 is the 4th sin entry (k = 1, first coordinate).
    torch.testing.assert_close(enc[0, 3 + 3], torch.tensor(1.0))
    torch.testing.assert_close(enc[0, :3], x[0])


def test_default_config_builds_a_stable_diffusion_sized_field():
    cfg = FieldConfig()
    assert cfg.encoding.n_levels == 16 and cfg.encoding.log2_hashmap_size == 19


# -- VolSDF density (field.density_activation=volsdf) ------------------------------------------
def sdf_sphere(**kw) -> NeRFField:
    """A volsdf field whose signed distance is exactly the init sphere |x| - 0.5."""
    return blob_only(density_activation="volsdf", density_bias="sphere_sdf", **kw)


def test_volsdf_density_follows_the_laplace_cdf():
    beta = 0.02
    s = torch.tensor([-1.0, -0.04, 0.0, 0.04, 1.0], requires_grad=True)  # s = -d
    sigma = volsdf_density(s, beta)
    expected = torch.tensor([0.0, 0.5 * math.exp(-2), 0.5, 1 - 0.5 * math.exp(-2), 1.0]) / beta
    assert torch.allclose(sigma, expected, atol=1e-6)
    sigma.sum().backward()  # both branches finite: no inf/nan from the unused side
    # d sigma / ds = Laplace density / beta = exp(-|s| / beta) / (2 beta^2), continuous at s = 0, where
    # it must not depend on torch's gradient convention for clamp at its bound (changed in 2.14).
    expected_grad = torch.tensor([math.exp(-abs(v) / beta) / (2 * beta**2) for v in s.tolist()])
    assert torch.allclose(s.grad, expected_grad, rtol=1e-5, atol=0.0)
    assert s.grad[2] == pytest.approx(0.5 / beta**2, rel=1e-6)


def test_volsdf_density_keeps_nan():
    # A non-finite raw output must stay visible (the trainer skips non-finite steps), not become 0.5 / beta.
    assert torch.isnan(volsdf_density(torch.tensor([float("nan")]), 0.02)).all()


def test_volsdf_sphere_init_has_its_surface_at_the_radius():
    field = sdf_sphere(sdf_beta=0.02)
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, -0.6, 0.8], [0.0, 0.0, 1.0]])
    sigma = field.density(torch.cat([0.0 * d, 0.5 * d, 0.9 * d]))
    assert torch.allclose(sigma[:3], torch.full((3,), (1 - 0.5 * math.exp(-25)) / 0.02))
    assert torch.allclose(sigma[3:6], torch.full((3,), field.surface_density), rtol=1e-4)
    assert field.surface_density == pytest.approx(25.0)
    assert (sigma[6:] < 1e-3).all()
    x = random_points(40, 0.45, 0.55)
    assert (field.normals(x) * torch.nn.functional.normalize(x, dim=-1)).sum(-1).min() > 0.99


def test_volsdf_beta_anneals_geometrically_and_is_checkpointed():
    field = sdf_sphere(sdf_beta=0.1, sdf_beta_end=0.01)
    field.update_step(0, 100)
    assert float(field.beta) == pytest.approx(0.1)
    field.update_step(50, 100)
    assert float(field.beta) == pytest.approx(math.sqrt(0.1 * 0.01))
    field.update_step(100, 100)
    assert float(field.beta) == pytest.approx(0.01)
    restored = sdf_sphere(sdf_beta=0.1, sdf_beta_end=0.01)
    restored.load_state_dict(field.state_dict())
    assert restored.surface_density == pytest.approx(50.0)
    plain = small_field()
    plain.update_step(50, 100)  # no schedule: a no-op
    assert plain.surface_density is None and "beta" not in plain.state_dict()


@pytest.mark.parametrize(
    "kw",
    [dict(density_bias="sphere_sdf"), dict(density_activation="volsdf"),
     dict(density_activation="volsdf", density_bias="sphere_sdf", sdf_beta=0.0)],
)
def test_volsdf_settings_are_checked(kw):
    with pytest.raises(FieldConfigError, match="field\\."):
        NeRFField(FieldConfig(encoding=SMALL, **kw))
