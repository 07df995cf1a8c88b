"""Densify and prune (scene.gaussians_density): gsplat's DefaultStrategy on CPU tensors, fed by the
torch rasteriser's meta, with the Gaussian budget and the opacity reset added."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch import nn

from sds3d.cameras import make_cameras
from sds3d.errors import UserError
from sds3d.render.splat import cameras_to_gsplat, rasterize_gaussians
from sds3d.scene.gaussians_density import BoundedStrategy, DensifyConfigError, check_gaussian_budget, optimizer_views

RES = 32


def gaussians(means, scales, opacities, colors) -> nn.ParameterDict:
    """Stored as gsplat's strategy expects: log scales, opacity logits, identity rotations."""
    means = torch.as_tensor(means, dtype=torch.float32)
    return nn.ParameterDict(dict(
        means=means, scales=torch.as_tensor(scales, dtype=torch.float32).log(),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(len(means), 1),
        opacities=torch.logit(torch.as_tensor(opacities, dtype=torch.float32)),
        colors=torch.as_tensor(colors, dtype=torch.float32)))


def adam(params: nn.ParameterDict) -> torch.optim.Optimizer:
    """The trainer's layout: one Adam, a named group per parameter. lr 0 keeps the Gaussians where they are."""
    return torch.optim.Adam([{"params": [p], "lr": 0.0, "name": k} for k, p in params.items()])


def train_step(params, optimizer, strategy, state, step):
    """Render, an asymmetric loss (a ramp across the image: every visible colour moves the loss), step, refine."""
    viewmats, Ks = cameras_to_gsplat(make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.5, 40.0), RES)
    out = rasterize_gaussians(params["means"], params["quats"], params["scales"].exp(), params["opacities"].sigmoid(),
                              params["colors"], viewmats, Ks, RES, RES)
    views = optimizer_views(optimizer, params.keys())
    strategy.step_pre_backward(params, views, state, step, out["info"])
    (out["rgb"] * torch.linspace(0.0, 1.0, RES)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    strategy.step_post_backward(params, views, state, step, out["info"])
    return out["info"]


def test_clone_small_split_large_prune_faint():
    # The camera sits on +x looking at the origin; the image spans about +-0.9 in y and z.
    params = gaussians(
        means=[[0, 0.3, 0.2], [0, -0.3, -0.1], [0, 0.0, -0.4], [4.0, 0, 0], [0, -0.4, 0.4]],
        scales=[[0.005] * 3, [0.1, 0.12, 0.08], [0.05] * 3, [0.05] * 3, [0.05] * 3],
        opacities=[0.8, 0.8, 0.001, 0.8, 0.8],
        # A small, B large, C faint, D behind the camera, E black (it changes no pixel: zero gradient)
        colors=[[1, 0.5, 0.2], [0.2, 1, 0.3], [1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 0]])
    before = {k: v.detach().clone() for k, v in params.items()}
    optimizer = adam(params)
    strategy = BoundedStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=0.5, max_gaussians=100)
    strategy.check_sanity(params, optimizer_views(optimizer, params.keys()))
    state = strategy.initialize_state(scene_scale=1.0)
    info = train_step(params, optimizer, strategy, state, step=0)  # step 0 accumulates only
    # The accumulated gradient is the norm of dL/dmeans2d in NDC units (x W/2, y H/2, one view), on seen ones.
    seen = (info["radii"][0] > 0).all(-1)
    expected = (info["means2d"].grad[0] * torch.tensor([RES / 2, RES / 2])).norm(dim=-1) * seen
    assert torch.allclose(state["grad2d"], expected) and torch.equal(state["count"], seen.float())
    assert seen.tolist() == [True, True, False, False, True]  # C is culled (opacity < 1/255), D is behind the camera
    assert float(expected[0]) > 0.5 and float(expected[1]) > 0.5 and float(expected[4]) == 0.0

    train_step(params, optimizer, strategy, state, step=1)  # refines
    means, scales = params["means"].detach(), params["scales"].detach().exp()
    assert len(means) == 5 + 1 + 1 - 1  # A cloned (+1), B split (-1 +2), C pruned (-1)
    assert int((means == before["means"][0]).all(-1).sum()) == 2  # A and its clone, same scale
    assert torch.allclose(scales[(means == before["means"][0]).all(-1)], torch.full((2, 3), 0.005))
    assert not (means == before["means"][1]).all(-1).any()  # B itself is gone ...
    halves = torch.isclose(scales, before["scales"][1].exp() / 1.6).all(-1)
    assert int(halves.sum()) == 2  # ... replaced by two at its scale / 1.6, drawn within its extent
    assert ((means[halves] - before["means"][1]).abs() < 4 * 0.12).all()
    assert not (params["colors"].detach() == torch.tensor([1.0, 1, 1])).all(-1).any()  # C pruned
    for k in (3, 4):  # D and E untouched
        assert int((means == before["means"][k]).all(-1).sum()) == 1
    # The trainer's one optimiser follows: state resized with the parameters, and it still steps.
    for name, p in params.items():
        assert optimizer.state[p]["exp_avg"].shape == p.shape
    train_step(params, optimizer, strategy, state, step=2)


def test_growth_never_exceeds_max_gaussians_and_keeps_the_highest_gradients():
    n, bound = 30, 34
    g = torch.Generator().manual_seed(0)
    yz = (torch.rand(n, 2, generator=g) - 0.5) * 1.2
    params = gaussians(torch.cat([torch.zeros(n, 1), yz], -1), torch.full((n, 3), 0.004),
                       torch.full((n,), 0.7), torch.rand(n, 3, generator=g) * 0.8 + 0.2)
    optimizer = adam(params)
    strategy = BoundedStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=1e-6, max_gaussians=bound)
    state = strategy.initialize_state()
    train_step(params, optimizer, strategy, state, step=0)
    ranked = (state["grad2d"] / state["count"].clamp_min(1)).argsort(descending=True)
    assert int((state["grad2d"] > 0).sum()) == n  # every one asks to grow
    top = params["means"].detach()[ranked[: bound - n]]
    for step in (1, 2, 3):
        train_step(params, optimizer, strategy, state, step=step)
        assert len(params["means"]) <= bound
    assert len(params["means"]) == bound
    clones = params["means"].detach()[n:]  # duplicates are appended
    assert sorted(map(tuple, clones.tolist())) == sorted(map(tuple, top.tolist()))


def test_opacity_reset_every_reset_every_steps():
    params = gaussians([[0, 0.1, 0.0], [0, -0.2, 0.1]], [[0.05] * 3] * 2, [0.9, 0.006], [[1, 0, 0], [0, 1, 0]])
    optimizer = adam(params)
    # Refinement off (start after the reset): only the reset acts.
    strategy = BoundedStrategy(refine_start_iter=100, reset_every=3, prune_opa=0.005)
    state = strategy.initialize_state()
    for step in (0, 1, 2):
        train_step(params, optimizer, strategy, state, step=step)
        assert torch.allclose(params["opacities"].detach().sigmoid(), torch.tensor([0.9, 0.006]))
    train_step(params, optimizer, strategy, state, step=3)
    assert torch.allclose(params["opacities"].detach().sigmoid(), torch.tensor([0.01, 0.006]))  # clamped to 2 prune_opa
    assert torch.equal(optimizer.state[params["opacities"]]["exp_avg"], torch.zeros(2))


def test_gsplat_1_5_3_default_strategy_does_not_reset_opacity():
    """Why BoundedStrategy resets itself (gsplat#776): if this starts failing, gsplat resets again."""
    params = gaussians([[0, 0.1, 0.0]], [[0.05] * 3], [0.9], [[1, 0, 0]])
    optimizer = adam(params)
    strategy, state = DefaultStrategy(refine_start_iter=100, reset_every=3), {"grad2d": None, "count": None, "scene_scale": 1.0}
    for step in range(4):
        train_step(params, optimizer, strategy, state, step=step)
    assert float(params["opacities"].detach().sigmoid()) == pytest.approx(0.9)


def test_bad_settings_are_one_line_user_errors():
    for make in (lambda: check_gaussian_budget(5000, 1000), lambda: BoundedStrategy(refine_scale2d_stop_iter=10),
                 lambda: BoundedStrategy(absgrad=True)):
        with pytest.raises(DensifyConfigError) as err:
            make()
        assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert "max_gaussians=1000" in str(pytest.raises(DensifyConfigError, check_gaussian_budget, 5000, 1000).value)
    check_gaussian_budget(1000, 1000)
    with pytest.raises(ValueError, match="'means'"):
        optimizer_views(torch.optim.Adam([{"params": [nn.Parameter(torch.zeros(1))], "name": "other"}]), ["means"])
