"""An outer ``torch.compile`` of something that holds compile_once code traces the original.

Training frameworks and scripts call ``torch.compile(model)`` or ``model.compile()`` on whatever
model they are given. A model whose class decorates ``forward`` (or whose ``forward`` was
replaced by ``compile_once(model.forward)``, or a ``compile_once(model)`` proxy) must work there:
the outer compile traces the undecorated function into its own graph, the results equal eager,
and the nocompile state does not compile for it. ``OptimizedModule`` asks
``inspect.getfile(model.forward)`` (through Dynamo's ``trace_rules.check``) before it traces,
so the compiled objects must answer ``inspect`` as the original function would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from nocompile import compile_once

POLICIES = ("none", "inputs", "dynamo")


def _decorated_class(guards: str) -> type[nn.Module]:
    class Decorated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        @compile_once(backend="eager", guards=guards)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x).relu() * 2

    return Decorated


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).relu() * 2


def _eager(module: Any, x: torch.Tensor) -> torch.Tensor:
    return module.linear(x).relu() * 2


def _module_compile(model: nn.Module) -> nn.Module:
    model.compile(backend="eager")
    return model


OUTER_FORMS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "torch.compile(model)": lambda m: torch.compile(m, backend="eager"),
    "torch.compile(model, fullgraph=True)": lambda m: torch.compile(m, backend="eager", fullgraph=True),
    "torch.compile(model.forward)": lambda m: torch.compile(m.forward, backend="eager"),
    "model.compile()": _module_compile,
    "torch.compile(model, aot_eager)": lambda m: torch.compile(m, backend="aot_eager"),
}


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "after-a-call"])
@pytest.mark.parametrize("form", list(OUTER_FORMS))
@pytest.mark.parametrize("guards", POLICIES)
def test_outer_compile_of_a_decorated_model(guards: str, form: str, warm: bool) -> None:
    model = _decorated_class(guards)()
    x = torch.randn(2, 4)
    if warm:  # the state compiled and the module-call slot is installed before the outer compile
        model(x)
    outer = OUTER_FORMS[form](model)
    for _ in range(3):
        torch.testing.assert_close(outer(x), _eager(model, x))
    assert model.forward.stats.compiles == (1 if warm else 0)  # the outer compile traced the original


@pytest.mark.parametrize("form", ["torch.compile(model)", "torch.compile(model.forward)"])
@pytest.mark.parametrize("guards", POLICIES)
def test_outer_compile_of_the_bound_method_and_proxy_forms(guards: str, form: str) -> None:
    x = torch.randn(2, 4)
    bound = Plain()
    bound.forward = compile_once(bound.forward, backend="eager", guards=guards)  # type: ignore[method-assign]
    proxy = compile_once(Plain(), backend="eager", guards=guards)
    for target, eager_module in ((bound, bound), (proxy, proxy.module)):
        outer = OUTER_FORMS[form](target)
        for _ in range(2):
            torch.testing.assert_close(outer(x), _eager(eager_module, x))
    assert bound.forward.stats.compiles == 0 and proxy.stats.compiles == 0


@pytest.mark.parametrize("guards", POLICIES)
def test_outer_compile_of_a_decorated_function(guards: str) -> None:
    @compile_once(backend="eager", guards=guards)
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin() + 1

    x = torch.randn(3)
    torch.testing.assert_close(torch.compile(f, backend="eager")(x), x.sin() + 1)
    torch.testing.assert_close(torch.compile(lambda t: f(t) * 2, backend="eager")(x), (x.sin() + 1) * 2)
    assert f.stats.compiles == 0
    torch.testing.assert_close(f(x), x.sin() + 1)  # and it still compiles on its own when called
    assert f.stats.compiles == 1


def test_reduce_overhead_mode_of_a_decorated_model() -> None:
    """The one inductor compile here: mode='reduce-overhead' is inductor-only (no CUDA graphs on CPU)."""
    model = _decorated_class("inputs")()
    x = torch.randn(2, 4)
    outer = torch.compile(model, mode="reduce-overhead")
    for _ in range(2):
        torch.testing.assert_close(outer(x), _eager(model, x))
    assert model.forward.stats.compiles == 0


def _expected_source_lines(fn: Any) -> tuple[str, int]:
    code = fn.__code__
    return code.co_filename, code.co_firstlineno


@pytest.mark.parametrize("guards", POLICIES)
def test_inspect_sees_the_decorated_function(guards: str) -> None:
    cls = _decorated_class(guards)
    model = cls()
    original = cls.forward.__wrapped__
    for obj, signature in (
        (cls.forward, "(self, x: 'torch.Tensor') -> 'torch.Tensor'"),
        (model.forward, "(x: 'torch.Tensor') -> 'torch.Tensor'"),
    ):
        assert inspect.getfile(obj) == __file__
        assert inspect.getsource(obj) == inspect.getsource(original)
        assert inspect.getsourcelines(obj)[1] == inspect.getsourcelines(original)[1]
        assert str(inspect.signature(obj)) == signature
        assert inspect.isfunction(obj) or inspect.ismethod(obj)
    assert type(model.forward).__name__ == "method" and type(cls.forward).__name__ == "CompiledFunction"


def test_inspect_sees_the_wrapped_method_of_both_wrapper_forms() -> None:
    bound = Plain()
    bound.forward = compile_once(bound.forward, backend="eager")  # type: ignore[method-assign]
    proxy = compile_once(Plain(), backend="eager")
    for obj in (bound.forward, proxy.forward):
        assert inspect.getfile(obj) == __file__
        assert inspect.getsource(obj) == inspect.getsource(Plain.forward)
        assert str(inspect.signature(obj)) == "(x: 'torch.Tensor') -> 'torch.Tensor'"
        assert inspect.ismethod(obj)


def test_passing_for_a_function_does_not_let_it_be_compiled_twice() -> None:
    cls = _decorated_class("inputs")
    with pytest.raises(TypeError, match="already compiled with compile_once"):
        compile_once(cls.forward)
    with pytest.raises(TypeError, match="already compiled with compile_once"):
        compile_once(cls().forward)
