"""``reset()`` reaches every holder of a compiled state: a bound method taken before the reset,
a module proxy and its ``forward``, and a state shared by a class's instances.

The change each test makes after the first compile is a class attribute, which the fingerprint
does not see (docs/footguns.md, "What guards="inputs" does not see"): ``reset()`` is what the
docs tell users to call then. A holder that kept running the code compiled before the reset
would return the old scale.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from nocompile import compile_once


def _scaled_class(**options: Any) -> type[nn.Module]:
    class Scaled(nn.Module):
        scale = 2.0

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        @compile_once(backend="eager", **options)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * self.scale

    return Scaled


def _expected(model: nn.Module, x: torch.Tensor, scale: float) -> torch.Tensor:
    with torch.no_grad():
        return model.lin(x) * scale  # type: ignore[operator]


@pytest.mark.parametrize("guards", ["inputs", "none"])
def test_a_bound_method_held_across_reset_recompiles(guards: str) -> None:
    Scaled = _scaled_class(guards=guards)
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        model(x)
        held = model.forward  # taken once compiled: it holds the per-call path of then
        for _ in range(3):
            torch.testing.assert_close(held(x), _expected(model, x, 2.0))
        assert model.forward.stats.compiles == 1
        model.forward.reset()
        Scaled.scale = 3.0  # not in the fingerprint: only a reset makes it show
        torch.testing.assert_close(held(x), _expected(model, x, 3.0))
        assert model.forward.stats.compiles == 1  # counters were zeroed: this is a new compile
        assert len(model.forward.specializations) == 1
        # The held method is back on the per-call path: it enters where a fresh lookup does.
        assert held.__func__.func is model.forward.__func__.func
        torch.testing.assert_close(model(x), _expected(model, x, 3.0))
        torch.testing.assert_close(held(x), _expected(model, x, 3.0))
        assert model.forward.stats.compiles == 1


def test_a_module_proxy_and_its_held_forward_recompile_after_reset() -> None:
    class Plain(nn.Module):
        scale = 2.0

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * self.scale

    model, x = Plain(), torch.randn(2, 4)
    w = compile_once(model, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(w(x), _expected(model, x, 2.0))
        forward = w.forward
        torch.testing.assert_close(forward(x), _expected(model, x, 2.0))
        assert w.stats.compiles == 1
        w.reset()
        Plain.scale = 3.0
        torch.testing.assert_close(forward(x), _expected(model, x, 3.0))
        assert w.stats.compiles == 1 and w.stats.calls == 1
        torch.testing.assert_close(w(x), _expected(model, x, 3.0))
        w.reset()
        Plain.scale = 4.0
        torch.testing.assert_close(w(x), _expected(model, x, 4.0))
        torch.testing.assert_close(forward(x), _expected(model, x, 4.0))
        assert w.stats.compiles == 1


def test_a_shared_state_reset_on_the_class_reaches_instances_and_held_methods() -> None:
    Scaled = _scaled_class(per_instance=False)
    first, second, x = Scaled(), Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        first(x)
        held = first.forward
        torch.testing.assert_close(held(x), _expected(first, x, 2.0))
        torch.testing.assert_close(second(x), _expected(second, x, 2.0))
        compiled = Scaled.forward.stats.compiles
        assert compiled >= 1
        Scaled.forward.reset()
        assert Scaled.forward.stats.compiles == 0
        Scaled.scale = 3.0
        torch.testing.assert_close(held(x), _expected(first, x, 3.0))
        assert Scaled.forward.stats.compiles == 1
        assert held.__func__.func is first.forward.__func__.func  # on the per-call path again
        torch.testing.assert_close(second(x), _expected(second, x, 3.0))
        torch.testing.assert_close(first(x), _expected(first, x, 3.0))
        torch.testing.assert_close(held(x), _expected(first, x, 3.0))
        assert Scaled.forward.stats.compiles <= compiled  # no more compiles than before the reset


def test_reset_drops_what_the_selector_verified() -> None:
    """The selector of a reset state keeps no candidate, no verified key and no version tree."""
    Scaled = _scaled_class()
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        model(x)
        model(x)
    state = model.forward.state
    (table,) = state.inputs.tables
    selector = table.selector
    assert selector.table and selector.verified.table
    model.forward.reset()
    assert not selector.table and not selector.verified.table
    for watch in (selector.module_watch, selector.object_watch):
        if watch is not None:
            assert not watch[0]._trees


def test_a_bound_method_taken_before_the_first_call_is_on_the_per_call_path_after_it() -> None:
    """It holds the state's direct entry, whose target becomes the input check's per-call path
    (without the entry's prologue: each call counted once)."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    net, x = Net(), torch.randn(2, 4)
    held = net.forward  # before anything compiled
    expected = net.linear(x)
    state = net.forward.state
    assert state.inputs is not None
    lookups: list[int] = []
    original = state.inputs.lookup

    def counting(*args: Any, **kwargs: Any) -> Any:
        lookups.append(1)
        return original(*args, **kwargs)

    state.inputs.lookup = counting  # type: ignore[method-assign]
    for _ in range(6):
        torch.testing.assert_close(held(x), expected)
    assert len(lookups) <= 1  # one verification of the fingerprint, then the per-call path
    assert (net.forward.stats.calls, net.forward.stats.compiles) == (6, 1)
