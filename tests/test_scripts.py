"""Scripts: the restoring-force diagnostic's math (with an exact denoiser), the toy prior recipe's stages."""

from pathlib import Path

import pytest
import torch
from torch import nn

from sds3d.cameras import make_cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import NoiseSchedule
from script_module import load_script



def _load_script(name: str):
    return load_script(name)


restoring_force = _load_script("restoring_force")


class ExactPrior(Prior):
    """The exact denoiser of a distribution concentrated on one image x* (for every text)."""

    resolution, latent, latent_shape = 4, False, (3, 4, 4)
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def __init__(self, x_star):
        super().__init__()
        self.schedule = NoiseSchedule({"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02})
        self.dummy = nn.Parameter(torch.zeros(1))
        self.x_star = x_star

    def encode_prompts(self, prompts):
        return Condition(torch.zeros(len(prompts), 1, 1))

    def _predict(self, x_t, t, cond, cameras):
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_star = self.x_star.repeat(x_t.shape[0] // self.x_star.shape[0], 1, 1, 1)
        return (x_t - abar.sqrt() * x_star) / (1 - abar).sqrt()

    def encode_images(self, rgb):
        return rgb * 2 - 1

    def decode(self, x):
        return (x + 1) / 2


@pytest.mark.parametrize("target, expected", [("truth", 1.0), ("render", 0.0), ("halfway", 0.5)])
def test_restoring_force_is_the_fraction_of_the_way_to_the_truth(target, expected):
    g = torch.Generator().manual_seed(0)
    x_img, gt_img = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    star = {"truth": gt_img, "render": x_img, "halfway": (x_img + gt_img) / 2}[target]
    prior = ExactPrior(star * 2 - 1)
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2] = 1.0
    cams = make_cameras(torch.zeros(2), torch.zeros(2), 2.5, 40.0)
    rows = restoring_force.restoring_force(prior, x_img, gt_img, ["a", "b"], cams, scale=1.0, n=3, masks={"left": mask})
    for r in rows["all"] + rows["left"]:
        assert r == pytest.approx(expected, abs=1e-4)


def test_prior_recipe_chains_the_stages_and_skips_finished_ones(tmp_path, monkeypatch):
    recipe = _load_script("train_toy_prior")
    calls = []

    def fake_train(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "training.json").write_text("{}")

    monkeypatch.setattr(recipe, "train_prior", fake_train)
    (tmp_path / "cam-2").mkdir(parents=True)
    (tmp_path / "cam-2" / "training.json").write_text("{}")  # a finished stage is skipped
    (tmp_path / "work" / "cam-3").mkdir(parents=True)
    (tmp_path / "work" / "cam-3" / "ckpt.pt").write_bytes(b"")  # an interrupted one is resumed
    monkeypatch.setattr("sys.argv", ["train_toy_prior.py", "--out", str(tmp_path), "--threads", "1"])
    recipe.main()
    outs = [Path(c[c.index("--out") + 1]).name for c in calls]
    assert outs == ["base-3000", "base-6000", "cam-1", "cam-3", "cam-4"]
    init = {Path(c[c.index("--out") + 1]).name: Path(c[c.index("--init-from") + 1]).name for c in calls if "--init-from" in c}
    assert init == {"cam-1": "base-6000", "cam-3": "cam-2", "cam-4": "cam-3"}
    assert "--resume" in calls[1] and "--resume" in calls[3] and "--resume" not in calls[4]
    assert all("--camera-conditioning" in c for c in calls[2:]) and not any("--camera-conditioning" in c for c in calls[:2])
