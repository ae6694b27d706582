"""scripts/hf_decode_bench.py refuses arguments that cannot fit before building any model;
scripts/hf_window_bench.py runs on its smallest setting;
scripts/gpu_check.sh's step groups run what they say (checked without a GPU)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hf_decode_bench.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent.parent)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_cache_too_short_for_the_longest_prompt_is_refused_before_any_model(device: str) -> None:
    result = _run("--device", device, "--mixed", "16", "37", "64", "90", "--hf-recipe", "--cache", "160")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cache 160 is shorter than the longest prompt (90) plus --new-tokens (128)" in lines[0]
    assert result.stdout == ""  # nothing built, nothing timed


def test_the_one_prompt_form_and_too_few_repeats_are_refused() -> None:
    short = _run("--device", "cpu", "--prompt", "16", "--new-tokens", "64", "--cache", "79")
    assert short.returncode == 2 and "plus --new-tokens (64) = 80" in short.stderr
    few = _run("--device", "cpu", "--repeats", "3")
    assert few.returncode == 2 and "--repeats must be at least 5" in few.stderr


# -- scripts/gpu_check.sh: the step groups, checked without a GPU (DRY_RUN=1 prints the commands) --

GPU_CHECK = SCRIPT.parent / "gpu_check.sh"


def _gpu_check(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OUT": str(tmp), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=60, env=full, check=False)


def _dry_steps(tmp: Path, steps: str) -> dict[str, list[str]]:
    """``{label: argv}`` of the steps ``STEPS=steps`` runs."""
    result = _gpu_check(tmp, DRY_RUN="1", STEPS=steps)
    assert result.returncode == 0, result.stderr
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("step "):
            head, command = line.split(": ", 1)
            found[head.split(" ", 2)[2]] = shlex.split(command)
    return found


def test_gpu_check_warmstart_runs_the_cuda_kernels_test_and_bench_cache_on_the_reference(tmp_path: Path) -> None:
    from nocompile.__main__ import build_parser

    steps = _dry_steps(tmp_path, "warmstart")
    assert list(steps) == ["environment", "warm-start kernels test, CUDA", "bench-cache, 8 layers, width 256, CUDA"]
    bench = steps["bench-cache, 8 layers, width 256, CUDA"]
    assert bench[:3] == [sys.executable, "-m", "nocompile"]
    args = build_parser().parse_args(bench[3:])
    assert (args.command, args.device, args.width, args.layers, args.models) == (
        "bench-cache",
        "cuda",
        256,
        (8,),
        ("mlp",),
    )
    tests = steps["warm-start kernels test, CUDA"]
    collected = subprocess.run(
        [*tests, "--collect-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=GPU_CHECK.parent.parent,
        env={**os.environ, "PYTHONPATH": str(GPU_CHECK.parent.parent)},
    )
    assert "test_a_warm_cuda_load_on_empty_inductor_and_triton_caches_does_no_compile_work" in collected.stdout
    assert "test_a_warm_load_on_an_empty_inductor_cache_does_no_compile_work" in collected.stdout
    llama = build_parser().parse_args(
        _dry_steps(tmp_path, "warmstart-llama")["bench-cache, tiny Llama decode step, CUDA"][3:]
    )
    assert (llama.device, llama.models) == ("cuda", ("llama",))
    assert "GPU tests" in _dry_steps(tmp_path, "graphs") and "GPU tests" not in steps


def test_gpu_check_refuses_an_unknown_step_group(tmp_path: Path) -> None:
    result = _gpu_check(tmp_path, STEPS="graphs,warm")
    assert result.returncode == 2
    assert "STEPS takes graphs, warmstart, warmstart-llama (comma-separated), got 'warm'" in result.stderr


def test_the_window_bench_times_both_models_under_both_ways() -> None:
    """scripts/hf_window_bench.py on the smallest setting: four rows, two ratios, and Mistral's
    sliding window compiled a bounded number of times (not once per position)."""
    pytest.importorskip("transformers")
    script = SCRIPT.parent / "hf_window_bench.py"
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent.parent)}
    done = subprocess.run(
        [sys.executable, str(script), "--layers", "1", "--new-tokens", "24", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratios = [line for line in done.stdout.splitlines() if "mistral/llama" in line]
    assert [line.split()[0] for line in ratios] == ["compile_once", "torch.compile"]
    assert all(float(line.split()[-1]) > 0 for line in ratios)
    stats = {line.split(":")[0]: line for line in done.stdout.splitlines() if "CompileStats" in line}
    compiles = int(stats["mistral"].split("compiles=")[1].split(",")[0])
    assert 1 <= compiles <= 6, stats["mistral"]
