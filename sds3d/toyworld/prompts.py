"""The toy world's prompt grammar: ``a {colour} {shape}[, {view} view]``."""

from __future__ import annotations

import re
import warnings

from .world import COLOURS, SHAPES, VIEWS


def make_prompt(colour: str, shape: str, view: str | None = None) -> str:
    """Prompt text per toyworld.json ``prompts.grammar``."""
    text = f"a {colour} {shape}"
    return f"{text}, {view} view" if view else text


def all_prompts() -> list[str]:
    """The 16 base prompts (no view suffix), colour-major."""
    return [make_prompt(c, s) for c in COLOURS for s in SHAPES]


def parse_prompt(prompt: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, view) named in a prompt, None where a part is absent or unknown."""
    words = re.findall(r"[a-z]+", prompt.lower())
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    view = next((w for w in words if w in VIEWS), None)
    return colour, shape, view


def check_vocabulary(prompt: str) -> list[str]:
    """Words of the prompt the toy world does not know; warns once naming the vocabulary."""
    known = set(COLOURS) | set(SHAPES) | set(VIEWS) | {"a", "an", "the", "view"}
    unknown = [w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known]
    colour, shape, _ = parse_prompt(prompt)
    if unknown or colour is None or shape is None:
        warnings.warn(
            f"prompt {prompt!r} is outside the toy prior's vocabulary "
            f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; views: {', '.join(VIEWS)}); "
            "expect a generic blob",
            stacklevel=2,
        )
    return unknown
