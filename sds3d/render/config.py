"""The renderer's typed config (threestudio style) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

SHADINGS = ("albedo", "lambertian", "textureless")
LIGHTS = ("fixed", "random")
BACKENDS = ("auto", "torch", "nerfacc")
RAY_BOUNDS = ("sphere", "aabb")


class RenderConfigError(ValueError):
    """A render setting is invalid (the message names the key and the allowed values)."""


@dataclass
class RenderConfig:
    """Volume rendering settings (DreamFusion Sec. 3.1).

    shading_probs: probability of each shading mode per training step (``sample_shading``):
    albedo (no shading), lambertian (albedo * (ambient + diffuse * max(0, n.l))), textureless
    (lambertian with albedo := white). They need not sum to 1 (normalised when sampled).
    light: "fixed" uses ``light_direction`` (world frame, towards the light, normalised);
    "random" draws l = normalize(camera_position + light_perturb * N(0, I)) per view
    (threestudio's "dreamfusion" light sampling, as a directional light).
    ray_bounds: rays are sampled inside the sphere of radius ``field.bound`` (DreamFusion's
    bounded sphere; the field is empty outside it) or inside the box [-bound, bound]^3.
    need_normals: compute normals even for albedo shading (the orientation loss needs them).
    normal_weight_threshold: normals are evaluated only at samples with weight above it (zero
    normals elsewhere; each such sample changes a pixel by < threshold); 0 evaluates them at every
    sample in the same field pass as the density. Measured at the blob init (32x32, 40 samples):
    1e-3 keeps 22% of the samples, moves pixels by <= 0.005, and cuts forward+backward ~25%.
    chunk_size: rays per chunk of no-grad renders (validation, videos); grad renders are one pass.
    """

    resolution: int = 64
    num_samples: int = 64
    shading_probs: dict[str, float] = field(
        default_factory=lambda: {"albedo": 0.2, "lambertian": 0.6, "textureless": 0.2}
    )
    ambient: float = 0.1
    diffuse: float = 0.9
    light: str = "random"
    light_direction: tuple[float, float, float] = (0.5, -0.7, 1.0)
    light_perturb: float = 1.0
    ray_bounds: str = "sphere"
    need_normals: bool = False
    normal_weight_threshold: float = 1e-3
    backend: str = "auto"
    chunk_size: int = 8192


def check_render_config(cfg: RenderConfig) -> None:
    """Raise RenderConfigError naming the first invalid setting of ``cfg``."""

    def fail(msg: str) -> None:
        raise RenderConfigError(msg)

    for name, allowed in (("light", LIGHTS), ("backend", BACKENDS), ("ray_bounds", RAY_BOUNDS)):
        if getattr(cfg, name) not in allowed:
            fail(f"render.{name}={getattr(cfg, name)!r} is unknown; use one of {', '.join(allowed)}")
    if cfg.resolution < 1 or cfg.num_samples < 1 or cfg.chunk_size < 1:
        fail("render.resolution, render.num_samples and render.chunk_size must be positive integers")
    probs = dict(cfg.shading_probs)
    unknown = set(probs) - set(SHADINGS)
    if unknown:
        fail(f"render.shading_probs has unknown modes {sorted(unknown)}; use keys among {', '.join(SHADINGS)}")
    if any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
        fail(f"render.shading_probs={probs} must be non-negative with a positive sum")
    if len(tuple(cfg.light_direction)) != 3 or sum(c * c for c in cfg.light_direction) == 0:
        fail(f"render.light_direction={tuple(cfg.light_direction)} must be a non-zero 3-vector")
    if cfg.normal_weight_threshold < 0:
        fail(f"render.normal_weight_threshold={cfg.normal_weight_threshold} must be >= 0 (0 disables pruning)")
    if cfg.ambient < 0 or cfg.diffuse < 0:
        fail("render.ambient and render.diffuse must be non-negative (e.g. 0.1 and 0.9)")
