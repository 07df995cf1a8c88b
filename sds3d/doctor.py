"""``sds3d doctor``: what is installed, which backends ``auto`` picks here and why, and whether a prior is found.

``collect(prior)`` gathers the facts (a dict, testable); ``report(prior)`` formats them. Nothing is
downloaded; the only possibly slow step is compiling ``sds3d.cuda_ext`` the first time (cached).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

import torch

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    return out


def _cuda_ext_status() -> tuple[bool, str]:
    try:
        from sds3d import cuda_ext
    except ImportError as e:
        return False, f"sds3d.cuda_ext is not importable ({e}); reinstall sds3d"
    module = cuda_ext.load()
    if module is None:
        return False, f"does not build: {cuda_ext.build_error()}"
    with_cuda = bool(getattr(module, "with_cuda", lambda: False)())
    return True, "built (CPU + CUDA kernels)" if with_cuda else "built (CPU kernel only)"


def _tcnn_status() -> tuple[bool, str]:
    if importlib.util.find_spec("tinycudann") is None:
        return False, ("not installed (CUDA only: pip install git+https://github.com/NVlabs/tiny-cuda-nn/"
                       "#subdirectory=bindings/torch)")
    try:
        import tinycudann  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- a broken install (e.g. built for another GPU) is "not usable"
        return False, f"installed but does not import: {str(e).strip().splitlines()[-1][:200]}"
    return True, f"importable ({_version('tinycudann')})"


def check_prior(name_or_path: str) -> dict:
    """Whether the prior's files are on this machine, without loading any weights.

    Returns:
        {"name", "found": bool, "path" (str | None), "detail" (one line: what is there or what to do)}.
    """
    from .priors import PriorError, resolve_prior_path

    result = {"name": name_or_path, "found": False, "path": None}
    try:
        path = resolve_prior_path(name_or_path)
    except PriorError as e:
        return {**result, "detail": str(e)}
    result["path"] = str(path)
    if not (path / "model_index.json").is_file():
        return {**result, "detail": f"{path} has no model_index.json: not a diffusers pipeline folder"}
    parts = ["unet", "text_encoder", "tokenizer", "scheduler"] + (["vae"] if (path / "vae").is_dir() else [])
    missing = [p for p in parts if not (path / p).is_dir()]
    no_weights = [p for p in ("unet", "text_encoder", "vae") if p in parts and p not in missing
                  and not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in (path / p).iterdir())]
    if missing or no_weights:
        what = [f"missing {p}/" for p in missing] + [f"no weights in {p}/" for p in no_weights]
        return {**result, "detail": f"{path}: incomplete ({', '.join(what)})"}
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    kind = "latent (VAE)" if "vae" in parts else "pixel-space"
    return {**result, "found": True, "detail": f"found at {path} ({kind}, {size / 2**20:.0f} MiB)"}


def collect(prior_name: str = "toy") -> dict:
    """All facts ``report`` prints, as a dict."""
    from .fields.encoding import EncodingConfigError, select_backend
    from .render.samplers import nerfacc_cuda_status, select_render_backend

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    nerfacc_ok, nerfacc_why = nerfacc_cuda_status(build=False)
    facts = {
        "python": f"{platform.python_version()} ({sys.platform})",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none (CPU-only build)",
        "cuda_available": torch.cuda.is_available(),
        "gpus": _gpus(),
        "device": str(device),
        "versions": {d: _version(d) for d in ("sds3d", "diffusers", "transformers", "nerfacc", "huggingface_hub")},
        "nerfacc_cuda": (nerfacc_ok, nerfacc_why),
        "tcnn": _tcnn_status(),
        "cuda_ext": _cuda_ext_status(),
    }
    try:
        facts["encoding_auto"] = select_backend("auto", device)
    except EncodingConfigError as e:
        facts["encoding_auto"] = ("error", str(e))
    facts["render_auto"] = select_render_backend("auto", device)
    facts["prior"] = check_prior(prior_name)
    return facts


def _yes(flag) -> str:
    return {True: "yes", False: "no", None: "not yet"}[flag]


def report(prior_name: str = "toy") -> str:
    """The text ``sds3d doctor`` prints."""
    f = collect(prior_name)
    v = f["versions"]
    lines = [
        "sds3d doctor",
        f"  python        {f['python']}",
        f"  torch         {f['torch']} (CUDA build: {f['torch_cuda']}; CUDA available: {_yes(f['cuda_available'])})",
        *(f"  GPU           {g}" for g in f["gpus"] or ["none"]),
        f"  packages      sds3d {v['sds3d']}, diffusers {v['diffusers']}, transformers {v['transformers']}, "
        f"nerfacc {v['nerfacc']}, huggingface_hub {v['huggingface_hub']}",
        f"  nerfacc CUDA  {_yes(f['nerfacc_cuda'][0])}: {f['nerfacc_cuda'][1]}",
        f"  tinycudann    {_yes(f['tcnn'][0])}: {f['tcnn'][1]}",
        f"  cuda_ext      {_yes(f['cuda_ext'][0])}: {f['cuda_ext'][1]}",
        f"auto picks on {f['device']}:",
        f"  encoding      {f['encoding_auto'][0]} ({f['encoding_auto'][1]})",
        f"  rendering     {f['render_auto'][0]} ({f['render_auto'][1]})",
        f"  prior         {'fp16' if f['device'] == 'cuda' else 'fp32'}",
        f"prior {f['prior']['name']!r}: {'found' if f['prior']['found'] else 'NOT FOUND'}",
        f"  {f['prior']['detail']}",
    ]
    return "\n".join(lines)
