"""FlowSchedule against diffusers' FlowMatchEulerDiscreteScheduler (and FluxPipeline's shift) and by hand."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sds3d.priors.schedule import FlowSchedule, NoiseSchedule

SD3 = {"num_train_timesteps": 1000, "shift": 3.0}  # stable-diffusion-3-medium's scheduler_config.json
FLUX = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
        "base_image_seq_len": 256, "max_image_seq_len": 4096}  # FLUX.1-dev's
TOY = {"num_train_timesteps": 1000, "shift": 1.0}


def batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g)


@pytest.mark.parametrize("config", [SD3, TOY])
def test_sigmas_on_the_grid_are_the_schedulers_training_sigmas(config):
    s, ref = FlowSchedule(config), FlowMatchEulerDiscreteScheduler.from_config(config)
    t = torch.arange(1000)
    assert torch.equal(s.sigma(t), ref.sigmas.flip(0))  # same float32 operations
    assert torch.equal(s.model_time(t), ref.timesteps.flip(0))
    u = (t + 1).double() / 1000
    shift = config["shift"]
    torch.testing.assert_close(s.sigma(t).double(), shift * u / (1 + (shift - 1) * u), rtol=1e-6, atol=1e-7)  # SD3 Eq. 23
    assert s.sigma(torch.tensor([999])).item() == 1.0 and s.sigma(torch.tensor([-1])).item() == 0.0
    assert s.prediction_type == "flow_prediction" and s.family == "flow" and s.num_train_timesteps == 1000


def test_dynamic_shift_is_flux_pipelines():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    s = FlowSchedule(FLUX, image_seq_len=1024)
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (1024 - 256)  # calculate_shift, by hand
    assert s.mu == pytest.approx(mu) == pytest.approx(calculate_shift(1024))
    t = torch.tensor([0, 299, 699, 999])
    u = (t + 1).double() / 1000
    torch.testing.assert_close(s.sigma(t).double(), math.exp(mu) / (math.exp(mu) + 1 / u - 1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="needs the image sequence length"):
        FlowSchedule(FLUX)


def test_unsupported_scheduler_options_are_refused():
    with pytest.raises(ValueError, match="use_karras_sigmas are not supported"):
        FlowSchedule(SD3 | {"use_karras_sigmas": True})


def test_forward_process_and_conversions_by_hand():
    s = FlowSchedule(SD3)
    x, eps = batch()
    t = torch.tensor([10, 300, 700, 990])
    sigma = s.sigma(t).view(-1, 1, 1, 1)
    ref = FlowMatchEulerDiscreteScheduler.from_config(SD3)
    x_t = s.add_noise(x, eps, t)
    torch.testing.assert_close(x_t, ref.scale_noise(x, ref.timesteps.flip(0)[t], eps))  # diffusers' forward process
    v = s.target(x, eps, t)
    torch.testing.assert_close(v, eps - x)
    # An exact velocity recovers x and eps; every conversion by hand.
    torch.testing.assert_close(s.to_x0(v, x_t, t), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.to_eps(v, x_t, t), eps, rtol=1e-5, atol=1e-5)
    out = torch.randn_like(x)
    torch.testing.assert_close(s.to_eps(out, x_t, t), x_t + (1 - sigma) * out)
    torch.testing.assert_close(s.to_x0(out, x_t, t), x_t - sigma * out)
    assert torch.equal(s.to_v(out, x_t, t), out)


def test_weights_by_hand():
    s, t = FlowSchedule(SD3), torch.tensor([10, 500, 980])
    sigma = s.sigma(t)
    torch.testing.assert_close(s.weight(t, "sds"), sigma**2)
    torch.testing.assert_close(s.weight(t, "uniform"), torch.ones(3))
    torch.testing.assert_close(s.weight(t, "fantasia3d"), (1 - sigma) * sigma**2)
    with pytest.raises(ValueError, match="unknown weighting"):
        s.weight(t, "sdss")


@pytest.mark.parametrize("config,seq", [(SD3, None), (TOY, None), (FLUX, 1024)])
@pytest.mark.parametrize("steps", [4, 28])
def test_euler_sampling_matches_flow_match_euler_scheduler(config, seq, steps):
    """A whole sampling loop with a fixed velocity field (v = 0.5 x_t + c): every step as FlowMatchEulerDiscreteScheduler.step,
    on the sigmas its set_timesteps gives (FluxPipeline's linspace(1, 1/n, n) and mu for the dynamic shift)."""
    s, ref = FlowSchedule(config, image_seq_len=seq, flux_sigmas=seq is not None), FlowMatchEulerDiscreteScheduler.from_config(config)
    if seq is None:
        ref.set_timesteps(steps)
    else:
        ref.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=s.mu)
    t, t_prev = s.ddim_timesteps(steps)
    assert len(t) == steps and t_prev[-1].item() == -1.0 and bool((t[1:] < t[:-1]).all())
    torch.testing.assert_close(s.sigma(torch.cat([t, t_prev[-1:]])), ref.sigmas, rtol=0, atol=1e-7)
    torch.testing.assert_close(s.model_time(t), ref.timesteps, rtol=0, atol=1e-4)
    c = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    x = x_ref = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    for i, tau in enumerate(ref.timesteps):
        x = s.step(x, t[i].repeat(2), t_prev[i].repeat(2), 0.5 * x + c)
        x_ref = ref.step(0.5 * x_ref + c, tau, x_ref).prev_sample
    torch.testing.assert_close(x, x_ref, rtol=1e-5, atol=1e-5)


def test_euler_step_and_inversion_by_hand_and_round_trip():
    s = FlowSchedule(SD3)
    x, v = batch(seed=3, n=2)
    t, t_prev = torch.tensor([800, 400]), torch.tensor([600, -1])
    sig, sig_prev = s.sigma(t).view(-1, 1, 1, 1), s.sigma(t_prev).view(-1, 1, 1, 1)
    torch.testing.assert_close(s.step(x, t, t_prev, v), x + (sig_prev - sig) * v)
    up = s.invert_step(x, t_prev, t, v)
    torch.testing.assert_close(up, x + (sig - sig_prev) * v)
    torch.testing.assert_close(s.step(up, t, t_prev, v), x, rtol=1e-5, atol=1e-5)  # a constant velocity: exact round trip
    # The DDIM step of the eps a velocity implies is the same Euler step (away from sigma = 1).
    torch.testing.assert_close(s.ddim_step(x, t, t_prev, s.to_eps(v, x, t)), s.step(x, t, t_prev, v), rtol=1e-5, atol=1e-5)


def test_noise_schedule_step_is_the_ddim_step_of_its_eps():
    s = NoiseSchedule({"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                       "prediction_type": "v_prediction"})
    x, out = batch(seed=4, n=2)
    t, t_prev = torch.tensor([800, 400]), torch.tensor([600, 100])
    assert torch.equal(s.step(x, t, t_prev, out), s.ddim_step(x, t, t_prev, s.to_eps(out, x, t)))
    assert torch.equal(s.invert_step(x, t_prev, t, out), s.ddim_invert_step(x, t_prev, t, s.to_eps(out, x, t_prev)))
    assert torch.equal(s.model_time(t), t) and s.family == "v"
