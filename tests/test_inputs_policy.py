"""guards="inputs": every call either matches eager or raises GuardMismatchError, never a wrong value."""

from __future__ import annotations

import enum
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from nocompile import GuardMismatchError, compile_once


def scaled(x: torch.Tensor, y: torch.Tensor, k: float = 2.0) -> torch.Tensor:
    return x * k + y


def test_same_signature_passed_differently_does_not_mismatch() -> None:
    f = compile_once(backend="eager")(scaled)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    for out in (f(x, y), f(x, y=y), f(y=y, x=x, k=2.0), f(x, y, 2.0)):
        torch.testing.assert_close(out, x * 2 + y)
    assert f.stats.compiles == 1


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda f, x, y: f(torch.randn(3, 3), y), r"x: shape compiled for \(2, 3\), got \(3, 3\)"),
        (lambda f, x, y: f(x.double(), y), r"x: dtype compiled for torch.float32, got torch.float64"),
        (lambda f, x, y: f(x, y, 3.0), r"k: value compiled for 2.0, got 3.0"),
        (lambda f, x, y: f(x, y, 2), r"k: type compiled for float, got int"),
        (lambda f, x, y: f([1.0], y), r"x: type compiled for Tensor, got list"),
        (lambda f, x, y: f(x.requires_grad_(True), y), r"x: requires_grad compiled for False, got True"),
        (lambda f, x, y: f(torch.randn(3, 2).t(), y), r"x: stride compiled for \(3, 1\), got \(1, 2\)"),
        (lambda f, x, y: f(x.to("meta"), y), r"x: device compiled for device\(type='cpu'\), got device\(type='meta'\)"),
    ],
)
def test_mismatch_raises_naming_argument_property_and_fix(call, pattern) -> None:  # type: ignore[no-untyped-def]
    f = compile_once(backend="eager")(scaled)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    f(x, y)
    with pytest.raises(GuardMismatchError, match=pattern) as info:
        call(f, x.clone(), y)
    message = str(info.value)
    assert "scaled" in message and "test_inputs_policy.py" in message
    assert 'on_mismatch="recompile"' in message
    assert f.stats.compiles == 1  # nothing compiled, nothing changed


@pytest.mark.parametrize(
    "call",
    [
        lambda f, x, y: f(x),
        lambda f, x, y: f(x, y, z=1),
        lambda f, x, y: f(x, y, 2.0, 3.0),
        lambda f, x, y: f(x, y, x=x),
    ],
)
@pytest.mark.parametrize("policy", ["raise", "recompile"])
def test_a_call_that_does_not_bind_is_the_type_error_python_gives_the_function(call, policy) -> None:  # type: ignore[no-untyped-def]
    """Word for word what Python says for the undecorated function; never a recompile."""
    f = compile_once(backend="eager", on_mismatch=policy)(scaled)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(TypeError) as plain:
        call(scaled, x, y)
    with pytest.raises(TypeError) as compiled:
        call(f, x, y)  # before the first compile, too
    assert str(compiled.value) == str(plain.value)
    assert "scaled()" in str(compiled.value)
    f(x, y)
    with pytest.raises(TypeError) as compiled:
        call(f, x, y)
    assert str(compiled.value) == str(plain.value)
    assert f.stats.compiles == 1


class _Scaler(torch.nn.Module):
    @compile_once(backend="eager")
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * y


@pytest.mark.parametrize("call", [lambda f, x: f(x), lambda f, x: f(x, x, x), lambda f, x: f(x, z=x)])
def test_a_method_call_that_does_not_bind_is_the_type_error_python_gives_the_method(call) -> None:  # type: ignore[no-untyped-def]
    model, x = _Scaler(), torch.randn(2)
    with pytest.raises(TypeError) as expected:
        call(types.MethodType(_Scaler.forward.__wrapped__, model), x)
    assert "_Scaler.forward()" in str(expected.value)
    model(x, x)
    for compiled in (model, model.forward):
        with pytest.raises(TypeError) as raised:
            call(compiled, x)
        assert str(raised.value) == str(expected.value)


def test_a_nested_tensor_shape_mismatch_does_not_suggest_an_impossible_dynamic() -> None:
    f = compile_once(backend="eager")(lambda xs: xs[0] * 2)
    f([torch.randn(2, 3)])
    with pytest.raises(GuardMismatchError) as info:
        f([torch.randn(5, 3)])
    assert "dynamic=" not in str(info.value) and 'on_mismatch="recompile"' in str(info.value)


def test_shape_mismatch_suggests_dynamic() -> None:
    f = compile_once(backend="eager")(scaled)
    f(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(GuardMismatchError, match=r"dynamic=\{'x': <dim>\}"):
        f(torch.randn(5, 3), torch.randn(5, 3))


def test_nested_arguments_are_checked_with_paths() -> None:
    @compile_once(backend="eager")
    def f(xs: list[torch.Tensor], extras: dict[str, torch.Tensor]) -> torch.Tensor:
        return xs[0] + xs[1] * extras["mask"]

    a, b, m = torch.randn(3), torch.randn(3), torch.randn(3)
    torch.testing.assert_close(f([a, b], {"mask": m}), a + b * m)
    with pytest.raises(GuardMismatchError, match=r"extras\['mask'\]: dtype"):
        f([a, b], {"mask": m.half()})
    with pytest.raises(GuardMismatchError, match=r"xs: length compiled for 2, got 3"):
        f([a, b, b], {"mask": m})
    with pytest.raises(GuardMismatchError, match=r"xs\[1\]: shape"):
        f([a, torch.randn(4)], {"mask": m})


def test_grad_mode_and_training_are_checked() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x) * 2

    net = Net().eval()
    x = torch.ones(4)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x * 2)
        net.train()
        with pytest.raises(GuardMismatchError, match=r"self: training compiled for False, got True"):
            net(x)
        net.eval()
    with pytest.raises(GuardMismatchError, match=r"grad_enabled compiled for False, got True"):
        net(x)


class Mode(enum.Enum):
    ADD = 1
    MUL = 2


def test_enum_and_string_arguments_recompile_per_value() -> None:
    @compile_once(backend="eager", on_mismatch="recompile")
    def f(x: torch.Tensor, mode: Mode, name: str) -> torch.Tensor:
        out = x + 1 if mode is Mode.ADD else x * 3
        return out if name == "keep" else -out

    x = torch.randn(3)
    torch.testing.assert_close(f(x, Mode.ADD, "keep"), x + 1)
    torch.testing.assert_close(f(x, Mode.MUL, "keep"), x * 3)
    torch.testing.assert_close(f(x, Mode.MUL, "flip"), -(x * 3))
    torch.testing.assert_close(f(x, Mode.ADD, "keep"), x + 1)
    assert f.stats.compiles == 3


def test_recompile_keeps_old_specializations_and_respects_max_compiles() -> None:
    # dynamic=False: one specialization per size (without it, sizes that change become dynamic).
    f = compile_once(backend="eager", on_mismatch="recompile", max_compiles=2, dynamic=False)(scaled)
    a = (torch.randn(2, 3), torch.randn(2, 3))
    b = (torch.randn(4, 3), torch.randn(4, 3))
    for x, y in (a, b, a, b):
        torch.testing.assert_close(f(x, y), x * 2 + y)
    assert f.stats.compiles == 2 and f.stats.specializations == 2
    expected = r"(?s)max_compiles=2.*#1: x: .*shape=\(2, 3\).*#2: x: .*shape=\(4, 3\)"
    with pytest.raises(GuardMismatchError, match=expected):
        f(torch.randn(5, 3), torch.randn(5, 3))


def test_sizes_that_change_become_dynamic_after_one_recompile() -> None:
    """Automatic dynamic: the second size compiles a dynamic specialization that serves every
    later size (of 2 or more); the dims that did not change stay checked exactly."""
    f = compile_once(backend="eager", on_mismatch="recompile")(scaled)
    for n in (2, 4, 3, 7, 16, 5):
        x, y = torch.randn(n, 3), torch.randn(n, 3)
        torch.testing.assert_close(f(x, y), x * 2 + y)
    assert f.stats.compiles == 2
    (first, second) = f.specializations
    assert first.dynamic is None and second.dynamic is not None
    assert second.dynamic.describe() == ["x dim 0", "y dim 0"]
    assert "made dynamic (sizes and ints that changed): x dim 0, y dim 0" in f.explain()
    x, y = torch.randn(4, 5), torch.randn(4, 5)  # another width: dim 1 grows dynamic as well
    torch.testing.assert_close(f(x, y), x * 2 + y)
    assert f.stats.compiles == 3 and f.specializations[2].dynamic.describe() == [
        "x dim 0",
        "x dim 1",
        "y dim 0",
        "y dim 1",
    ]


def test_an_int_that_changes_becomes_dynamic_and_a_value_dynamo_specializes_stays_exact() -> None:
    def repeat(x: torch.Tensor, n: int) -> torch.Tensor:
        return x * n  # n read as a value: dynamic

    def branch(x: torch.Tensor, n: int) -> torch.Tensor:
        return x * 2 if n > 3 else x  # Dynamo specializes n (a guard on its value)

    f = compile_once(backend="eager", on_mismatch="recompile")(repeat)
    for n in (2, 5, 9, 4):
        torch.testing.assert_close(f(torch.ones(2), n), torch.full((2,), float(n)))
    assert f.stats.compiles == 2 and f.specializations[1].dynamic.describe() == ["n"]
    g = compile_once(backend="eager", on_mismatch="recompile")(branch)
    for n in (2, 5, 9, 3, 4):
        torch.testing.assert_close(g(torch.ones(2), n), branch(torch.ones(2), n))
    assert g.stats.compiles >= 2


def test_dynamic_false_keeps_one_specialization_per_size() -> None:
    f = compile_once(backend="eager", on_mismatch="recompile", dynamic=False)(scaled)
    for n in (2, 4, 3):
        f(torch.randn(n, 3), torch.randn(n, 3))
    assert f.stats.compiles == 3 and all(s.dynamic is None for s in f.specializations)
    assert "dynamic=False" in repr(f)


def test_dynamic_dim_one_compile_for_every_size_other_dims_checked() -> None:
    f = compile_once(backend="eager", dynamic={"x": 0, "y": 0})(scaled)
    for n in (2, 3, 7, 16):
        x, y = torch.randn(n, 3), torch.randn(n, 3)
        torch.testing.assert_close(f(x, y), x * 2 + y)
    assert f.stats.compiles == 1
    with pytest.raises(GuardMismatchError, match=r"x: shape"):
        f(torch.randn(4, 5), torch.randn(4, 5))
    with pytest.raises(GuardMismatchError, match=r"x: rank"):
        f(torch.randn(4, 3, 1), torch.randn(4, 3))


def branchy(x: torch.Tensor) -> torch.Tensor:
    if x.size(0) >= 4:
        return x * 2
    return x - 1


def expected_branchy(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if x.size(0) >= 4 else x - 1


def test_shape_guards_of_a_dynamic_dim_are_kept() -> None:
    f = compile_once(backend="eager", dynamic={"x": 0})(branchy)
    torch.testing.assert_close(f(torch.ones(6, 2)), torch.full((6, 2), 2.0))
    torch.testing.assert_close(f(torch.ones(9, 2)), torch.full((9, 2), 2.0))
    with pytest.raises(GuardMismatchError, match=r"shape guards do not hold: 4 <= L\['x'\]\.size\(\)\[0\]"):
        f(torch.ones(3, 2))  # the other branch: refused, never silently wrong


def test_shape_guards_recompile_the_other_branch() -> None:
    f = compile_once(backend="eager", dynamic={"x": 0}, on_mismatch="recompile")(branchy)
    for n in (6, 3, 9, 2, 5):
        x = torch.randn(n, 2)
        torch.testing.assert_close(f(x), expected_branchy(x))
    assert f.stats.compiles == 2


@pytest.mark.parametrize("size", [0, 1])
def test_sizes_zero_and_one_compile_statically(size: int) -> None:
    f = compile_once(backend="eager", dynamic={"x": 0}, on_mismatch="recompile")(branchy)
    x = torch.randn(size, 2)
    torch.testing.assert_close(f(x), expected_branchy(x))  # first compile at 0/1: static
    for n in (5, 2, size):
        x = torch.randn(n, 2)
        torch.testing.assert_close(f(x), expected_branchy(x))
    assert f.stats.compiles == 3  # size, the >=4 branch, the 2..3 branch


def test_size_one_after_a_dynamic_compile_is_a_mismatch_not_a_wrong_answer() -> None:
    f = compile_once(backend="eager", dynamic={"x": 0, "y": 0})(scaled)
    f(torch.randn(4, 3), torch.randn(4, 3))
    expected = r"x: shape \(dynamic dims as min\(size, 2\)\) compiled for \(2, 3\), got \(1, 3\)"
    with pytest.raises(GuardMismatchError, match=expected):
        f(torch.randn(1, 3), torch.randn(1, 3))


def test_dynamic_errors() -> None:
    with pytest.raises(ValueError, match=r"names \['z'\].*parameters are \['x', 'y', 'k'\]"):
        compile_once(backend="eager", dynamic={"z": 0})(scaled)
    with pytest.raises(ValueError, match=r"guards='none'"):
        compile_once(backend="eager", guards="none", dynamic={"x": 0})
    with pytest.raises(TypeError, match=r"non-empty tuple of ints"):
        compile_once(backend="eager", dynamic={"x": "0"})  # type: ignore[dict-item]
    f = compile_once(backend="eager", dynamic={"x": 2})(scaled)
    with pytest.raises(ValueError, match=r"'x' has 2 dim\(s\).*dim 2 does not exist"):
        f(torch.randn(2, 3), torch.randn(2, 3))
    assert f.stats.compiles == 0
    g = compile_once(backend="eager", dynamic={"k": 0})(scaled)
    with pytest.raises(ValueError, match=r"'k' is float, not a tensor"):
        g(torch.randn(2, 3), torch.randn(2, 3))


def test_dynamic_dim_that_the_code_specializes_is_a_clear_compile_error() -> None:
    from nocompile import NoCompileError

    f = compile_once(backend="eager", dynamic={"x": 0})(scaled)  # y's dim 0 static: x's gets pinned
    with pytest.raises(NoCompileError, match=r"(?s)marked L\['x'\]\.size\(\)\[0\] as dynamic"):
        f(torch.randn(4, 3), torch.randn(4, 3))


def test_dynamic_marks_do_not_leak_onto_the_callers_tensor() -> None:
    f = compile_once(backend="eager", dynamic={"x": 0, "y": 0})(scaled)
    x = torch.randn(4, 3)
    f(x, torch.randn(4, 3))
    assert vars(x) == {}  # none of mark_dynamic's attributes stays behind

    # A tensor the user marked themselves keeps exactly the user's marks.
    g = compile_once(backend="eager", dynamic={"x": 0, "y": 0})(scaled)
    mine = torch.randn(4, 3)
    torch._dynamo.maybe_mark_dynamic(mine, 1)
    before = {name: (value.copy() if hasattr(value, "copy") else value) for name, value in vars(mine).items()}
    g(mine, torch.randn(4, 3))
    assert vars(mine) == before


# -- the property: never a wrong value ----------------------------------------------------

signatures = st.tuples(
    st.sampled_from([(2, 3), (4, 3), (1, 3), (6, 3)]),  # shapes, dim 0 varies (1 is special)
    st.sampled_from([torch.float32, torch.float64]),
    st.sampled_from([1.0, 2.0]),
    st.booleans(),  # grad mode
    st.booleans(),  # training
)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Scaler(nn.Module):
    def forward(self, x: torch.Tensor, k: float) -> torch.Tensor:
        return (x * k if self.training else x + k).sum(0)


def _run(module: nn.Module, fn, sig) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    shape, dtype, k, grad, training = sig
    x = torch.randn(*shape, dtype=dtype)
    module.train(training)
    with torch.set_grad_enabled(grad):
        return fn(x, k), Scaler.forward(module, x, k)


@SETTINGS
@given(calls=st.lists(signatures, min_size=1, max_size=8), dynamic=st.booleans())
def test_property_raise_policy_never_returns_a_wrong_value(calls, dynamic) -> None:  # type: ignore[no-untyped-def]
    module = Scaler()
    f = compile_once(backend="eager", dynamic={"x": 0} if dynamic else None)(Scaler.forward).__get__(module)
    for sig in calls:
        try:
            got, expected = _run(module, f, sig)
        except GuardMismatchError:
            continue
        torch.testing.assert_close(got, expected)
    assert module.__dict__ is not None


def _distinct(sig, dynamic: bool):  # type: ignore[no-untyped-def]
    shape, dtype, k, grad, training = sig
    if dynamic:
        shape = (min(shape[0], 2), shape[1])
    return (shape, dtype, k, grad, training)


@SETTINGS
@given(calls=st.lists(signatures, min_size=1, max_size=8), dynamic=st.booleans())
def test_property_recompile_count_equals_distinct_signatures(calls, dynamic) -> None:  # type: ignore[no-untyped-def]
    module = Scaler()
    # dynamic=False, not None: under None a second size of one dim compiles a dynamic graph
    # (automatic dynamic: test_sizes_that_change_become_dynamic_after_one_recompile), which this
    # exact count does not model.
    decorated = compile_once(
        backend="eager", on_mismatch="recompile", max_compiles=64, dynamic={"x": 0} if dynamic else False
    )(Scaler.forward)
    f = decorated.__get__(module)
    for sig in calls:
        got, expected = _run(module, f, sig)
        torch.testing.assert_close(got, expected)
    assert decorated.stats.compiles == len({_distinct(sig, dynamic) for sig in calls})


def test_alternating_signatures_stay_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two specializations under one fast key: whichever was used last is checked first, and
    neither call falls to the slow path (the lock, the table scan) once both are compiled and a
    call has verified the (shared) fingerprint."""
    f = compile_once(backend="eager", on_mismatch="recompile")(scaled)
    a = (torch.randn(2, 3), torch.randn(2, 3))
    b = (torch.randn(4, 3), torch.randn(4, 3))
    f(*a)
    f(*b)
    f(*a)  # the first call of each specialization after a compile is verified (nocompile._watch)
    f(*b)
    slow_calls: list[int] = []
    selector = f._state.inputs.tables[0].selector
    original = selector.call.__globals__["__nc_slow"]

    def counting_slow_call(args, kwargs):  # type: ignore[no-untyped-def]
        slow_calls.append(1)
        return original(args, kwargs)

    monkeypatch.setitem(selector.call.__globals__, "__nc_slow", counting_slow_call)
    for x, y in (a, b, b, a, a, b):
        torch.testing.assert_close(f(x, y), x * 2 + y)
    assert slow_calls == [] and f.stats.compiles == 2
    (entries,) = selector.verified.table.values()
    assert entries[0].spec is f.specializations[1]  # b was called last: checked first


def test_inference_tensor_is_a_mismatch_named_by_the_tensor_check() -> None:
    """An inference-mode tensor has other dispatch keys than the one compiled for; Dynamo would
    recompile, nocompile refuses and says which tensor and why."""
    f = compile_once(backend="eager")(scaled)
    y = torch.randn(2, 3)
    f(torch.randn(2, 3), y)
    with torch.inference_mode():
        x = torch.randn(2, 3)
    with pytest.raises(GuardMismatchError, match=r"tensor check: tensor 'x' dispatch key set mismatch"):
        f(x, y)


def test_autocast_is_part_of_the_signature() -> None:
    """Autocast changes the dispatch keys the tensor check compares: a graph compiled without it
    is not run under it (an inductor graph would silently return float32)."""
    x, w = torch.randn(3, 4), torch.randn(4, 4)
    f = compile_once(backend="eager")(lambda x, w: x @ w)
    f(x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(GuardMismatchError, match="AutocastCPU"):
        f(x, w)
    g = compile_once(backend="eager", on_mismatch="recompile")(lambda x, w: x @ w)
    assert g(x, w).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert g(x, w).dtype == torch.bfloat16
    assert g(x, w).dtype == torch.float32
    assert g.stats.compiles == 2
