"""The CPU side of scripts/gpu_check.sh (scripts/gpu_check.py): options, the skip without a GPU, the
steps in child processes with time limits and a total budget, the table and exit status, which tests
count as CUDA tests, and the shapes of the random SD 2.1-base prior."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
gc = load_script("gpu_check")

INFO = {"name": "NVIDIA Test GPU", "capability": "8.9", "memory_gib": 24.0, "torch": "2.13.0", "cuda": "12.8"}


def test_options_and_their_checks():
    args = gc.parse_args([])
    assert args.steps == list(gc.STEPS) and args.bench_steps == 20 and args.budget_s == 480 and not args.require_gpu
    assert gc.parse_args(["--only", "build", "sd", "--skip", "sd"]).steps == ["build"]
    assert gc.parse_args(["--skip", "sd", "nerfacc"]).steps == ["build", "tests", "toy"]
    for bad, message in ((["--bench-steps", "0"], "--bench-steps 0"), (["--budget-s", "-1"], "--budget-s"),
                         (["--device", "cpu"], "not cuda or cuda:N"), (["--only", "sd", "--skip", "sd"], "no step left")):
        with pytest.raises(gc.CheckArgumentError, match=message):
            gc.parse_args(bad)
    with pytest.raises(SystemExit):
        gc.parse_args(["--only", "warp-drive"])


def test_the_shell_script_passes_options_through_and_skips_without_a_gpu(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    run = lambda *a: subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *a], env=env, capture_output=True, text=True)  # noqa: E731
    skipped, required, bad = run(), run("--require-gpu"), run("--bench-steps", "0")
    assert skipped.returncode == 0 and "SKIP: no CUDA GPU" in skipped.stderr
    assert required.returncode == 1 and "--require-gpu makes this a failure" in required.stderr
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["gpu_check: --bench-steps 0 must be at least 1"]


def test_steps_run_in_order_within_the_budget_and_fail_the_exit_status(monkeypatch, capsys):
    monkeypatch.setattr(gc, "gpu_info", lambda device: INFO)
    seen = []

    def fake_step(name, argv, limit_s, env):
        seen.append((name, limit_s, env["TORCH_CUDA_ARCH_LIST"]))
        if name == "toy":
            return gc.StepResult(name, True, 1.5, "10 steps", steps_per_s=12.345, peak_mib=812.4)
        return gc.StepResult(name, name != "tests", 2.0, "2 passed, 1 failed" if name == "tests" else "fine")

    monkeypatch.setattr(gc, "run_step", fake_step)
    assert gc.main(["--only", "build", "tests", "toy"]) == 1
    assert [s[0] for s in seen] == ["build", "tests", "toy"] and all(s[2] == "8.9" for s in seen)
    assert all(limit <= gc.STEP_LIMIT_S[name] for name, limit, _ in seen)
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("GPU: NVIDIA Test GPU (sm 8.9, 24.0 GiB)")
    assert table[1].split()[:5] == ["step", "status", "seconds", "steps/s", "peak"]
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert rows["tests"][1] == "FAIL" and rows["build"][1] == "ok" and rows["toy"][3:5] == ["12.35", "812"]

    seen.clear()
    monkeypatch.setattr(gc, "run_step", lambda name, argv, limit_s, env: (seen.append(name), gc.StepResult(name, True, 0.0))[1])
    clock = iter([0.0, 0.0, 500.0])  # the first step uses up the whole budget
    monkeypatch.setattr(gc, "_now", lambda: next(clock))
    assert gc.main(["--only", "build", "nerfacc"]) == 1 and seen == ["build"]
    assert "not run: the --budget-s 480 s was used up" in capsys.readouterr().out


def test_a_step_that_fails_or_hangs_in_its_child_is_reported(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    failed = gc.run_step("nerfacc", [], 120, env)  # no GPU here: a CPU-only torch, or a CUDA build without nvcc on PATH
    import torch

    why = "CPU-only build" if torch.version.cuda is None else "no nvcc on PATH"
    assert not failed.ok and "nerfacc's CUDA ops" in failed.detail and why in failed.detail, failed.detail
    hung = gc.run_step("tests", [], 0.5, env)
    assert not hung.ok and hung.detail == "timed out after 0 s"


def test_cuda_tests_are_the_cuda_marked_or_cuda_skipif_ones(tmp_path):
    (tmp_path / "test_mix.py").write_text(
        "import pytest\n"
        "@pytest.mark.cuda\ndef test_marked(): pass\n"
        "@pytest.mark.skipif(False, reason='needs a CUDA GPU')\ndef test_skipif_on_cuda(): pass\n"
        "@pytest.mark.skipif(True, reason=\"gsplat's kernels need CUDA\")\ndef test_skipped_on_this_machine(): pass\n"
        "@pytest.mark.skipif(False, reason='needs ray')\ndef test_other_skipif(): pass\n"
        "def test_plain(): pass\n")
    (tmp_path / "conftest.py").write_text("def pytest_configure(config):\n    config.addinivalue_line('markers', 'cuda: gpu')\n")
    plugin = gc.CudaTests()
    code = pytest.main([str(tmp_path), "-q", "-p", "no:cacheprovider"], plugins=[plugin])
    assert code == 0 and plugin.outcomes == {"passed": 2, "failed": 0, "skipped": 1}
    assert "test_skipped_on_this_machine" in plugin.skips[0] and "gsplat" in plugin.skips[0]


def test_the_random_prior_has_the_sd21_base_shapes():
    c = gc.sd21_random_configs()
    unet, vae, text = c["unet"], c["vae"], c["text_encoder"]
    assert unet["cross_attention_dim"] == text["hidden_size"] == 1024  # OpenCLIP ViT-H text tower
    assert unet["in_channels"] == vae["latent_channels"] == 4
    assert unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1) == 512  # 64x64 latents <- 512x512 VAE input
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and text["num_hidden_layers"] == 23
    assert text["max_position_embeddings"] == 77 and c["scheduler"]["prediction_type"] == "epsilon"
