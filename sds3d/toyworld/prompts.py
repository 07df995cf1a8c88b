"""The toy world's prompt grammar: ``a {colour} {shape}[, {view} view]``."""

from __future__ import annotations

import re

from .world import COLOURS, SHAPES, VIEWS


def make_prompt(colour: str, shape: str, view: str | None = None) -> str:
    """Prompt text per toyworld.json ``prompts.grammar``."""
    text = f"a {colour} {shape}"
    return f"{text}, {view} view" if view else text


def all_prompts() -> list[str]:
    """The 16 base prompts (no view suffix), colour-major."""
    return [make_prompt(c, s) for c in COLOURS for s in SHAPES]


ARTICLES = ("a", "an", "the")


def parse_prompt(prompt: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, view) of a prompt of the grammar, else (None, None, None).

    Case, punctuation and the article aside, the prompt must be exactly ``{colour} {shape}`` or
    ``{colour} {shape}, {view} view``: "a red cube next to a blue sphere" is not "a red cube".
    """
    words = re.findall(r"[a-z]+", prompt.lower())
    if words[:1] and words[0] in ARTICLES:
        words = words[1:]
    if len(words) in (2, 4) and words[0] in COLOURS and words[1] in SHAPES:
        if len(words) == 2:
            return words[0], words[1], None
        if words[2] in VIEWS and words[3] == "view":
            return words[0], words[1], words[2]
    return None, None, None


def check_vocabulary(prompt: str) -> tuple[list[str], str | None]:
    """(the words of ``prompt`` the toy world does not know, a one-line notice or None for a grammar prompt)."""
    known = set(COLOURS) | set(SHAPES) | set(VIEWS) | set(ARTICLES) | {"view"}
    unknown = list(dict.fromkeys(w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known))
    if parse_prompt(prompt)[1] is not None:
        return unknown, None
    why = f"has words it does not know ({', '.join(unknown)})" if unknown else "is not of that form"
    return unknown, (f"the toy prior knows prompts 'a {{colour}} {{shape}}[, {{view}} view]' with colours {', '.join(COLOURS)}; "
                     f"shapes {', '.join(SHAPES)}; views {', '.join(VIEWS)}. {prompt!r} {why}: expect a generic blob, "
                     "and no toy-world metrics")
