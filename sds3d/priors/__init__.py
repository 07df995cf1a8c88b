"""Text-to-image diffusion priors behind one interface (``Prior``) and one loader (``load_prior``).

A prior takes a ``Condition`` (``encode_prompts``) and answers in the terms of its noise
``Schedule`` (``prior.schedule``: forward process, prediction type, w(t), DDIM steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import Prior, PriorError
from .condition import Condition
from .config import PriorConfig, check_prior_config
from .schedule import NoiseSchedule, Schedule, classifier_free_guidance

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOY_PRIOR_PATH = ASSETS / "toy-prior"
TOY_PIPELINE_CLASS = "SDS3DToyPipeline"  # model_index.json "_class_name" of folders sds3d train-prior writes
#: Toy priors by name: v1's, and toy world v2's view-suffix and camera-conditioned priors
#: (scripts/train_toy_prior_v2.py writes them).
TOY_PRIORS = {"toy": TOY_PRIOR_PATH, "toy-v2-text": ASSETS / "toy-v2-text-prior", "toy-v2-camera": ASSETS / "toy-v2-camera-prior"}


def is_toy_prior(name_or_path: str) -> bool:
    """Whether the prior is a toy-world prior: a name in ``TOY_PRIORS`` or any folder ``sds3d train-prior`` wrote."""
    if name_or_path in TOY_PRIORS:
        return True
    index = Path(name_or_path).expanduser() / "model_index.json"
    try:
        return json.loads(index.read_text()).get("_class_name") == TOY_PIPELINE_CLASS
    except (OSError, ValueError, AttributeError):
        return False


def resolve_prior_path(name_or_path: str) -> Path:
    """``"toy"`` -> the shipped folder; ``"toy-v2-text"``, ``"toy-v2-camera"`` -> toy world v2's (once
    trained); a local folder -> itself; else a hub id in the local cache.

    Raises:
        PriorError: the name is neither a folder nor a cached hub id (one line: what, where, how to fix).
    """
    if name_or_path == "toy":
        if not (TOY_PRIOR_PATH / "model_index.json").exists():
            raise PriorError(f"the shipped toy prior is missing from {TOY_PRIOR_PATH}; reinstall sds3d or run `sds3d train-prior`")
        return TOY_PRIOR_PATH
    if name_or_path in TOY_PRIORS:
        path = TOY_PRIORS[name_or_path]
        if not (path / "model_index.json").exists():
            raise PriorError(f"the {name_or_path} prior is not trained yet (no {path}); train it: "
                             f"python scripts/train_toy_prior_v2.py --prior {name_or_path.rsplit('-', 1)[1]}")
        return path
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PriorError(f"prior {name_or_path!r} is a file; give a diffusers pipeline folder, a hub id, or 'toy'")
        return path
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/", "~")):
        raise PriorError(f"prior folder {path} does not exist; give a diffusers pipeline folder, a hub id, or 'toy'")
    from huggingface_hub import constants, snapshot_download

    cache = constants.HF_HUB_CACHE  # read at call time (HF_HOME / HF_HUB_CACHE)
    try:
        return Path(snapshot_download(name_or_path, cache_dir=cache, local_files_only=True))
    except Exception:
        raise PriorError(
            f"{name_or_path!r} is not in the local Hugging Face cache ({cache}) and sds3d never downloads at run time; "
            f"on a machine with network run: {download_command(name_or_path)}"
        ) from None


def download_command(repo_id: str) -> str:
    """The shell command that fetches the parts ``load_prior`` reads (configs, tokenizer, safetensors weights)."""
    # Only the diffusers subfolders' configs/vocab/safetensors: SD repos also hold multi-GB .ckpt/.bin copies.
    patterns = ("model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors")
    return f"hf download {repo_id} " + " ".join(f'--include "{p}"' for p in patterns)


def load_prior(
    name_or_path: str = "toy",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cfg: PriorConfig | None = None,
) -> Prior:
    """Load a frozen prior. See ``resolve_prior_path`` for what ``name_or_path`` may be.

    Args:
        name_or_path: "toy", a diffusers pipeline folder, or a hub id in the local cache.
        device: where the prior runs.
        dtype: override of ``cfg.dtype`` (default: float16 on CUDA, float32 on CPU).
        cfg: precision / attention / memory options (``PriorConfig``; defaults if None).
    """
    from .diffusers_prior import DiffusersPrior

    return DiffusersPrior(resolve_prior_path(name_or_path), device=device, dtype=dtype, cfg=cfg)


__all__ = ["Prior", "PriorError", "Condition", "NoiseSchedule", "Schedule", "classifier_free_guidance", "PriorConfig", "check_prior_config", "is_toy_prior", "load_prior", "resolve_prior_path", "download_command", "TOY_PRIOR_PATH", "TOY_PRIORS", "TOY_PIPELINE_CLASS"]
