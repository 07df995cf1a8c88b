"""Property-based fuzz of config overrides: every leaf key of RunConfig x hostile values ends in a run or in
one line and exit 2, never a traceback (issue 18: 25 of 300 random mutations were tracebacks)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from _support import TOY, fast

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz needs hypothesis: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sds3d.cli import main  # noqa: E402
from sds3d.config import ConfigError, RunConfig, load_config, run_name, to_yaml  # noqa: E402

pytestmark = pytest.mark.faults

HOSTILE = [
    "nan", "inf", "-inf", ".nan", "1e309", "-1", "0", "-0.0", "1.5", "1e23", "100000000000000000000000", "100000", "0x10",
    "", "null", "~", "true", "[", "]", "{", "}", "[]", "[1, 2, 3]", "[a, b]", "{a: 1}", "a: b", "- x", "...", "*a", "&a x",
    "${oc.env:HOME}", "${", "${nope}", "a\nb", "#x", "x" * 300, "'", '"', "\\", "\x00", "\u202e", "💥", "cuda:7", "../..",
    "!!python/object/apply:os.system ['true']",
]
#: Keys whose accepted large values make a run long (their sizes are bounded by the memory check, tested in test_config).
COSTLY = ("trainer.max_steps", "orbit.frames", "render.num_samples", "render.resolution", "orbit.resolution", "export.resolution",
          "eval.iou_resolution", "export.texture_size", "field.hidden_dim", "field.n_hidden_layers", "field.encoding",
          "render.nerfacc", "camera.batch_size", "trainer.val_views")


def leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in node:
        child, full = node._get_node(k), f"{prefix}{k}"
        if isinstance(child, DictConfig):
            keys += leaf_keys(child, full + ".") + ([full] if child._metadata.object_type in (None, dict) else [])
        else:
            keys.append(full)
    return keys


LEAVES = leaf_keys(OmegaConf.structured(RunConfig))
values = st.sampled_from(HOSTILE) | st.text(max_size=12)


def test_the_fuzz_covers_every_leaf_key():
    assert len(LEAVES) > 100 and {"prompt", "seed", "guidance.scale", "render.shading_probs.albedo", "export.formats"} <= set(LEAVES)


@pytest.mark.parametrize("key", LEAVES)
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_every_leaf_key_takes_hostile_values_without_a_traceback(key, value):
    try:
        cfg = load_config(TOY, ["prompt=a red cube", f"{key}={value}"])
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
        return
    # Accepted: the run folder's config.yaml reloads to the same config, and the folder name is a plain name.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(to_yaml(cfg))
        assert load_config(path) == cfg
    assert "/" not in run_name(cfg, TOY) and 0 < len(run_name(cfg, TOY)) <= 255


def _cheap(pair) -> bool:
    """Not a long run, and not a folder outside the test's (out_dir is fuzzed above, without writing)."""
    key, value = pair
    return key != "out_dir" and not (key.startswith(COSTLY) and value.strip().lstrip("+").isdigit() and int(value) > 64)


pairs = st.tuples(st.sampled_from(LEAVES), values).filter(_cheap)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(pairs, min_size=1, max_size=2))
def test_runs_with_hostile_overrides_end_in_exit_0_or_one_line(tmp_path_factory, tiny_pixel_prior, capsys, overrides):
    out = tmp_path_factory.mktemp("fuzz")
    base = [*fast(out, tiny_pixel_prior, steps=0), "eval.iou_resolution=16"]
    code = main(["run", TOY, "prompt=a red cube", "name=run", *base, *(f"{k}={v}" for k, v in overrides)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 2), err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith("sds3d: error:")
        return
    run_dir = next(p for p in out.iterdir() if p.is_dir())  # out_dir or name may be among the overrides
    json.loads((run_dir / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert (run_dir / ".complete").is_file()
