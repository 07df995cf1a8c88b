"""Typed run configuration: dataclasses merged with OmegaConf from YAML plus ``key=value`` overrides.

Each component owns a small config dataclass next to its code (threestudio style); ``RunConfig``
composes them. A typo in a key fails loudly with the closest valid key; every value is checked
before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from .cameras import CameraConfig
from .errors import UserError, notice
from .eval import EvalConfig, check_eval_config
from .export import ExportConfig, OrbitConfig, check_orbit_config
from .fields.background import BackgroundConfig
from .fields.nerf import FieldConfig
from .guidance import GuidanceConfig, check_guidance_config, guidance_class
from .paths import slugify
from .priors.config import PriorConfig, check_prior_config
from .render import RenderConfig
from .scene import SceneConfig, check_scene_config, check_scene_inputs, check_scene_run, foreign_keys


class ConfigError(UserError):
    """The configuration is invalid; the message names the key and how to fix it."""


#: Keys that moved: old dotted key -> new one. Old config files and run folders still load, with a notice.
RENAMED_KEYS = {
    "guidance.pretrained": "prior.name_or_path",
    "trainer.orbit_frames": "orbit.frames",
    "trainer.orbit_resolution": "orbit.resolution",
    "trainer.orbit_elevation_deg": "orbit.elevation_deg",
    "trainer.evaluate": "eval.enabled",
}


LR_SCHEDULES = ("constant", "cosine", "exponential")


def lr_factor(step: int, max_steps: int, schedule: str, end_factor: float) -> float:
    """Multiplier of the base learning rates at ``step`` (1 at step 0, ``end_factor`` at max_steps)."""
    p = min(max(step / max(1, max_steps), 0.0), 1.0)
    if schedule == "cosine":
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "exponential":
        return end_factor**p
    return 1.0


@dataclass
class TrainerConfig:
    """The optimisation loop (the trainer owns the optimiser and every loss weight)."""

    max_steps: int = 600
    lr: float = 3e-2  # Adam learning rate of the NeRF
    lr_background: float = 1e-3
    # Learning-rate decay of every group over max_steps, a pure function of the step (so resume is
    # exact): constant, cosine (to lr * lr_end_factor) or exponential (geometric to lr * lr_end_factor).
    lr_schedule: str = "constant"
    lr_end_factor: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    # Loss weights (lambda_*), keyed like the loss dicts: loss_sds, loss_orient, loss_opacity, loss_opacity_entropy.
    lambda_sds: float = 1.0
    lambda_orient: float = 0.0
    lambda_opacity: float = 0.0
    lambda_opacity_entropy: float = 0.0
    log_every: int = 10
    val_every: int = 200  # validation renders into renders/ (0: off)
    val_views: int = 4
    ckpt_every: int = 100
    progress: bool = True
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


@dataclass
class RunConfig:
    """Everything a run needs. ``sds3d run CONFIG key=value ...``."""

    prompt: str = ""
    name: str = ""  # run folder name under out_dir; default: a slug of the prompt
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    prior: PriorConfig = dataclasses.field(default_factory=PriorConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    background: BackgroundConfig = dataclasses.field(default_factory=BackgroundConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    orbit: OrbitConfig = dataclasses.field(default_factory=OrbitConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


def _all_keys(node, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            keys += _all_keys(node._get_node(k), full + ".")
    return keys


def _unknown_key_error(key: str, schema: DictConfig) -> ConfigError:
    keys = _all_keys(schema)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:  # a typo in the last part only: compare leaf names too
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]], cutoff=0.75)][:1]
    hint = f"; did you mean '{close[0]}'?" if close else "; see `sds3d run --help` or configs/toy.yaml for the keys"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _merge(schema: DictConfig, other, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise _unknown_key_error(str(e.full_key or e.key), schema) from None
    except ValidationError as e:
        raise ConfigError(f"invalid value for '{e.full_key}' in {source}: {str(e).splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config in {source}: {str(e).splitlines()[0]}") from None


def _rename_keys(node: DictConfig, source: str) -> DictConfig:
    """Move keys listed in RENAMED_KEYS to their new place (the new key wins if both are set), with a notice."""
    data = OmegaConf.to_container(node, resolve=False)
    moved = []
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")
        holder = data
        for k in parents:
            holder = holder.get(k) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or leaf not in holder:
            continue
        value = holder.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = data
        for k in new_parents:
            target = target.setdefault(k, {})
        target.setdefault(new_leaf, value)
        moved.append(f"{old} -> {new}")
    if moved:
        notice(f"{source} uses renamed keys, read as their new names: {', '.join(moved)}")
    return OmegaConf.create(data)


def _load_file(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """A config file merged over its ``defaults`` (a list of files, relative to it, merged first in order)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; try configs/toy.yaml")
    if path.resolve() in chain:
        raise ConfigError(f"{path} is among its own defaults ({' -> '.join(str(p) for p in chain)}); remove the loop")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"could not parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} must be a YAML mapping of config keys")
    defaults = loaded.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: defaults must be a list of config files (e.g. [dreamfusion-sd.yaml])")
    merged = OmegaConf.create()
    for base in defaults:
        merged = OmegaConf.merge(merged, _load_file(path.parent / base, chain + (path.resolve(),)))
    return OmegaConf.merge(merged, _rename_keys(loaded, str(path)))


def _own_keys(path: Path) -> set[str]:
    """The dotted leaf keys a config file sets itself (not through its ``defaults``), under their current names."""
    loaded = OmegaConf.load(path)
    loaded.pop("defaults", None)
    keys = _all_keys(_rename_keys(loaded, str(path)))
    return {k for k in keys if not any(other.startswith(k + ".") for other in keys)}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Merge the defaults, a YAML file (over its own ``defaults``) and ``key=value`` overrides into a checked RunConfig.

    The keys the file sets itself (not through its ``defaults``) and the overrides are the user's
    choices: one that only the other scene kind reads is an error (``scene.check_scene_run``).

    Raises:
        ConfigError: missing/unreadable file, unknown key (with the closest valid one), bad value,
            a setting of the other scene kind.
    """
    schema = OmegaConf.structured(RunConfig)
    cfg = schema
    explicit: set[str] = set()
    if path is not None:
        cfg = _merge(cfg, _load_file(Path(path)), str(path))
        explicit |= _own_keys(Path(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. guidance.scale=7.5)")
        key, value = item.split("=", 1)
        key = key.strip()
        if key in RENAMED_KEYS:
            notice(f"{key} is deprecated; use {RENAMED_KEYS[key]}")
            key = RENAMED_KEYS[key]
        if value.strip():
            other = OmegaConf.from_dotlist([f"{key}={value}"])
        else:  # `prompt=` means the empty string (from_dotlist would make it null)
            other = OmegaConf.create()
            OmegaConf.update(other, key, "", force_add=True)
        cfg = _merge(cfg, other, f"override {item!r}")
        explicit.add(key)
    try:
        run = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None
    check_config(run)
    try:
        check_scene_run(run, explicit)
        check_scene_inputs(run.scene)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return run


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (saved as config.yaml in every run folder), without the settings
    only the other scene kind reads: loaded again, they would count as set by the user."""
    data = OmegaConf.to_container(OmegaConf.structured(cfg))
    for key in foreign_keys(cfg.scene.kind):
        *parents, leaf = key.split(".")
        holder = data
        for k in parents:
            holder = holder[k]
        del holder[leaf]
    return OmegaConf.to_yaml(OmegaConf.create(data))


def check_config(cfg: RunConfig) -> None:
    """Raise ConfigError naming the first invalid value."""

    def fail(msg: str):
        raise ConfigError(msg)

    if not cfg.prompt.strip():
        fail('the prompt is empty; pass one, e.g. prompt="a red cube"')
    t = cfg.trainer
    for key in ("lr", "lr_background"):
        if getattr(t, key) <= 0:
            fail(f"trainer.{key}={getattr(t, key)} must be positive (e.g. 0.03)")
    if t.max_steps < 0:
        fail(f"trainer.max_steps={t.max_steps} must be >= 0")
    if t.lr_schedule not in LR_SCHEDULES:
        fail(f"trainer.lr_schedule={t.lr_schedule!r} is unknown; use one of {', '.join(LR_SCHEDULES)}")
    if not 0 < t.lr_end_factor <= 1:
        fail(f"trainer.lr_end_factor={t.lr_end_factor} must be in (0, 1] (e.g. 0.1)")
    for key in ("val_every", "ckpt_every", "log_every", "val_views", "threads"):
        if getattr(t, key) < 0:
            fail(f"trainer.{key}={getattr(t, key)} must be >= 0")
    for key in ("lambda_sds", "lambda_orient", "lambda_opacity", "lambda_opacity_entropy"):
        if getattr(t, key) < 0:
            fail(f"trainer.{key}={getattr(t, key)} must be >= 0")
    c = cfg.camera
    for key in ("distance", "fov_y_deg", "elevation_deg", "azimuth_deg"):
        lo, hi = getattr(c, key)
        if lo > hi:
            fail(f"camera.{key}=[{lo}, {hi}]: the first value must not exceed the second")
    if c.distance[0] <= 0 or not 0 < c.fov_y_deg[0] <= c.fov_y_deg[1] < 180:
        fail("camera.distance must be positive and camera.fov_y_deg within (0, 180)")
    if c.batch_size <= 0:
        fail(f"camera.batch_size={c.batch_size} must be positive")
    if (c.late_start_step is None) != (c.late_elevation_deg is None):
        fail("camera.late_start_step and camera.late_elevation_deg go together: set both (e.g. 450 and [-10, 5]) or neither")
    if c.late_elevation_deg is not None:
        lo, hi = c.late_elevation_deg
        if lo > hi:
            fail(f"camera.late_elevation_deg=[{lo}, {hi}]: the first value must not exceed the second")
        if c.late_start_step < 0:
            fail(f"camera.late_start_step={c.late_start_step} must be a step >= 0")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        fail(f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N")
    if cfg.name and not _NAME.fullmatch(cfg.name):
        fail(f"name={cfg.name!r} may hold only letters, digits, '.', '_' and '-'")
    from .export.mesh import check_config as check_export_config
    from .fields.background import check_background_config
    from .fields.nerf import check_field_config
    from .render import check_render_config

    for check, part in ((check_guidance_config, cfg.guidance), (lambda g: guidance_class(g.method), cfg.guidance), (check_field_config, cfg.field), (check_render_config, cfg.render),
                        (check_background_config, cfg.background), (check_export_config, cfg.export),
                        (check_prior_config, cfg.prior), (check_scene_config, cfg.scene), (check_orbit_config, cfg.orbit),
                        (check_eval_config, cfg.eval)):
        try:
            check(part)
        except ValueError as e:
            raise ConfigError(str(e)) from None


_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]+")  # a plain folder name: no separators, not . or ..


def run_name(cfg: RunConfig) -> str:
    """The run folder's name: ``cfg.name`` (checked by ``check_config``), else a slug of the prompt."""
    return cfg.name or slugify(cfg.prompt)
