"""guards="dynamo" recompiles like stock torch.compile, automatic dynamic included (issue #25 item 5).

A sliding-window position (an int attribute of an argument object advancing each call) used to
recompile once per value under guards="dynamo" until Dynamo's recompile limit; stock compiles it
dynamic on the second value. ``dynamic=False`` keeps every recompile static.
"""

from __future__ import annotations

import torch

from nocompile import compile_once


class Window:
    def __init__(self) -> None:
        self.position = 0


def _step(x: torch.Tensor, state: Window) -> torch.Tensor:
    return x + state.position


def test_an_advancing_int_compiles_dynamic_on_its_second_value() -> None:
    f = compile_once(_step, backend="eager", guards="dynamo")
    state, x = Window(), torch.zeros(3)
    for position in range(2, 40):
        state.position = position
        assert torch.equal(f(x, state), x + position)
    assert f.stats.compiles == 2  # the first value static, the second dynamic for every later one


def test_a_changing_size_compiles_dynamic_on_its_second_size() -> None:
    f = compile_once(lambda x: x * 2, backend="eager", guards="dynamo")
    for n in range(2, 20):
        x = torch.ones(n)
        assert torch.equal(f(x), x * 2)
    assert f.stats.compiles == 2


def test_dynamic_false_keeps_every_recompile_static() -> None:
    f = compile_once(_step, backend="eager", guards="dynamo", dynamic=False)
    state, x = Window(), torch.zeros(3)
    for position in range(2, 6):
        state.position = position
        assert torch.equal(f(x, state), x + position)
    assert f.stats.compiles == 4


def test_stock_compiles_the_same_twice() -> None:
    """The behaviour matched: stock torch.compile on the same calls."""
    counts = {"frames": 0}

    def counting(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        counts["frames"] += 1
        return gm.forward

    fn = torch.compile(lambda x, state: x + state.position, backend=counting, fullgraph=True)
    state, x = Window(), torch.zeros(3)
    for position in range(2, 40):
        state.position = position
        assert torch.equal(fn(x, state), x + position)
    assert counts["frames"] == 2
