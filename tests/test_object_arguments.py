"""guards="inputs" follows objects passed as arguments (a KV cache, a config object).

The compiled code reads the tensors inside such an object as graph inputs (their shapes were
baked in) and its Python values as constants; the check covers both, bounded in depth.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nocompile import GuardMismatchError, compile_once
from nocompile._arguments import MAX_OBJECT_DEPTH
from nocompile._inputs import request_for
from nocompile._layout import KeyFunction
from nocompile._options import CompileOptions
from nocompile._selector import build_selector


class Layer:
    def __init__(self, length: int) -> None:
        self.length = length
        self.keys = torch.zeros(length, 2)
        self.ready = True


class Cache:
    def __init__(self, layers: int = 2, length: int = 4) -> None:
        self.layers = [Layer(length) for _ in range(layers)]


def read_cache(x: torch.Tensor, cache: Cache) -> torch.Tensor:
    total = x
    for layer in cache.layers:
        layer.keys.add_(1)  # in-place state update, as a static KV cache does
        total = total + layer.keys.sum() * layer.length
    return total


def test_a_new_object_of_the_same_structure_compiles_nothing() -> None:
    f = compile_once(backend="eager")(read_cache)
    x = torch.zeros(1)
    f(x, Cache())
    out = f(x, Cache())  # another object: its tensors are read through it, fresh
    torch.testing.assert_close(out, torch.full((1,), 2 * 8.0 * 4))
    assert f.stats.compiles == 1


def test_an_attribute_value_change_is_caught() -> None:
    f = compile_once(backend="eager")(read_cache)
    cache = Cache()
    f(torch.zeros(1), cache)
    cache.layers[1].length = 7
    with pytest.raises(GuardMismatchError, match=r"cache.layers\[1\].length: value compiled for 4, got 7"):
        f(torch.zeros(1), cache)


def test_a_state_tensor_shape_change_recompiles_and_is_right() -> None:
    f = compile_once(backend="eager", on_mismatch="recompile")(read_cache)
    f(torch.zeros(1), Cache(length=4))
    bigger = Cache(length=4)
    for layer in bigger.layers:
        layer.keys = torch.zeros(6, 2)  # same length attribute, bigger tensor
    torch.testing.assert_close(f(torch.zeros(1), bigger), torch.full((1,), 2 * 12.0 * 4))
    assert f.stats.compiles == 2


def test_structure_changes_are_caught() -> None:
    f = compile_once(backend="eager")(read_cache)
    f(torch.zeros(1), Cache(layers=2))
    with pytest.raises(GuardMismatchError, match="length compiled for 2, got 3"):
        f(torch.zeros(1), Cache(layers=3))
    cache = Cache()
    cache.layers[0].extra = 1  # an attribute added (say, by lazy initialization)
    with pytest.raises(GuardMismatchError, match="attributes compiled for"):
        f(torch.zeros(1), cache)


def test_lazy_initialization_inside_the_compiled_call() -> None:
    class Lazy:
        def __init__(self) -> None:
            self.ready = False

    def step(x: torch.Tensor, state: Lazy) -> torch.Tensor:
        if not state.ready:
            state.buf = torch.zeros_like(x)
            state.ready = True
        state.buf.add_(x)
        return state.buf * 1

    f = compile_once(backend="eager", on_mismatch="recompile")(step)
    s = Lazy()
    torch.testing.assert_close(f(torch.ones(2), s), torch.ones(2))  # compiled for ready=False
    torch.testing.assert_close(f(torch.ones(2), s), torch.full((2,), 2.0))  # ready=True: its own
    torch.testing.assert_close(f(torch.ones(2), Lazy()), torch.ones(2))  # a fresh one: the first
    assert f.stats.compiles == 2


def build_key_function(fn: Any, args: tuple[Any, ...]) -> tuple[KeyFunction, list[str]]:
    """The full key function of this call's structure and its unchecked paths (the call's request)."""
    request = request_for(fn, CompileOptions(), args, {})
    return request.key_function, list(request.layout.unchecked)


def test_state_tensors_are_checked_like_tensor_arguments() -> None:
    """A tensor held by an argument object goes through the same C++ tensor check as a tensor
    argument (class, dispatch keys, dtype, device, requires_grad, sizes, strides)."""
    args = (torch.zeros(1), Cache(layers=1))
    kf, unchecked = build_key_function(read_cache, args)
    props = [e.prop for e in kf.elements if e.path == "cache.layers[0].keys"]
    assert props == ["type", "shape", "dtype", "device", "requires_grad", "stride"]
    assert unchecked == []
    selector = build_selector(read_cache, args, {}, {})
    assert "cache.layers[0].keys" in selector.paths
    assert selector.verification(*args).tensors[selector.paths.index("cache.layers[0].keys")] is args[1].layers[0].keys


def test_depth_is_bounded_and_cycles_terminate() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self
            self.n = 1

    kf, unchecked = build_key_function(lambda x, node: x, (torch.zeros(1), Node()))
    assert max(e.path.count(".me") for e in kf.elements) == MAX_OBJECT_DEPTH - 1
    assert any(u.startswith("node" + ".me" * MAX_OBJECT_DEPTH) for u in unchecked)


def test_functions_classes_ranges_and_slices_are_checked_by_value() -> None:
    """Dynamo specializes on which function, class, range or slice a call passes: so does the check."""
    kf, unchecked = build_key_function(lambda x, f, c, r, s: x, (torch.zeros(1), len, Cache, range(3), slice(0, 2)))
    assert unchecked == []
    assert {(e.path, e.prop) for e in kf.elements} >= {("f", "value"), ("c", "value"), ("r", "value"), ("s", "value")}

    @compile_once(backend="eager")
    def apply(x: torch.Tensor, act: Any, part: slice, steps: range) -> torch.Tensor:
        for _ in steps:
            x = act(x)
        return x[part]

    x = torch.linspace(-1, 1, 6)
    torch.testing.assert_close(apply(x, torch.relu, slice(0, 4), range(2)), torch.relu(x)[0:4])
    for changed in (
        (x, torch.tanh, slice(0, 4), range(2)),
        (x, torch.relu, slice(1, 4), range(2)),
        (x, torch.relu, slice(0, 4), range(3)),
    ):
        with pytest.raises(GuardMismatchError, match="value compiled for"):
            apply(*changed)


def test_a_module_argument_of_another_class_is_a_mismatch() -> None:
    @compile_once(backend="eager")
    def run(x: torch.Tensor, act: torch.nn.Module) -> torch.Tensor:
        return act(x)

    x = torch.linspace(-1, 1, 4)
    torch.testing.assert_close(run(x, torch.nn.ReLU()), torch.relu(x))
    torch.testing.assert_close(run(x, torch.nn.ReLU()), torch.relu(x))  # another instance, same class
    with pytest.raises(GuardMismatchError, match="act: type compiled for ReLU, got Tanh"):
        run(x, torch.nn.Tanh())


def test_int_and_bool_attributes_of_an_argument_object_are_told_apart() -> None:
    class Config:
        def __init__(self, n: Any) -> None:
            self.n = n

    @compile_once(backend="eager")
    def scale(x: torch.Tensor, config: Config) -> torch.Tensor:
        return x * config.n

    x = torch.arange(3)
    assert scale(x, Config(1)).dtype == torch.int64
    with pytest.raises(GuardMismatchError, match=r"config\.n: type compiled for int, got float"):
        scale(x, Config(1.0))
