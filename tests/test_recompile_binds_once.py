"""A recompile binds the call once and walks its arguments at most twice (docs/design.md, "The first call").

The miss builds the request (one bind, one walk); automatic dynamic walks the same bound
arguments again with what changed marked dynamic (``Request.alternative``); nothing binds again.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nocompile import _arguments, _inputs, compile_once


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"binds": 0, "walks": 0}
    bind, walk = _arguments.bound_arguments, _arguments.walk

    def counting_bind(*a: Any, **kw: Any) -> Any:
        counts["binds"] += 1
        return bind(*a, **kw)

    def counting_walk(*a: Any, **kw: Any) -> Any:
        counts["walks"] += 1
        return walk(*a, **kw)

    monkeypatch.setattr(_arguments, "bound_arguments", counting_bind)
    monkeypatch.setattr(_inputs, "walk", counting_walk)
    return counts


def test_a_recompile_with_automatic_dynamic_binds_once_and_walks_twice(counted: dict[str, int]) -> None:
    @compile_once(backend="eager", on_mismatch="recompile")
    def f(x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return x * scale

    f(torch.ones(3))
    counted.update(binds=0, walks=0)
    out = f(torch.ones(5))  # a new size: a miss, then a recompile dynamic in x's dim 0
    assert torch.equal(out, torch.full((5,), 2.0))
    assert f.stats.compiles == 2
    assert f.specializations[-1].dynamic is not None, "expected automatic dynamic to mark the size dynamic"
    assert counted == {"binds": 1, "walks": 2}


def test_a_recompile_without_automatic_dynamic_binds_and_walks_once(counted: dict[str, int]) -> None:
    @compile_once(backend="eager", on_mismatch="recompile")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    f(torch.ones(3))
    counted.update(binds=0, walks=0)
    f(torch.ones(3, dtype=torch.float64))  # another dtype: not a size, so nothing to make dynamic
    assert f.stats.compiles == 2
    assert counted == {"binds": 1, "walks": 1}
