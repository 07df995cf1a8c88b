"""NoiseSchedule against diffusers' DDPMScheduler / DDIMScheduler and hand computations."""

import pytest
import torch
import inspect

from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from sds3d.priors.schedule import NoiseSchedule, classifier_free_guidance, scheduler_from_config

TOY = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "clip_sample": False}
# Stable Diffusion 1.x/2.x: scaled-linear betas, a PNDM config with set_alpha_to_one false and steps_offset 1.
SD = {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}
TYPES = ["epsilon", "v_prediction", "sample"]
CONFIGS = [TOY, SD]


def batch(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 731, 999])[:n]
    return x, eps, t


def test_alphas_cumprod_by_hand():
    s = NoiseSchedule(TOY)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-5, atol=1e-7)
    assert s.alphas_cumprod.dtype == torch.float32 and s.num_train_timesteps == 1000 and s.prediction_type == "epsilon"
    t = torch.tensor([3, 500])
    abar = torch.cumprod(1 - betas, 0)[t]
    torch.testing.assert_close(s.alpha(t).double(), abar.sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.sigma(t).double(), (1 - abar).sqrt(), rtol=1e-4, atol=1e-6)


def test_per_t_values_broadcast_against_like():
    s, t = NoiseSchedule(TOY), torch.tensor([3, 500])
    like = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    assert s.alpha(t).shape == (2,) and s.alpha(t).dtype == torch.float32
    a = s.alpha(t, like)
    assert a.shape == (2, 1, 1, 1) and a.dtype == torch.float64
    assert torch.equal(a.view(2), s.alphas_cumprod[t].double().sqrt())  # cast to like's dtype, then the square root
    assert s.weight(t, "sds", like).shape == (2, 1, 1, 1)


def test_final_alpha_cumprod_of_the_last_ddim_step():
    toy, sd = NoiseSchedule(TOY), NoiseSchedule(SD)
    assert toy.alpha(torch.tensor([-1])).item() == 1.0 and toy.sigma(torch.tensor([-1])).item() == 0.0
    assert sd.alphas_cumprod_at(torch.tensor([-19])).item() == sd.alphas_cumprod[0].item()  # set_alpha_to_one: false


@pytest.mark.parametrize("config", CONFIGS)
def test_add_noise_is_diffusers_forward_process(config):
    s, ref = NoiseSchedule(config), DDPMScheduler.from_config(config)
    x, eps, t = batch()
    torch.testing.assert_close(s.add_noise(x, eps, t), ref.add_noise(x, eps, t), rtol=0, atol=1e-6)
    abar = ref.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(s.add_noise(x, eps, t), abar.sqrt() * x + (1 - abar).sqrt() * eps)  # DDPM Eq. 4


@pytest.mark.parametrize("prediction_type", TYPES)
def test_target_is_the_training_target(prediction_type):
    cfg = TOY | {"prediction_type": prediction_type}
    s, ref = NoiseSchedule(cfg), DDPMScheduler.from_config(cfg)
    x, eps, t = batch()
    expected = {"epsilon": eps, "sample": x, "v_prediction": ref.get_velocity(x, eps, t)}[prediction_type]
    torch.testing.assert_close(s.target(x, eps, t), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("prediction_type", TYPES)
def test_x0_matches_ddpm_step_pred_original_sample(config, prediction_type):
    cfg = config | {"prediction_type": prediction_type}
    s, ref = NoiseSchedule(cfg), DDPMScheduler.from_config(cfg)
    x_t, out, t = batch(seed=1)
    x0 = s.to_x0(out, x_t, t)
    for i in range(len(t)):
        expected = ref.step(out[i : i + 1], int(t[i]), x_t[i : i + 1]).pred_original_sample
        torch.testing.assert_close(x0[i : i + 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", TYPES)
def test_eps_and_v_by_hand(prediction_type):
    s = NoiseSchedule(TOY | {"prediction_type": prediction_type})
    x_t, out, t = batch(seed=2)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t].view(-1, 1, 1, 1)
    a, b, x_t64, out64 = abar.sqrt(), (1 - abar).sqrt(), x_t.double(), out.double()
    eps = {"epsilon": out64, "v_prediction": a * out64 + b * x_t64, "sample": (x_t64 - a * out64) / b}[prediction_type]
    x0 = (x_t64 - b * eps) / a
    kw = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.to_eps(out, x_t, t).double(), eps, **kw)
    torch.testing.assert_close(s.to_v(out, x_t, t).double(), a * eps - b * x0, **kw)  # Salimans & Ho 2022


@pytest.mark.parametrize("prediction_type", TYPES)
def test_conversions_recover_x_and_eps(prediction_type):
    """Model output = the exact target of (x, eps) at x_t = add_noise(x, eps, t): every conversion recovers them."""
    s, ref = NoiseSchedule(TOY | {"prediction_type": prediction_type}), DDPMScheduler.from_config(TOY)
    x, eps, t = batch(seed=3)
    t = t.clamp(1, 990)  # avoid dividing by sigma ~ 0.01 or alpha ~ 0.006 in float32
    x_t = s.add_noise(x, eps, t)
    out = s.target(x, eps, t)
    torch.testing.assert_close(s.to_eps(out, x_t, t), eps, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s.to_x0(out, x_t, t), x, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s.to_v(out, x_t, t), ref.get_velocity(x, eps, t), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("source", TYPES)
@pytest.mark.parametrize("dest", TYPES)
def test_outputs_convert_between_prediction_types_both_ways(source, dest):
    """An output of one type -> (x0, eps) -> the other type's target -> back: the same output."""
    a, b = NoiseSchedule(TOY | {"prediction_type": source}), NoiseSchedule(TOY | {"prediction_type": dest})
    x_t, out, t = batch(seed=4)
    t = t.clamp(50, 950)
    there = b.target(a.to_x0(out, x_t, t), a.to_eps(out, x_t, t), t)
    back = a.target(b.to_x0(there, x_t, t), b.to_eps(there, x_t, t), t)
    torch.testing.assert_close(back, out, rtol=1e-4, atol=1e-4)


def test_weights_by_hand():
    s, t = NoiseSchedule(TOY), torch.tensor([10, 500, 980])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)[t]
    torch.testing.assert_close(s.weight(t, "sds"), 1 - abar)  # DreamFusion
    torch.testing.assert_close(s.weight(t, "uniform"), torch.ones(3))
    torch.testing.assert_close(s.weight(t, "fantasia3d"), abar.sqrt() * (1 - abar))
    with pytest.raises(ValueError, match="unknown weighting 'sdss'"):
        s.weight(t, "sdss")


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="unknown prediction_type 'flow'"):
        NoiseSchedule(TOY | {"prediction_type": "flow"})


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("steps", [4, 7])
def test_ddim_timesteps_are_ddim_schedulers(config, steps):
    s, ref = NoiseSchedule(config), DDIMScheduler.from_config(config)
    ref.set_timesteps(steps)
    t, t_prev = s.ddim_timesteps(steps)
    assert torch.equal(t, ref.timesteps.long()) and torch.equal(t_prev, t - 1000 // steps)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("prediction_type", TYPES)
def test_ddim_steps_match_ddim_scheduler(config, prediction_type):
    """A whole deterministic sampling loop with a fixed model (out = 0.5 x_t + c): every step as DDIMScheduler.step."""
    cfg = config | {"prediction_type": prediction_type}
    s, ref = NoiseSchedule(cfg), DDIMScheduler.from_config(cfg)
    ref.set_timesteps(6)
    c = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    x = x_ref = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    for t, t_prev in zip(*s.ddim_timesteps(6)):
        tt, tt_prev = torch.full((2,), int(t)), torch.full((2,), int(t_prev))
        x = s.ddim_step(x, tt, tt_prev, s.to_eps(0.5 * x + c, x, tt))
        x_ref = ref.step(0.5 * x_ref + c, t, x_ref).prev_sample
        if prediction_type == "epsilon":  # the float path of sampling: identical operations
            assert torch.equal(x, x_ref)
        else:
            torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4)


def test_ddim_step_by_hand_with_per_sample_t():
    s = NoiseSchedule(TOY)
    x_t, eps, _ = batch(seed=7, n=2)
    t, t_prev = torch.tensor([900, 300]), torch.tensor([700, -1])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    a_t, a_p = abar[t].view(-1, 1, 1, 1), torch.tensor([abar[700].item(), 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
    x0 = (x_t.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    expected = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps  # DDIM Eq. 12, eta = 0
    torch.testing.assert_close(s.ddim_step(x_t, t, t_prev, eps).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.ddim_step(x_t, t, t_prev, eps)[1], x0[1].float(), rtol=1e-5, atol=1e-5)  # to the clean end


def test_ddim_invert_step_by_hand_and_undone_by_the_ddim_step():
    s = NoiseSchedule(TOY)
    x_s, eps, _ = batch(seed=8, n=2)
    sv, t = torch.tensor([100, 400]), torch.tensor([300, 800])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    a_s, a_t = abar[sv].view(-1, 1, 1, 1), abar[t].view(-1, 1, 1, 1)
    x0 = (x_s.double() - (1 - a_s).sqrt() * eps) / a_s.sqrt()
    x_t = s.ddim_invert_step(x_s, sv, t, eps)
    torch.testing.assert_close(x_t.double(), a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.ddim_step(x_t, t, sv, eps), x_s, rtol=1e-4, atol=1e-4)


def test_classifier_free_guidance_by_hand():
    u, c = torch.tensor([0.2, -1.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(classifier_free_guidance(u, c, 7.5), torch.tensor([0.2 + 7.5 * 0.8, -1.0 + 7.5 * 2.0]))
    assert torch.equal(classifier_free_guidance(u, c, 0.0), u) and torch.equal(classifier_free_guidance(u, c, 1.0), c)


# A config saved with defaulted keys (diffusers lists them in _use_default_values and from_config drops them).
DEFAULTED = TOY | {"_use_default_values": ["steps_offset"], "steps_offset": 7, "timestep_spacing": "trailing"}
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}


@pytest.mark.parametrize("cls, config", [(c, cfg) for c in (DDPMScheduler, DDIMScheduler) for cfg in (*CONFIGS, DEFAULTED)]
                         + [(FlowMatchEulerDiscreteScheduler, FLOW)])
def test_scheduler_from_config_builds_what_from_config_builds(cls, config):
    ours, ref = scheduler_from_config(cls, config), cls.from_config(config)
    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert {k: ours.config[k] for k in keys} == {k: ref.config[k] for k in keys}
    for name in ("alphas_cumprod", "sigmas", "timesteps"):
        if hasattr(ref, name):
            assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    assert torch.equal(ours.timesteps, ref.timesteps)
