"""SDS guidance: the gradient it produces, CFG, negative prompts, w(t), t schedules, Perp-Neg,
prior call counting, the Guidance protocol and build_guidance.

Expected values are recomputed here from the stub prior's recorded call (x_t, t, embeddings) and
alpha-bar computed here (ALPHAS_CUMPROD), independently of sds3d.guidance's and the schedule's internals.
"""

import math

import pytest
import torch
from torch import nn

from sds3d.cameras import make_cameras
from sds3d.guidance import (
    GUIDANCE,
    Guidance,
    GuidanceConfig,
    GuidanceConfigError,
    PromptEmbeddings,
    SDSGuidance,
    build_guidance,
    perp_neg_embeddings,
    perp_neg_guidance,
    perpendicular_component,
    timestep_bounds,
)
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import NoiseSchedule

torch.set_num_threads(1)
B, C, H = 3, 3, 8
S, D = 2, 4
PROJECTION = torch.randn(D, C * H * H, generator=torch.Generator().manual_seed(99)) / D
# DDPM linear betas 1e-4..0.02, T = 1000 (Ho et al. 2020), computed here; the stub's schedule is built from the same config.
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


class StubPrior(Prior):
    """Deterministic pixel prior: output(x_t, t, y) = 0.1 x_t + P mean_S(y) + 1e-4 t; records calls.

    P is a fixed random projection, so different texts push in different (non-parallel) directions.
    The output is eps unless ``prediction_type`` says otherwise.
    """

    resolution, latent, latent_shape = H, False, (C, H, H)

    def __init__(self, nan_at: int | None = None, prediction_type: str = "epsilon"):
        super().__init__()
        self.schedule = NoiseSchedule(LINEAR | {"prediction_type": prediction_type})
        self.dummy = nn.Parameter(torch.zeros(1))
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.nan_at = nan_at
        self.last_x = None

    @staticmethod
    def eps_fn(x_t, t, emb):
        direction = (emb.mean(dim=1) @ PROJECTION.to(emb.dtype)).view(-1, C, H, H)
        return 0.1 * x_t + direction + 1e-4 * t.view(-1, 1, 1, 1).to(x_t.dtype)

    def encode_prompts(self, prompts):
        raise AssertionError("not used here")

    def _predict(self, x_t, t, cond, cameras):
        assert not torch.is_grad_enabled()
        self.records.append((x_t.clone(), t.clone(), cond.tokens.clone()))
        out = self.eps_fn(x_t, t, cond.tokens)
        if self.nan_at is not None:
            out.view(-1)[self.nan_at] = float("nan")
            out.view(-1)[self.nan_at + 1] = float("inf")
        return out

    def encode_images(self, rgb):
        self.last_x = rgb * 2 - 1
        self.last_x.retain_grad()
        return self.last_x

    def decode(self, x):
        return (x + 1) / 2


def make_embeddings(azimuth=(10.0, 100.0, 200.0), elevation=(0.0, 0.0, 0.0), seed=0, views=None):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(B, S, D, generator=g)
    uncond = torch.randn(B, S, D, generator=g)
    view_emb = torch.randn(4, S, D, generator=g)
    az = torch.tensor(azimuth)
    labels = views or ["front" if (a % 360 < 45 or a % 360 >= 315) else "back" if 135 <= a % 360 < 225 else "side" for a in azimuth]
    return PromptEmbeddings(Condition(cond), Condition(uncond), az, torch.tensor(elevation), labels, Condition(view_emb))


def run(cfg, prior=None, emb=None, seed=0, step=0, rgb=None, max_steps=1000):
    prior = prior or StubPrior()
    emb = emb or make_embeddings()
    rgb = rgb if rgb is not None else torch.rand(B, C, H, H, generator=torch.Generator().manual_seed(123))
    rgb = rgb.clone().requires_grad_(True)
    guidance = SDSGuidance(cfg, prior)
    guidance.update_step(step, max_steps)
    out = guidance(rgb, emb, step=step, generator=torch.Generator().manual_seed(seed))
    out["loss_sds"].backward()
    return prior, emb, out, rgb


def recorded_eps(prior):
    """eps and alpha-bar recovered from the recorded x_t: eps = (x_t - sqrt(abar) x) / sqrt(1 - abar)."""
    x_t, t, _ = prior.records[0]
    n = prior.last_x.shape[0]
    x_t, t = x_t[:n].double(), t[:n]
    abar = ALPHAS_CUMPROD.double()[t].view(-1, 1, 1, 1)
    x = prior.last_x.detach().double()
    return x_t, t, abar, (x_t - abar.sqrt() * x) / (1 - abar).sqrt()


WEIGHTS = {
    "sds": lambda abar: 1 - abar,
    "uniform": lambda abar: torch.ones_like(abar),
    "fantasia3d": lambda abar: abar.sqrt() * (1 - abar),
}


@pytest.mark.parametrize("weighting", list(WEIGHTS))
def test_grad_equals_weighted_residual_over_batch(weighting):
    scale = 7.5
    prior, emb, out, _ = run(GuidanceConfig(weighting=weighting, scale=scale))
    x_t, t, abar, eps = recorded_eps(prior)
    eps_c = StubPrior.eps_fn(x_t, t, emb.cond.tokens.double())
    eps_u = StubPrior.eps_fn(x_t, t, emb.uncond.tokens.double())
    eps_hat = eps_u + scale * (eps_c - eps_u)
    g = WEIGHTS[weighting](abar) * (eps_hat - eps)
    torch.testing.assert_close(prior.last_x.grad.double(), g / B, rtol=1e-4, atol=1e-5)
    # loss value: 0.5 * ||g||^2 / B
    assert out["loss_sds"].item() == pytest.approx(0.5 * g.pow(2).sum().item() / B, rel=1e-4)
    assert out["sds_grad_norm"].item() == pytest.approx(g.flatten(1).norm(dim=1).mean().item(), rel=1e-4)


def test_cfg_formula_hand_computed():
    """Constant predictions eps_c = 1.0, eps_u = 0.2, s = 7.5: eps_hat = 0.2 + 7.5 * 0.8 = 6.2."""
    prior = StubPrior()
    prior.eps_fn = lambda x_t, t, emb: torch.ones_like(x_t) * emb[:, 0, 0].view(-1, 1, 1, 1)
    emb = make_embeddings()
    emb.cond = Condition(torch.ones(B, S, D))
    emb.uncond = Condition(torch.full((B, S, D), 0.2))
    prior, _, _, _ = run(GuidanceConfig(scale=7.5, weighting="uniform"), prior, emb)
    _, _, _, eps = recorded_eps(prior)
    torch.testing.assert_close(prior.last_x.grad.double(), (6.2 - eps) / B, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("perp_neg", [False, True])
def test_exactly_one_prior_call(perp_neg):
    prior, _, out, _ = run(GuidanceConfig(perp_neg=perp_neg))
    n = 4 * B if perp_neg else 2 * B  # [cond, uncond] or [positive, uncond, 2 negatives]
    assert prior.calls == len(prior.records) == 1 and prior.rows == n
    assert out["prior_calls"].item() == 1.0 and out["prior_calls"].ndim == 0
    x_t, t, e = prior.records[0]
    assert x_t.shape[0] == t.shape[0] == e.shape[0] == n
    # the same x_t and t for every copy (Perp-Neg: the negatives' copies are sample-major)
    torch.testing.assert_close(x_t[B : 2 * B], x_t[:B])
    torch.testing.assert_close(t[B : 2 * B], t[:B])
    if perp_neg:
        torch.testing.assert_close(x_t[2 * B :], x_t[:B].repeat_interleave(2, dim=0))
        torch.testing.assert_close(t[2 * B :], t[:B].repeat_interleave(2))


def test_negative_prompt_used_as_uncond():
    prior, emb, _, _ = run(GuidanceConfig())
    _, _, e = prior.records[0]
    torch.testing.assert_close(e[:B], emb.cond.tokens)
    torch.testing.assert_close(e[B:], emb.uncond.tokens)


def test_scale_zero_is_unconditional():
    emb_a = make_embeddings(seed=0)
    emb_b = make_embeddings(seed=0)
    emb_b.cond = Condition(torch.full_like(emb_b.cond.tokens, float("nan")))  # must not leak into the gradient
    grads = []
    for emb in (emb_a, emb_b):
        prior, _, _, _ = run(GuidanceConfig(scale=0.0, weighting="sds"), emb=emb)
        x_t, t, abar, eps = recorded_eps(prior)
        expected = (1 - abar) * (StubPrior.eps_fn(x_t, t, emb.uncond.tokens.double()) - eps) / B
        torch.testing.assert_close(prior.last_x.grad.double(), expected, rtol=1e-4, atol=1e-5)
        assert prior.rows == B  # the conditional half is not evaluated
        grads.append(prior.last_x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_nonfinite_prediction_gives_finite_grad():
    prior, _, out, rgb = run(GuidanceConfig(), prior=StubPrior(nan_at=5))
    assert torch.isfinite(prior.last_x.grad).all() and torch.isfinite(rgb.grad).all()
    assert prior.last_x.grad.view(-1)[5] == 0 and prior.last_x.grad.view(-1)[6] == 0
    assert torch.isfinite(out["loss_sds"])
    assert out["nonfinite_frac"].item() == pytest.approx(2 / (B * C * H * H))


def test_grad_clip_norm_bounds_each_sample():
    clip = 0.05
    prior, _, out, _ = run(GuidanceConfig(grad_clip=clip, scale=30.0))
    g = prior.last_x.grad * B
    norms = g.flatten(1).norm(dim=1)
    unclipped, _, _, _ = run(GuidanceConfig(grad_clip=None, scale=30.0))
    assert (unclipped.last_x.grad * B).flatten(1).norm(dim=1).min() > clip  # the clip is active
    torch.testing.assert_close(norms, torch.full((B,), clip), rtol=1e-4, atol=1e-6)
    # direction preserved
    cos = torch.nn.functional.cosine_similarity(g.flatten(1), unclipped.last_x.grad.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(B), rtol=0, atol=1e-5)
    assert out["sds_grad_norm"].item() == pytest.approx(clip, rel=1e-4)


def test_grad_clip_value():
    prior, _, _, _ = run(GuidanceConfig(grad_clip=0.01, grad_clip_mode="value", scale=30.0))
    assert (prior.last_x.grad * B).abs().max().item() == pytest.approx(0.01, rel=1e-5)


SCHEDULES = [  # (schedule, step, expected (lo, hi)); T = 1000, t in [0.02, 0.98] -> t_max_end 0.5 over [100, 1100]
    ("constant", 0, (20, 980)), ("constant", 600, (20, 980)), ("constant", 5000, (20, 980)),
    ("linear", 0, (20, 980)), ("linear", 100, (20, 980)), ("linear", 600, (20, 740)), ("linear", 1100, (20, 500)), ("linear", 9999, (20, 500)),
    ("sqrt", 100, (20, 980)), ("sqrt", 600, (20, round(1000 * (0.98 - 0.48 * math.sqrt(0.5))))), ("sqrt", 1100, (20, 500)),
    ("step", 0, (20, 980)), ("step", 1099, (20, 980)), ("step", 1100, (20, 500)),
]


@pytest.mark.parametrize("schedule,step,expected", SCHEDULES)
def test_timestep_bounds_schedules(schedule, step, expected):
    assert timestep_bounds(step, 1000, 0.02, 0.98, schedule, t_max_end=0.5, anneal_start=100, anneal_end=1100) == expected


def test_timestep_bounds_anneal_t_min_and_clamp():
    assert timestep_bounds(600, 1000, 0.2, 0.98, "linear", 0.5, 0.1, 100, 1100) == (150, 740)
    assert timestep_bounds(0, 1000, 0.0, 1.0) == (0, 999)  # t < T


@pytest.mark.parametrize("schedule", ["constant", "linear", "sqrt", "step"])
@pytest.mark.parametrize("step", [0, 500, 1000])
def test_sampled_t_within_bounds(schedule, step):
    cfg = GuidanceConfig(t_schedule=schedule, t_min=0.3, t_max=0.98, t_max_end=0.35, anneal_start_fraction=0.0, anneal_end_fraction=1.0)
    lo, hi = timestep_bounds(step, 1000, 0.3, 0.98, schedule, 0.35, None, 0, 1000)
    ts = []
    for seed in range(20):
        prior, _, out, _ = run(cfg, seed=seed, step=step)
        ts.append(prior.records[0][1])
        assert (out["t_lo"].item(), out["t_hi"].item()) == (lo, hi)
    ts = torch.cat(ts)
    assert ts.min() >= lo and ts.max() <= hi
    assert ts.dtype == torch.int64


@pytest.mark.parametrize("max_steps", [200, 600])
def test_anneal_points_are_fractions_of_the_run(max_steps):
    # Annealed over [0.25, 0.75] of the run, whatever its length (issue 19, bug 3: a 200-step run never finished annealing).
    cfg = GuidanceConfig(t_schedule="linear", t_max_end=0.5, anneal_start_fraction=0.25, anneal_end_fraction=0.75)
    start, end = round(0.25 * max_steps), round(0.75 * max_steps)
    for step in (0, start, (start + end) // 2, end, max_steps - 1):
        _, _, out, _ = run(cfg, step=step, max_steps=max_steps)
        assert (out["t_lo"].item(), out["t_hi"].item()) == timestep_bounds(step, 1000, 0.02, 0.98, "linear", 0.5, None, start, end)
    _, _, out, _ = run(cfg, step=end, max_steps=max_steps)
    assert out["t_hi"].item() == 500
    guidance = SDSGuidance(cfg, StubPrior())
    with pytest.raises(RuntimeError, match="update_step"):
        guidance.timestep_bounds(0)


def test_deterministic_with_seeded_generator():
    _, _, a, rgb_a = run(GuidanceConfig(), seed=7)
    _, _, b, rgb_b = run(GuidanceConfig(), seed=7)
    _, _, c, rgb_c = run(GuidanceConfig(), seed=8)
    assert a["loss_sds"].item() == b["loss_sds"].item()
    torch.testing.assert_close(rgb_a.grad, rgb_b.grad, rtol=0, atol=0)
    assert not torch.allclose(rgb_a.grad, rgb_c.grad)


def test_perpendicular_component_2d_hand_example():
    x = torch.tensor([[3.0, 4.0]]).view(1, 2, 1, 1)
    y = torch.tensor([[2.0, 0.0]]).view(1, 2, 1, 1)
    torch.testing.assert_close(perpendicular_component(x, y).view(2), torch.tensor([0.0, 4.0]))


def test_perp_neg_guidance_2d_hand_example():
    """e_pos = (1, 0); e_neg = (1, 1) -> perp = (0, 1); w = -1.5, s = 2: eps_hat = u + 2((1,0) - 1.5(0,1))."""
    eps_u = torch.tensor([0.5, -0.5]).view(1, 2, 1, 1)
    eps_c = eps_u + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    eps_neg = (eps_u + torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))[:, None]  # (B=1, K=1, 2, 1, 1)
    eps_hat = perp_neg_guidance(eps_u, eps_c, eps_neg, torch.tensor([[-1.5]]), scale=2.0)
    torch.testing.assert_close(eps_hat.view(2), torch.tensor([0.5 + 2.0, -0.5 - 3.0]))


F_FS, F_SF, F_SB, F_FSB = (4.0, 0.5, -2.426), (4.0, 0.5, -2.426), (1.0, 0.5, -0.606), (1.0, 0.5, 0.967)


def f(p, r):
    return p[0] * math.exp(-p[1] * r) + p[2]


def test_perp_neg_embeddings_by_view():
    emb = make_embeddings(azimuth=(0.0, 45.0, 180.0), views=["front", "front", "back"])
    front, side, back, _ = emb.view_embeddings.tokens
    pos, neg, w = perp_neg_embeddings(emb, F_FS, F_SF, F_SB, F_FSB)
    assert len(pos) == B and len(neg) == 2 * B
    pos, neg = pos.tokens, neg.tokens
    torch.testing.assert_close(pos[0], front)
    torch.testing.assert_close(pos[1], 0.5 * front + 0.5 * side)
    torch.testing.assert_close(pos[2], back)
    torch.testing.assert_close(neg[0:2], torch.stack([front, side]))  # sample-major: rows 2b, 2b + 1
    torch.testing.assert_close(neg[4:6], torch.stack([side, front]))
    expected_w = torch.tensor([[-f(F_FS, 1), -f(F_SF, 0)], [-f(F_FS, 0.5), -f(F_SF, 0.5)], [-f(F_SB, 0), -f(F_FSB, 0)]])
    torch.testing.assert_close(w, expected_w)
    assert w[2].tolist() == pytest.approx([-0.394, -1.967])


def test_perp_neg_overhead_has_no_negatives():
    emb = make_embeddings(azimuth=(30.0, 100.0, 250.0), elevation=(60.0, 0.0, 50.0), views=["overhead", "side", "overhead"])
    pos, _, w = perp_neg_embeddings(emb, F_FS, F_SF, F_SB, F_FSB)
    torch.testing.assert_close(pos.tokens[0], emb.view_embeddings.tokens[3])
    assert w[0].tolist() == [0.0, 0.0] and w[2].tolist() == [0.0, 0.0] and (w[1] != 0).all()


def test_perp_neg_sds_gradient():
    scale = 5.0
    emb = make_embeddings(azimuth=(0.0, 90.0, 180.0), views=["front", "side", "back"])
    prior, _, _, _ = run(GuidanceConfig(perp_neg=True, scale=scale, weighting="sds"), emb=emb)
    x_t, t, abar, eps = recorded_eps(prior)
    front, side, back, _ = emb.view_embeddings.tokens.double()
    pos = torch.stack([front, side, back])
    negs = [(front, side), (side, front), (side, front)]
    weights = [(-f(F_FS, 1), -f(F_SF, 0)), (-f(F_SB, 1), -f(F_FSB, 1)), (-f(F_SB, 0), -f(F_FSB, 0))]
    eps_u = StubPrior.eps_fn(x_t, t, emb.uncond.tokens.double())
    e_pos = StubPrior.eps_fn(x_t, t, pos) - eps_u
    eps_hat = []
    for i in range(B):
        d = e_pos[i].flatten()
        total = d.clone()
        for n, wk in zip(negs[i], weights[i]):
            e_k = (StubPrior.eps_fn(x_t[i : i + 1], t[i : i + 1], n[None]) - eps_u[i : i + 1]).flatten()
            total += wk * (e_k - (e_k @ d) / (d @ d) * d)
        eps_hat.append(eps_u[i] + scale * total.view_as(eps_u[i]))
    g = (1 - abar) * (torch.stack(eps_hat) - eps)
    torch.testing.assert_close(prior.last_x.grad.double(), g / B, rtol=1e-4, atol=1e-5)


def test_perp_neg_scale_zero_is_unconditional():
    prior, emb, _, _ = run(GuidanceConfig(perp_neg=True, scale=0.0))
    x_t, t, abar, eps = recorded_eps(prior)
    expected = (1 - abar) * (StubPrior.eps_fn(x_t, t, emb.uncond.tokens.double()) - eps) / B
    torch.testing.assert_close(prior.last_x.grad.double(), expected, rtol=1e-4, atol=1e-5)
    assert prior.calls == 1 and prior.rows == B


def test_user_errors_are_value_errors():
    with pytest.raises(ValueError, match="weighting"):
        SDSGuidance(GuidanceConfig(weighting="sdss"), StubPrior())
    with pytest.raises(ValueError, match="t_schedule"):
        SDSGuidance(GuidanceConfig(t_schedule="cosine"), StubPrior())
    with pytest.raises(ValueError, match="t_min"):
        SDSGuidance(GuidanceConfig(t_min=0.9, t_max=0.5), StubPrior())
    with pytest.raises(ValueError, match="t_max_end"):
        SDSGuidance(GuidanceConfig(t_min=0.6, t_schedule="linear", t_max_end=0.5), StubPrior())
    emb = make_embeddings()
    emb.view_embeddings = None
    with pytest.raises(ValueError, match="view_dependent_prompts"):
        run(GuidanceConfig(perp_neg=True), emb=emb)
    with pytest.raises(ValueError, match="prompt embeddings"):
        run(GuidanceConfig(), rgb=torch.rand(B + 1, C, H, H))


def test_prior_is_frozen_and_rgb_receives_grad():
    prior, _, _, rgb = run(GuidanceConfig())
    assert not any(p.requires_grad for p in prior.parameters())
    torch.testing.assert_close(rgb.grad, 2 * prior.last_x.grad)  # through encode_images (x = 2 rgb - 1)


class DiracPrior(StubPrior):
    """The exact denoiser of a data distribution concentrated on one image x* per text.

    The embedding of a text holds its x* (flattened); eps(x_t, t) = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t).
    SDS with scale s then pulls x to the fixed point x_u* + s (x_c* - x_u*), noise-free.
    """

    def _predict(self, x_t, t, cond, cameras):
        self.records.append((x_t.clone(), t.clone(), cond.tokens.clone()))
        abar = ALPHAS_CUMPROD[t].view(-1, 1, 1, 1)
        x_star = cond.tokens.reshape(x_t.shape)
        return (x_t - abar.sqrt() * x_star) / (1 - abar).sqrt()


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0])
def test_sds_optimisation_reaches_the_cfg_fixed_point(scale):
    g = torch.Generator().manual_seed(0)
    x_c = (torch.rand(2, 3, 4, 4, generator=g) - 0.5) * 0.8
    x_u = (torch.rand(2, 3, 4, 4, generator=g) - 0.5) * 0.2
    emb = PromptEmbeddings(Condition(x_c.reshape(2, 1, -1)), Condition(x_u.reshape(2, 1, -1)), torch.zeros(2), torch.zeros(2), ["front"] * 2)
    rgb = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
    prior = DiracPrior()
    guidance = SDSGuidance(GuidanceConfig(scale=scale, t_min=0.2, t_max=0.8), prior)
    opt = torch.optim.SGD([rgb], lr=1.0)  # exact denoiser: g is noise-free, plain descent converges
    gen = torch.Generator().manual_seed(1)
    for step in range(100):
        opt.zero_grad()
        guidance(rgb, emb, step, generator=gen)["loss_sds"].backward()
        opt.step()
    expected = x_u + scale * (x_c - x_u)
    torch.testing.assert_close(rgb.detach() * 2 - 1, expected, rtol=0, atol=1e-4)
    assert prior.calls == 100


class CameraStubPrior(StubPrior):
    """A camera-conditioned stub: records the cameras of every call."""

    def __init__(self, conditioned: bool = True):
        super().__init__()
        self.conditioned = conditioned
        self.cameras: list = []

    @property
    def camera_conditioned(self):
        return self.conditioned

    def _predict(self, x_t, t, cond, cameras):
        self.cameras.append(cameras)
        return super()._predict(x_t, t, cond, cameras)


@pytest.mark.parametrize("perp_neg", [False, True])
def test_cameras_reach_every_branch_of_a_camera_conditioned_prior(perp_neg):
    cams = make_cameras(torch.tensor([10.0, 100.0, 200.0]), torch.tensor([0.0, 30.0, 60.0]), 2.5, 40.0)
    views = torch.tensor([[0.0, 10.0], [30.0, 100.0], [60.0, 200.0]])  # (elevation, azimuth) of each render
    emb = make_embeddings(azimuth=(10.0, 100.0, 200.0), elevation=(0.0, 30.0, 60.0))
    prior = CameraStubPrior()
    guidance = SDSGuidance(GuidanceConfig(perp_neg=perp_neg), prior)
    guidance(torch.rand(B, C, H, H, requires_grad=True), emb, step=0, cameras=cams, generator=torch.Generator().manual_seed(0))
    assert len(prior.cameras) == 1  # still one prior call
    sent = prior.cameras[0]
    n_branches = prior.records[0][0].shape[0] // B
    assert len(sent) == prior.records[0][0].shape[0]
    angles = sent.view_angles
    # Conditional and unconditional halves see the same cameras, in the order of their samples.
    assert torch.equal(angles[:B], views) and torch.equal(angles[B : 2 * B], views)
    assert torch.equal(sent.c2w[B : 2 * B], cams.c2w)
    if perp_neg:
        assert n_branches > 2 and torch.equal(angles[2 * B :], views.repeat_interleave(n_branches - 2, dim=0))


def test_cameras_are_not_sent_to_a_prior_without_camera_conditioning():
    prior = CameraStubPrior(conditioned=False)
    guidance = SDSGuidance(GuidanceConfig(), prior)
    cams = make_cameras(torch.zeros(B), torch.zeros(B), 2.5, 40.0)
    guidance(torch.rand(B, C, H, H, requires_grad=True), make_embeddings(), step=0, cameras=cams, generator=torch.Generator().manual_seed(0))
    assert prior.cameras == [None]


def test_v_prediction_prior_gets_eps_from_its_schedule():
    """The stub's output as v: eps_hat = sqrt(abar) v_hat + sqrt(1 - abar) x_t (Salimans & Ho 2022), CFG on v."""
    scale = 7.5
    prior, emb, _, _ = run(GuidanceConfig(scale=scale), prior=StubPrior(prediction_type="v_prediction"))
    x_t, t, abar, eps = recorded_eps(prior)
    v_c = StubPrior.eps_fn(x_t, t, emb.cond.tokens.double())
    v_u = StubPrior.eps_fn(x_t, t, emb.uncond.tokens.double())
    v_hat = v_u + scale * (v_c - v_u)
    eps_hat = abar.sqrt() * v_hat + (1 - abar).sqrt() * x_t
    torch.testing.assert_close(prior.last_x.grad.double(), (1 - abar) * (eps_hat - eps) / B, rtol=1e-4, atol=1e-5)


def test_guidance_protocol_holds_no_prior_state():
    prior = StubPrior()
    guidance = SDSGuidance(GuidanceConfig(), prior)
    assert isinstance(guidance, Guidance) and guidance.prior is prior
    assert guidance.param_groups() == [] and dict(guidance.state_dict()) == {}
    prior.eval()
    guidance.train()  # the trainer's mode switches never reach the shared, frozen prior
    assert not prior.training and list(guidance.children()) == []


def test_build_guidance_from_the_registry():
    prior = StubPrior()
    assert GUIDANCE["sds"] is SDSGuidance
    guidance = build_guidance(GuidanceConfig(method="sds", scale=3.0), prior)
    assert type(guidance) is SDSGuidance and guidance.cfg.scale == 3.0 and guidance.prior is prior
    with pytest.raises(GuidanceConfigError) as e:
        build_guidance(GuidanceConfig(method="sdss"), prior)
    assert str(e.value).startswith("guidance.method='sdss' is unknown; did you mean 'sds'? (one of sds, ")
    assert issubclass(GuidanceConfigError, ValueError)
    with pytest.raises(GuidanceConfigError, match="weighting"):  # the estimator still checks its settings
        build_guidance(GuidanceConfig(weighting="sdss"), prior)
