"""The v2 training distribution against toyworld_v2.json: the front-biased azimuth mixture and the
sparse captions within sampling error, and the dataset's layout (v1 part unchanged, deterministic)."""

import math

import pytest
import torch

from sds3d.cameras import view_labels
from sds3d.toyworld.dataset import build_dataset as build_v1_dataset
from sds3d.toyworld.v2 import spec
from sds3d.toyworld.v2.dataset import build_dataset, sample_front_biased, sparse_captions
from sds3d.toyworld.v2.prompts import parse_prompt, training_prompts

N = 200_000


def close(fraction: float, p: float, n: int = N) -> bool:
    """Within 4.5 binomial standard deviations (a false alarm about once in 150000 checks)."""
    return abs(fraction - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def draws():
    g = torch.Generator().manual_seed(7)
    az, el = sample_front_biased(N, g)
    return az, el, sparse_captions("a red owl", az, el, g)


def test_azimuth_mixture(draws):
    az, el, _ = draws
    assert az.min() >= 0 and az.max() < 360 and el.min() >= -10 and el.max() <= 60
    signed = (az + 180) % 360 - 180
    front, back = signed.abs() < 45, signed.abs() >= 135
    side_left, side_right = (az >= 45) & (az < 135), (az >= 225) & (az < 315)
    expected = {"front": 0.7, "side": 0.25, "back": 0.05}
    assert {label: w for label, w, _ in spec.AZIMUTH_MIXTURE} == expected
    assert close(front.float().mean().item(), 0.7) and close(back.float().mean().item(), 0.05)
    assert close(side_left.float().mean().item(), 0.125) and close(side_right.float().mean().item(), 0.125)
    # Uniform within each range: 15-degree bins of the front range each hold a sixth of it.
    bins = torch.histc(signed[front], bins=6, min=-45, max=45) / front.sum()
    assert all(close(b.item(), 1 / 6, int(front.sum())) for b in bins)
    assert close((el > 45).float().mean().item(), 15 / 70)  # elevation uniform in [-10, 60]
    # The azimuth density note: front:back density 14:1 per degree.
    assert front.float().mean().item() / back.float().mean().item() == pytest.approx(14.0, rel=0.1)


def test_the_spec_caption_fractions_follow_from_its_probabilities():
    # An independent derivation of caption_fractions from the mixture and the suffix probabilities.
    p = spec.CAPTION_SUFFIX_PROBABILITY
    over = 15 / 70
    label = {"front": 0.7 * (1 - over), "side": 0.25 * (1 - over), "back": 0.05 * (1 - over), "overhead": over}
    views = {f"{v} view": label[v] * p[v] for v in label}
    f = spec.CAPTION_FRACTIONS
    for k, v in views.items():
        assert f[k] == pytest.approx(v, abs=1e-4)
    bare = 1 - sum(views.values())
    assert f["bare"] == pytest.approx(bare, abs=1e-4)
    assert f["bare_captions_showing_front_azimuths"] == pytest.approx(0.7 * ((1 - over) * (1 - p["front"]) + over * (1 - p["overhead"])) / bare, abs=1e-4)
    assert f["bare_captions_showing_back_azimuths"] == pytest.approx(0.05 * ((1 - over) * (1 - p["back"]) + over * (1 - p["overhead"])) / bare, abs=1e-4)
    assert f["back_view_captions_per_1500_images"] == pytest.approx(1500 * views["back view"], abs=0.1)


def test_caption_fractions(draws):
    az, el, captions = draws
    f = spec.CAPTION_FRACTIONS
    for key in ("front view", "side view", "back view", "overhead view"):
        assert close(sum(c == f"a red owl, {key}" for c in captions) / N, f[key]), key
    bare = torch.tensor([c == "a red owl" for c in captions])
    assert close(bare.float().mean().item(), f["bare"])
    signed = (az + 180) % 360 - 180
    n_bare = int(bare.sum())
    assert close((bare & (signed.abs() < 45)).sum().item() / n_bare, f["bare_captions_showing_front_azimuths"], n_bare)
    assert close((bare & (signed.abs() >= 135)).sum().item() / n_bare, f["bare_captions_showing_back_azimuths"], n_bare)
    # A suffix always names the image's own view label.
    labels = view_labels(az, el)
    assert all(c == "a red owl" or c == f"a red owl, {v} view" for c, v in zip(captions, labels))


def test_dataset_layout_v1_part_and_determinism():
    counts = {"v1_pair": 2, "faced_object": 3, "composition": 1}
    images, captions, base, angles = build_dataset(0, counts)
    n = 16 * 2 + 9 * 3 + 120 * 1
    assert images.shape == (n, 3, 32, 32) and len(captions) == len(base) == n and angles.shape == (n, 2)
    assert images.min() >= -1 and images.max() <= 1 and images.dtype == torch.float32
    # The v1 part is v1's dataset, unchanged.
    v1 = build_v1_dataset(2, 0)
    assert torch.equal(images[:32], v1.images) and captions[:32] == v1.prompts and base[:32] == v1.base_prompts
    assert torch.equal(angles[:32], v1.cameras.view_angles)
    # Every trained prompt, with its images per pair; captions are the base or base + its own view.
    assert sorted(set(base)) == sorted(training_prompts())
    kinds = [parse_prompt(b).kind for b in base]
    assert kinds.count("faced") == 27 and kinds.count("composition") == 120
    labels = view_labels(angles[32:, 1], angles[32:, 0])
    assert all(c == b or c == f"{b}, {v} view" for c, b, v in zip(captions[32:], base[32:], labels))
    # Deterministic from the seed; another seed draws other cameras.
    again = build_dataset(0, counts)
    assert torch.equal(again[0], images) and again[1] == captions and torch.equal(again[3], angles)
    other = build_dataset(1, counts, v1=False)
    assert len(other[0]) == n - 32 and not torch.equal(other[3], angles[32:])
