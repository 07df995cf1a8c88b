"""``sds3d doctor``: what is installed, which backends ``auto`` picks here and why, and whether a prior is
found and what it will be here (family ε / v / x0 / flow, text encoders, dtype, weight memory).

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


def check_prior(name_or_path: str, device: torch.device | str = "cpu") -> dict:
    """Whether the prior's files are on this machine and what it will be on ``device``, without loading weights.

    Returns:
        {"name", "found": bool, "path" (str | None), "detail" (one line: what is there or what to do),
        "facts" (``sds3d.priors.describe.PriorFacts`` when found, else None)}.
    """
    from .priors import PriorError, resolve_prior_path
    from .priors.describe import describe_prior
    from .priors.loading import PipelineFolder

    result = {"name": name_or_path, "found": False, "path": None, "facts": None}
    try:
        path = resolve_prior_path(name_or_path)
        result["path"] = str(path)
        facts = describe_prior(PipelineFolder(path), device=device)
    except PriorError as e:
        return {**result, "detail": str(e)}
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    kind = "latent (VAE)" if facts.vae is not None else "pixel-space"
    return {**result, "found": True, "facts": facts, "detail": f"found at {path} ({kind}, {size / 2**20:.0f} MiB)"}


_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def prior_lines(facts) -> list[str]:
    """What ``sds3d doctor`` says about a found prior: family, text encoders, dtype, weight memory."""
    d = facts.denoiser
    encoders = ", ".join(f"{c.slot} {c.cls} {_params(c.params)}" for c in facts.text_encoders) or "none"
    dropped = f" (left out: {', '.join(facts.dropped)}, prior.t5=false)" if facts.dropped else ""
    stored = f" (the {d.slot}'s weights are stored in {_DTYPE_NAMES[facts.shipped]})" if facts.shipped else ""
    if facts.device == "cpu":
        memory = f"{_gib(facts.device_bytes)} of weights in RAM"
    elif facts.offload:
        memory = (f"{_gib(facts.device_bytes)} of weights on {facts.device} (denoiser + VAE, + the largest text encoder while "
                  f"prompts are encoded), {_gib(facts.host_bytes)} in CPU RAM (text encoders, offloaded after encoding)")
    else:
        memory = f"{_gib(facts.device_bytes)} of weights on {facts.device}"
    return [
        f"  family        {facts.prediction} ({facts.pipeline}: {d.cls}, {_params(d.params)} parameters"
        + (f"; VAE {_params(facts.vae.params)}" if facts.vae else "") + ")"
        + ("; guidance-distilled: no CFG row, guidance.scale is its guidance input" if facts.guidance_distilled else ""),
        f"  text encoders {encoders}{dropped}",
        f"  dtype         {facts.dtype_name()} on {facts.device}{stored}",
        f"  memory        {memory}; activations come on top",
    ]


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
    facts["prior"] = check_prior(prior_name, device)
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
        f"prior {f['prior']['name']!r}: {'found' if f['prior']['found'] else 'NOT FOUND'}",
        f"  {f['prior']['detail']}",
        *(prior_lines(f["prior"]["facts"]) if f["prior"]["found"] else []),
    ]
    return "\n".join(lines)
