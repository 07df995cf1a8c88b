"""Points/s of the hash-grid encoding: torch twin vs the fused C++ kernel (sds3d.cuda_ext), on CPU.

Forward and forward+backward (d/d embeddings), L=16, F=2, log2_T=19, at 2^16 and 2^18 points, with 1
and 2 threads, for two level layouts: "mixed" (Instant-NGP defaults, base 16 -> 2048: 5 dense levels
that the twin runs with grid_sample, 11 hashed) and "hashed" (base 96 -> 4096: all 16 levels hashed).

    python scripts/bench_encoding.py [--repeats 3] [--sizes 16 18] [--threads 1 2]

Uses the CPU for about a minute: others share the cores, run it rarely.
"""

from __future__ import annotations

import argparse
import time

import torch

from sds3d import cuda_ext
from sds3d.cuda_ext._torch_impl import _hash_grid_encode
from sds3d.fields.encoding import HashGridConfig, HashGridEncoding

LAYOUTS = {"mixed": (16, 2048), "hashed": (96, 4096)}


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (first-touch allocation, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(layout: str, log2_points: int, threads: int, repeats: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    base, top = LAYOUTS[layout]
    enc = HashGridEncoding(HashGridConfig(16, 2, 19, base, top, backend="torch"))
    offsets, resolutions = enc.offsets.tolist(), enc.resolutions.tolist()
    x = torch.rand(2**log2_points, 3, generator=torch.Generator().manual_seed(0))
    emb = enc.embeddings
    impls = {
        "twin": lambda: _hash_grid_encode(x, emb, enc.offsets, enc.resolutions),
        "cuda_ext": lambda: cuda_ext.hash_grid_encode(x, emb, offsets, resolutions),
    }
    result = {}
    for name, encode in impls.items():

        def forward():
            with torch.no_grad():
                encode()

        def forward_backward():
            emb.grad = None
            encode().sum().backward()

        result[f"{name} fwd"] = x.shape[0] / best_time(forward, repeats)
        result[f"{name} fwd+bwd"] = x.shape[0] / best_time(forward_backward, repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 18], help="log2 of the point counts")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    args = parser.parse_args()

    start = time.perf_counter()
    cuda_ext.build()
    print(f"cuda_ext build/load: {time.perf_counter() - start:.1f} s; torch {torch.__version__}")
    print(f"{'layout':7} {'points':>7} {'thr':>3} | {'twin fwd':>10} {'ext fwd':>10} {'x':>5} | "
          f"{'twin f+b':>10} {'ext f+b':>10} {'x':>5}   (Mpoints/s)")
    for layout in args.layouts:
        for log2_points in args.sizes:
            for threads in args.threads:
                r = bench(layout, log2_points, threads, args.repeats)
                print(
                    f"{layout:7} {'2^' + str(log2_points):>7} {threads:>3} | "
                    f"{r['twin fwd'] / 1e6:10.3f} {r['cuda_ext fwd'] / 1e6:10.3f} {r['cuda_ext fwd'] / r['twin fwd']:5.1f} | "
                    f"{r['twin fwd+bwd'] / 1e6:10.3f} {r['cuda_ext fwd+bwd'] / 1e6:10.3f} "
                    f"{r['cuda_ext fwd+bwd'] / r['twin fwd+bwd']:5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
