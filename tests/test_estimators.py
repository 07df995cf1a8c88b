"""The estimators after SDS (NFSD, CSD, ISM, SDI, CDS), DreamTime, the scheduled clip, the ism/sjc
weightings and DDIM inversion, each against its formula computed here.

A stub prior with hand-computable outputs (linear in x_t, a fixed direction per text) on a
NoiseSchedule built from a DDPMScheduler config records every call; the tests recompute each
estimator's g from the recorded inputs with alpha-bar computed here (ALPHAS_CUMPROD) and their own
DDIM formula, and compare with d loss / d x.
"""

import math

import pytest
import torch
from torch import nn

from sds3d.guidance import GuidanceConfig, GuidanceConfigError, PromptEmbeddings, build_guidance, ddim_invert, dreamtime_timesteps
from sds3d.guidance.config import check_guidance_config
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import NoiseSchedule

torch.set_num_threads(1)
B, C, H = 3, 3, 8
S, D = 2, 4
PROJECTION = torch.randn(D, C * H * H, generator=torch.Generator().manual_seed(99)) / D
# DDPM linear betas 1e-4..0.02, T = 1000 (Ho et al. 2020), computed here; the stub's schedule is built from the same config.
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def abar(t):
    """alpha-bar at integer t (a negative t: DDIM's clean end, 1 with DDIMScheduler's set_alpha_to_one)."""
    t = torch.as_tensor(t)
    return torch.where(t >= 0, ALPHAS_CUMPROD[t.clamp_min(0)], torch.ones((), dtype=torch.float64)).view(-1, 1, 1, 1)


def ddim(x, t_from, t_to, eps):
    """x_{t_to} = sqrt(abar_to) x0-hat + sqrt(1 - abar_to) eps, x0-hat = (x - sqrt(1 - abar_from) eps) / sqrt(abar_from)."""
    a_from, a_to = abar(t_from), abar(t_to)
    return a_to.sqrt() * (x - (1 - a_from).sqrt() * eps) / a_from.sqrt() + (1 - a_to).sqrt() * eps


def text_tokens(text: str) -> torch.Tensor:
    return torch.randn(1, S, D, generator=torch.Generator().manual_seed(sum(map(ord, text)) + 7))


class StubPrior(Prior):
    """Pixel prior with eps(x_t, t, y) = 0.1 x_t + P mean_S(y) + 1e-4 t; texts map to fixed tokens; records calls."""

    resolution, latent, latent_shape = H, False, (C, H, H)

    def __init__(self):
        super().__init__()
        self.schedule = NoiseSchedule(LINEAR)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_x = None

    @staticmethod
    def eps_fn(x_t, t, tokens):
        direction = (tokens.mean(dim=1) @ PROJECTION.to(tokens.dtype)).view(-1, C, H, H)
        return 0.1 * x_t + direction + 1e-4 * t.view(-1, 1, 1, 1).to(x_t.dtype)

    def encode_prompts(self, prompts):
        return Condition(torch.cat([text_tokens(p) for p in prompts]))

    def _predict(self, x_t, t, cond, cameras):
        assert not torch.is_grad_enabled()
        self.records.append((x_t.clone(), t.clone(), cond.tokens.clone()))
        return self.eps_fn(x_t, t, cond.tokens)

    def encode_images(self, rgb):
        self.last_x = rgb * 2 - 1
        self.last_x.retain_grad()
        return self.last_x

    def decode(self, x):
        return (x + 1) / 2


def embeddings(seed=0):
    g = torch.Generator().manual_seed(seed)
    cond, uncond = torch.randn(B, S, D, generator=g), torch.randn(B, S, D, generator=g)
    return PromptEmbeddings(Condition(cond), Condition(uncond), torch.tensor([10.0, 100.0, 200.0]), torch.zeros(B),
                            ["front", "side", "back"])


#: The run length the stub runs have: the anneal fractions below are of these 100 steps.
MAX_STEPS = 100


def run(cfg, seed=0, step=0, prior=None, guidance=None, max_steps=MAX_STEPS):
    prior = prior or StubPrior()
    emb = embeddings()
    rgb = torch.rand(B, C, H, H, generator=torch.Generator().manual_seed(123)).requires_grad_(True)
    guidance = guidance or build_guidance(cfg, prior)
    guidance.update_step(step, max_steps)
    out = guidance(rgb, emb, step=step, generator=torch.Generator().manual_seed(seed))
    out["loss_sds"].backward()
    return prior, emb, out, guidance


def eps_of(tokens, x_t, t):
    return StubPrior.eps_fn(x_t.double(), t, tokens.double())


def x_of(prior):
    return prior.last_x.detach().double()


def grad_of(prior):
    return prior.last_x.grad.double() * B  # d loss / d x = g / B


def cfg_eps(emb, x_t, t, scale):
    eps_c, eps_u = eps_of(emb.cond.tokens, x_t, t), eps_of(emb.uncond.tokens, x_t, t)
    return eps_u + scale * (eps_c - eps_u)


# -- NFSD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_frac", [0.1, 0.5])  # below / above NFSD's threshold 0.2 T
def test_nfsd_gradient(t_frac):
    scale = 7.5
    cfg = GuidanceConfig(method="nfsd", scale=scale, t_min=t_frac, t_max=t_frac, weighting="sds")
    prior, emb, out, _ = run(cfg)
    (x_t, t, tokens), = prior.records
    assert x_t.shape[0] == 3 * B and out["prior_calls"].item() == 1.0  # one call on [cond, uncond, neg]
    x_t, t = x_t[:B], t[:B]
    torch.testing.assert_close(tokens[2 * B :], text_tokens(cfg.nfsd_negative_prompt).expand(B, S, D))
    eps_c, eps_u = eps_of(emb.cond.tokens, x_t, t), eps_of(emb.uncond.tokens, x_t, t)
    eps_neg = eps_of(text_tokens(cfg.nfsd_negative_prompt).expand(B, S, D), x_t, t)
    delta_D = eps_u if t_frac < 0.2 else eps_u - eps_neg
    expected = (1 - abar(t)) * (delta_D + scale * (eps_c - eps_u))
    torch.testing.assert_close(grad_of(prior), expected, rtol=1e-4, atol=1e-5)


# -- CSD -----------------------------------------------------------------------------------------


def test_csd_classifier_score_alone_is_one_call_of_two_rows():
    prior, emb, out, _ = run(GuidanceConfig(method="csd", weighting="uniform"))
    (x_t, t, _), = prior.records
    assert x_t.shape[0] == 2 * B and out["prior_calls"].item() == 1.0
    x_t, t = x_t[:B], t[:B]
    expected = eps_of(emb.cond.tokens, x_t, t) - eps_of(emb.uncond.tokens, x_t, t)
    torch.testing.assert_close(grad_of(prior), expected, rtol=1e-4, atol=1e-5)


def test_csd_annealed_negative_term():
    cfg = GuidanceConfig(method="csd", weighting="sds", csd_negative_prompt="low quality", csd_negative_scale=1.0,
                         csd_negative_scale_end=0.5, anneal_start_fraction=0.0, anneal_end_fraction=1.0)
    prior, emb, out, _ = run(cfg, step=50)  # a = 1 + 0.5 * (0.5 - 1) = 0.75
    (x_t, t, _), = prior.records
    x_t, t = x_t[:B], t[:B]
    eps_c, eps_u = eps_of(emb.cond.tokens, x_t, t), eps_of(emb.uncond.tokens, x_t, t)
    eps_neg = eps_of(text_tokens("low quality").expand(B, S, D), x_t, t)
    expected = (1 - abar(t)) * ((eps_c - eps_u) + 0.75 * (eps_u - eps_neg))
    torch.testing.assert_close(grad_of(prior), expected, rtol=1e-4, atol=1e-5)
    assert out["csd_negative_scale"].item() == pytest.approx(0.75)


# -- ISM -----------------------------------------------------------------------------------------


def test_ism_gradient_follows_its_inversion_chain():
    scale, delta_t, xs_delta_t, xs_inv_steps = 7.5, 50, 200, 5
    cfg = GuidanceConfig(method="ism", scale=scale, weighting="ism", delta_t=delta_t, xs_delta_t=xs_delta_t, xs_inv_steps=xs_inv_steps)
    prior, emb, out, _ = run(cfg, seed=3)
    *inversion, final = prior.records
    t = final[1][:B]
    x = x_of(prior)
    # The chain per sample, by hand: start = max(s - 1000, 0), steps of 200 cut at s, then s -> t.
    x_k = None
    for b in range(B):
        t_b = int(t[b])
        s_b = max(t_b - delta_t, 0)
        start = max(s_b - xs_delta_t * xs_inv_steps, 0)
        path = [start]
        while path[-1] < s_b:
            path.append(min(path[-1] + xs_delta_t, s_b))
        path.append(t_b)
        assert len(path) - 1 <= xs_inv_steps + 1
        # x_start as recorded in the first call (start noised with the step's eps), then the DDIM inversion.
        first = len(inversion) - (len(path) - 1)  # shorter paths are padded at the front with no-op steps
        x_b = inversion[first][0][b : b + 1].double()
        eps_start = (x_b - abar(start).sqrt() * x[b : b + 1]) / (1 - abar(start)).sqrt()
        assert eps_start.std().item() == pytest.approx(1.0, abs=0.3)  # really a N(0, 1) draw
        for k, (t_from, t_to) in enumerate(zip(path[:-1], path[1:])):
            torch.testing.assert_close(inversion[first + k][0][b : b + 1].double(), x_b, rtol=1e-4, atol=1e-5)
            eps_u = eps_of(text_tokens(""), x_b, torch.tensor([t_from]))  # the inversion's null text
            x_b = ddim(x_b, t_from, t_to, eps_u)
        x_t_b = final[0][b : b + 1].double()
        torch.testing.assert_close(x_t_b, x_b, rtol=1e-4, atol=1e-5)
        eps_hat = cfg_eps(PromptEmbeddings(emb.cond[b], emb.uncond[b], None, None, []), x_t_b, torch.tensor([t_b]), scale)
        a = abar(t_b)
        expected = ((1 - a) / a).sqrt() * (eps_hat - eps_u)  # eps_u: the prediction at (x_s, s)
        torch.testing.assert_close(grad_of(prior)[b : b + 1], expected, rtol=1e-4, atol=1e-4)
        x_k = x_b
    assert x_k is not None
    assert out["prior_calls"].item() == len(prior.records) == len(inversion) + 1
    assert all(r[0].shape[0] == B for r in inversion) and final[0].shape[0] == 2 * B  # inversion unconditional, final CFG


def test_ism_interval_anneals():
    cfg = GuidanceConfig(method="ism", delta_t=50, delta_t_start=100, anneal_start_fraction=0.0, anneal_end_fraction=1.0)
    for step, expected in ((0, 100), (50, 75), (100, 50), (500, 50)):
        _, _, out, _ = run(cfg, step=step)
        assert out["delta_t"].item() == expected


# -- SDI -----------------------------------------------------------------------------------------


def test_sdi_gradient_is_x_minus_the_inverted_one_step_estimate():
    scale, inv_scale, n = 8.5, -6.5, 10
    cfg = GuidanceConfig(method="sdi", scale=scale, inversion_scale=inv_scale, inversion_steps=n, inversion_eta=0.0)
    prior, emb, out, _ = run(cfg, seed=1)
    *inversion, final = prior.records
    t = final[1][:B]
    x = x_of(prior)
    for b in range(B):
        t_b = int(t[b])
        # DDIMScheduler "leading" grid of 10 steps for T = 1000: 0, 100, ..., 900; before it the clean end.
        path = [-100] + [g for g in range(0, 1000, 100) if g < t_b] + [t_b]
        x_b = x[b : b + 1]
        first = len(inversion) - (len(path) - 1)
        e = PromptEmbeddings(emb.cond[b], emb.uncond[b], None, None, [])
        for k, (t_from, t_to) in enumerate(zip(path[:-1], path[1:])):
            torch.testing.assert_close(inversion[first + k][0][b : b + 1].double(), x_b, rtol=1e-4, atol=1e-5)
            x_b = ddim(x_b, t_from, t_to, cfg_eps(e, x_b, torch.tensor([max(t_from, 0)]) * 0 + t_from, inv_scale))
        torch.testing.assert_close(final[0][b : b + 1].double(), x_b, rtol=1e-4, atol=1e-5)
        a = abar(t_b)
        x0_hat = (x_b - (1 - a).sqrt() * cfg_eps(e, x_b, torch.tensor([t_b]), scale)) / a.sqrt()
        torch.testing.assert_close(grad_of(prior)[b : b + 1], x[b : b + 1] - x0_hat, rtol=1e-4, atol=1e-4)
    assert out["prior_calls"].item() == len(prior.records) == len(inversion) + 1
    assert all(r[0].shape[0] == 2 * B for r in prior.records)  # every call is one CFG batch


def test_sdi_eta_adds_ddim_posterior_noise():
    """With eta > 0 each inversion step is the deterministic one plus eta * std(t_to | t_from) * z, z ~ N(0, I)."""
    eta = 0.3
    cfg = GuidanceConfig(method="sdi", scale=3.0, inversion_scale=0.0, inversion_steps=10, inversion_eta=eta, t_min=0.95, t_max=0.95)
    prior, emb, _, _ = run(cfg, seed=2)
    xs = [r[0].double() for r in prior.records]  # t = 950: every sample inverts -100, 0, 100, ..., 900, 950
    path = [-100] + list(range(0, 1000, 100)) + [950]
    z = []
    for k in range(1, len(path) - 1):
        t_from, t_to = path[k], path[k + 1]
        eps_u = eps_of(emb.uncond.tokens, xs[k][:B], torch.tensor([t_from] * B))
        a_f, a_t = abar(t_from), abar(t_to)
        std = ((1 - a_f) / (1 - a_t) * (1 - a_t / a_f)).sqrt()  # DDIM Eq. 16, eta = 1
        z.append((xs[k + 1][:B] - ddim(xs[k][:B], t_from, t_to, eps_u)) / (eta * std))
    z = torch.cat(z)
    assert z.mean().abs().item() < 0.1 and z.std().item() == pytest.approx(1.0, abs=0.1)


# -- CDS -----------------------------------------------------------------------------------------


def test_cds_gradient_with_one_fixed_noise():
    scale = 3.0
    cfg = GuidanceConfig(method="cds", scale=scale, weighting="uniform", cds_delta_t=(100, 299))
    prior = StubPrior()
    guidance = build_guidance(cfg, prior)
    eps_stars = []
    for step in range(2):
        prior.records.clear()
        _, emb, out, _ = run(cfg, seed=step, step=step, prior=prior, guidance=guidance)
        (x_t, t, _), (x_prev, t_prev, _) = prior.records
        x_t, t, x_prev, t_prev = x_t[:B].double(), t[:B], x_prev[:B].double(), t_prev[:B]
        assert ((t - t_prev >= 100) & (t - t_prev <= 299) | (t == 999)).all()
        assert ((t_prev >= out["t_lo"]) & (t_prev <= out["t_hi"])).all()  # the schedule bounds the less noisy time
        x = x_of(prior)
        eps_star = (x_t - abar(t).sqrt() * x) / (1 - abar(t)).sqrt()
        eps_stars.append(eps_star)
        eps_hat_t = cfg_eps(emb, x_t, t, scale)
        torch.testing.assert_close(x_prev, ddim(x_t, t, t_prev, eps_hat_t), rtol=1e-4, atol=1e-5)
        expected = eps_hat_t - cfg_eps(emb, x_prev, t_prev, scale)
        torch.testing.assert_close(grad_of(prior), expected, rtol=1e-4, atol=1e-4)
        assert out["prior_calls"].item() == 2.0
    for e in eps_stars:  # one noise for every view and every step
        torch.testing.assert_close(e, eps_stars[0][:1].expand_as(e), rtol=1e-3, atol=1e-4)
    assert set(guidance.state_dict()) == {"eps_star", "eps_star_drawn"}


# -- weightings, DreamTime, the scheduled clip -----------------------------------------------------


def test_ism_and_sjc_weightings():
    schedule = NoiseSchedule(LINEAR)
    t = torch.tensor([20, 500, 980])
    a = ALPHAS_CUMPROD[t]
    torch.testing.assert_close(schedule.weight(t, "ism").double(), ((1 - a) / a).sqrt(), rtol=1e-5, atol=0)
    torch.testing.assert_close(schedule.weight(t, "sjc").double(), (a / (1 - a)).sqrt(), rtol=1e-5, atol=0)


def test_sjc_weighting_is_score_jacobian_chaining():
    """SDS with weighting sjc descends SJC's perturb-and-average score: g = -(D(x + sigma eps) - x) / sigma^2 (VE sigma)."""
    prior, emb, _, _ = run(GuidanceConfig(method="sds", scale=7.5, weighting="sjc"))
    (x_t, t, _), = prior.records
    x_t, t, x = x_t[:B].double(), t[:B], x_of(prior)
    sigma = ((1 - abar(t)) / abar(t)).sqrt()  # VE noise level of x_t = alpha (x + sigma eps)
    x_sigma = x_t / abar(t).sqrt()
    D = x_sigma - sigma * cfg_eps(emb, x_t, t, 7.5)
    torch.testing.assert_close(grad_of(prior), -(D - x) / sigma**2, rtol=1e-4, atol=1e-4)


def test_dreamtime_timesteps_against_the_formula():
    schedule = NoiseSchedule(LINEAR)
    m1, m2, s1, s2, N = 0.8, 0.5, 0.3, 0.1, 200
    ts = torch.arange(20, 981)
    a = ALPHAS_CUMPROD[ts]
    W_d = ((1 - a) / a).sqrt()
    tf = ts.double()
    W_p = torch.where(tf > 800, torch.exp(-((tf - 800) ** 2) / (2 * 300.0**2)),
                      torch.where(tf < 500, torch.exp(-((tf - 500) ** 2) / (2 * 100.0**2)), torch.ones_like(tf)))
    p = W_d * W_p / (W_d * W_p).sum()
    expected = []
    for i in range(N):
        tail = torch.tensor([p[k:].sum() for k in range(len(ts))])
        expected.append(int(ts[(tail - i / N).abs().argmin()]))
    got = dreamtime_timesteps(schedule, N, m1, m2, s1, s2, 20, 980)
    assert got.tolist() == expected
    assert (got[1:] <= got[:-1]).all() and got[0] >= 970  # monotone, from the top


def test_dreamtime_t_per_step_in_the_guidance():
    cfg = GuidanceConfig(method="sds", t_schedule="dreamtime", anneal_start_fraction=0.01, anneal_end_fraction=0.11)
    guidance = build_guidance(cfg, StubPrior())
    guidance.update_step(0, 1000)  # anneal over steps [10, 110]
    table = dreamtime_timesteps(guidance.prior.schedule, 100, 0.8, 0.5, 0.3, 0.1, 20, 980)
    assert guidance.timestep_bounds(0) == (int(table[0]),) * 2 and guidance.timestep_bounds(60) == (int(table[50]),) * 2
    assert guidance.timestep_bounds(5000) == (int(table[-1]),) * 2
    prior, _, out, _ = run(cfg, step=60, max_steps=1000)
    assert (prior.records[0][1] == int(table[50])).all() and out["t_lo"].item() == out["t_hi"].item() == int(table[50])


def test_scheduled_value_clip():
    """Debiased-SDS style: the bound moves 0.01 -> 0.05 over [0, 100]; at step 50 it is 0.03."""
    cfg = GuidanceConfig(method="sds", scale=30.0, grad_clip=0.01, grad_clip_end=0.05, grad_clip_mode="value", anneal_start_fraction=0.0,
                         anneal_end_fraction=1.0)
    prior, _, _, _ = run(cfg, step=50)
    assert grad_of(prior).abs().max().item() == pytest.approx(0.03, rel=1e-5)


# -- DDIM inversion ------------------------------------------------------------------------------


def test_ddim_inversion_round_trip_on_an_exact_denoiser():
    """Data ~ N(mu, s^2 I): eps-hat(x_t) = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2) exactly. Inverting
    x to t = 600 and running DDIM back along the same grid recovers x, better with more steps."""
    schedule = NoiseSchedule(LINEAR)
    mu, s = 0.3, 0.5
    x = mu + s * torch.randn(2, C, H, H, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def eps_exact(x_t, t):
        a, sig = schedule.alpha(t, x_t).double(), schedule.sigma(t, x_t).double()
        return sig * (x_t - a * mu) / (a**2 * s**2 + sig**2)

    errors = {}
    for n in (6, 60, 600):
        grid = [-1] + torch.linspace(0, 600, n + 1).round().long().tolist()[1:]
        path = torch.tensor([grid, grid]).T
        x_t, _ = ddim_invert(schedule, eps_exact, x, path)
        back = x_t
        for t_from, t_to in zip(reversed(grid[1:]), reversed(grid[:-1])):
            tt = torch.tensor([t_from] * 2)
            back = schedule.ddim_step(back, tt, torch.tensor([t_to] * 2), eps_exact(back, tt))
        errors[n] = ((back - x).norm() / x.norm()).item()
    # DDIM's discretisation error is first order in the step: about 10x smaller per 10x steps.
    assert errors[600] < 0.01 and errors[600] < errors[60] / 5 < errors[6] / 25


def test_ddim_invert_pads_shorter_paths_with_no_ops():
    schedule = NoiseSchedule(LINEAR)
    x = torch.randn(2, C, H, H, generator=torch.Generator().manual_seed(1))
    calls = []

    def eps_fn(x_t, t):
        calls.append(t.clone())
        return 0.5 * x_t

    path = torch.tensor([[100, 100, 300], [100, 200, 300]]).T  # sample 0: padded one step
    out, eps_last = ddim_invert(schedule, eps_fn, x, path)
    one = schedule.ddim_invert_step(x[:1], torch.tensor([100]), torch.tensor([300]), 0.5 * x[:1])
    torch.testing.assert_close(out[:1], one)
    torch.testing.assert_close(eps_last[:1], 0.5 * x[:1])
    assert len(calls) == 2 and all(c.shape == (2,) for c in calls)


# -- bad input -----------------------------------------------------------------------------------


class NoDDIMSchedule:
    """A schedule without DDIM steps (a continuous-time or stochastic-only sampler)."""

    num_train_timesteps = 1000
    prediction_type = "epsilon"


@pytest.mark.parametrize("method", ["ism", "sdi", "cds"])
def test_methods_needing_ddim_refuse_a_schedule_without_it(method):
    prior = StubPrior()
    prior.schedule = NoDDIMSchedule()
    with pytest.raises(GuidanceConfigError, match=f"guidance.method={method} needs a deterministic DDIM sampler"):
        build_guidance(GuidanceConfig(method=method), prior)


def test_vsd_refuses_a_denoiser_without_lora_targets():
    with pytest.raises(GuidanceConfigError, match="guidance.method=vsd trains a LoRA of the prior's denoiser"):
        build_guidance(GuidanceConfig(method="vsd"), StubPrior())  # Prior.denoiser is None


@pytest.mark.parametrize("settings, message", [
    ({"xs_delta_t": 0}, "guidance.xs_delta_t=0 must be a positive integer"),
    ({"delta_t": -5}, "guidance.delta_t=-5 must be a positive integer"),
    ({"inversion_steps": 0}, "guidance.inversion_steps=0"),
    ({"lora_camera_scale": -0.5}, "guidance.lora_camera_scale=-0.5 must be in [0, 1]"),
    ({"lora_camera_dropout": 1.5}, "guidance.lora_camera_dropout=1.5"),
    ({"inversion_eta": -0.1}, "guidance.inversion_eta=-0.1 is negative"),
    ({"cds_delta_t": (300, 100)}, "guidance.cds_delta_t=[300, 100]"),
    ({"csd_negative_scale": -1.0}, "guidance.csd_negative_scale=-1.0 is negative"),
    ({"nfsd_t_threshold": 2.0}, "guidance.nfsd_t_threshold=2.0"),
    ({"dreamtime_m1": 0.4}, "guidance.dreamtime_m2=0.5 and dreamtime_m1=0.4"),
    ({"dreamtime_s2": 0.0}, "guidance.dreamtime_s2=0.0 must be positive"),
    ({"grad_clip_end": 2.0}, "guidance.grad_clip_end=2.0 needs a positive grad_clip"),
    ({"t_schedule": "dreamtim"}, "guidance.t_schedule='dreamtim' is unknown"),
])
def test_settings_out_of_range(settings, message):
    with pytest.raises(GuidanceConfigError) as e:
        check_guidance_config(GuidanceConfig(**settings))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_estimator_batches_and_counts():
    """Calls per step as documented: 1 (nfsd, csd), 2 (cds), inversion steps + 1 (sdi: <= 10 + 1 steps) or + 2
    (ism: <= 5 steps to s)."""
    expected = {"nfsd": lambda n: n == 1, "csd": lambda n: n == 1, "cds": lambda n: n == 2,
                "ism": lambda n: 2 <= n <= 7, "sdi": lambda n: 2 <= n <= 12}
    for method, ok in expected.items():
        prior, _, out, _ = run(GuidanceConfig(method=method))
        n = len(prior.records)
        assert ok(n) and out["prior_calls"].item() == n == prior.calls, method
        assert math.isfinite(out["loss_sds"].item())
