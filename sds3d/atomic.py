"""Atomic outputs: written under temporary names beside their targets, renamed into place when complete.

A crash, a kill -9 or a full disk at any moment leaves every output either in its previous
version or in its new one, never truncated: ``Outputs`` hands out temporary paths (files or
folders) in the target's own folder (so ``os.replace`` is a rename on one file system), renames
them onto their targets only when the block ends without error, and removes them otherwise.
A folder target (``mesh/``) is swapped: the old folder is moved aside, the new one renamed in,
the old one deleted; ``remove_stale`` finishes or undoes a swap a kill interrupted and deletes
the temporaries a kill left (call it while holding the folder's lock, ``sds3d.runs``).

An ``OSError`` of the environment (disk full, no permission, name too long) while writing becomes
a ``WriteError``: one line naming the file and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

TMP_PREFIX = ".sds3d-tmp-"  # a file or folder being written
OLD_PREFIX = ".sds3d-old-"  # the previous version of a folder during a swap

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)
ENVIRONMENT_ERRNOS = _DISK_FULL + _NO_PERMISSION + (errno.ENAMETOOLONG,)


class WriteError(UserError):
    """An output could not be written (disk full, no permission, path too long); the previous version is kept."""


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def environment_error(e: BaseException, target: Path | str) -> WriteError | None:
    """The ``WriteError`` of an exception whose cause is the environment, else None.

    Walks ``__cause__``/``__context__``: torch.save reports a full disk as a RuntimeError whose
    context is the OSError.
    """
    target = Path(target)
    seen, x = set(), e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in ENVIRONMENT_ERRNOS:
            break
        x = x.__cause__ or x.__context__
    else:
        free = _free_bytes(target.parent)
        if not isinstance(e, Exception) or free is None or free >= 1 << 20:
            return None
        x = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # an unchained failure on a full disk
    if x.errno in _DISK_FULL:
        free = _free_bytes(target.parent)
        left = f", {free / 2**20:.1f} MB free" if free is not None else ""
        return WriteError(f"no space left on the device of {target} ({x.strerror}{left}); nothing was replaced: "
                          "free some space and run the command again")
    if x.errno in _NO_PERMISSION:
        return WriteError(f"cannot write {target} ({x.strerror}); make its folder writable or choose another out_dir")
    return WriteError(f"the path {target} is too long for the file system ({x.strerror}); choose a shorter out_dir or name")


def temp_name(target: Path, prefix: str = TMP_PREFIX) -> Path:
    """A unique hidden name beside ``target`` that keeps its suffix (writers pick the format by it)."""
    return target.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:  # already gone, or undeletable: a cleanup never hides the error being handled
            pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outputs:
    """Temporary paths of one set of outputs, committed together (``outputs()`` is the context manager)."""

    def __init__(self):
        self._named: list[Path] = []  # every temporary handed out (removed on failure, with suffix variants)
        self._pending: list[tuple[Path, Path]] = []  # (temporary, target) to rename on commit

    def temp(self, target: Path | str) -> Path:
        """A temporary name for ``target`` (not registered: pass what was written to ``add``)."""
        tmp = temp_name(Path(target))
        self._named.append(tmp)
        return tmp

    def add(self, written: Path | str, target: Path | str) -> Path:
        """Rename ``written`` (a temporary of this set) onto ``target`` on commit. Returns ``target``."""
        self._pending.append((Path(written), Path(target)))
        return Path(target)

    def path(self, target: Path | str) -> Path:
        """A temporary file path to write ``target`` to."""
        tmp = self.temp(target)
        self.add(tmp, target)
        return tmp

    def folder(self, target: Path | str) -> Path:
        """A new empty temporary folder that replaces the folder ``target`` on commit."""
        tmp = self.path(target)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self) -> None:
        for tmp, target in self._pending:
            if not tmp.exists():
                raise FileNotFoundError(f"{tmp} was not written")
            if tmp.is_file():
                _fsync(tmp)
        for tmp, target in self._pending:
            if tmp.is_dir():
                _swap_folder(tmp, target)
            else:
                os.replace(tmp, target)
        self._pending.clear()

    def discard(self) -> None:
        for tmp in self._named:
            _remove(tmp)
            for variant in tmp.parent.glob(f"{tmp.stem}.*"):  # a writer's fallback format (orbit .mp4 -> .gif)
                _remove(variant)
        self._pending.clear()


def _swap_folder(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = temp_name(target, OLD_PREFIX)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def outputs(label: Path | str | None = None) -> Iterator[Outputs]:
    """Temporary paths renamed onto their targets when the block ends without error, removed otherwise.

    Args:
        label: the output named in a ``WriteError`` (default: the first target).

    Raises:
        WriteError: an OSError of the environment while writing or renaming (nothing was replaced).
    """
    out = Outputs()
    try:
        yield out
        out.commit()
    except BaseException as e:
        out.discard()
        targets = [t for _, t in out._pending] or out._named
        err = environment_error(e, Path(label) if label is not None else (targets[0] if targets else Path(".")))
        if err is not None:
            raise err from None
        raise


def write_text(path: Path | str, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    with outputs(path) as out:
        out.path(path).write_text(text)
    return Path(path)


def write_bytes(path: Path | str, data: bytes) -> Path:
    """``path.write_bytes(data)``, atomically."""
    with outputs(path) as out:
        out.path(path).write_bytes(data)
    return Path(path)


def remove_stale(folder: Path | str, depth: int = 2) -> None:
    """Delete the temporaries a killed writer left in ``folder`` (and its subfolders, ``depth`` deep),
    and finish a folder swap a kill interrupted. Only while no one else writes there (hold its lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in list(folder.iterdir()):
        name = entry.name
        if name.startswith(OLD_PREFIX):
            target = folder / name[len(OLD_PREFIX):].split("-", 2)[-1]
            if target.exists():
                _remove(entry)
            else:  # killed between moving the old folder aside and renaming the new one in
                os.replace(entry, target)
        elif name.startswith(TMP_PREFIX):
            _remove(entry)
        elif depth > 1 and entry.is_dir() and not entry.is_symlink():
            remove_stale(entry, depth - 1)
