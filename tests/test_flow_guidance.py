"""Flow score distillation (flow_sds, rfds, rfds_rev) on stub velocity priors.

Expected gradients are recomputed here from the stub's recorded calls and sigma computed here by
SD3's shift formula, independently of the estimators' and the schedule's code.
"""

import pytest
import torch
from torch import nn

from sds3d.guidance import GUIDANCE, GuidanceConfig, GuidanceConfigError, PromptEmbeddings, build_guidance
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import FlowSchedule, NoiseSchedule

torch.set_num_threads(1)
B, C, H = 2, 3, 8
SHIFT = 3.0
PROJECTION = torch.randn(4, C * H * H, generator=torch.Generator().manual_seed(7)) / 4


def sigma_by_hand(t):
    u = (t.double() + 1) / 1000
    return (SHIFT * u / (1 + (SHIFT - 1) * u)).float().view(-1, 1, 1, 1)


class StubFlowPrior(Prior):
    """Pixel prior on SD3's flow schedule; ``velocity(x_t, t, tokens)`` is the model; records every call."""

    resolution, latent, latent_shape = H, False, (C, H, H)

    def __init__(self, velocity, distilled: bool = False):
        super().__init__()
        self.schedule = FlowSchedule({"num_train_timesteps": 1000, "shift": SHIFT})
        self.velocity = velocity
        self.distilled = distilled
        self.dummy = nn.Parameter(torch.zeros(1))
        self.records = []
        self.last_x = None

    @property
    def guidance_distilled(self):
        return self.distilled

    def encode_prompts(self, prompts):
        raise AssertionError("not used here")

    def _predict(self, x_t, t, cond, cameras):
        assert not torch.is_grad_enabled()
        self.records.append((x_t.clone(), t.clone(), cond))
        return self.velocity(x_t, t, cond)

    def encode_images(self, rgb):
        self.last_x = rgb * 2 - 1
        self.last_x.retain_grad()
        return self.last_x

    def decode(self, x):
        return (x + 1) / 2


def linear_velocity(x_t, t, cond):
    """v = 0.3 x_t + P mean(tokens) + 1e-3 t (+ the guidance embedding value, when given)."""
    direction = (cond.tokens.mean(dim=1) @ PROJECTION).view(-1, C, H, H)
    out = 0.3 * x_t + direction + 1e-3 * t.view(-1, 1, 1, 1).float()
    if "guidance" in cond.extras:
        out = out + cond.extras["guidance"].view(-1, 1, 1, 1)
    return out


def embeddings(seed=0) -> PromptEmbeddings:
    g = torch.Generator().manual_seed(seed)
    cond, uncond = Condition(torch.randn(B, 2, 4, generator=g)), Condition(torch.zeros(1, 2, 4)).expand(B)
    return PromptEmbeddings(cond, uncond, torch.zeros(B), torch.zeros(B), ["front"] * B)


def run(method, prior, rgb, seed=3, **cfg):
    guidance = build_guidance(GuidanceConfig(method=method, **cfg), prior)
    out = guidance(rgb, embeddings(), step=0, generator=torch.Generator().manual_seed(seed))
    out["loss_sds"].backward()
    return out


def test_registered():
    assert {"flow_sds", "rfds", "rfds_rev"} <= set(GUIDANCE)


def test_flow_sds_gradient_is_the_formula():
    """d loss / d x = sigma^2 (1 - sigma) (v_u + s (v_c - v_u) - (eps - x)) / B, from the one recorded CFG call."""
    prior, s = StubFlowPrior(linear_velocity), 7.5
    rgb = torch.rand(B, C, H, H, requires_grad=True)
    out = run("flow_sds", prior, rgb, scale=s, t_min=0.1, t_max=0.9)
    assert len(prior.records) == 1 and out["prior_calls"].item() == 1.0
    x_t, t, cond = prior.records[0]
    assert x_t.shape[0] == 2 * B and torch.equal(x_t[:B], x_t[B:]) and torch.equal(t[:B], t[B:])
    emb = embeddings()
    assert torch.equal(cond.tokens[:B], emb.cond.tokens) and torch.equal(cond.tokens[B:], emb.uncond.tokens)
    x = prior.last_x.detach()
    sigma = sigma_by_hand(t[:B])
    eps = (x_t[:B] - (1 - sigma) * x) / sigma  # invert x_t = (1 - sigma) x + sigma eps
    v_c, v_u = linear_velocity(x_t, t, cond).chunk(2)
    expected = sigma**2 * (1 - sigma) * (v_u + s * (v_c - v_u) - (eps - x)) / B
    torch.testing.assert_close(prior.last_x.grad, expected, rtol=1e-4, atol=1e-6)
    assert prior.last_x.grad.abs().sum() > 0


def test_flow_sds_equals_sds_on_the_same_flow_prior():
    """SDS (eps-hat from the velocity by the schedule) and flow SDS give the same gradient: eps_hat - eps = (1 - sigma)(v_hat - v)."""
    rgb = torch.rand(B, C, H, H)
    grads = []
    for method in ("sds", "flow_sds"):
        prior = StubFlowPrior(linear_velocity)
        run(method, prior, rgb.clone().requires_grad_(True), scale=3.0)
        grads.append(prior.last_x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_rfds_gradient_is_the_reference_formula():
    """RFDS: loss = mean(w) mse_mean(eps - x, v_cfg) / B with w = sigmoid(u), u ~ N(0, 1): d/dx = 2 mean(w) (v_cfg - (eps - x)) / (B numel)."""
    prior, s = StubFlowPrior(linear_velocity), 100.0
    rgb = torch.rand(B, C, H, H, requires_grad=True)
    gen_seed = 11
    out = run("rfds", prior, rgb, seed=gen_seed, scale=s, t_min=0.019, t_max=0.699)
    x_t, t, cond = prior.records[0]
    assert len(prior.records) == 1 and 19 <= t.min() and t.max() <= 699
    x = prior.last_x.detach()
    sigma = sigma_by_hand(t[:B])
    eps = (x_t[:B] - (1 - sigma) * x) / sigma
    v_c, v_u = linear_velocity(x_t, t, cond).chunk(2)
    # The generator's draws in order: t (B ints), eps (B x C x H x H), then u (B).
    g = torch.Generator().manual_seed(gen_seed)
    torch.randint(19, 700, (B,), generator=g)
    torch.randn((B, C, H, H), generator=g)
    w = torch.sigmoid(torch.randn((B,), generator=g))
    torch.testing.assert_close(out["w_mean"], w.mean())
    expected = 2 * w.mean() * (v_u + s * (v_c - v_u) - (eps - x)) / (B * x.numel())
    torch.testing.assert_close(prior.last_x.grad, expected, rtol=1e-4, atol=1e-8)


def test_guidance_distilled_prior_gets_one_row_per_view_and_the_scale_as_input():
    prior = StubFlowPrior(linear_velocity, distilled=True)
    rgb = torch.rand(B, C, H, H, requires_grad=True)
    run("rfds", prior, rgb, scale=3.5)
    x_t, t, cond = prior.records[0]
    assert x_t.shape[0] == B and torch.equal(cond.extras["guidance"], torch.full((B,), 3.5))
    assert torch.equal(cond.tokens, embeddings().cond.tokens)


class PointMass:
    """The exact velocity field of data at a single point x*: v(x_t, sigma) = (x_t - x*) / sigma (straight paths)."""

    def __init__(self, x_star):
        self.x_star = x_star

    def __call__(self, x_t, t, cond):
        x_star = self.x_star.repeat(x_t.shape[0] // self.x_star.shape[0], 1, 1, 1)  # CFG rows: [cond, uncond]
        return (x_t - x_star) / sigma_by_hand(t)


def test_rfds_rev_inversion_round_trips_on_an_exact_stub():
    """At x = x*: the inverted noise is the drawn one, the CFG call sees the original x_t, and the gradient is 0;
    at any x: eps' = x_t + (1 - sigma) v(x_t) = (x_t - (1 - sigma) x*) / sigma, and the Euler step back from sigma = 1 returns x_t."""
    rgb = torch.rand(B, C, H, H, generator=torch.Generator().manual_seed(1))
    field = PointMass(rgb * 2 - 1)
    prior = StubFlowPrior(field)
    out = run("rfds_rev", prior, rgb.clone().requires_grad_(True), scale=100.0, t_min=0.019, t_max=0.699)
    assert out["prior_calls"].item() == 2.0 and len(prior.records) == 2
    (x_t, t, cond_inv), (x_t2, t2, _) = prior.records
    assert x_t.shape[0] == B and torch.equal(cond_inv.tokens, embeddings().cond.tokens)  # inversion: conditional, no CFG
    torch.testing.assert_close(x_t2[:B], x_t, rtol=1e-5, atol=1e-5)
    assert torch.equal(t2[:B], t)
    torch.testing.assert_close(prior.last_x.grad, torch.zeros_like(rgb), rtol=0, atol=1e-5)

    other = StubFlowPrior(PointMass(torch.zeros(B, C, H, H)))
    rgb2 = torch.rand(B, C, H, H)
    run("rfds_rev", other, rgb2.clone().requires_grad_(True))
    (x_t, t, _), (x_t2, _, _) = other.records
    sigma = sigma_by_hand(t)
    eps_inv = x_t / sigma  # (x_t - (1 - sigma) * 0) / sigma
    x = rgb2 * 2 - 1
    torch.testing.assert_close(x_t2[:B], (1 - sigma) * x + sigma * eps_inv, rtol=1e-5, atol=1e-5)
    schedule = other.schedule
    back = schedule.step(eps_inv, torch.full_like(t, 999), t, eps_inv - 0.0)  # v(eps', sigma = 1) = eps' - x*
    torch.testing.assert_close(back, x_t, rtol=1e-5, atol=1e-5)


def test_rfds_rev_gradient_is_the_reference_formula():
    prior, s = StubFlowPrior(linear_velocity), 7.5
    rgb = torch.rand(B, C, H, H, requires_grad=True)
    run("rfds_rev", prior, rgb, scale=s)
    (x_t, t, cond_inv), (x_t2, t2, cond) = prior.records
    x = prior.last_x.detach()
    sigma = sigma_by_hand(t)
    eps_inv = x_t + (1 - sigma) * linear_velocity(x_t, t, cond_inv)  # the reference: eps + (1 - sigma)(v + x - eps)
    v_c, v_u = linear_velocity(x_t2, t2, cond).chunk(2)
    expected = 2 * (v_u + s * (v_c - v_u) - (eps_inv - x)) / (B * x.numel())
    torch.testing.assert_close(prior.last_x.grad, expected, rtol=1e-4, atol=1e-8)


def test_flow_estimators_refuse_eps_priors_and_unsupported_settings():
    class EpsPrior(StubFlowPrior):
        def __init__(self):
            super().__init__(linear_velocity)
            self.schedule = NoiseSchedule({"num_train_timesteps": 1000})

    for method in ("flow_sds", "rfds", "rfds_rev"):
        with pytest.raises(GuidanceConfigError, match=f"guidance.method={method} needs a flow-matching prior"):
            build_guidance(GuidanceConfig(method=method), EpsPrior())
    with pytest.raises(GuidanceConfigError, match="perp_neg is not implemented"):
        build_guidance(GuidanceConfig(method="flow_sds", perp_neg=True), StubFlowPrior(linear_velocity))
    with pytest.raises(GuidanceConfigError, match="grad_clip is not used by guidance.method=rfds"):
        build_guidance(GuidanceConfig(method="rfds", grad_clip=1.0), StubFlowPrior(linear_velocity))
