"""VSD / ESD on the tiny random pixel prior (a real ToyUNet): the gradient against an independently built
eps_phi (the LoRA merged into a fresh copy of the UNet, the camera embedding added to its time
embedding), the LoRA's training, the frozen prior untouched, the checkpointed state, and a resumed
run equal to an uninterrupted one."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sds3d.cameras import make_cameras
from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.config import load_config
from sds3d.guidance import GuidanceConfig, PromptProcessor, VSDGuidance, build_guidance
from sds3d.pipeline import run
from sds3d.priors import load_prior
from sds3d.priors.toy_unet import ToyUNet
from sds3d.runs import prepare_run_dir

torch.set_num_threads(1)
TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"
B = 2


def _setup(tiny_pixel_prior, **settings):
    prior = load_prior(str(tiny_pixel_prior))
    guidance = build_guidance(GuidanceConfig(method="vsd", **settings), prior)
    records = []
    predict = prior._predict

    def recording(x_t, t, cond, cameras):
        records.append((x_t.detach().clone(), t.clone(), cond.tokens.clone(), guidance._camera))
        return predict(x_t, t, cond, cameras)

    prior._predict = recording
    processor = PromptProcessor(prior, "a red cube", view_dependent=False)
    cams = make_cameras(torch.tensor([10.0, 200.0]), torch.tensor([0.0, 30.0]), 2.5, 40.0)
    return prior, guidance, records, processor(cams.azimuth_deg, cams.elevation_deg), cams


def _step(guidance, emb, cams, seed=0, step=0):
    rgb = torch.rand(B, 3, 32, 32, generator=torch.Generator().manual_seed(123)).requires_grad_(True)
    out = guidance(rgb, emb, step=step, cameras=cams, generator=torch.Generator().manual_seed(seed))
    return rgb, out


def _phi_reference(path, guidance, c2w_rows):
    """eps_phi built independently: a fresh UNet from disk, each LoRA merged into its weight
    (W + B A, scaling alpha / r = 1), and the camera embedding of c2w added to the time embedding."""
    unet = ToyUNet.from_pretrained(Path(path) / "unet")
    lora = {k.replace("__", "."): v.detach() for k, v in guidance.lora.items()}
    with torch.no_grad():
        for name, module in unet.named_modules():
            key_a = f"{name}.lora_A.sds3d_vsd.weight"
            if key_a in lora:
                module.weight += lora[f"{name}.lora_B.sds3d_vsd.weight"] @ lora[key_a]

    class WithCamera(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs) + guidance.camera_embedding(c2w_rows)

    unet.time_embedding = WithCamera(unet.time_embedding)
    return unet


def test_vsd_gradient_at_init_is_the_cfg_residual(tiny_pixel_prior):
    """phi starts as the pretrained prior: g = w (eps_cfg - eps_c) = w (s - 1)(eps_c - eps_u)."""
    scale = 7.5
    prior, guidance, records, emb, cams = _setup(tiny_pixel_prior, scale=scale, weighting="sds")
    x_seen = {}
    encode = prior.encode_images
    prior.encode_images = lambda rgb: x_seen.setdefault("x", encode(rgb))
    rgb, out = _step(guidance, emb, cams)
    (pre_x, pre_t, _, pre_cam), (phi_x, phi_t, _, phi_cam) = records
    assert pre_cam is None and phi_cam is not None  # the pretrained call without the camera/LoRA path, phi's with it
    assert out["prior_calls"].item() == 2.0 and phi_x.shape[0] == 2 * B  # estimate rows + training rows
    x_t, t = pre_x[:B], pre_t[:B]
    torch.testing.assert_close(phi_x[:B], x_t)
    with torch.no_grad():
        fresh = ToyUNet.from_pretrained(Path(tiny_pixel_prior) / "unet")
        eps_c = fresh(x_t, t, encoder_hidden_states=emb.cond.tokens).sample
        eps_u = fresh(x_t, t, encoder_hidden_states=emb.uncond.tokens).sample
    abar = prior.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    g = (1 - abar) * (scale - 1) * (eps_c - eps_u)
    (dx,) = torch.autograd.grad(out["loss_sds"], x_seen["x"], retain_graph=True)
    torch.testing.assert_close(dx, g / B, rtol=1e-3, atol=2e-5)  # batched vs single-row kernels


def test_vsd_gradient_with_a_trained_lora_and_esd(tiny_pixel_prior):
    scale, lam = 7.5, 0.5
    prior, guidance, records, emb, cams = _setup(tiny_pixel_prior, scale=scale, weighting="sds", lora_camera_scale=lam)
    with torch.no_grad():  # a LoRA and camera embedding that change eps_phi
        g = torch.Generator().manual_seed(5)
        for p in guidance.lora.values():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for p in guidance.camera_embedding.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    x_seen = {}
    encode = prior.encode_images
    prior.encode_images = lambda rgb: x_seen.setdefault("x", encode(rgb))
    rgb, out = _step(guidance, emb, cams)
    (pre_x, pre_t, _, _), (phi_x, phi_t, _, phi_cam) = records
    assert phi_x.shape[0] == 3 * B  # [x_t with c, x_t with the null camera, training rows]
    x_t, t = pre_x[:B], pre_t[:B]
    c2w = cams.c2w.flatten(1)
    torch.testing.assert_close(phi_cam[: 2 * B], torch.cat([c2w, torch.zeros_like(c2w)]))
    with torch.no_grad():
        fresh = ToyUNet.from_pretrained(Path(tiny_pixel_prior) / "unet")
        eps_cfg = fresh(x_t, t, encoder_hidden_states=emb.uncond.tokens).sample
        eps_cfg = eps_cfg + scale * (fresh(x_t, t, encoder_hidden_states=emb.cond.tokens).sample - eps_cfg)
        phi_c = _phi_reference(tiny_pixel_prior, guidance, c2w)(x_t, t, encoder_hidden_states=emb.cond.tokens).sample
        phi_null = _phi_reference(tiny_pixel_prior, guidance, torch.zeros_like(c2w))(x_t, t, encoder_hidden_states=emb.cond.tokens).sample
    eps_phi = phi_null + lam * (phi_c - phi_null)
    assert (eps_phi - eps_cfg).abs().max() > 1e-3  # the LoRA really changed phi
    abar = prior.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    (dx,) = torch.autograd.grad(out["loss_sds"], x_seen["x"], retain_graph=True)
    torch.testing.assert_close(dx, (1 - abar) * (eps_cfg - eps_phi) / B, rtol=1e-3, atol=1e-5)


def test_lora_trains_and_the_pretrained_prior_never_changes(tiny_pixel_prior):
    prior, guidance, records, emb, cams = _setup(tiny_pixel_prior, lora_lr=1e-2)
    frozen = {k: v.clone() for k, v in prior.state_dict().items() if "sds3d_vsd" not in k}
    x_t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400])
    with torch.no_grad():
        before = prior.predict(x_t, t, emb.cond[0])
    groups = guidance.param_groups()
    assert groups[0]["scheduled"] is False and groups[0]["lr"] == 1e-2
    opt = torch.optim.Adam(groups)
    for step in range(3):
        rgb, out = _step(guidance, emb, cams, seed=step, step=step)
        opt.zero_grad()
        (out["loss_sds"] + out["loss_lora"]).backward()
        grads = [p.grad for p in guidance.lora.values()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)  # phi learns from loss_lora
        assert rgb.grad is not None and rgb.grad.abs().sum() > 0
        opt.step()
    assert all(p.grad is None for n, p in prior.named_parameters() if "sds3d_vsd" not in n)
    after = prior.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    with torch.no_grad():  # the prior's own predictions are the frozen model's (adapter off outside VSD's call)
        torch.testing.assert_close(prior.predict(x_t, t, emb.cond[0]), before, rtol=0, atol=0)
    assert any((p - 0).abs().sum() > 0 for k, p in guidance.lora.items() if "lora_B" in k)  # B moved from zero


def test_state_dict_is_the_lora_and_camera_embedding_only(tiny_pixel_prior):
    prior, guidance, _, _, _ = _setup(tiny_pixel_prior)
    keys = set(guidance.state_dict())
    assert keys and all(k.startswith(("lora.", "camera_embedding.")) for k in keys)
    n_lora = sum(p.numel() for n, p in prior.denoiser.named_parameters() if "sds3d_vsd" in n)
    assert sum(guidance.state_dict()[k].numel() for k in keys if k.startswith("lora.")) == n_lora
    assert not any("sds3d_vsd" in k for k in guidance.state_dict() if not k.startswith("lora."))
    # A second VSD on the same prior replaces the first one's adapter (one LoRA per prior).
    again = VSDGuidance(GuidanceConfig(method="vsd"), prior)
    assert sum(1 for n, _ in prior.denoiser.named_parameters() if "sds3d_vsd" in n) == len(again.lora)


def _cfg(tmp_path, prior, *extra):
    return load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={prior}", f"out_dir={tmp_path}", "guidance.method=vsd",
                             "guidance.lora_lr=1e-2", "trainer.max_steps=6", "trainer.val_every=0", "trainer.ckpt_every=2",
                             "trainer.progress=false", "render.num_samples=16", "render.resolution=16", "trainer.threads=1",
                             "trainer.log_every=1", *extra])


def _logged(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_vsd_resume_equals_an_uninterrupted_run(tmp_path, tiny_pixel_prior):
    straight = _cfg(tmp_path, tiny_pixel_prior, "name=straight")
    run(straight, prepare_run_dir(straight), finish_run=False)
    split = _cfg(tmp_path, tiny_pixel_prior, "name=split")
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        run(split, run_dir, finish_run=False, stop_after=3)
    ck = load_checkpoint(run_dir / "ckpt" / "last.pt")
    assert ck["step"] == 3 and any(k.startswith("lora.") for k in ck["guidance"])
    run(split, run_dir, finish_run=False, resume=True)
    a, b = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt"), load_checkpoint(run_dir / "ckpt" / "last.pt")
    for part in ("scene", "guidance"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert _logged(run_dir) == _logged(tmp_path / "straight")
    assert all("loss_lora" in r and r["prior_calls"] == 2.0 for r in _logged(run_dir))
    # The LoRA's Adam state is in the checkpoint (the last optimiser group).
    lora_group = b["optimizer"]["param_groups"][-1]
    assert lora_group["name"] == "vsd_lora" and all(i in b["optimizer"]["state"] for i in lora_group["params"])
