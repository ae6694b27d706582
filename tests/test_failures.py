"""A function Dynamo cannot compile as one graph gives NoCompileError and leaves no state."""

from __future__ import annotations

import pytest
import torch

from nocompile import NoCompileError, compile_once


def _graph_break(x: torch.Tensor) -> torch.Tensor:
    y = x * 2
    torch._dynamo.graph_break()
    return y + 1


def test_graph_break_raises_with_name_file_line_and_reason() -> None:
    f = compile_once(backend="eager")(_graph_break)
    with pytest.raises(NoCompileError) as info:
        f(torch.ones(2))
    message = str(info.value)
    assert "_graph_break" in message
    assert f"test_failures.py:{_graph_break.__code__.co_firstlineno}" in message
    assert "graph_break" in message.lower() or "graph break" in message.lower()
    assert "Fix:" in message
    assert info.value.__cause__ is not None  # Dynamo's exception, chained
    assert f.stats.compiles == 0
    assert "not compiled yet" in repr(f)


def test_failed_compile_leaves_state_clean_and_retries() -> None:
    broken = {"yes": True}

    def maybe_break(x: torch.Tensor) -> torch.Tensor:
        if broken["yes"]:
            torch._dynamo.graph_break()
        return x + 1

    f = compile_once(backend="eager", guards="none")(maybe_break)
    with pytest.raises(NoCompileError):
        f(torch.ones(2))
    broken["yes"] = False
    torch.testing.assert_close(f(torch.ones(2)), torch.full((2,), 2.0))
    assert f.stats.compiles == 1


def test_runtime_error_after_compiling_propagates_unchanged_and_keeps_the_compile() -> None:
    calls = {"n": 0}

    def check(out: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first run fails")
        return out

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        return lambda *args: [check(o) for o in gm.forward(*args)]

    f = compile_once(backend=backend, guards="none")(lambda x: x * 2)
    with pytest.raises(ValueError, match="first run fails"):
        f(torch.ones(2))
    assert f.stats.compiles == 1
    torch.testing.assert_close(f(torch.ones(2)), torch.full((2,), 2.0))


def test_not_a_function_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Python function"):
        compile_once(len)  # a builtin: no Python code to compile (modules and bound methods are fine)
    with pytest.raises(TypeError, match="keyword options only"):
        compile_once("eager")  # type: ignore[call-overload]
