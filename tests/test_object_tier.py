"""The object tier (issue #25 item 2): fresh argument objects of a verified layout run without the
slow path, checked like a dict argument is (the object key and every tensor, under the module state
that was verified); a change to what the key or the tensor check compares is still caught."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_watch import count_slow_calls

from nocompile import GuardMismatchError, compile_once
from nocompile._arguments import walk
from nocompile._layout import CheckLayout

SCALE = torch.nn.Linear(4, 4)


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    scale: float = 2.0


class Window:
    def __init__(self, position: int = 0) -> None:
        self.position = position


def step(batch: Batch) -> torch.Tensor:
    return SCALE(batch.x) * batch.scale


def window_step(x: torch.Tensor, state: Window) -> torch.Tensor:
    return x + state.position


@torch.no_grad()
def test_a_fresh_dataclass_each_call_stays_off_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    f(Batch(x))
    f(Batch(x))
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(20):
        y = torch.randn(2, 4)
        assert torch.equal(f(Batch(y)), SCALE(y) * 2.0)
    assert slow == [] and f.stats.compiles == 1


@torch.no_grad()
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: Batch(x, scale=3.0), "scale"),
        (lambda x: Batch(torch.randn(3, 4)), "shape"),
        (lambda x: Batch(x.double()), "dtype"),
        (lambda x: Batch(x.t().contiguous().t()), "stride"),
        (lambda x: Batch(x.clone().requires_grad_()), "requires_grad"),
    ],
)
def test_a_fresh_object_that_differs_is_still_refused(change: object, message: str) -> None:
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    f(Batch(x))
    f(Batch(x))
    f(Batch(x))
    with pytest.raises(GuardMismatchError, match=message):
        f(change(x))  # type: ignore[operator]


@torch.no_grad()
def test_the_tier_key_leaves_tensor_properties_to_the_tensor_check() -> None:
    """What the tier's C++ tensor check compares (class, shape, dtype, device, requires_grad,
    strides) is not computed again in its key; the check still refuses each (test above)."""
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    for _ in range(3):
        f(Batch(x))
    selector = f.state.inputs.tables[0].selector
    (key,) = selector.by_object
    props = [element.prop for element in CheckLayout.of(walk(step, (Batch(x),), {}, {})).tier_elements]
    assert "scale" not in props and props  # the float is a value in the key, the tensor's properties are not
    assert not {"shape", "dtype", "device", "requires_grad", "stride"} & set(props)
    assert torch.float32 not in key and x.shape not in key


@torch.no_grad()
def test_the_tier_is_tried_first_once_it_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh objects each call: once the tier served one, the verified key (computed in vain for
    a fresh object) is skipped; an object verified meanwhile is still served right, and the tier
    keeps promoting an object it served twice."""
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    for _ in range(3):
        f(Batch(x))
    namespace = f.state.inputs.tables[0].selector.call.__globals__
    lookups = []
    verified = namespace["__nc_verified"]
    monkeypatch.setitem(namespace, "__nc_verified", lambda key: lookups.append(key) or verified(key))
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(10):
        y = torch.randn(2, 4)
        assert torch.equal(f(Batch(y)), SCALE(y) * 2.0)
    assert len(lookups) <= 1 and slow == []
    kept = Batch(x)
    for _ in range(5):  # served by the tier, verified on its 2nd call, then the fast path
        assert torch.equal(f(kept), SCALE(x) * 2.0)
    assert slow == [1]
    lookups.clear()
    for _ in range(5):
        assert torch.equal(f(kept), SCALE(x) * 2.0)
    assert len(lookups) == 5  # the fast path again: the verified key serves it
    assert torch.equal(f(Batch(x, scale=2.0)), SCALE(x) * 2.0)
    assert f.stats.compiles == 1


@torch.no_grad()
def test_a_fresh_object_that_differs_recompiles_right() -> None:
    f = compile_once(step, backend="eager", on_mismatch="recompile", dynamic=False)
    x = torch.randn(2, 4)
    for scale in (2.0, 2.0, 3.0, 2.0, 3.0):
        assert torch.equal(f(Batch(x, scale=scale)), SCALE(x) * scale)
    assert f.stats.compiles == 2


@torch.no_grad()
def test_an_int_made_dynamic_advances_without_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sliding-window position: compiled dynamic on its second value, then an input."""
    f = compile_once(window_step, backend="eager", on_mismatch="recompile")
    state, x = Window(), torch.zeros(3)
    for position in (2, 3, 4):
        state.position = position
        f(x, state)
    slow = count_slow_calls(f, monkeypatch)
    for position in range(5, 60):
        state.position = position
        assert torch.equal(f(x, state), x + position)
    # The tier sends an object it keeps serving to the slow path its 2nd, 4th, 16th time (of 55).
    assert len(slow) <= 3
    assert f.stats.compiles == 2


@torch.no_grad()
def test_module_state_changed_is_not_served_by_the_tier() -> None:
    """The tier's key holds the module part of the fingerprint as verified: a weight replaced in
    a module the function reads goes to the slow path, which sees it."""
    model = torch.nn.Linear(4, 4)

    @compile_once(backend="eager")
    def f(batch: Batch) -> torch.Tensor:
        return model(batch.x)

    x = torch.randn(2, 4)
    for _ in range(3):
        f(Batch(x))
    model.weight = torch.nn.Parameter(torch.ones(4, 4))
    assert torch.equal(f(Batch(x)), model(x))


@torch.no_grad()
def test_a_reused_object_reaches_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new object kept for many calls (a cache for a whole generate()): the tier serves it once,
    the slow path verifies it the second time, the fast path serves it from then on."""
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    f(Batch(x))
    slow = count_slow_calls(f, monkeypatch)
    kept = Batch(x)
    for _ in range(10):
        f(kept)
    assert slow == [1]
    selector = f.state.inputs.tables[0].selector
    assert len(selector.verified.table) == 1


@torch.no_grad()
def test_reset_forgets_the_tier() -> None:
    f = compile_once(step, backend="eager")
    x = torch.randn(2, 4)
    for _ in range(3):
        f(Batch(x))
    selector = f.state.inputs.tables[0].selector
    assert selector.by_object
    f.reset()
    assert not selector.by_object
    assert torch.equal(f(Batch(x)), SCALE(x) * 2.0)
    assert f.stats.compiles == 1


@torch.no_grad()
def test_objects_that_hold_modules_are_not_tiered() -> None:
    """A module inside an argument object is watched by identity (Dynamo guards it so): no tier."""

    class Holder:
        def __init__(self) -> None:
            self.layer = torch.nn.Linear(4, 4)

    @compile_once(backend="eager")
    def f(holder: Holder, x: torch.Tensor) -> torch.Tensor:
        return holder.layer(x)

    x = torch.randn(2, 4)
    for _ in range(3):
        holder = Holder()
        assert torch.equal(f(holder, x), holder.layer(x))
    assert f.state.inputs.tables[0].selector.object_tier is None
