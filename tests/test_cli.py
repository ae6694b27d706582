"""python -m nocompile bench: runs end to end (eager backend, tiny timing budget) and prints ratios."""

from __future__ import annotations

import json
import re
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


def test_bench_cache_reports_every_row_for_both_models(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench-cache`` end to end on a tiny configuration (eager backend, one round): every row of
    issue #27 for the reference MLP and, where transformers is installed, the Llama decode step."""
    from nocompile._bench_cache import KINDS, format_table

    try:
        import transformers  # noqa: F401

        models = "mlp,llama"
    except ImportError:
        models = "mlp"
    tiny = ["--backend", "eager", "--rounds", "1", "--layers", "1", "--width", "4"]
    code = main(["bench-cache", *tiny, "--models", models, "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in result["rows"]] == models.split(",")
    assert KINDS == ("cold", "warm", "warm, empty inductor cache", "stock, caches warm", "stock, mega-cache loaded")
    for row in result["rows"]:
        for kind in KINDS:
            measured = row[kind]
            assert measured["median_first_call_s"] > 0 and measured["median_import_s"] > 0
            assert measured["median_us_per_call"] > 0 and len(measured["first_call_samples_s"]) == 1
            assert measured["correct"] is True
        assert (row["cold"]["compiles"], row["cold"]["loads"]) == ([1], [0])
        for kind in ("warm", "warm, empty inductor cache"):  # the artifact is loaded, nothing compiled
            assert (row[kind]["compiles"], row[kind]["loads"]) == ([0], [1])
        assert row["stock, caches warm"]["compiles"] == [None]  # stock: no nocompile stats
    table = format_table(result)
    for kind in KINDS:
        assert re.search(rf"\nmlp 1L +{re.escape(kind)} +[0-9]+\.[0-9]{{3}} ", table), table
    assert "warm / stock warm" in table and "WRONG RESULT" not in table and "not every run loaded" not in table
