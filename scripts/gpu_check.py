#!/usr/bin/env python
"""The GPU check behind ``scripts/gpu_check.sh``: build, CUDA tests and SDS benchmarks, one table.

Steps, each in its own process with a time limit (a crash or a hang fails that step only):
  build    sds3d.cuda_ext for the present GPU (TORCH_CUDA_ARCH_LIST = its compute capability)
  nerfacc  nerfacc's CUDA ops (prebuilt wheel or JIT build), then one occupancy-grid march
  tests    every CUDA test of tests/ (the ``cuda`` marker or a skipif on CUDA); a skip fails it
  toy      SDS steps/s and peak GPU memory of configs/toy.yaml (the shipped toy prior)
  sd       the same for configs/dreamfusion-sd.yaml with a random-weight prior of the Stable
           Diffusion 2.1-base shapes (64x64 renders, 512x512 VAE input; built once, fp16, cached)
No network is needed. Without a CUDA GPU it prints SKIP and exits 0 (1 with --require-gpu); any
failed step makes the exit status 1. The whole check is held to --budget-s (default 480 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("build", "nerfacc", "tests", "toy", "sd")
#: Longest each step may take (the remaining total budget cuts it shorter). nerfacc's JIT build
#: alone takes a few minutes; with its prebuilt wheel the step takes seconds.
STEP_LIMIT_S = {"build": 240, "nerfacc": 300, "tests": 240, "toy": 120, "sd": 240}
RESULT_TAG = "GPU_CHECK_RESULT "
SD21_CACHE = Path(os.environ.get("SDS3D_GPU_CHECK_CACHE", Path.home() / ".cache" / "sds3d" / "gpu-check")) / "sd21-base-random"


class CheckArgumentError(ValueError):
    """A bad command-line value (one line on stderr, exit status 2)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The check's options; ``CheckArgumentError`` for a bad value."""
    ap = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP", help=f"run only these steps ({', '.join(STEPS)})")
    ap.add_argument("--skip", nargs="+", choices=STEPS, default=[], metavar="STEP", help="leave these steps out")
    ap.add_argument("--bench-steps", type=int, default=20, help="timed SDS steps per benchmark (after 3 warm-up steps)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="time limit of the whole check in seconds")
    ap.add_argument("--require-gpu", action="store_true", help="fail (exit 1) instead of skipping when no CUDA GPU is visible")
    ap.add_argument("--allow-skips", action="store_true", help="accept skipped CUDA tests (e.g. an optional wheel not installed)")
    ap.add_argument("--device", default="cuda", help="the CUDA device to check (cuda, cuda:1, ...)")
    args = ap.parse_args(argv)
    if args.bench_steps < 1:
        raise CheckArgumentError(f"--bench-steps {args.bench_steps} must be at least 1")
    if args.budget_s <= 0:
        raise CheckArgumentError(f"--budget-s {args.budget_s} must be positive")
    if not (args.device == "cuda" or (args.device.startswith("cuda:") and args.device[5:].isdigit())):
        raise CheckArgumentError(f"--device {args.device!r} is not cuda or cuda:N")
    args.steps = [s for s in (args.only or STEPS) if s not in args.skip]
    if not args.steps:
        raise CheckArgumentError("no step left to run: --skip removed every step of --only")
    return args


def gpu_info(device: str) -> dict | None:
    """Name, compute capability, memory and CUDA versions of ``device``, or None when no CUDA GPU is visible."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return None
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}", "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda}


# -- the steps (each runs in a child process: ``gpu_check.py step NAME``) -------------------------------------


def step_build(args) -> dict:
    import torch

    from sds3d import cuda_ext

    t0 = time.perf_counter()
    module = cuda_ext.build(with_cuda=True)
    if not module.with_cuda():
        raise RuntimeError(f"{module.__file__} was built without its CUDA target")
    x = torch.rand(1000, 3, device=args.device)
    emb = torch.randn(4**3 + 2**10, 2, device=args.device)
    y = cuda_ext.hash_grid_encode(x, emb, [0, 4**3, 4**3 + 2**10], [3, 32])
    ref = cuda_ext.hash_grid_encode(x.cpu(), emb.cpu(), [0, 4**3, 4**3 + 2**10], [3, 32])
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-4, atol=1e-4)
    return {"detail": f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')}, GPU forward = CPU forward",
            "seconds": time.perf_counter() - t0}


def step_nerfacc(args) -> dict:
    import torch

    from sds3d.render import NerfaccConfig, OccGridSampler
    from sds3d.render.samplers import nerfacc_cuda_status

    ok, why = nerfacc_cuda_status(build=True)
    if not ok:
        raise RuntimeError(f"nerfacc's CUDA ops: {why}")
    grid = OccGridSampler(1.0, NerfaccConfig(grid_resolution=32, update_every=1)).to(args.device)
    grid.update(0, lambda x: torch.where(x.norm(dim=-1) < 0.5, 100.0, 0.0))
    o = torch.tensor([[0.0, 0.0, -2.0]], device=args.device).expand(64, 3).contiguous()
    d = torch.nn.functional.normalize(torch.randn(64, 3, device=args.device) * 0.05 + torch.tensor([0.0, 0.0, 1.0], device=args.device), dim=-1)
    samples = grid.sample(o, d, torch.full((64,), 1.0, device=args.device), torch.full((64,), 3.0, device=args.device),
                          lambda x: torch.where(x.norm(dim=-1) < 0.5, 100.0, 0.0), stratified=False)
    if samples.t_starts.numel() == 0:
        raise RuntimeError("the occupancy-grid march returned no samples through an occupied ball")
    return {"detail": f"{why}; march: {samples.t_starts.numel()} samples on 64 rays"}


def is_cuda_test(item) -> bool:
    """A test that needs a CUDA GPU: the ``cuda`` marker, or a skipif whose reason names CUDA or a GPU."""
    if item.get_closest_marker("cuda") is not None:
        return True
    for mark in item.iter_markers("skipif"):
        reason = str(mark.kwargs.get("reason", "")).lower()
        if "cuda" in reason or "gpu" in reason:
            return True
    return False


class CudaTests:
    """A pytest plugin: keeps the CUDA tests, counts their outcomes."""

    def __init__(self):
        self.outcomes = {"passed": 0, "failed": 0, "skipped": 0}
        self.skips: list[str] = []

    def pytest_collection_modifyitems(self, config, items):
        keep = [i for i in items if is_cuda_test(i)]
        config.hook.pytest_deselected(items=[i for i in items if not is_cuda_test(i)])
        items[:] = keep

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome in ("failed", "skipped")):
            self.outcomes[report.outcome] += 1
            if report.outcome == "skipped":
                self.skips.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}")


def step_tests(args) -> dict:
    import pytest

    plugin = CudaTests()
    code = pytest.main([str(REPO / "tests"), "-q", "-rs", "-p", "no:cacheprovider"], plugins=[plugin])
    o = plugin.outcomes
    detail = f"{o['passed']} passed, {o['failed']} failed, {o['skipped']} skipped"
    if code not in (0, 5) or o["failed"]:
        raise RuntimeError(f"CUDA tests: {detail}")
    if o["passed"] == 0:
        raise RuntimeError("no CUDA test ran (none collected)")
    if o["skipped"] and not args.allow_skips:
        raise RuntimeError(f"CUDA tests: {detail} (a skip on a GPU means a missing wheel; --allow-skips accepts it): {plugin.skips[0][:200]}")
    return {"detail": detail}


def sd21_random_configs() -> dict:
    """Constructor arguments of the SD 2.1-base parts: UNet and VAE (from bench_sd_step), its text encoder
    (OpenCLIP ViT-H/14's text tower: 23 layers of 1024, as in its text_encoder/config.json) and its scheduler."""
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_sd_step import SD21_BASE_UNET, SD_VAE

    text = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407)
    scheduler = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                     steps_offset=1, prediction_type="epsilon", set_alpha_to_one=False)
    return {"unet": dict(SD21_BASE_UNET), "vae": dict(SD_VAE), "text_encoder": text, "scheduler": scheduler}


def build_random_sd21(folder: Path) -> Path:
    """A diffusers folder with SD 2.1-base shapes and random weights (fp16), once; the toy prior's CLIP tokenizer."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sds3d.priors import TOY_PRIOR_PATH

    c = sd21_random_configs()
    torch.manual_seed(0)
    with torch.device("cuda"):  # random init on the GPU: seconds instead of a minute
        unet, vae = UNet2DConditionModel(**c["unet"]), AutoencoderKL(**c["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**c["text_encoder"]))
    tokenizer = CLIPTokenizer.from_pretrained(TOY_PRIOR_PATH / "tokenizer", model_max_length=77)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDPMScheduler(**c["scheduler"]),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False).to(torch.float16)
    partial = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(partial)
    partial.rename(folder)  # complete or absent: an interrupted build is rebuilt next time
    return folder


def bench(config: str, overrides: list[str], args) -> dict:
    """SDS steps per second and peak GPU memory of ``config`` (3 warm-up steps, then ``--bench-steps``)."""
    import torch

    from sds3d.config import load_config
    from sds3d.pipeline import build_run
    from sds3d.runs import prepare_run_dir
    from sds3d.trainer import TrainHooks, train

    warmup, steps = 3, args.bench_steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO / "configs" / config, [f"device={args.device}", f"out_dir={tmp}", "trainer.progress=false",
                                                      f"trainer.max_steps={warmup + steps}", "trainer.val_every=0", "trainer.ckpt_every=0",
                                                      *overrides])
        r = build_run(cfg, prepare_run_dir(cfg))
        state = train(cfg, r.scene, r.guidance, r.prompts, r.state, TrainHooks(), stop_after=warmup)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        state = train(cfg, r.scene, r.guidance, r.prompts, state, TrainHooks())
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return {"steps_per_s": steps / seconds, "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
            "detail": f"{steps} steps in {seconds:.1f} s, sampler {type(r.scene.sampler).__name__}, skipped {state.skipped_steps}"}


def step_toy(args) -> dict:
    return bench("toy.yaml", ["prompt=a green cone"], args)


def step_sd(args) -> dict:
    folder = build_random_sd21(SD21_CACHE)
    return bench("dreamfusion-sd.yaml", ["prompt=a DSLR photo of a hamburger", f"prior.name_or_path={folder}"], args)


STEP_FUNCTIONS = {"build": step_build, "nerfacc": step_nerfacc, "tests": step_tests, "toy": step_toy, "sd": step_sd}


# -- orchestration (the parent process) ------------------------------------------------------------------------


@dataclass
class StepResult:
    step: str
    ok: bool
    seconds: float
    detail: str = ""
    steps_per_s: float | None = None
    peak_mib: float | None = None


def run_step(name: str, argv: list[str], limit_s: float, env: dict) -> StepResult:
    """``gpu_check.py step NAME`` in a child process, at most ``limit_s`` seconds; its result line, or why it failed."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "step", name, *argv], env=env, timeout=limit_s,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired:
        return StepResult(name, False, time.perf_counter() - t0, f"timed out after {limit_s:.0f} s")
    seconds = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            data = json.loads(line[len(RESULT_TAG):])
            return StepResult(name, data.pop("ok"), seconds, **{k: v for k, v in data.items() if k != "seconds"})
    tail = [line for line in (proc.stderr or "").splitlines() if line.strip()][-1:]
    return StepResult(name, False, seconds, f"exit status {proc.returncode}" + (f": {tail[0][:200]}" if tail else ""))


def format_table(info: dict, results: list[StepResult]) -> str:
    """One table: step, status, seconds, SDS steps/s, peak GPU memory, detail."""
    head = f"GPU: {info['name']} (sm {info['capability']}, {info['memory_gib']} GiB), torch {info['torch']}, CUDA {info['cuda']}"
    rows = [("step", "status", "seconds", "steps/s", "peak MiB", "detail")]
    for r in results:
        rows.append((r.step, "ok" if r.ok else "FAIL", f"{r.seconds:.1f}", "" if r.steps_per_s is None else f"{r.steps_per_s:.2f}",
                     "" if r.peak_mib is None else f"{r.peak_mib:.0f}", r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    return "\n".join([head, *lines])


def _now() -> float:
    return time.perf_counter()


def main(argv: list[str]) -> int:
    if argv[:1] == ["step"]:  # a child: one step, its result as one tagged JSON line
        name, args = argv[1], parse_args(argv[2:])
        try:
            result = {"ok": True, **STEP_FUNCTIONS[name](args)}
        except Exception as e:  # noqa: BLE001 - the step failed; the parent puts the reason in the table
            result = {"ok": False, "detail": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    try:
        args = parse_args(argv)
    except CheckArgumentError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    info = gpu_info(args.device)
    if info is None:
        print(f"gpu_check: SKIP: no CUDA GPU visible as {args.device} (torch.cuda.is_available() is False or the index is out of range)"
              + ("" if not args.require_gpu else "; --require-gpu makes this a failure"), file=sys.stderr)
        return 1 if args.require_gpu else 0
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=info["capability"], PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    deadline = _now() + args.budget_s
    results = []
    for name in args.steps:
        left = deadline - _now()
        if left <= 1:
            results.append(StepResult(name, False, 0.0, f"not run: the --budget-s {args.budget_s:.0f} s was used up"))
            continue
        results.append(run_step(name, argv, min(STEP_LIMIT_S[name], left), env))
        print(f"gpu_check: {name}: {'ok' if results[-1].ok else 'FAIL'} ({results[-1].seconds:.0f} s)", file=sys.stderr, flush=True)
    print(format_table(info, results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
