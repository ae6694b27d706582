"""scripts/hf_decode_bench.py refuses arguments that cannot fit before building any model."""

from __future__ import annotations

import os
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
