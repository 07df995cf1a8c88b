"""Toy world v2's prompt grammar, held-out lists and benchmark prompts (toyworld_v2.json ``prompts``,
``held_out``).

    v1:           a {colour} {shape}[, {view} view]
    faced:        a {colour} {object}[, {view} view]
    compositions: a {c1} {s1} on top of a {c2} {s2}[, {view} view]
                  a {c1} {s1} next to a {c2} {s2}[, {view} view]

Generators write the article the next word takes ('an' before a vowel); every noun phrase starts
with a colour, none of which starts with a vowel, so generated prompts all read 'a'. Parsers
accept either article.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations, permutations

from .. import world
from . import spec


@dataclass(frozen=True)
class ParsedPrompt:
    """``parts``: ((colour, noun),) or, for a composition, ((c1, s1), (c2, s2)); ``relation``:
    None or one of ``spec.RELATIONS``; ``view``: None or a v1 view name."""

    parts: tuple[tuple[str, str], ...]
    relation: str | None = None
    view: str | None = None

    @property
    def kind(self) -> str:
        if self.relation is not None:
            return "composition"
        return "faced" if self.parts[0][1] in spec.OBJECTS else "v1"

    @property
    def base(self) -> "ParsedPrompt":
        """The prompt without its view suffix."""
        return ParsedPrompt(self.parts, self.relation)


def article(word: str) -> str:
    """'an' before a vowel, 'a' otherwise (prompts.article)."""
    return "an" if word[:1] in "aeiou" else "a"


def _noun_phrase(colour: str, noun: str) -> str:
    return f"{article(colour)} {colour} {noun}"


def make_prompt(parsed: ParsedPrompt) -> str:
    """Prompt text per prompts.grammar."""
    text = _noun_phrase(*parsed.parts[0])
    if parsed.relation is not None:
        text += f" {spec.RELATION_WORDS[parsed.relation]} {_noun_phrase(*parsed.parts[1])}"
    return f"{text}, {parsed.view} view" if parsed.view else text


def faced_prompt(colour: str, name: str, view: str | None = None) -> str:
    return make_prompt(ParsedPrompt(((colour, name),), None, view))


def composition_prompt(relation: str, c1: str, s1: str, c2: str, s2: str, view: str | None = None) -> str:
    return make_prompt(ParsedPrompt(((c1, s1), (c2, s2)), relation, view))


_WORD = {w: r for r, w in spec.RELATION_WORDS.items()}
_NP = r"an? ([a-z]+) ([a-z]+)"
_GRAMMAR = re.compile(rf"{_NP}(?: ({'|'.join(map(re.escape, _WORD))}) {_NP})?(?:, ([a-z]+) view)?")


def parse_prompt(prompt: str) -> ParsedPrompt | None:
    """The parts, relation and view of a v1 or v2 prompt; None if it is not in the grammar."""
    m = _GRAMMAR.fullmatch(" ".join(prompt.lower().split()))
    if m is None:
        return None
    c1, n1, rel, c2, n2, view = m.groups()
    if view is not None and view not in world.VIEWS:
        return None
    if rel is None:
        if c1 not in world.COLOURS or n1 not in world.SHAPES + spec.OBJECTS:
            return None
        return ParsedPrompt(((c1, n1),), None, view)
    if {c1, c2} - set(world.COLOURS) or {n1, n2} - set(spec.COMPOSITION_SHAPES) or c1 == c2 or n1 == n2:
        return None
    return ParsedPrompt(((c1, n1), (c2, n2)), _WORD[rel], view)


def check_vocabulary(prompt: str) -> tuple[list[str], str | None]:
    """(the words of ``prompt`` toy world v2 does not know, a one-line notice or None for a grammar prompt);
    ``toyworld.prompts.check_vocabulary``'s counterpart for a v2 prior."""
    known = set(world.COLOURS) | set(world.SHAPES) | set(spec.OBJECTS) | set(world.VIEWS) | {"a", "an", "view"}
    known |= {w for words in spec.RELATION_WORDS.values() for w in words.split()}
    unknown = list(dict.fromkeys(w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known))
    if parse_prompt(prompt) is not None:
        return unknown, None
    why = f"has words it does not know ({', '.join(unknown)})" if unknown else "is not of that form"
    relations = " | ".join(spec.RELATION_WORDS.values())
    return unknown, (f"the toy world v2 prior knows prompts 'a {{colour}} {{shape or object}}[, {{view}} view]' and "
                     f"'a {{colour}} {{{'|'.join(spec.COMPOSITION_SHAPES)}}} {{{relations}}} a {{colour}} {{...}}' with colours "
                     f"{', '.join(world.COLOURS)}; shapes {', '.join(world.SHAPES)}; objects {', '.join(spec.OBJECTS)}. "
                     f"{prompt!r} {why}: expect a generic blob, and no toy-world metrics")


def canonical(parsed: ParsedPrompt) -> ParsedPrompt:
    """The scene a prompt names, independent of wording: 'A next to B' and 'B next to A' are the
    same two objects seen from opposite sides (the layout is symmetric under a 180 deg yaw), so
    next_to parts are put in compositions.shapes order; the view is dropped."""
    parsed = parsed.base
    if parsed.relation == "next_to":
        parts = sorted(parsed.parts, key=lambda cs: spec.COMPOSITION_SHAPES.index(cs[1]))
        return ParsedPrompt(tuple(parts), "next_to")
    return parsed


# ---------------------------------------------------------------------------------------------
# Held-out lists (held_out.*) and benchmark prompts
# ---------------------------------------------------------------------------------------------

SHAPE_PAIRS: tuple[tuple[str, str], ...] = tuple(permutations(spec.COMPOSITION_SHAPES, 2))  # index i
COLOUR_PAIRS: tuple[tuple[str, str], ...] = tuple(permutations(world.COLOURS, 2))  # index j


def _held_out_next_to() -> set[tuple[str, str, str, str]]:
    """next_to's held-out scenes, both wordings (toyworld_v2.json errata): unordered shape pair k
    (combinations of compositions.shapes) and unordered colour pair u (combinations of the v1
    colours) are held out if u % 3 == k, the first colour on the first shape; each ordered shape
    pair is then held out twice and each ordered colour pair once, as with the on_top_of rule."""
    out = set()
    for k, (sa, sb) in enumerate(combinations(spec.COMPOSITION_SHAPES, 2)):
        for u, (ca, cb) in enumerate(combinations(world.COLOURS, 2)):
            if u % 3 == k:
                out |= {(ca, sa, cb, sb), (cb, sb, ca, sa)}
    return out


def is_held_out(relation: str, c1: str, s1: str, c2: str, s2: str) -> bool:
    """held_out.compositions.rule: on_top_of: (i + j) % 6 == 0; next_to: see ``_held_out_next_to``."""
    if relation == "on_top_of":
        return (SHAPE_PAIRS.index((s1, s2)) + COLOUR_PAIRS.index((c1, c2))) % 6 == 0
    return (c1, s1, c2, s2) in _held_out_next_to()


def composition_tuples(relation: str, held_out: bool | None = None) -> list[tuple[str, str, str, str]]:
    """(c1, s1, c2, s2) of a relation in shape-pair-major order; ``held_out`` None: all 72."""
    out = [(c1, s1, c2, s2) for s1, s2 in SHAPE_PAIRS for c1, c2 in COLOUR_PAIRS]
    return [t for t in out if held_out is None or is_held_out(relation, *t) == held_out]


def faced_pairs(held_out: bool | None = None) -> list[tuple[str, str]]:
    """(colour, object), object-major; ``held_out`` None: all 12."""
    out = [(c, o) for o in spec.OBJECTS for c in world.COLOURS]
    return [p for p in out if held_out is None or (p in spec.HELD_OUT_FACED) == held_out]


def training_prompts() -> list[str]:
    """Base prompts of the training distribution: 16 v1, 9 faced, 120 compositions."""
    out = [make_prompt(ParsedPrompt(((c, s),))) for s in world.SHAPES for c in world.COLOURS]
    out += [faced_prompt(c, o) for c, o in faced_pairs(held_out=False)]
    out += [composition_prompt(r, *t) for r in spec.RELATIONS for t in composition_tuples(r, held_out=False)]
    return out


def held_out_prompts() -> list[str]:
    """The 3 faced and 24 composition prompts never trained on."""
    out = [faced_prompt(c, o) for c, o in faced_pairs(held_out=True)]
    return out + [composition_prompt(r, *t) for r in spec.RELATIONS for t in composition_tuples(r, held_out=True)]


def benchmark_prompts() -> dict[str, list[str]]:
    """held_out.benchmark_prompts: janus (12), compositions (24 held out + 24 trained), v1 (16)."""
    comps = []
    for r in spec.RELATIONS:
        comps += [composition_prompt(r, *t) for t in composition_tuples(r, held_out=True)]
    for r in spec.RELATIONS:
        for s1, s2 in SHAPE_PAIRS:
            trained = [t for t in composition_tuples(r, held_out=False) if t[1] == s1 and t[3] == s2]
            comps += [composition_prompt(r, *t) for t in trained[:2]]
    return {
        "janus": [faced_prompt(c, o) for c, o in faced_pairs()],
        "compositions": comps,
        "v1": [make_prompt(ParsedPrompt(((c, s),))) for c in world.COLOURS for s in world.SHAPES],
    }
