#!/usr/bin/env bash
# Compile check of the CUDA target of sds3d.cuda_ext on a machine without a GPU.
#
# Builds, in its own venv (not the project's), torch==2.14.1 (a CUDA 13.0 build, from the local
# package index) + the extension's CPU and CUDA sources with nvcc for sm_80 and sm_90, then imports
# the result. Takes minutes and several GB; not part of the test suite.
#
#   bash scripts/check_cuda_build.sh            # venv in ~/.cache/sds3d/cuda-check-venv (reused)
#   SDS3D_CUDA_CHECK_VENV=/tmp/v bash scripts/check_cuda_build.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SDS3D_CUDA_CHECK_VENV:-$HOME/.cache/sds3d/cuda-check-venv}"
python="${PYTHON:-python3.11}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
# A build dir of its own, so the CPU-only build of the project's venv is not disturbed.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$venv/torch_extensions}"
export MAX_JOBS="${MAX_JOBS:-2}"

command -v nvcc >/dev/null || { echo "nvcc not found (CUDA_HOME=$CUDA_HOME)" >&2; exit 1; }
nvcc --version | tail -1

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q "torch==2.14.1" ninja setuptools numpy

# cuda_ext is a leaf (imports only torch), so it is loaded straight from the source tree.
"$venv/bin/python" - "$repo/cuda_ext/__init__.py" <<'PY'
import importlib.util
import os
import sys
import time

import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU available: {torch.cuda.is_available()}")
# As a package (it has submodules), under a name of its own.
spec = importlib.util.spec_from_file_location(
    "sds3d_cuda_ext_check", sys.argv[1], submodule_search_locations=[os.path.dirname(sys.argv[1])]
)
cuda_ext = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = cuda_ext
spec.loader.exec_module(cuda_ext)
start = time.perf_counter()
module = cuda_ext.build(with_cuda=True, verbose=True)
print(f"built {module.__file__} in {time.perf_counter() - start:.0f} s; CUDA target: {module.with_cuda()}")
assert module.with_cuda()
# The CPU path of the same binary still works.
x = torch.rand(100, 3)
emb = torch.randn(4**3 + 2**10, 2)
y = cuda_ext.hash_grid_encode(x, emb, [0, 4**3, 4**3 + 2**10], [3, 32])
assert y.shape == (100, 4)
if torch.cuda.is_available():
    y_gpu = cuda_ext.hash_grid_encode(x.cuda(), emb.cuda(), [0, 4**3, 4**3 + 2**10], [3, 32])
    torch.testing.assert_close(y_gpu.cpu(), y)
    print("GPU forward matches CPU")
print("CUDA build check: OK")
PY
