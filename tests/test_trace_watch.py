"""The trace watch (``nocompile/_trace_watch.py``, issue #25 item 1): what Dynamo's guards read
outside the call's arguments, followed from the guard tree and checked on every call.

Each change below is one stock ``torch.compile`` catches and the hand-picked fingerprint did not
(``tests/real_world.py`` has the battery); each store below is one the code never read, which
must leave the per-call path alone. Both with nocompile's C extension (``_native.WatchCheck``)
and without (``PythonWatchCheck``).
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from test_watch import count_slow_calls
from torch import nn

from nocompile import GuardMismatchError, _native_checks, _watch, compile_once
from nocompile._layout import version_trees
from nocompile._trace_watch import Paths, TraceWatch

#: A module of its own, as an imported config module would be.
settings = types.ModuleType("trace_watch_settings")
settings.SCALE = 2.0  # type: ignore[attr-defined]
settings.TABLE = {"shift": 1.0}  # type: ignore[attr-defined]


def helper(x: torch.Tensor) -> torch.Tensor:
    return x * settings.SCALE + settings.TABLE["shift"]  # type: ignore[attr-defined]


@pytest.fixture(params=["C", "Python"])
def checks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """With the C check, and as without the extension (the same comparisons in Python)."""
    if request.param == "C" and (
        _native_checks.NATIVE is None or not hasattr(_native_checks.NATIVE.module, "WatchCheck")
    ):
        pytest.skip("nocompile's C extension is not built here")
    if request.param == "Python":
        monkeypatch.setattr(_native_checks, "NATIVE", None)
    return str(request.param)


@pytest.fixture(autouse=True)
def restore_settings() -> Iterator[None]:
    yield
    settings.SCALE = 2.0  # type: ignore[attr-defined]
    settings.TABLE = {"shift": 1.0}  # type: ignore[attr-defined]


def watches(compiled: Any) -> list[TraceWatch]:
    return [spec.expectations.trace_watch for spec in compiled.state.specializations]


def test_another_modules_constant_and_dict_item_are_watched(checks: str) -> None:
    f = compile_once(backend="eager", on_mismatch="raise")(lambda x: helper(x))
    x = torch.ones(2)
    f(x)
    f(x)
    assert all(w.exact for w in watches(f)), [w.describe() for w in watches(f)]
    settings.SCALE = 3.0  # type: ignore[attr-defined]
    with pytest.raises(GuardMismatchError, match="SCALE"):
        f(x)
    settings.SCALE = 2.0  # type: ignore[attr-defined]
    torch.testing.assert_close(f(x), x * 2 + 1)
    settings.TABLE["shift"] = 5.0  # type: ignore[attr-defined]
    with pytest.raises(GuardMismatchError, match="shift"):
        f(x)


def test_stores_the_code_never_read_stay_on_the_per_call_path(checks: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop variable at a script's top level, a counter in the config module, an equal float
    stored again: no verification, no compile."""
    f = compile_once(backend="eager", on_mismatch="recompile")(lambda x: helper(x))
    x = torch.ones(2)
    f(x)
    f(x)
    slow = count_slow_calls(f, monkeypatch)
    for i in range(20):
        globals()["loop_variable"] = i
        settings.CALLS = i  # type: ignore[attr-defined]
        settings.SCALE = 2.0 + 0.0 * i  # type: ignore[attr-defined]  # a new float object, equal
        torch.testing.assert_close(f(x), x * 2 + 1)
    assert f.stats.compiles == 1
    if version_trees():
        assert slow == []
    else:  # Python 3.13: the module part is fingerprinted in the key itself and never opened
        assert len(slow) == 20


@pytest.mark.skipif(not version_trees(), reason="Python 3.13: the module part is never opened")
def test_an_open_module_part_is_one_global_read(checks: str) -> None:
    """Open, the module part of the key is the flag ``open()`` set: its roots (the globals,
    ``self``'s dicts) are not read; closed again, the version trees are tried as before."""
    f = compile_once(backend="eager", on_mismatch="recompile")(lambda x: helper(x))
    x = torch.ones(2)
    f(x)
    f(x)
    selector = f.state.inputs.tables[0].selector
    namespace, watch = selector.call.__globals__, selector.module_watch[0]
    assert "(__nc_dicts_open or (" in selector.source
    assert watch.is_open and namespace["__nc_dicts_open"] is _watch.OPEN_SLOT
    key = selector.verified_key(x)
    assert _watch.OPEN_SLOT in key
    watch.forget()
    assert namespace["__nc_dicts_open"] is None and _watch.OPEN_SLOT not in selector.verified_key(x)
    torch.testing.assert_close(f(x), x * 2 + 1)  # verified again, and opened by no new compile
    assert f.stats.compiles == 1


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = 2.0


class Doubled(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.config = types.SimpleNamespace(text=types.SimpleNamespace(scale=1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        y = x * self.inner.scale * self.config.text.scale
        return y + self.extra if hasattr(self, "extra") else y


CHANGES: dict[str, Callable[[Outer], None]] = {
    "a submodule's attribute": lambda m: setattr(m.inner, "scale", 3.0),
    "a nested config's value": lambda m: setattr(m.config.text, "scale", 4.0),
    "a layer removed without hooks": lambda m: m.layers.__delitem__(0),
    "an attribute added to self": lambda m: setattr(m, "extra", torch.ones(2)),
    "a submodule's class": lambda m: setattr(m.inner, "__class__", type("Other", (Inner,), {})),
    "a layer's class": lambda m: setattr(m.layers[1], "__class__", Doubled),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("form", ["compile_once(model)", "a wrapper's *args"])
def test_changes_below_self_are_caught(change: str, form: str, checks: str) -> None:
    model, x = Outer().eval(), torch.randn(1, 2)
    if form == "compile_once(model)":
        compiled = compile_once(model, backend="eager", on_mismatch="recompile")
    else:  # Hugging Face's forward is a decorator's ``wrapper(*args, **kwargs)``: self is args[0]
        forward = type(model).forward

        @functools.wraps(forward)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return forward(*args, **kwargs)

        model.forward = compile_once(types.MethodType(wrapper, model), backend="eager", on_mismatch="recompile")  # type: ignore[method-assign]
        compiled = model
    with torch.no_grad():
        compiled(x)
        compiled(x)
        CHANGES[change](model)
        torch.testing.assert_close(compiled(x), Outer.forward(model, x))
    state = compiled.forward.state if form != "compile_once(model)" else compiled.state
    assert state.specializations[0].expectations.trace_watch.exact


def test_a_set_compared_by_content_makes_the_watch_inexact_and_still_right(checks: str) -> None:
    """Where the watch cannot follow a value (a set Dynamo compares by content), Dynamo's guard
    manager runs on every call: right, at stock's guard cost."""
    allowed = {1, 2}

    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if 3 in allowed else x

    compiled = compile_once(backend="eager", on_mismatch="recompile")(f)
    x = torch.ones(2)
    compiled(x)
    compiled(x)
    allowed.add(3)
    torch.testing.assert_close(compiled(x), x * 2)
    assert any(not w.exact and "set" in w.reason for w in watches(compiled))


def test_a_rebuilt_watch_keeps_the_object_the_per_call_path_holds(checks: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An equal but new object where the trace read one (a tuple of equal floats stored again):
    Dynamo's guards pass, the call runs, the watch is rebuilt; the candidate's check stays the
    same object and passes again without the slow path."""
    holder = types.SimpleNamespace(scales=(2.0, 3.0))
    compiled = compile_once(backend="eager", on_mismatch="raise")(lambda x: x * holder.scales[0])
    x = torch.ones(2)
    compiled(x)
    compiled(x)
    (watch,) = watches(compiled)
    predicate = watch.predicate
    holder.scales = (2.0, 3.0 + 0.0 * len(holder.scales))  # equal, not the same tuple
    torch.testing.assert_close(compiled(x), x * 2)
    assert watch.rebuilds == 1 and watch.predicate is predicate
    slow = count_slow_calls(compiled, monkeypatch)
    torch.testing.assert_close(compiled(x), x * 2)
    assert slow == []


def test_the_watch_holds_self_weakly() -> None:
    model = Outer().eval()
    compiled = compile_once(model.forward, backend="eager")
    with torch.no_grad():
        compiled(torch.randn(1, 2))
    alive = weakref.ref(model)
    del model
    assert alive() is None


def test_classes_python_cannot_change_are_not_checked_per_call() -> None:
    """A function's, a cell's, a SimpleNamespace's or a class's own class cannot be assigned (a
    builtin, immutable type): the watch does not check them on every call; a module's and an instance's it does."""
    paths = Paths()
    cell = (lambda: paths).__closure__[0]  # type: ignore[index]
    fixed = [helper, cell, Outer, print, types.SimpleNamespace()]
    kept = [settings, Outer(), Doubled(1, 1)]
    for value in fixed + kept:
        paths.keep_class(value)
    assert list(paths.objects.values()) == kept
    with pytest.raises(TypeError):
        helper.__class__ = types.MethodType  # type: ignore[assignment]
    with pytest.raises(TypeError):
        cell.__class__ = type("Cell", (), {})
