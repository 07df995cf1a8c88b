"""Time forward+backward of render() on the SDS hot path (32x32, 40 samples, small field).

Usage: python scripts/bench_render.py [--shading lambertian] [--normals finite_difference] [--scheme forward]
    [--backend auto|torch|nerfacc] [--device cpu|cuda]
The sampler is the one ``render.backend`` picks on the device (``build_sampler``), refreshed every
step as in training. Short by design (a few seconds of CPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from sds3d.cameras import CameraConfig, sample_cameras
from sds3d.fields.background import Background
from sds3d.fields.encoding import HashGridConfig
from sds3d.fields.nerf import FieldConfig, NeRFField
from sds3d.render import RenderConfig, RenderConfigError, build_sampler, render


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shading", default="lambertian")
    p.add_argument("--normals", default="finite_difference")
    p.add_argument("--scheme", default="forward")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--ray-bounds", default="sphere")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--normal-threshold", type=float, default=1e-3)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = HashGridConfig(n_levels=3, n_features_per_level=2, base_resolution=8, max_resolution=32, log2_hashmap_size=15)
    field = NeRFField(FieldConfig(encoding=enc, hidden_dim=32, normals=a.normals, finite_difference_scheme=a.scheme)).to(a.device)
    bg = Background().to(a.device)
    cfg = RenderConfig(resolution=a.resolution, num_samples=a.samples, ray_bounds=a.ray_bounds, normal_weight_threshold=a.normal_threshold,
                       backend=a.backend)
    try:
        sampler = build_sampler(cfg, field.bound, a.device)
    except RenderConfigError as e:
        p.error(str(e))
    g = torch.Generator().manual_seed(0)
    times, cpu = [], []
    for i in range(a.iters + 3):
        cams = sample_cameras(CameraConfig(), generator=g).to(a.device)
        t0, c0 = time.perf_counter(), time.process_time()
        sampler.update(i, field.density)
        out = render(field, bg, cams, cfg, shading=a.shading, generator=g, sampler=sampler)
        (out["rgb"].mean() + out["opacity"].mean()).backward()
        if a.device != "cpu":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    times.sort()
    cpu.sort()
    print(f"render fwd+bwd {a.resolution}x{a.resolution}, {type(sampler).__name__}, {a.samples} samples, {a.shading}, normals={a.normals}"
          f"/{a.scheme}, thr {a.normal_threshold}, {a.threads} threads: median {1e3 * times[len(times) // 2]:.1f} ms, min {1e3 * times[0]:.1f} ms; "
          f"process CPU time median {1e3 * cpu[len(cpu) // 2]:.1f} ms (all threads; robust to other load)")


if __name__ == "__main__":
    main()
