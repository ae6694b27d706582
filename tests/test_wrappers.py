"""compile_once on objects whose class you do not edit: a module instance, a bound method."""

from __future__ import annotations

import functools
import gc
import inspect
import pickle
import weakref
from typing import Any

import pytest
import torch
from torch import nn

from nocompile import CompiledBoundMethod, CompiledModule, NoCompileError, compile_once


class Net(nn.Module):
    """A model whose source "you do not own": forward undecorated, a method that calls self."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.scale = 2.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = self.linear(x) * self.scale
        return y if bias is None else y + bias

    def run_twice_via_call(self, x: torch.Tensor) -> torch.Tensor:
        return self(self(x))

    def run_via_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def eager(net: Net, x: torch.Tensor) -> torch.Tensor:
    return Net.forward(net, x)


# -- the module form -----------------------------------------------------------------------


def test_module_form_calls_the_compiled_forward() -> None:
    net = Net()
    w = compile_once(net, backend="eager")
    x = torch.randn(2, 4)
    for _ in range(3):
        torch.testing.assert_close(w(x), eager(net, x))
    torch.testing.assert_close(w.forward(x), eager(net, x))  # the compiled forward too
    assert w.stats.compiles == 1 and w.stats.calls == 4
    assert isinstance(w, CompiledModule)
    assert "forward" not in vars(net)  # nothing installed on the module


def test_module_form_is_not_an_instance_of_the_class_by_design() -> None:
    net = Net()
    w = compile_once(net, backend="eager")
    assert not isinstance(w, Net) and not isinstance(w, nn.Module)
    assert w.module is net and w.__wrapped__ is net


def test_module_form_attribute_reads_and_writes_reach_the_original() -> None:
    net = Net()
    w = compile_once(net, backend="eager", on_mismatch="recompile")
    assert w.linear is net.linear and w.scale == 2.0
    w.extra = 5
    assert net.extra == 5
    del w.extra
    assert not hasattr(net, "extra")
    with torch.no_grad():
        w.linear.weight.zero_()  # the very parameter: the compiled forward sees it
    torch.testing.assert_close(w(torch.ones(1, 4)), net.linear.bias.expand(1, 4) * 2.0)
    assert "linear" in dir(w) and "stats" in dir(w)


def test_module_form_state_dict_and_parameters_are_the_originals() -> None:
    net = Net()
    w = compile_once(net, backend="eager")
    assert list(w.state_dict()) == list(net.state_dict())  # no "_orig_mod." prefix
    assert [p is q for p, q in zip(w.parameters(), net.parameters(), strict=True)] == [True, True]
    other = Net()
    w.load_state_dict(other.state_dict())
    torch.testing.assert_close(net.linear.weight, other.linear.weight)


def test_module_form_methods_returning_self_return_the_proxy() -> None:
    net = Net()
    w = compile_once(net, backend="eager", on_mismatch="recompile")
    assert w.eval() is w and net.training is False
    assert w.train() is w and net.training is True
    assert w.to(torch.float64) is w and net.linear.weight.dtype == torch.float64
    assert w.requires_grad_(False) is w
    x = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(w(x), eager(net, x))
    assert inspect.signature(w.to) == inspect.signature(net.to)
    assert "Module.to" in repr(w.to)


def test_module_form_training_flag_is_checked() -> None:
    net = Net()
    w = compile_once(net, backend="eager", on_mismatch="recompile")
    x = torch.randn(2, 4)
    w.eval()(x)
    w.train()(x)
    assert w.stats.compiles == 2


def test_module_form_does_not_run_hooks_and_own_methods_run_eagerly() -> None:
    # Documented sharp edges of the proxy (docs/huggingface.md): use the bound-method form instead.
    net = Net()
    seen: list[int] = []
    net.register_forward_hook(lambda *_: seen.append(1))
    w = compile_once(net, backend="eager")
    x = torch.randn(1, 4)
    w(x)
    assert seen == []
    before = w.stats.calls
    w.run_twice_via_call(x)  # runs on the original module: eager forward, hooks run
    assert w.stats.calls == before and seen == [1, 1]


def test_module_form_does_not_keep_the_module_alive_after_the_proxy() -> None:
    net = Net()
    w = compile_once(net, backend="eager")
    w(torch.randn(1, 4))
    ref = weakref.ref(net)
    del net, w
    gc.collect()
    assert ref() is None


def test_module_form_leaves_the_class_alone() -> None:
    code = Net.forward.__code__
    net = Net()
    compile_once(net, backend="eager")(torch.randn(1, 4))
    assert Net.forward.__code__ is code and "forward" not in vars(net)
    assert type(net) is Net


def test_module_form_refuses_pickle_with_a_fix() -> None:
    w = compile_once(Net(), backend="eager")
    with pytest.raises(TypeError, match=r"w\.module"):
        pickle.dumps(w)


def test_module_form_of_a_decorated_module_is_a_clear_error() -> None:
    class Done(nn.Module):
        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match="already compiled"):
        compile_once(Done())


def test_module_form_dynamic_names_are_checked_at_wrap_time() -> None:
    with pytest.raises(ValueError, match="no parameter"):
        compile_once(Net(), backend="eager", dynamic={"y": 0})
    w = compile_once(Net(), backend="eager", dynamic={"x": 0})
    w(torch.randn(3, 4))
    w(torch.randn(5, 4))
    assert w.stats.compiles == 1


# -- the bound-method form -----------------------------------------------------------------


def test_bound_method_assigned_back_serves_call_forward_and_own_methods() -> None:
    net = Net()
    net.forward = compile_once(net.forward, backend="eager")
    assert isinstance(net.forward, CompiledBoundMethod)
    x = torch.randn(2, 4)
    with torch.no_grad():  # the inner call's output would otherwise require grad: another signature
        torch.testing.assert_close(net(x), eager(net, x))  # nn.Module.__call__ finds self.forward
        torch.testing.assert_close(net.run_via_forward(x), eager(net, x))
        torch.testing.assert_close(net.run_twice_via_call(x), eager(net, eager(net, x)))
    assert net.forward.stats.calls == 4 and net.forward.stats.compiles == 1
    assert isinstance(net, Net) and type(net) is Net


def test_bound_method_keeps_hooks_running() -> None:
    net = Net()
    seen: list[int] = []
    net.register_forward_hook(lambda *_: seen.append(1))
    net.forward = compile_once(net.forward, backend="eager")
    net(torch.randn(1, 4))
    assert seen == [1] and net.forward.stats.calls == 1


def test_bound_method_looks_like_the_original() -> None:
    net = Net()
    original = net.forward
    bound = compile_once(net.forward, backend="eager")
    assert inspect.signature(bound) == inspect.signature(original)
    assert bound.__name__ == "forward" and bound.__qualname__ == "Net.forward"
    assert bound.__func__ is Net.forward and bound.__self__ is net
    assert "Net.forward" in repr(bound)


def test_bound_method_does_not_keep_its_object_alive() -> None:
    net = Net()
    net.forward = compile_once(net.forward, backend="eager")
    net(torch.randn(1, 4))
    ref = weakref.ref(net)
    del net
    assert ref() is None  # no reference cycle through the instance attribute: freed at once
    gc.collect()
    assert ref() is None


def test_bound_method_of_a_dead_object_is_a_clear_error() -> None:
    net = Net()
    bound = compile_once(net.forward, backend="eager")
    del net
    gc.collect()
    with pytest.raises(NoCompileError, match="garbage collected"):
        bound(torch.randn(1, 4))


def test_bound_methods_of_two_instances_compile_separately() -> None:
    a, b = Net(), Net()
    a.forward = compile_once(a.forward, backend="eager")
    b.forward = compile_once(b.forward, backend="eager")
    x = torch.randn(1, 4)
    torch.testing.assert_close(a(x), eager(a, x))
    torch.testing.assert_close(b(x), eager(b, x))
    assert a.forward.stats.compiles == 1 and b.forward.stats.compiles == 1
    assert not torch.allclose(a(x), b(x))


def test_bound_method_reset_and_refusal_to_pickle() -> None:
    net = Net()
    net.forward = compile_once(net.forward, backend="eager")
    net(torch.randn(1, 4))
    net.forward.reset()
    assert net.forward.stats.compiles == 0
    with pytest.raises(TypeError, match=r"del obj\.forward"):
        pickle.dumps(net.forward)


def test_bound_method_of_a_plain_object() -> None:
    class Scaler:
        def __init__(self) -> None:
            self.k = 3.0

        def apply(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.k

    s = Scaler()
    s.apply = compile_once(s.apply, backend="eager", on_mismatch="recompile")  # type: ignore[method-assign]
    torch.testing.assert_close(s.apply(torch.ones(2)), torch.full((2,), 3.0))
    assert s.apply.stats.compiles == 1


def test_bound_method_of_a_slots_object_without_weakref_is_a_clear_error() -> None:
    class Slotted:
        __slots__ = ("k",)

        def apply(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match="__weakref__"):
        compile_once(Slotted().apply, backend="eager")


def test_bound_method_of_a_decorated_method_is_a_clear_error() -> None:
    class Done(nn.Module):
        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match="already compiled"):
        compile_once(Done().forward)


# -- functions behind functools.wraps (transformers' can_return_tuple) -----------------------


def passthrough(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)

    return wrapper


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @passthrough
    def forward(self, x: torch.Tensor, flag: bool = False) -> torch.Tensor:
        return self.linear(x) + (1 if flag else 0)


def test_forward_behind_functools_wraps_is_bound_as_the_wrapper() -> None:
    net = Wrapped()
    net.forward = compile_once(net.forward, backend="eager", on_mismatch="recompile")
    # The signature callers inspect is the wrapped one (transformers reads it to pick kwargs).
    assert list(inspect.signature(net.forward).parameters) == ["x", "flag"]
    x = torch.randn(1, 4)
    torch.testing.assert_close(net(x=x), net.linear(x))
    torch.testing.assert_close(net(x=x, flag=True), net.linear(x) + 1)  # flag checked: recompiles
    torch.testing.assert_close(net(x=x), net.linear(x))
    assert net.forward.stats.compiles == 2


# -- alternating argument structures (prefill without a mask, decode with one) ---------------


def test_alternating_structures_stay_on_the_fast_path() -> None:
    net = Net()
    net.forward = compile_once(net.forward, backend="eager", on_mismatch="recompile")
    state = net.forward._state
    slow: list[int] = []
    original = state._slow_call

    def counting(args: Any, kwargs: Any) -> Any:
        slow.append(1)
        return original(args, kwargs)

    state._slow_call = counting  # type: ignore[method-assign]
    x, bias = torch.randn(1, 4), torch.randn(1, 4)
    for _ in range(3):  # one "prefill" (no bias), then several "decode" steps (with bias)
        torch.testing.assert_close(net(x), eager(net, x))
        for _ in range(5):
            torch.testing.assert_close(net(x, bias=bias), eager(net, x) + bias)
    assert net.forward.stats.compiles == 2
    # 2 compiling calls, then one slow lookup per switch of structure: not one per call.
    assert len(slow) <= 2 + 2 * 3


# -- options and outer compiles --------------------------------------------------------------


def test_per_instance_false_is_refused_for_one_object() -> None:
    with pytest.raises(ValueError, match="decorate the class's method"):
        compile_once(Net(), per_instance=False)
    with pytest.raises(ValueError, match="decorate the class's method"):
        compile_once(Net().forward, per_instance=False)


def test_both_forms_are_inlined_inside_an_outer_torch_compile() -> None:
    # transformers' generate() does this on CUDA unless disable_compile=True (docs/huggingface.md).
    net = Net()
    net.forward = compile_once(net.forward, backend="eager")
    x = torch.randn(2, 4)
    torch.testing.assert_close(torch.compile(net, backend="eager", fullgraph=True)(x), eager(net, x))
    proxy = compile_once(Net(), backend="eager")
    torch.testing.assert_close(torch.compile(proxy, backend="eager", fullgraph=True)(x), eager(proxy.module, x))
    assert net.forward.stats.compiles == 0 and proxy.stats.compiles == 0  # the outer compile traced the originals


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 2


def test_both_forms_have_explain_report_and_aot_compile() -> None:
    x = torch.randn(2, 4)
    model = _Small()
    proxy = compile_once(model, backend="eager")
    assert "not compiled yet" in proxy.explain().lower()
    proxy(x)
    assert proxy.report().states and "TENSOR_MATCH" in proxy.explain()

    other = _Small()
    bound = compile_once(other.forward, backend="eager")
    spec = bound.aot_compile(x)  # compiles for other, without running
    assert spec is not None and bound.stats.compiles == 1
    torch.testing.assert_close(bound(x), other(x))
    assert bound.stats.compiles == 1


def test_class_level_aot_compile_compiles_the_instances_own_state() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    block, x = Block(), torch.randn(2, 4)
    Block.forward.aot_compile(block, x)
    block(x)
    assert block.forward.stats.compiles == 1 and block.forward.stats.calls == 1
