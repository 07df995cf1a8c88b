#!/usr/bin/env bash
# One-command GPU check for a machine with an NVIDIA GPU and no network (wheels already installed):
# builds sds3d.cuda_ext for this GPU, checks nerfacc's CUDA ops, runs every CUDA test, then
# benchmarks SDS steps/s and peak GPU memory of configs/toy.yaml and configs/dreamfusion-sd.yaml
# (Stable Diffusion 2.1-base shapes, random weights), and prints one table. About 8 minutes at most.
#
#   bash scripts/gpu_check.sh                      # everything
#   bash scripts/gpu_check.sh --only build tests   # some steps; --skip sd leaves one out
#   bash scripts/gpu_check.sh --help               # all options (scripts/gpu_check.py)
#
# Exit status: 0 all steps passed (or no GPU: SKIP; --require-gpu makes that 1), 1 a step failed,
# 2 a bad option. Each step runs in its own process with a time limit.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
fi
exec "${PYTHON:-python}" "$repo/scripts/gpu_check.py" "$@"
