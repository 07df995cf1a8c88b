"""Train the embedded toy priors: text-conditioned diffusion models of the toy world, with the
epsilon objective (the toy prior) or the rectified-flow objective (the toy flow prior).

Writes a diffusers-layout folder (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json)
that ``sds3d.priors.load_prior("toy")`` (``"toy-flow"``) loads through the same code path as
Stable Diffusion (SD3). The data are toy-world renders (``toyworld.dataset``); noising, the
denoiser's timestep input and the training target are the prior's schedule's
(``add_noise`` / ``model_time`` / ``target``).

    sds3d train-prior                 # ~45 min on 2 CPU cores (or: python scripts/train_toy_prior.py)
    sds3d train-prior --resume        # continue from the last checkpoint
    sds3d train-prior --objective flow --init-from sds3d/assets/toy-prior   # see scripts/train_toy_flow_prior.py

Recipe (DESIGN.md "The toy prior"): 24k renders (32x32) of 4 shapes x 4 colours from the toy
camera distribution, prompts "a {colour} {shape}, {view} view"; DDPM (Ho et al. 2020) epsilon
objective, linear betas 1e-4..0.02, T = 1000; condition dropout 12% (classifier-free guidance,
Ho & Salimans 2022) and view-suffix dropout 10%; AdamW, EMA of the weights.

``--objective flow``: the same model and data with the rectified-flow / conditional flow-matching
objective (Liu et al. 2023; Lipman et al. 2023): x_t = (1 - sigma) x + sigma eps, the UNet
predicts v = eps - x from x_t and sigma T (FlowMatchEulerDiscreteScheduler's timestep), with
sigma = (t + 1) / T for t ~ U{0, ..., T - 1} (uniform: SD3 trains on a logit-normal density, but
score distillation draws t uniformly over most of [0, T), so every level is trained alike) and
no shift (shift 1: SD3's shift grows with the image size, and 32 x 32 pixels are fewer
dimensions than SD3's smallest latents). The config is saved as a FlowMatchEulerDiscreteScheduler.

``--world v2`` trains on toy world v2's data instead (``toyworld.v2.dataset.training_set``: v1's
renders plus the faced objects and compositions, front-biased and sparsely captioned); its
view-suffix dropout applies to the v1 items only (the v2 captions are already sparse). The v2
priors' stages: scripts/train_toy_prior_v2.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..signals import handled

PACKAGE = Path(__file__).resolve().parents[1]


def _fail(message: str) -> None:
    """A user mistake: one line on stderr, exit status 2 (like every sds3d command)."""
    print(f"sds3d: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-to-unicode table (needed to rebuild CLIP's vocab.json from its merges file).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer(max_length: int, work_dir: Path):
    """The real CLIP BPE tokenizer, from the vocabulary shipped inside the open-clip-torch wheel."""
    import importlib.util

    from transformers import CLIPTokenizer

    shipped = PACKAGE / "assets" / "toy-prior" / "tokenizer"
    if (shipped / "tokenizer_config.json").exists():  # re-training: reuse the shipped CLIP tokenizer files
        return CLIPTokenizer.from_pretrained(shipped, model_max_length=max_length)
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        _fail("training the toy prior needs the CLIP BPE file: pip install open-clip-torch --no-deps")
    bpe = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (work_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(work_dir / "vocab.json"), str(work_dir / "merges.txt"), model_max_length=max_length)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="sds3d train-prior", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=None,
                    help="the prior folder to write (diffusers layout); default: sds3d/assets/toy-prior (toy-flow-prior with --objective flow)")
    ap.add_argument("--objective", choices=["epsilon", "flow"], default="epsilon",
                    help="epsilon: DDPM's eps target; flow: the rectified-flow velocity target")
    ap.add_argument("--work-dir", type=Path, default=Path("data") / "toy-prior-train", help="checkpoints for --resume")
    ap.add_argument("--steps", type=int, default=6000, help="optimiser steps")
    ap.add_argument("--batch-size", type=int, default=64, help="images per step")
    ap.add_argument("--images-per-pair", type=int, default=1500, help="renders per (shape, colour)")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    ap.add_argument("--ema-decay", type=float, default=0.995, help="decay of the EMA weights that are saved")
    ap.add_argument("--cond-dropout", type=float, default=0.12, help="fraction of samples trained with the empty prompt (for CFG)")
    ap.add_argument("--view-dropout", type=float, default=0.10, help="fraction of samples trained without the view words")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights")
    ap.add_argument("--ckpt-every", type=int, default=250, help="checkpoint every N steps (0: only at the end or on Ctrl-C)")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work-dir")
    ap.add_argument("--camera-conditioning", action="store_true",
                    help="also condition on the exact camera (elevation, azimuth), MVDream-style")
    ap.add_argument("--camera-dropout", type=float, default=0.1, help="fraction of samples trained with the null camera")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from a trained prior folder (e.g. add camera conditioning to the shipped one)")
    ap.add_argument("--world", choices=("v1", "v2"), default="v1",
                    help="training data: toy world v1, or v2 (v1 + faced objects + compositions; --images-per-pair "
                         "renders per v1 and faced pair, compositions at the spec's 200/1500 of it)")
    ap.add_argument("--dataset-cache", type=Path, default=None, help="v2: folder caching the rendered data set")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "images_per_pair", "lr"):
        if getattr(args, name) <= 0:
            _fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be positive")
    if args.out is None:
        if args.world == "v2":  # never over a shipped v1 prior
            _fail("--world v2 needs --out FOLDER (the v2 priors' stages: python scripts/train_toy_prior_v2.py)")
        args.out = PACKAGE / "assets" / ("toy-prior" if args.objective == "epsilon" else "toy-flow-prior")
    if args.dataset_cache is not None and args.world == "v1":
        _fail("--dataset-cache caches the v2 data set; add --world v2 or drop it")
    if args.ckpt_every < 0:
        _fail(f"--ckpt-every {args.ckpt_every} must be >= 0 (0: checkpoint only at the end)")
    for name in ("cond_dropout", "view_dropout", "camera_dropout"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            _fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be a fraction in [0, 1]")

    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..priors import TOY_PIPELINE_CLASS, FlowSchedule, NoiseSchedule
    from ..priors.toy_unet import ToyUNet

    from .dataset import build_dataset

    init_files = None
    if args.init_from is not None:  # checked before the minute of rendering the dataset
        init_files = (args.init_from / "unet" / "diffusion_pytorch_model.safetensors", args.init_from / "text_encoder" / "model.safetensors")
        missing_files = [str(f) for f in init_files if not f.is_file()]
        if missing_files:
            _fail(f"--init-from {args.init_from} is not a toy prior folder (missing {', '.join(missing_files)})")

    # What the images are: a checkpoint of another data set (the spec or the renderer changed since,
    # or other counts) must not be resumed as if it were this one's.
    data_id = f"{args.world}-seed{args.seed}-n{args.images_per_pair}"
    if args.world == "v2":
        from .v2.dataset import data_digest

        data_id += f"-{data_digest()}"
    ckpt_path = args.work_dir / "ckpt.pt"
    ck = None
    if args.resume and ckpt_path.exists():
        try:
            ck = torch.load(ckpt_path, weights_only=True)
        except Exception as e:  # truncated or not a checkpoint: say which file, no traceback
            _fail(f"{ckpt_path} is not a readable checkpoint ({type(e).__name__}); delete it to start the stage again")
    if ck is not None and ck.get("objective", "epsilon") != args.objective:
        _fail(f"{ckpt_path} is a checkpoint of the {ck.get('objective', 'epsilon')} objective; resume it with "
              f"--objective {ck.get('objective', 'epsilon')}, or give another --work-dir")
    if ck is not None and ck.get("data", data_id) != data_id:  # checkpoints older than the key: trusted
        _fail(f"{ckpt_path} was trained on another data set ({ck['data']}; this run's is {data_id}: the toy world's "
              f"spec, its code or the counts changed); give another --work-dir or delete that one")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    if args.world == "v1":
        data = build_dataset(args.images_per_pair, args.seed)
        images, prompts, base_prompts, angles = data.images, data.prompts, data.base_prompts, data.cameras.view_angles
    else:
        from .v2.dataset import training_set
        from .v2.prompts import parse_prompt

        images, prompts, base_prompts, angles = training_set(args.images_per_pair, args.seed, args.dataset_cache)
        # The view-suffix dropout replaces a caption by its base: v2 items keep their (already sparse) caption.
        base_prompts = [b if parse_prompt(b).kind == "v1" else p for p, b in zip(prompts, base_prompts)]
    print(f"dataset: {len(images)} images in {time.time() - t0:.1f} s")

    max_length = 16
    tokenizer = build_tokenizer(max_length, args.work_dir / "tokenizer-src")
    texts = sorted(set(prompts) | set(base_prompts) | {""})
    text_index = {p: i for i, p in enumerate(texts)}
    tokens = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    full_idx = torch.tensor([text_index[p] for p in prompts])
    base_idx = torch.tensor([text_index[p] for p in base_prompts])
    empty_idx = text_index[""]

    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    unet = ToyUNet(sample_size=32, cross_attention_dim=64, camera_conditioning=args.camera_conditioning)
    if init_files is not None:
        from safetensors.torch import load_file

        from .camera_free import drop_camera_embedding

        # New layers (the camera embedding) keep their zero init; everything else is the old prior. A
        # camera-free model starts as a camera-conditioned parent's null-camera function.
        try:
            state = load_file(init_files[0])
            missing, unexpected = unet.load_state_dict(state if args.camera_conditioning else drop_camera_embedding(state), strict=False)
            text_encoder.load_state_dict(load_file(init_files[1]))
        except Exception as e:  # corrupt file or other architecture: say which, no traceback
            _fail(f"--init-from {args.init_from}: cannot load its weights ({type(e).__name__}); give a folder written by sds3d train-prior")
        if unexpected or any(not k.startswith("camera_embedding.") for k in missing):
            _fail(f"--init-from {args.init_from} is not a toy prior this model can start from")
        print(f"initialised from {args.init_from}")
    if args.objective == "flow":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        schedule = FlowSchedule(scheduler.config)
    else:
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  prediction_type="epsilon", clip_sample=False)
        schedule = NoiseSchedule(scheduler.config)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = 100
    lr_lambda = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    ema = EMAModel(params, decay=args.ema_decay, use_ema_warmup=True)
    g = torch.Generator().manual_seed(args.seed + 1)
    step = 0

    if ck is not None:
        unet.load_state_dict(ck["unet"])
        text_encoder.load_state_dict(ck["text_encoder"])
        optimizer.load_state_dict(ck["optimizer"])
        lr_sched.load_state_dict(ck["lr_sched"])
        ema.load_state_dict(ck["ema"])
        g.set_state(ck["generator"])
        step = int(ck["step"])
        print(f"resumed at step {step}")

    def save_ckpt():
        args.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_sched": lr_sched.state_dict(), "ema": ema.state_dict(), "generator": g.get_state(), "step": step,
                    "objective": args.objective, "data": data_id}, tmp)
        tmp.replace(ckpt_path)

    unet.train()
    text_encoder.train()
    bar = tqdm(total=args.steps, initial=step, desc="toy prior", unit="step")
    t_train = time.time()
    losses = []
    def stop(signum, frame):  # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: checkpoint, then exit
        raise KeyboardInterrupt

    try:
        with handled(stop):
            while step < args.steps:
                idx = torch.randint(0, len(images), (args.batch_size,), generator=g)
                x0 = images[idx].float()  # v2 stores float16 (a no-op for v1's float32)
                # Condition dropout (CFG) and view-suffix dropout.
                u = torch.rand(args.batch_size, generator=g)
                text_ids = torch.where(u < args.cond_dropout, torch.full_like(idx, empty_idx),
                                       torch.where(u < args.cond_dropout + args.view_dropout, base_idx[idx], full_idx[idx]))
                uniq, inverse = text_ids.unique(return_inverse=True)
                embeddings = text_encoder(tokens[uniq]).last_hidden_state[inverse]
                camera = None
                if args.camera_conditioning:
                    camera = angles[idx].clone()
                    camera[torch.rand(args.batch_size, generator=g) < args.camera_dropout] = float("nan")  # null camera
                t = torch.randint(0, schedule.num_train_timesteps, (args.batch_size,), generator=g)
                eps = torch.randn(x0.shape, generator=g)
                x_t = schedule.add_noise(x0, eps, t)  # q(x_t | x_0)
                # L_simple (DDPM Eq. 14): the epsilon target; or the flow-matching loss ||v_hat - (eps - x)||^2.
                prediction = unet(x_t, schedule.model_time(t), embeddings, camera=camera).sample
                loss = torch.nn.functional.mse_loss(prediction, schedule.target(x0, eps, t))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                lr_sched.step()
                ema.step(params)
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
                if args.ckpt_every and step % args.ckpt_every == 0:
                    save_ckpt()
    except KeyboardInterrupt:
        save_ckpt()
        raise SystemExit(f"interrupted at step {step}; checkpoint saved, continue with --resume")
    bar.close()
    save_ckpt()
    train_s = time.time() - t_train
    print(f"trained {args.steps} steps in {train_s / 60:.1f} min (this process); final loss {sum(losses[-100:]) / max(1, len(losses[-100:])):.4f}")

    # Save the EMA weights in diffusers layout, fp16 (loaded back as fp32 on CPU).
    ema.copy_to(params)
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    unet.to(torch.float16).save_pretrained(out / "unet")
    text_encoder.to(torch.float16).save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler.save_pretrained(out / "scheduler")
    import diffusers

    (out / "model_index.json").write_text(json.dumps({
        "_class_name": TOY_PIPELINE_CLASS,
        "_diffusers_version": diffusers.__version__,
        "unet": ["sds3d.priors.toy_unet", "ToyUNet"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(scheduler).__name__],
    }, indent=2) + "\n")
    # The recipe of the weights this run started from, nested: a fine-tuned prior keeps its whole lineage.
    parent = None
    if args.init_from is not None and (args.init_from / "training.json").is_file():
        try:
            parent = json.loads((args.init_from / "training.json").read_text())
        except ValueError:
            parent = "unreadable training.json"
    (out / "training.json").write_text(json.dumps({
        "objective": args.objective, "steps": args.steps, "batch_size": args.batch_size, "images": len(images), "lr": args.lr,
        "ema_decay": args.ema_decay, "cond_dropout": args.cond_dropout, "view_dropout": args.view_dropout,
        "seed": args.seed, "threads": args.threads, "world": args.world, "camera_conditioning": args.camera_conditioning,
        "camera_dropout": args.camera_dropout if args.camera_conditioning else None,
        "init_from": None if args.init_from is None else str(args.init_from), "train_minutes_last_process": round(train_s / 60, 2),
        "final_loss": round(sum(losses[-100:]) / max(1, len(losses[-100:])), 5),
        "init_from_training": parent,
    }, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


