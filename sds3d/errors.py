"""The one base class of user mistakes, one-line notices, and phase lines.

Every exception whose message is meant for the user (a bad config value, a missing prior, an
unusable run folder, ...) subclasses ``UserError``; the CLI prints its message on one line and
exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys


class UserError(ValueError):
    """A mistake the user can fix; the message names what was wrong and how to fix it."""


_said: set[str] = set()


def notice(message: str) -> None:
    """Print ``sds3d: notice: <message>`` on stderr, once per message per process."""
    if message in _said:
        return
    _said.add(message)
    print(f"sds3d: notice: {message}", file=sys.stderr, flush=True)


def phase(message: str) -> None:
    """Print ``sds3d: <message>`` on stderr: what a command is doing now (export, render, eval)."""
    print(f"sds3d: {message}", file=sys.stderr, flush=True)
