"""The JIT build of sds3d.cuda_ext: build-folder names, the compile notice, stale and live locks.

``cpp_extension.load`` is replaced by a fake that writes a marker "binary" (no compiler runs), and
importing a binary by one that accepts the marker, so these tests exercise only the build logic.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension
from torch.utils.file_baton import FileBaton

from sds3d import cuda_ext
from sds3d.cuda_ext import _build

SOURCES = Path(cuda_ext.__file__).parent
MARKER = b"built by the fake cpp_extension.load"


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for path in SOURCES.iterdir():
        if path.suffix in _build.SOURCE_SUFFIXES:
            shutil.copy(path, dest / path.name)
    return dest


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """TORCH_EXTENSIONS_DIR in tmp_path; records the calls of a fake cpp_extension.load."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    calls = []

    def load(name, sources, build_directory, **kwargs):
        # As torch does: a build runs only after taking its lock file (which would wait forever on a stale one).
        baton = FileBaton(os.path.join(build_directory, _build.TORCH_BATON))
        assert baton.try_acquire(), "torch's lock file was still there: the real load would wait forever"
        try:
            calls.append((name, sources))
            (Path(build_directory) / f"{name}{_build.LIBRARY_SUFFIX}").write_bytes(MARKER)
            return f"module {name}"
        finally:
            baton.release()

    def import_built(name, library):
        return f"module {name}" if library.exists() and library.read_bytes() == MARKER else None

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(_build, "_import_built", import_built)
    return calls


def test_build_name_follows_the_sources_not_their_folder(tmp_path, monkeypatch):
    a = copy_sources(tmp_path / "clone_a" / "cuda_ext")
    b = copy_sources(tmp_path / "clone_b" / "cuda_ext")
    name = _build.build_name(a, with_cuda=False)
    assert name.startswith("sds3d_hash_grid_cpu_")
    assert _build.build_name(b, with_cuda=False) == name  # two checkouts of the same code share one build
    assert _build.build_name(a, with_cuda=True).startswith("sds3d_hash_grid_cuda_")
    with open(b / "hash_grid.h", "a") as f:  # a header is compiled in too
        f.write("\n// changed\n")
    assert _build.build_name(b, with_cuda=False) != name
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert _build.build_name(a, with_cuda=False) != name
    monkeypatch.undo()
    monkeypatch.setenv("CXX", "clang++")
    assert _build.build_name(a, with_cuda=False) != name


def test_notice_is_printed_iff_a_compile_happens(tmp_path, fake_build, capsys):
    a = copy_sources(tmp_path / "clone_a")
    b = copy_sources(tmp_path / "clone_b")
    name = _build.build_name(a, with_cuda=False)

    assert _build.build_extension(a, with_cuda=False) == f"module {name}"
    assert len(fake_build) == 1 and fake_build[0][1][0] == str(a / "bindings.cpp")
    assert capsys.readouterr().err.count("sds3d: compiling the cuda_ext hash-grid kernel") == 1

    # The same sources from another checkout: imported from the shared folder, no compile, no notice.
    for src in (a, b, a):
        assert _build.build_extension(src, with_cuda=False) == f"module {name}"
    assert len(fake_build) == 1 and capsys.readouterr().err == ""

    # Changed sources: a folder of their own, compiled once, announced once.
    (b / "hash_grid_cpu.cpp").write_text((b / "hash_grid_cpu.cpp").read_text() + "\n// changed\n")
    _build.build_extension(b, with_cuda=False)
    _build.build_extension(b, with_cuda=False)
    assert len(fake_build) == 2 and fake_build[1][0] != name
    assert capsys.readouterr().err.count("compiling") == 1


def test_a_torn_binary_is_rebuilt(tmp_path, monkeypatch, capsys):
    # A binary cut short by a killed link does not import (the real import here): it is compiled again.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, **kwargs: calls.append(name) or "rebuilt")
    src = copy_sources(tmp_path / "src")
    name = _build.build_name(src, with_cuda=False)
    library = tmp_path / "extensions" / name / f"{name}{_build.LIBRARY_SUFFIX}"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF cut short")
    assert _build.build_extension(src, with_cuda=False) == "rebuilt"
    assert calls == [name] and "compiling" in capsys.readouterr().err


needs_flock = pytest.mark.skipif(_build.fcntl is None, reason="the build lock needs fcntl (POSIX)")


@needs_flock
def test_stale_torch_lock_of_a_killed_build_is_removed(tmp_path, fake_build, capsys):
    # A build killed half-way: it held the build lock and had created torch's lock file.
    src = copy_sources(tmp_path / "src")
    build_dir = tmp_path / "extensions" / _build.build_name(src, with_cuda=False)
    build_dir.mkdir(parents=True)
    ready = build_dir / "holder-ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, time
        f = open({str(build_dir / _build.BUILD_LOCK)!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"{{os.getpid()}}\\n"); f.flush()
        open({str(build_dir / _build.TORCH_BATON)!r}, "x").close()
        open({str(ready)!r}, "x").close()
        time.sleep(60)
    """)])
    try:
        _wait_for(ready)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
    assert (build_dir / _build.TORCH_BATON).exists()

    module = _run_with_timeout(lambda: _build.build_extension(src, with_cuda=False))
    assert module.startswith("module sds3d_hash_grid_cpu_") and len(fake_build) == 1
    err = capsys.readouterr().err
    assert "removing" in err and "lock of an interrupted cuda_ext build" in err and "waiting" not in err
    assert not (build_dir / _build.TORCH_BATON).exists()


@needs_flock
def test_a_live_build_is_waited_for_and_named(tmp_path, fake_build, capsys):
    src = copy_sources(tmp_path / "src")
    build_dir = tmp_path / "extensions" / _build.build_name(src, with_cuda=False)
    build_dir.mkdir(parents=True)
    ready, release = build_dir / "holder-ready", build_dir / "holder-release"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, time
        f = open({str(build_dir / _build.BUILD_LOCK)!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"{{os.getpid()}}\\n"); f.flush()
        open({str(ready)!r}, "x").close()
        while not os.path.exists({str(release)!r}):
            time.sleep(0.05)
    """)])
    try:
        _wait_for(ready)
        threading.Timer(1.0, release.touch).start()
        _run_with_timeout(lambda: _build.build_extension(src, with_cuda=False))
        holder.wait(timeout=10)
    finally:
        holder.kill()
    err = capsys.readouterr().err
    assert f"sds3d: waiting for process {holder.pid}, which is compiling the cuda_ext kernel" in err
    assert len(fake_build) == 1


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _run_with_timeout(fn, timeout: float = 20.0):
    """fn() in a thread: a regression that waits forever fails the test instead of hanging the suite."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the build waited forever"
    return result[0]
