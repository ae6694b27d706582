"""compile_once on plain functions: forms, arguments, closures, globals, counters, reset."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest
import torch

import nocompile
from nocompile import CompiledFunction, CompileStats, compile_once

SCALE = 3.0


@compile_once(backend="eager", guards="none")
def module_level(x: torch.Tensor) -> torch.Tensor:
    return x * SCALE + 1


def test_bare_form_compiles_once_and_matches_eager() -> None:
    @compile_once
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2

    assert isinstance(f, CompiledFunction)
    x = torch.randn(5)
    for _ in range(3):
        torch.testing.assert_close(f(x), torch.sin(x) * 2)
    assert f.stats.compiles == 1
    assert f.stats.calls == 3


def test_keyword_form_uses_given_backend() -> None:
    seen: list[int] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        seen.append(len(example_inputs))
        return gm.forward

    @compile_once(backend=counting_backend, guards="none")
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y

    a, b = torch.randn(3, 4), torch.randn(4, 2)
    torch.testing.assert_close(f(a, b), a @ b)
    torch.testing.assert_close(f(a, b), a @ b)
    assert seen == [2]


def test_positional_keyword_default_and_keyword_only_arguments() -> None:
    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor, y: torch.Tensor, scale: float = 2.0, *, bias: torch.Tensor) -> torch.Tensor:
        return x * scale + y + bias

    x, y, bias = torch.randn(4), torch.randn(4), torch.randn(4)
    expected = x * 2.0 + y + bias
    torch.testing.assert_close(f(x, y, bias=bias), expected)
    # same signature, passed differently: keywords for positionals, default made explicit
    torch.testing.assert_close(f(x, y=y, bias=bias), expected)
    torch.testing.assert_close(f(y=y, x=x, bias=bias, scale=2.0), expected)
    assert f.stats.compiles == 1


def test_varargs_and_varkw() -> None:
    @compile_once(backend="eager", guards="none")
    def f(*tensors: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        return sum(tensors, torch.zeros(3)) + named["extra"]

    a, b, c = torch.randn(3), torch.randn(3), torch.randn(3)
    torch.testing.assert_close(f(a, b, extra=c), a + b + c)
    a2, b2, c2 = torch.randn(3), torch.randn(3), torch.randn(3)
    torch.testing.assert_close(f(a2, b2, extra=c2), a2 + b2 + c2)


def test_keyword_arguments_of_varkw_are_a_set_not_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-call key holds the ``**named`` names in the call's order (each is read by name on
    the way): the same names in another order run the same code (the slow path finds Dynamo's
    guards hold: the code reads them by name), the same number of other names does not, and a
    value the per-call path never reads keeps the set in the key."""

    @compile_once(backend="eager", on_mismatch="recompile")
    def f(x: torch.Tensor, **named: Any) -> torch.Tensor:
        return x * named["scale"] + named.get("shift", 0.0) + named.get("bias", 0.0)

    x = torch.ones(2)
    torch.testing.assert_close(f(x, scale=2.0, shift=1.0), x * 3)
    torch.testing.assert_close(f(x, shift=1.0, scale=2.0), x * 3)
    assert f.stats.compiles == 1
    assert "tuple(named)" in f.state.inputs.tables[0].selector.source
    torch.testing.assert_close(f(x, scale=2.0, bias=5.0), x * 7)  # as many names, another one
    assert f.stats.compiles == 2

    @compile_once(backend="eager", on_mismatch="recompile")
    def g(x: torch.Tensor, **named: Any) -> torch.Tensor:
        return x + 1

    g(x, gen=iter(()))  # an iterator: nothing reads it per call
    assert "tuple(named)" in g.state.inputs.tables[0].selector.source  # the names, in order


def test_closure_reads_current_cell_value_tensor() -> None:
    offset = torch.ones(3)

    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + offset

    x = torch.randn(3)
    torch.testing.assert_close(f(x), x + 1)
    offset.mul_(5)  # in-place change of a captured tensor is seen: it is a graph input
    torch.testing.assert_close(f(x), x + 5)


def test_global_function_and_module_constant() -> None:
    x = torch.randn(4)
    torch.testing.assert_close(module_level(x), x * 3 + 1)
    torch.testing.assert_close(module_level(x), x * 3 + 1)
    assert module_level.stats.compiles == 1


def test_outputs_equal_eager_for_structures() -> None:
    @compile_once(backend="aot_eager", guards="none")
    def f(x: torch.Tensor) -> dict[str, object]:
        return {"sum": x.sum(), "parts": (x * 2, [x - 1])}

    x = torch.randn(2, 3)
    out = f(x)
    out = f(x)
    torch.testing.assert_close(out["sum"], x.sum())
    torch.testing.assert_close(out["parts"][0], x * 2)  # type: ignore[index]
    torch.testing.assert_close(out["parts"][1][0], x - 1)  # type: ignore[index]


def test_wrapped_signature_and_metadata() -> None:
    def original(x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """Docstring kept."""
        return x + k

    f = compile_once(backend="eager")(original)
    assert f.__wrapped__ is original
    assert f.__name__ == "original"
    assert f.__doc__ == "Docstring kept."
    assert inspect.signature(f) == inspect.signature(original)


def test_repr_says_state_and_options() -> None:
    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    assert "not compiled yet" in repr(f)
    assert "backend='eager'" in repr(f) and "guards='none'" in repr(f)
    f(torch.ones(1))
    assert "compiled, 1 compile(s), 1 call(s)" in repr(f)


def test_stats_is_a_frozen_snapshot() -> None:
    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    before = f.stats
    assert before == CompileStats()
    f(torch.ones(1))
    after = f.stats
    assert before.calls == 0 and after.calls == 1 and after.compiles == 1
    assert after.compile_seconds > 0
    with pytest.raises(AttributeError):
        after.calls = 5  # type: ignore[misc]


def test_reset_forgets_and_recompiles() -> None:
    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.randn(3)
    f(x)
    f.reset()
    assert f.stats == CompileStats()
    assert "not compiled yet" in repr(f)
    torch.testing.assert_close(f(x), x * 2)
    assert f.stats.compiles == 1


def test_reset_lets_a_new_shape_compile_under_guards_none() -> None:
    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)

    f(torch.ones(2, 3))
    f.reset()
    torch.testing.assert_close(f(torch.ones(4, 5)), torch.full((5,), 4.0))


def test_disable_env_runs_original_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOCOMPILE_DISABLE", "1")
    calls: list[int] = []

    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)  # a Python side effect: only the eager original runs it every call
        return x + 1

    x = torch.zeros(2)
    torch.testing.assert_close(f(x), x + 1)
    torch.testing.assert_close(f(x), x + 1)
    assert calls == [1, 1]
    assert f.stats.compiles == 0
    assert "disabled by NOCOMPILE_DISABLE" in repr(f)


def test_inside_another_compiled_region_the_original_is_inlined() -> None:
    @compile_once(backend="eager", guards="none")
    def inner(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @torch.compile(backend="eager", fullgraph=True)
    def outer(x: torch.Tensor) -> torch.Tensor:
        return inner(x) + 1

    x = torch.randn(3)
    torch.testing.assert_close(outer(x), x * 2 + 1)
    assert inner.stats.compiles == 0  # traced through, never compiled on its own


def test_dispatch_dynamo_with_guards_none_never_recompiles() -> None:
    @compile_once(backend="eager", guards="none", dispatch="dynamo")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.randn(3)
    f(x)
    with torch.no_grad():  # grad mode is a global-state guard: dropped, so no recompile
        f(x)
    f(torch.randn(3, requires_grad=True))
    assert f.stats.compiles == 1


def test_guards_dynamo_recompiles_and_counts() -> None:
    @compile_once(backend="eager", guards="dynamo")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)

    torch.testing.assert_close(f(torch.ones(2, 3)), torch.full((3,), 2.0))
    torch.testing.assert_close(f(torch.ones(2, 3)), torch.full((3,), 2.0))
    assert f.stats.compiles == 1
    torch.testing.assert_close(f(torch.ones(4, 5)), torch.full((5,), 4.0))  # guard fails: Dynamo recompiles
    assert f.stats.compiles == 2


def test_decorated_function_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(module_level)) is module_level


def test_public_names() -> None:
    assert set(nocompile.__all__) >= {"compile_once", "NoCompileError", "GuardMismatchError"}
    assert issubclass(nocompile.GuardMismatchError, nocompile.NoCompileError)
    assert issubclass(nocompile.NoCompileError, RuntimeError)
