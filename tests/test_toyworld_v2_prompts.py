"""Toy world v2's prompt grammar, held-out lists and benchmark prompts against toyworld_v2.json."""

from itertools import permutations

import pytest

from sds3d.toyworld import prompts as v1_prompts
from sds3d.toyworld import world
from sds3d.toyworld.v2 import spec
from sds3d.toyworld.v2.prompts import (
    COLOUR_PAIRS, SHAPE_PAIRS, ParsedPrompt, article, benchmark_prompts, canonical, composition_prompt,
    composition_tuples, faced_pairs, faced_prompt, held_out_prompts, is_held_out, make_prompt, parse_prompt,
    training_prompts,
)


def test_grammar_and_articles():
    assert faced_prompt("red", "owl") == "a red owl"
    assert faced_prompt("blue", "house", "back") == "a blue house, back view"
    assert composition_prompt("on_top_of", "red", "sphere", "blue", "cube") == "a red sphere on top of a blue cube"
    assert composition_prompt("next_to", "green", "cone", "yellow", "sphere", "side") == "a green cone next to a yellow sphere, side view"
    # The article agrees with the next word: always a colour, never a vowel, so always 'a'.
    assert article("owl") == "an" and article("red") == "a"
    assert all(p.startswith("a ") and " an " not in p for p in training_prompts() + held_out_prompts())
    # v1 prompts are v1's text.
    assert make_prompt(ParsedPrompt((("red", "cube"),), None, "side")) == v1_prompts.make_prompt("red", "cube", "side")


def test_parser_accepts_either_article_and_rejects_what_the_grammar_does_not_make():
    owl = ParsedPrompt((("yellow", "owl"),), None, "back")
    assert parse_prompt("a yellow owl, back view") == owl
    assert parse_prompt("An  Yellow owl, back view") == owl
    comp = parse_prompt("a red sphere on top of an blue cube")
    assert comp == ParsedPrompt((("red", "sphere"), ("blue", "cube")), "on_top_of") and comp.kind == "composition"
    assert parse_prompt("a red cube").kind == "v1" and parse_prompt("a red chair").kind == "faced"
    for bad in ("a purple owl", "a red owl, diagonal view", "a red torus on top of a blue cube",
                "a red sphere on top of a red cube", "a red cube next to a blue cube", "red owl", "a red owl next to a blue cube"):
        assert parse_prompt(bad) is None, bad
    for p in training_prompts() + held_out_prompts():
        assert make_prompt(parse_prompt(p)) == p


def test_next_to_wordings_name_one_scene():
    a = parse_prompt("a red sphere next to a blue cube, front view")
    b = parse_prompt("a blue cube next to a red sphere")
    assert canonical(a) == canonical(b) and canonical(a).view is None
    top = parse_prompt("a red sphere on top of a blue cube")
    assert canonical(top) == top and canonical(top) != canonical(parse_prompt("a blue cube on top of a red sphere"))


def test_faced_held_out_pairs():
    held = faced_pairs(held_out=True)
    assert held == [("blue", "owl"), ("yellow", "house"), ("green", "chair")]
    trained = faced_pairs(held_out=False)
    assert len(trained) == 9 and not set(held) & set(trained)
    # One colour per object: every object and every colour is still seen in training.
    assert {o for _, o in trained} == set(spec.OBJECTS) and {c for c, _ in trained} == set(world.COLOURS)
    assert sorted(o for _, o in held) == sorted(spec.OBJECTS) and len({c for c, _ in held}) == 3


@pytest.mark.parametrize("relation", spec.RELATIONS)
def test_composition_held_out_lists(relation):
    assert SHAPE_PAIRS == tuple(permutations(("sphere", "cube", "cone"), 2)) and len(COLOUR_PAIRS) == 12
    held, trained = composition_tuples(relation, held_out=True), composition_tuples(relation, held_out=False)
    assert (len(trained), len(held)) == spec.HELD_OUT_COUNTS[relation] == (60, 12)
    assert set(held) == set(spec.HELD_OUT_COMPOSITIONS[relation])  # the lists in the json follow the rule
    # Each ordered shape pair is held out twice and each ordered colour pair once.
    assert sorted((s1, s2) for _, s1, _, s2 in held) == sorted(SHAPE_PAIRS * 2)
    assert sorted((c1, c2) for c1, _, c2, _ in held) == sorted(COLOUR_PAIRS)
    # held_out.rule: the shape pair and the colour pair of every held-out tuple are trained, in this
    # relation and in the other one.
    for other in spec.RELATIONS:
        t = composition_tuples(other, held_out=False)
        for c1, s1, c2, s2 in held:
            assert any((a, b) == (s1, s2) for _, a, _, b in t) and any((a, b) == (c1, c2) for a, _, b, _ in t)


def test_on_top_of_keeps_the_spec_rule_and_next_to_holds_out_scenes():
    for c1, s1, c2, s2 in composition_tuples("on_top_of"):
        i, j = SHAPE_PAIRS.index((s1, s2)), COLOUR_PAIRS.index((c1, c2))
        assert is_held_out("on_top_of", c1, s1, c2, s2) == ((i + j) % 6 == 0)
    # next_to (errata): a held-out scene is held out in both wordings, so no trained tuple shows it.
    held = set(composition_tuples("next_to", held_out=True))
    assert all((c2, s2, c1, s1) in held for c1, s1, c2, s2 in held)


def test_benchmark_prompts():
    bench = benchmark_prompts()
    assert len(bench["janus"]) == 12 and len(set(bench["janus"])) == 12
    assert {parse_prompt(p).parts[0][1] for p in bench["janus"]} == set(spec.OBJECTS)
    comps = bench["compositions"]
    assert len(comps) == 48 and len(set(comps)) == 48
    held = set(held_out_prompts())
    assert sum(p in held for p in comps) == 24
    trained = [parse_prompt(p) for p in comps if p not in held]
    # The first two trained colour pairs of every shape pair in each relation.
    for r in spec.RELATIONS:
        for s1, s2 in SHAPE_PAIRS:
            mine = [t for t in trained if t.relation == r and (t.parts[0][1], t.parts[1][1]) == (s1, s2)]
            first = [t for t in composition_tuples(r, held_out=False) if (t[1], t[3]) == (s1, s2)][:2]
            assert [(a[0], a[1], b[0], b[1]) for a, b in (m.parts for m in mine)] == first
    assert bench["v1"] == v1_prompts.all_prompts()


def test_training_prompts():
    prompts = training_prompts()
    assert len(prompts) == 16 + 9 + 120 == len(set(prompts))
    assert not set(prompts) & set(held_out_prompts())
