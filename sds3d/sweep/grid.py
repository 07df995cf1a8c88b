"""Sweep specs: parse ``--grid key=v1,v2`` and sweep files, expand the cartesian product, name runs.

Stateless helpers only; nothing here trains or writes. A run's folder name is a pure function of
its prompt, seed and overrides, so re-running a sweep finds its runs again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..paths import slugify

# Keys the sweep sets itself; a grid over them would fight --prompts/--seeds/--out.
RESERVED_KEYS = {"prompt": "--prompts", "seed": "--seeds", "out_dir": "--out", "name": "(set by the sweep)"}


class SweepError(UserError):
    """The sweep is invalid (bad --grid, sweep file, Ray address); the message says how to fix it."""


@dataclass
class SweepSpec:
    """What to sweep: a base config, a grid of overrides, prompts, seeds and the sweep folder.

    Attributes:
        config: the base run config (YAML path).
        grid: ordered ``{key: [value text, ...]}``; each value is the text after ``key=`` (YAML).
        prompts: prompts to run every grid point on (empty: the base config's prompt).
        seeds: seeds to run every grid point on (empty: the base config's seed).
        out: the sweep folder (runs are its subfolders).
        overrides: fixed ``key=value`` overrides applied to every run before the grid's.
        config_root: the folder that relative files of a ``config`` grid key are relative to (the sweep
            file's; "" = the working directory).

    A grid key ``config`` (``CONFIG_KEY``) takes run config files instead of values: each run uses its
    file in place of ``config`` (e.g. every estimator with its own tuned config), the other keys and
    the overrides apply on top.
    """

    config: str
    grid: dict[str, list[str]] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    out: str = ""
    overrides: list[str] = field(default_factory=list)
    config_root: str = ""

    def run_config(self, run: "RunSpec") -> str:
        """The config file of ``run``: its ``config`` grid value (resolved against ``config_root``), else ``config``."""
        value = dict(run.overrides).get(CONFIG_KEY)
        if value is None:
            return self.config
        path = Path(display_value(value))
        return str(path if path.is_absolute() or not self.config_root else Path(self.config_root) / path)


#: The grid key whose values are run config files (``SweepSpec``).
CONFIG_KEY = "config"


@dataclass(frozen=True)
class RunSpec:
    """One point of the sweep: a prompt, a seed and one value per grid key."""

    prompt: str
    seed: int
    overrides: tuple[tuple[str, str], ...]  # ((key, value text), ...) in grid order

    @property
    def name(self) -> str:
        return run_folder_name(self.prompt, self.seed, self.overrides)

    @property
    def column(self) -> str:
        """The grid point as text (the comparison image's column header)."""
        return " ".join(f"{k}={Path(display_value(v)).stem if k == CONFIG_KEY else display_value(v)}" for k, v in self.overrides) or "(base)"

    def override_list(self) -> list[str]:
        """The grid point's ``key=value`` overrides (a ``config`` key chooses the file, it is no override)."""
        return [f"{k}={v}" for k, v in self.overrides if k != CONFIG_KEY]


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` on commas outside quotes and brackets.

    ``'"blurry, low quality",""'`` -> ``['"blurry, low quality"', '""']``; ``'[1,2],[3,4]'`` ->
    ``['[1,2]', '[3,4]']``. Values keep their quotes: OmegaConf parses them as YAML scalars.
    Hand-written because csv/shlex know quotes but not brackets.

    Raises:
        SweepError: unbalanced quote or bracket.
    """
    values, buf, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            buf.append(ch)
        elif ch in "[{(":
            depth += 1
            buf.append(ch)
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                raise SweepError(f"unbalanced '{ch}' in grid values {text!r}")
            buf.append(ch)
        elif ch == "," and depth == 0:
            values.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote or depth:
        raise SweepError(f"unclosed {'quote ' + quote if quote else 'bracket'} in grid values {text!r}")
    values.append("".join(buf).strip())
    if all(v == "" for v in values):
        return []
    if any(v == "" for v in values):
        raise SweepError(f"empty value in grid values {text!r}; write an empty string as \"\"")
    return values


def parse_grid_arg(item: str) -> tuple[str, list[str]]:
    """``"guidance.scale=1,3,7.5"`` -> ``("guidance.scale", ["1", "3", "7.5"])``.

    Raises:
        SweepError: no ``=``, no key, an empty value list, or a key the sweep sets itself.
    """
    key, sep, rest = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"--grid {item!r} is not key=v1,v2,... (e.g. --grid guidance.scale=1,3,7.5)")
    check_grid_key(key)
    values = split_values(rest)
    if not values:
        raise SweepError(f"--grid {key}= has no values; give at least one, e.g. --grid {key}=v1,v2")
    return key, values


def check_grid_key(key: str) -> None:
    if key in RESERVED_KEYS:
        raise SweepError(f"'{key}' cannot be a grid key; use {RESERVED_KEYS[key]} instead")


def yaml_value_text(value) -> str:
    """A sweep file's YAML value as override text that OmegaConf parses back to the same value."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # lists/dicts: JSON is YAML flow style


def display_value(text: str) -> str:
    """Override text as shown in tables: surrounding quotes dropped."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _value_slug(text: str) -> str:
    shown = display_value(text)
    clean = re.sub(r"[^A-Za-z0-9.]+", "-", shown).strip("-.")[:40]
    if clean and clean == shown:
        return clean
    # Lossy (spaces, quotes, brackets, empty): a short hash keeps distinct values apart.
    return f"{clean or 'v'}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def run_folder_name(prompt: str, seed: int, overrides: tuple[tuple[str, str], ...]) -> str:
    """``a-red-cube__seed-0__guidance.scale-7.5``: deterministic, valid as ``RunConfig.name``."""
    # A config file is named by its stem, so the sweep.yaml copy (paths relative to the sweep folder) finds its runs.
    parts = [slugify(prompt, max_len=48), f"seed-{seed}"] + [
        f"{k}-{_value_slug(Path(display_value(v)).stem if k == CONFIG_KEY else v)}" for k, v in overrides]
    name = "__".join(parts)
    if len(name) > 150:  # file systems cap names at 255 bytes
        name = f"{name[:140]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def expand(spec: SweepSpec, default_prompt: str = "", default_seed: int = 0) -> list[RunSpec]:
    """The cartesian product prompts x seeds x grid values (grid keys in order), as RunSpecs.

    Raises:
        SweepError: a grid key with no values, or no prompt at all.
    """
    for key, values in spec.grid.items():
        check_grid_key(key)
        if not values:
            raise SweepError(f"grid key {key} has no values; give at least one")
    prompts = list(spec.prompts) or ([default_prompt] if default_prompt.strip() else [])
    if not prompts:
        raise SweepError('no prompt: pass --prompts "a red cube" ... or set prompt in the config')
    seeds = list(spec.seeds) or [default_seed]
    keys = list(spec.grid)
    points = list(itertools.product(*(spec.grid[k] for k in keys)))
    runs = [RunSpec(p, int(s), tuple(zip(keys, point))) for p in prompts for s in seeds for point in points]
    names = [r.name for r in runs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SweepError(f"two runs of the sweep would share the folder {dup!r}; remove repeated prompts, seeds or values")
    return runs


def load_sweep_file(path: str | Path) -> SweepSpec | None:
    """A sweep YAML (``config``, ``grid``, ``prompts``, ``seeds``, ``out``, ``overrides``), or None
    when ``path`` is an ordinary run config (no ``grid`` key).

    ``config`` is relative to the sweep file's folder; ``out`` to the working directory.

    Raises:
        SweepError: unreadable file or a malformed sweep entry.
    """
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"config file {path} not found; try configs/toy.yaml or configs/sweeps/guidance-scale.yaml")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:
        raise SweepError(f"could not parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or "grid" not in data:
        return None
    allowed = {"config", "grid", "prompts", "seeds", "out", "overrides"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise SweepError(f"{path}: unknown sweep key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")
    if not data.get("config"):
        raise SweepError(f"{path}: missing 'config: <run config path>' (relative to the sweep file)")
    grid = data["grid"]
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: 'grid' must map config keys to lists of values")
    parsed: dict[str, list[str]] = {}
    for key, values in grid.items():
        if isinstance(values, str):
            parsed[key] = split_values(values)
        elif isinstance(values, list):
            parsed[key] = [yaml_value_text(v) for v in values]
        else:
            parsed[key] = [yaml_value_text(values)]
        if not parsed[key]:
            raise SweepError(f"{path}: grid key {key} has no values; give at least one")
    prompts = data.get("prompts") or []
    prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
    seeds = data.get("seeds", [])
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not all(isinstance(s, int) for s in seeds):
        raise SweepError(f"{path}: seeds must be integers, got {seeds!r}")
    overrides = data.get("overrides") or []
    if isinstance(overrides, dict):
        overrides = [f"{k}={yaml_value_text(v)}" for k, v in overrides.items()]
    return SweepSpec(config=str(path.parent / str(data["config"])), grid=parsed, prompts=prompts, seeds=seeds,
                     out=str(data.get("out") or ""), overrides=[str(o) for o in overrides], config_root=str(path.parent))
