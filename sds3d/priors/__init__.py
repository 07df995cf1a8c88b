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
from .schedule import FlowSchedule, NoiseSchedule, Schedule, classifier_free_guidance

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOY_PRIOR_PATH = ASSETS / "toy-prior"
TOY_FLOW_PRIOR_PATH = ASSETS / "toy-flow-prior"
#: Names of the toy priors -> their folders: the shipped v1 (epsilon and flow) priors, and toy world
#: v2's view-suffix and camera-conditioned priors (scripts/train_toy_prior_v2.py writes them).
TOY_PRIORS = {"toy": TOY_PRIOR_PATH, "toy-flow": TOY_FLOW_PRIOR_PATH,
              "toy-v2-text": ASSETS / "toy-v2-text-prior", "toy-v2-camera": ASSETS / "toy-v2-camera-prior"}
TOY_PIPELINE_CLASS = "SDS3DToyPipeline"  # model_index.json "_class_name" of folders sds3d train-prior writes


def is_toy_prior(name_or_path: str) -> bool:
    """Whether the prior is a toy-world prior: a name in ``TOY_PRIORS`` or any folder ``sds3d train-prior`` wrote."""
    if name_or_path in TOY_PRIORS:
        return True
    index = Path(name_or_path).expanduser() / "model_index.json"
    try:
        return json.loads(index.read_text()).get("_class_name") == TOY_PIPELINE_CLASS
    except (OSError, ValueError, AttributeError):
        return False


def resolve_prior_path(name_or_path: str, download: bool = False) -> Path:
    """A name in ``TOY_PRIORS`` (``"toy"``, ``"toy-flow"``, ``"toy-v2-text"``, ``"toy-v2-camera"``) -> its
    folder; a local folder -> itself; else a hub id in the local cache (``download``: fetched into it
    first if missing, ``prior.download=true``).

    Raises:
        PriorError: the name is neither a folder nor a cached hub id (one line: what, where, how to fix).
    """
    if name_or_path in TOY_PRIORS:
        folder = TOY_PRIORS[name_or_path]
        if not (folder / "model_index.json").exists():
            if name_or_path.startswith("toy-v2-"):
                raise PriorError(f"the {name_or_path} prior is not trained yet (no {folder}); train it: "
                                 f"python scripts/train_toy_prior_v2.py --prior {name_or_path.rsplit('-', 1)[1]}")
            how = "`sds3d train-prior`" if name_or_path == "toy" else "`python scripts/train_toy_flow_prior.py --out outputs/toy-flow-prior` and copy its last stage there"
            raise PriorError(f"the toy prior {name_or_path!r} is missing from {folder}; reinstall sds3d or make it with {how}")
        return folder
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PriorError(f"prior {name_or_path!r} is a file; give a diffusers pipeline folder, a hub id, or 'toy'")
        return path
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/", "~")):
        raise PriorError(f"prior folder {path} does not exist; give a diffusers pipeline folder, a hub id, or 'toy'")
    from huggingface_hub import constants, snapshot_download

    cache = constants.HF_HUB_CACHE  # read at call time (HF_HOME / HF_HUB_CACHE)
    if download:
        try:
            return Path(snapshot_download(name_or_path, cache_dir=cache, allow_patterns=list(DOWNLOAD_PATTERNS)))
        except Exception as e:  # network, authentication, unknown repository: huggingface_hub's many errors
            raise PriorError(f"prior.download=true could not fetch {name_or_path!r} into {cache} "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    try:
        return Path(snapshot_download(name_or_path, cache_dir=cache, local_files_only=True))
    except Exception:
        raise PriorError(
            f"{name_or_path!r} is not in the local Hugging Face cache ({cache}); pass prior.download=true to fetch it, "
            f"or run: {download_command(name_or_path)}"
        ) from None


#: The parts ``load_prior`` reads: the diffusers subfolders' configs, vocabularies and safetensors
#: weights (SD repositories also hold multi-GB .ckpt/.bin copies nobody needs here).
DOWNLOAD_PATTERNS = ("model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors")


def download_command(repo_id: str) -> str:
    """The shell command that fetches the parts ``load_prior`` reads (configs, tokenizer, safetensors weights)."""
    return f"hf download {repo_id} " + " ".join(f'--include "{p}"' for p in DOWNLOAD_PATTERNS)


def load_prior(
    name_or_path: str = "toy",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cfg: PriorConfig | None = None,
) -> Prior:
    """Load a frozen prior. See ``resolve_prior_path`` for what ``name_or_path`` may be.

    The folder's model_index.json picks the family: Stable Diffusion 1.x/2.x and the toy priors
    (``sd.py``), SDXL (``sdxl.py``), SD3/SD3.5 (``sd3.py``), Flux-type (``flux.py``).

    Args:
        name_or_path: "toy", "toy-flow", a diffusers pipeline folder, or a hub id in the local cache.
        device: where the prior runs.
        dtype: override of ``cfg.dtype`` (default: on CUDA bf16 for bf16 weights, else fp16; fp32 on CPU).
        cfg: precision / attention / memory options (``PriorConfig``; defaults if None).
    """
    from .loading import PipelineFolder

    folder = PipelineFolder(resolve_prior_path(name_or_path, download=bool(cfg and cfg.download)))
    return prior_class(folder.family)(folder, device=device, dtype=dtype, cfg=cfg)


def prior_class(family: str) -> type[Prior]:
    """The Prior class of a family (``loading.PIPELINES``' values)."""
    if family == "sdxl":
        from .sdxl import SDXLPrior

        return SDXLPrior
    if family == "sd3":
        from .sd3 import SD3Prior

        return SD3Prior
    if family == "flux":
        from .flux import FluxPrior

        return FluxPrior
    from .sd import SDPrior

    return SDPrior


__all__ = ["Prior", "PriorError", "Condition", "NoiseSchedule", "FlowSchedule", "Schedule", "prior_class", "TOY_FLOW_PRIOR_PATH", "TOY_PRIORS", "classifier_free_guidance", "PriorConfig", "check_prior_config", "is_toy_prior", "load_prior", "resolve_prior_path", "download_command", "DOWNLOAD_PATTERNS", "TOY_PRIOR_PATH", "TOY_PIPELINE_CLASS"]
