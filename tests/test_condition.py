"""Condition: rows indexed, concatenated, repeated, expanded and moved alike in every part."""

import pytest
import torch

from sds3d.priors.condition import Condition

B, S, D, P = 4, 3, 2, 5


def make(seed: int = 0, rows: int = B) -> Condition:
    g = torch.Generator().manual_seed(seed)
    return Condition(
        torch.randn(rows, S, D, generator=g),
        torch.randn(rows, P, generator=g),
        {"time_ids": torch.randn(rows, 6, generator=g), "ids": torch.arange(rows) + 10 * seed},
    )


def parts(c: Condition) -> list[torch.Tensor]:
    return [c.tokens, c.pooled, c.extras["time_ids"], c.extras["ids"]]


def assert_rows(c: Condition, source: Condition, rows: list[int]):
    assert len(c) == len(rows)
    for got, full in zip(parts(c), parts(source)):
        assert torch.equal(got, torch.stack([full[i] for i in rows]))


def test_len_and_index_by_int_slice_tensor_and_list():
    c = make()
    assert len(c) == B
    assert_rows(c[1], c, [1])  # an int keeps the batch dimension
    assert_rows(c[-1], c, [B - 1])
    assert_rows(c[1:3], c, [1, 2])
    assert_rows(c[torch.tensor([3, 0, 3])], c, [3, 0, 3])
    assert_rows(c[[2, 1]], c, [2, 1])
    with pytest.raises(IndexError):
        c[B]


def test_cat_keeps_the_order_of_rows():
    a, b = make(0), make(1, rows=2)
    both = Condition.cat([a, b, a[:1]])
    assert len(both) == B + 2 + 1
    for got, pa, pb in zip(parts(both), parts(a), parts(b)):
        assert torch.equal(got, torch.stack([*pa, *pb, pa[0]]))


def test_cat_of_conditions_with_different_parts_is_refused():
    with pytest.raises(ValueError, match="different parts"):
        Condition.cat([make(), Condition(torch.zeros(1, S, D))])
    with pytest.raises(ValueError, match="different parts"):
        Condition.cat([make(), Condition(torch.zeros(1, S, D), torch.zeros(1, P))])
    with pytest.raises(ValueError, match="at least one"):
        Condition.cat([])
    only_tokens = Condition.cat([Condition(torch.zeros(1, S, D)), Condition(torch.ones(2, S, D))])
    assert only_tokens.pooled is None and only_tokens.extras == {} and len(only_tokens) == 3


def test_repeat_is_sample_major_and_repeat_interleave_is_row_major():
    c = make()
    assert_rows(c.repeat(3), c, list(range(B)) * 3)
    assert_rows(c.repeat_interleave(2), c, [i for i in range(B) for _ in range(2)])


def test_expand_one_row_without_copying():
    c = make()[2]
    e = c.expand(5)
    assert_rows(e, c, [0] * 5)
    assert e.tokens.data_ptr() == c.tokens.data_ptr()  # a view, like Tensor.expand
    with pytest.raises(ValueError, match="single row"):
        make().expand(5)


def test_to_casts_floating_parts_only():
    c = make().to(dtype=torch.float64)
    assert c.tokens.dtype == c.pooled.dtype == c.extras["time_ids"].dtype == torch.float64
    assert c.extras["ids"].dtype == torch.int64
    assert torch.equal(c.tokens, make().tokens.double())
    moved = make().to(device="cpu")
    assert moved.tokens.dtype == torch.float32 and moved.tokens.device.type == "cpu"


def test_tokens_only_condition():
    c = Condition(torch.randn(B, S, D))
    assert c.pooled is None and c.extras == {}
    r = c[[0, 0]].repeat(2)
    assert r.pooled is None and torch.equal(r.tokens, c.tokens[[0, 0, 0, 0]])
