"""python -m nocompile bench: runs end to end (eager backend, tiny timing budget) and prints ratios."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nocompile import _compat
from nocompile.__main__ import main


def test_bench_json_has_every_row_and_ratios_to_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench", "--backend", "eager", "--rounds", "2", "--round-seconds", "0.002", "--json", "--device", "cpu"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    names = [row["name"] for row in result["rows"]]
    assert names[0] == "eager module"
    assert names[-1] == "compiled graph called directly (floor)"
    for policy in ("none", "inputs", "dynamo"):
        assert f'compile_once(guards="{policy}")' in names
    if _compat.aot_available() is None:  # torch's own ahead-of-time path, guard check off
        assert "torch.compile(...).aot_compile(...), guard check off" in names
    floor = result["rows"][-1]
    assert floor["x_floor"] == pytest.approx(1.0)
    for row in result["rows"]:
        assert len(row["samples_us"]) == 2
        assert row["us_per_call"] > 0
        assert row["x_floor"] == pytest.approx(row["us_per_call"] / floor["us_per_call"])
    assert result["config"]["layers"] == 4 and result["config"]["width"] == 16


def test_bench_table_in_a_subprocess() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nocompile",
            "bench",
            "--backend",
            "eager",
            "--layers",
            "2",
            "--width",
            "8",
            "--rounds",
            "1",
            "--round-seconds",
            "0.002",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "2 layers, width 8" in out
    assert "x floor" in out
    assert 'compile_once(guards="none")' in out


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--layers", "0"])
    assert info.value.code == 2


def test_bench_patterns_json_has_every_pattern_and_way(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench-patterns", "--backend", "eager", "--layers", "2", "--rounds", "2", "--round-seconds", "0.002", "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    (block,) = result["results"]
    assert block["layers"] == 2
    patterns = [p["pattern"] for p in block["patterns"]]
    assert patterns[0] == "a loop inside a function (the fast path)"
    assert len(patterns) == 7
    for p in block["patterns"]:
        assert set(p["us"]) == {
            'compile_once(guards="inputs")',
            'compile_once(guards="none")',
            'compile_once(guards="dynamo")',
            "torch.compile",
        }
        assert all(us > 0 for us in p["us"].values())
        # Only guards="none", which checks nothing, may return another result than eager.
        assert set(p["wrong"]) <= {'compile_once(guards="none")'}
    window = next(p for p in block["patterns"] if "sliding window" in p["pattern"])
    assert window["wrong"] == ['compile_once(guards="none")']
