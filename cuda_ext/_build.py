"""JIT build of the extension: one build folder per digest of its inputs, a notice when it compiles, no stale lock.

``torch.utils.cpp_extension.load`` names the build folder after the extension name alone and its
build.ninja records the absolute source paths, so two checkouts (or venvs) of sds3d on one machine
would rebuild each other's kernel on every load. Here the name carries a digest of everything the
binary depends on (source bytes, the torch build, the Python ABI, compiler and flags): a folder
holds one binary for one set of inputs, and a folder that holds it is imported directly, without
ninja, so it does not matter whose checkout built it.

torch guards a build with a lock file that it creates and deletes and that records no owner
(``FileBaton``): a build killed half-way leaves it behind and every later load waits for it
forever. Builders here hold an OS lock (``fcntl.flock``, released when its holder dies) on a file of
their own in the folder around torch's build, so a torch lock file seen while holding it belongs to
no live build: it is removed, with one line saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

try:
    import fcntl
except ImportError:  # Windows: torch's own lock file only
    fcntl = None

CPU_SOURCES = ("bindings.cpp", "hash_grid_cpu.cpp")
CUDA_SOURCES = ("hash_grid_cuda.cu",)
# Every file of these kinds in the source folder is hashed: the headers are compiled in too.
SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")
# The file cpp_extension's FileBaton creates in the build folder for the duration of a build.
TORCH_BATON = "lock"
BUILD_LOCK = "sds3d-build.lock"
# What cpp_extension.load names the binary (``_import_module_from_library``).
LIBRARY_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"


def build_flags(with_cuda: bool) -> dict[str, list[str]]:
    """Compiler and linker flags of the extension (part of its build name)."""
    cflags = ["-O3", "-fopenmp"]  # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers
    cuda_cflags = ["-O3"]
    if with_cuda:
        cflags.append("-DSDS3D_WITH_CUDA")
        cuda_cflags.append("-DSDS3D_WITH_CUDA")
    # libgomp: the OpenMP runtime torch itself loaded (same soname, so one runtime in the process).
    return {"extra_cflags": cflags, "extra_cuda_cflags": cuda_cflags, "extra_ldflags": ["-lgomp"]}


def build_name(source_dir: Path, with_cuda: bool) -> str:
    """``sds3d_hash_grid_{cpu|cuda}_<digest>``: the same for the same inputs, wherever the sources are."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source_dir.iterdir() if p.suffix in SOURCE_SUFFIXES):
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode() + content)
    build_env = [
        torch.__version__, torch.version.git_version, torch.version.cuda, torch.version.hip,
        sys.implementation.cache_tag, sysconfig.get_config_var("EXT_SUFFIX"), os.environ.get("CXX", "c++"),
        os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else "", with_cuda, build_flags(with_cuda),
    ]
    digest.update(repr(build_env).encode())
    return f"sds3d_hash_grid_{'cuda' if with_cuda else 'cpu'}_{digest.hexdigest()[:16]}"


def build_root() -> Path:
    """``TORCH_EXTENSIONS_DIR``, else torch's default (``~/.cache/torch_extensions``)."""
    from torch.utils import cpp_extension

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())


def build_extension(source_dir: Path, with_cuda: bool, verbose: bool = False) -> ModuleType:
    """The compiled extension of ``source_dir``: imported if its folder holds it, else compiled (with a notice)."""
    from torch.utils import cpp_extension  # imported here: it is slow to import

    name = build_name(source_dir, with_cuda)
    build_dir = build_root() / name
    library = build_dir / f"{name}{LIBRARY_SUFFIX}"
    module = _import_built(name, library)
    if module is not None:
        return module
    build_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(build_dir):
        module = _import_built(name, library)  # built by the process we waited for
        if module is not None:
            return module
        _remove_stale_baton(build_dir)
        print(f"sds3d: compiling the cuda_ext hash-grid kernel into {build_dir} "
              "(once per version of its sources and of torch): ~30 s", file=sys.stderr, flush=True)
        sources = [str(source_dir / f) for f in CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())]
        return cpp_extension.load(
            name=name, sources=sources, extra_include_paths=[str(source_dir)], build_directory=str(build_dir),
            with_cuda=with_cuda, verbose=verbose, **build_flags(with_cuda),
        )


def _import_built(name: str, library: Path) -> ModuleType | None:
    """The binary in ``library`` as a module, or None when it is absent or torn (a killed link)."""
    if not library.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    try:
        module = importlib.util.module_from_spec(spec)  # dlopen happens here
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


@contextlib.contextmanager
def _build_lock(build_dir: Path) -> Iterator[None]:
    """Exclusive OS lock on ``build_dir`` (released by the OS if its holder dies); says whom it waits for."""
    if fcntl is None:
        yield
        return
    with open(build_dir / BUILD_LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            print(f"sds3d: waiting for process {holder}, which is compiling the cuda_ext kernel in {build_dir}",
                  file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_baton(build_dir: Path) -> None:
    # Called holding the build lock: no live sds3d build is inside cpp_extension.load for this folder.
    baton = build_dir / TORCH_BATON
    if fcntl is not None and baton.exists():
        print(f"sds3d: removing {baton}, the lock of an interrupted cuda_ext build (no live process holds it)",
              file=sys.stderr, flush=True)
        baton.unlink(missing_ok=True)
