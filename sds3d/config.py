"""Typed run configuration: dataclasses merged with OmegaConf from YAML plus ``key=value`` overrides.

Each component owns a small config dataclass next to its code (threestudio style); ``RunConfig``
composes them. A typo in a key fails loudly with the closest valid key; every value is checked
before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.nodes import StringNode
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
from .scene import SceneConfig, check_scene_config


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


#: Schedule points that were step counts and are fractions of trainer.max_steps now: old key -> new key.
#: Old config files and run folders still load: the count is divided by the run's max_steps, with a notice.
STEP_KEYS = {
    "camera.late_start_step": "camera.late_start_fraction",
    "guidance.anneal_start": "guidance.anneal_start_fraction",
    "guidance.anneal_end": "guidance.anneal_end_fraction",
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
    # A run whose steps were skipped (non-finite loss or gradient, or a gradient zeroed entirely)
    # more often than this fraction of max_steps did not train: it ends with exit 2, no mesh.
    max_skipped_fraction: float = 0.5


@dataclass
class RunConfig:
    """Everything a run needs. ``sds3d run CONFIG key=value ...``."""

    prompt: str = ""
    name: str = ""  # run folder name under out_dir; default: a slug of the prompt
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    logger: str = "jsonl"  # jsonl: metrics.jsonl; tensorboard: also TensorBoard events in tensorboard/ (sds3d[tensorboard])
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
    except (OmegaConfBaseException, TypeError, ValueError) as e:  # TypeError: a mapping merged into a list, or back
        raise ConfigError(f"invalid config in {source}: {' '.join(str(e).split())[:200]}") from None


_ABSENT = object()


def _rename_keys(node: DictConfig, source: str) -> DictConfig:
    """Move keys listed in RENAMED_KEYS to their new place (the new key wins if both are set), with a notice."""
    if all(OmegaConf.select(node, old, default=_ABSENT) is _ABSENT for old in RENAMED_KEYS):
        return node
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


def _step_keys_to_fractions(node: DictConfig, source: str, max_steps: int | None = None) -> DictConfig:
    """Turn the schedule points of STEP_KEYS given as step counts into fractions of max_steps, with one notice.

    ``max_steps``: the run length the counts were written for (default: the node's own
    trainer.max_steps, else the built-in default).
    """
    if all(OmegaConf.select(node, old, default=_ABSENT) is _ABSENT for old in STEP_KEYS):
        return node
    data = OmegaConf.to_container(node, resolve=False)
    if max_steps is None:
        max_steps = OmegaConf.select(node, "trainer.max_steps", default=TrainerConfig.max_steps)
    read = []
    for old, new in STEP_KEYS.items():
        *parents, leaf = old.split(".")
        holder = data
        for k in parents:
            holder = holder.get(k) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or leaf not in holder:
            continue
        steps = holder.pop(leaf)
        if steps is None:
            holder.setdefault(new.rsplit(".", 1)[1], None)
            continue
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not isinstance(max_steps, int) or max_steps <= 0:
            raise ConfigError(f"{source}: {old}={steps!r} is a step count of a run of trainer.max_steps={max_steps}; "
                              f"give {new} (a fraction of trainer.max_steps) instead")
        holder.setdefault(new.rsplit(".", 1)[1], steps / max_steps)
        read.append(f"{old}={steps} as {new}={steps / max_steps:.6g}")
    if read:
        notice(f"{source}: schedule points are fractions of trainer.max_steps ({max_steps}) now; read {', '.join(read)}")
    return OmegaConf.create(data)


def _load_file(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """A config file merged over its ``defaults`` (a list of files, relative to it, merged first in order)."""
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML file such as configs/toy.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; try configs/toy.yaml")
    if path.resolve() in chain:
        raise ConfigError(f"{path} is among its own defaults ({' -> '.join(str(p) for p in chain)}); remove the loop")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - YAML syntax, encoding, unreadable file: all the file's problem
        raise ConfigError(f"could not parse {path}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} must be a YAML mapping of config keys")
    if len(loaded) == 0:
        raise ConfigError(f"{path} is empty; a config maps keys to values (start from configs/toy.yaml)")
    defaults = loaded.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: defaults must be a list of config files (e.g. [dreamfusion-sd.yaml])")
    merged = OmegaConf.create()
    for base in defaults:
        merged = _merge(merged, _load_file(path.parent / base, chain + (path.resolve(),)), f"{path} (over {base})")
    merged = _merge(merged, _rename_keys(loaded, str(path)), str(path))
    return _step_keys_to_fractions(merged, str(path))


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def literal(value):
    """``value`` with every ``${`` in its strings escaped: OmegaConf keeps it as text, never interpolates it."""
    if isinstance(value, str):
        # A run of n backslashes before "${" is 2n escaped backslashes plus the escaped "${".
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + r"\${", value)
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [literal(v) for v in value]
    return value


def _schema_node(schema: DictConfig, key: str):
    node = schema
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return None
        node = node._get_node(part)
    return node


def _parse_yaml(text: str):
    """``text`` parsed as OmegaConf parses a command-line value (its YAML loader), interpolations left as text."""
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]), resolve=False)["v"]


def _override_value(schema: DictConfig, key: str, text: str, item: str):
    """The value of ``key=text`` as given, before any interpolation.

    Text keys take the text literally ('#', ':', brackets and newlines included), unless it is
    one quoted YAML scalar (``prompt="a cube"``, as sweeps pass them); other keys parse it as YAML.
    """
    node = _schema_node(schema, key)
    if isinstance(node, StringNode):
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
        if quoted:
            try:
                value = _parse_yaml(text)
            except Exception:  # noqa: BLE001 - not one YAML scalar after all: keep the text
                value = None
            if isinstance(value, str):
                return value
        if text in ("null", "~") and node._is_optional():
            return None
        return text
    if not text.strip():
        return ""
    try:
        return _parse_yaml(text)
    except Exception as e:  # noqa: BLE001 - yaml's and OmegaConf's parse errors alike
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(e).split())[:120]}); "
                          f"e.g. {key}=1.5, {key}=[1, 2] or {key}=\'\"some text\"\'") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Merge the defaults, a YAML file (over its own ``defaults``) and ``key=value`` overrides into a checked RunConfig.

    Interpolation (``${...}``) works inside config files; override values are taken literally.

    Raises:
        ConfigError: missing/unreadable/empty file, unknown key (with the closest valid one), bad value.
    """
    schema = OmegaConf.structured(RunConfig)
    cfg = schema
    if path is not None:
        cfg = _merge(cfg, _load_file(Path(path)), str(path))
    given, step_overrides = [], []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. guidance.scale=7.5)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise ConfigError(f"override {item!r}: {key!r} is not a config key (dotted names, e.g. guidance.scale=7.5)")
        if key in RENAMED_KEYS:
            notice(f"{key} is deprecated; use {RENAMED_KEYS[key]}")
            key = RENAMED_KEYS[key]
        if key in STEP_KEYS:  # a step count of this run: converted once max_steps is final
            step_overrides.append((key, text, item))
            continue
        given.append((_nested(key, _override_value(schema, key, text, item)), item))
    if given:
        try:  # one merge of them all (each merge copies the whole config)
            cfg = OmegaConf.merge(cfg, *(node for node, _ in given))
        except (OmegaConfBaseException, TypeError, ValueError):  # one at a time, so the message names the override at fault
            for node, item in given:
                cfg = _merge(cfg, node, f"override {item!r}")
    if step_overrides:
        max_steps = OmegaConf.select(cfg, "trainer.max_steps")
        given = OmegaConf.create()
        for key, text, item in step_overrides:
            given = OmegaConf.merge(given, _nested(key, _override_value(schema, key, text, item)))
        cfg = _merge(cfg, _step_keys_to_fractions(given, "the command line", max_steps), "the command line")
    try:
        run = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        raise ConfigError(f"invalid config: {' '.join(str(e).split())[:200]}") from None
    check_config(run)
    return run


def _nested(key: str, value) -> DictConfig:
    data = literal(value)
    for part in reversed(key.split(".")):
        data = {part: data}
    return OmegaConf.create(data)


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (saved as config.yaml in every run folder); reloads to ``cfg``, text kept literally."""
    return OmegaConf.to_yaml(OmegaConf.create(literal(dataclasses.asdict(cfg))))


def check_config(cfg: RunConfig) -> None:
    """Raise ConfigError naming the first invalid value."""

    def fail(msg: str):
        raise ConfigError(msg)

    check_values(cfg)
    if not cfg.prompt.strip():
        fail('the prompt is empty; pass one, e.g. prompt="a red cube"')
    if not 0 <= cfg.seed < 2**63:
        fail(f"seed={cfg.seed} must be an integer in [0, 2^63)")
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
    if not 0 <= t.max_skipped_fraction <= 1:
        fail(f"trainer.max_skipped_fraction={t.max_skipped_fraction} must be in [0, 1] (e.g. 0.5)")
    c = cfg.camera
    for key in ("distance", "fov_y_deg", "elevation_deg", "azimuth_deg"):
        lo, hi = getattr(c, key)
        if lo > hi:
            fail(f"camera.{key}=[{lo}, {hi}]: the first value must not exceed the second")
    if c.distance[0] <= 0 or not 0 < c.fov_y_deg[0] <= c.fov_y_deg[1] < 180:
        fail("camera.distance must be positive and camera.fov_y_deg within (0, 180)")
    if c.batch_size <= 0:
        fail(f"camera.batch_size={c.batch_size} must be positive")
    if (c.late_start_fraction is None) != (c.late_elevation_deg is None):
        fail("camera.late_start_fraction and camera.late_elevation_deg go together: set both (e.g. 0.75 and [-10, 5]) or neither")
    if c.late_elevation_deg is not None:
        lo, hi = c.late_elevation_deg
        if lo > hi:
            fail(f"camera.late_elevation_deg=[{lo}, {hi}]: the first value must not exceed the second")
        if c.late_start_fraction < 0:
            fail(f"camera.late_start_fraction={c.late_start_fraction} must be >= 0 (a fraction of trainer.max_steps, e.g. 0.75)")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        fail(f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N")
    if cfg.device.startswith("cuda"):
        import torch

        index = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        if index >= torch.cuda.device_count():
            fail(f"device={cfg.device} but this machine has {torch.cuda.device_count()} usable CUDA GPUs "
                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use device=auto or device=cpu")
    cores = os.cpu_count() or 1
    if t.threads > 4 * cores:
        fail(f"trainer.threads={t.threads} is far above this machine's {cores} cores; use at most {cores} (0: torch's default)")
    if cfg.name and not _NAME.fullmatch(cfg.name):
        fail(f"name={cfg.name!r} may hold only letters, digits, '.', '_' and '-'")
    if len(cfg.name) > MAX_NAME:
        fail(f"name is {len(cfg.name)} characters long; file systems allow folder names of at most {MAX_NAME}")
    from .export.mesh import check_config as check_export_config
    from .fields.background import check_background_config
    from .fields.nerf import check_field_config
    from .render import check_render_config
    from .report.tensorboard import check_logger

    for check, part in ((check_guidance_config, cfg.guidance), (lambda g: guidance_class(g.method), cfg.guidance), (check_field_config, cfg.field), (check_render_config, cfg.render),
                        (check_background_config, cfg.background), (check_export_config, cfg.export),
                        (check_prior_config, cfg.prior), (check_scene_config, cfg.scene), (check_orbit_config, cfg.orbit),
                        (check_eval_config, cfg.eval), (check_logger, cfg.logger)):
        try:
            check(part)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    from .memory import too_large

    reason = too_large(cfg)
    if reason:
        fail(reason)


#: Text that may hold tabs and newlines, but no other control characters (they corrupt files and terminals).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_values(node, prefix: str = "") -> None:
    """Raise ConfigError at the first number that is not finite or not a 64-bit integer, or text with a control character."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            check_values(getattr(node, f.name), f"{prefix}.{f.name}" if prefix else f.name)
        return
    if isinstance(node, dict):
        for k, v in node.items():
            check_values(v, f"{prefix}.{k}")
        return
    if isinstance(node, (list, tuple)):
        for v in node:
            check_values(v, prefix)
        return
    if isinstance(node, bool):
        return
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{prefix}={node} is not a finite number")
    if isinstance(node, int) and not -(2**63) <= node < 2**63:
        raise ConfigError(f"{prefix}={node} is out of range (at most 2^63 - 1 in magnitude)")
    if isinstance(node, str) and _CONTROL.search(node):
        raise ConfigError(f"{prefix} holds a control character ({_CONTROL.search(node).group()!r}); remove it")


_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]+")  # a plain folder name: no separators, not . or ..
MAX_NAME = 255  # NAME_MAX of common file systems


def config_digest(cfg: RunConfig) -> str:
    """A short hash of what a run computes: the resolved config but its folder (name, out_dir) and progress bar."""
    data = dataclasses.asdict(cfg)
    data.update(name="", out_dir="")
    data["trainer"]["progress"] = True
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(literal(data))).encode()).hexdigest()[:6]


def run_name(cfg: RunConfig, config_path: str | Path | None = None) -> str:
    """The run folder's name: ``cfg.name`` (checked by ``check_config``), else ``<prompt slug>-<config stem>-<digest>``.

    The digest (``config_digest``) keeps prompts of the same slug ("A Red Cube", "a red cube") and
    the same prompt under other configs or overrides apart; the same config always names the same folder.
    """
    if cfg.name:
        return cfg.name
    stem = slugify(Path(config_path).stem, max_len=32) if config_path is not None else None
    return "-".join(p for p in (slugify(cfg.prompt), stem, config_digest(cfg)) if p)
