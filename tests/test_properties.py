"""Property tests: any sequence of calls with the compiled signature compiles once and matches eager."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import eager_block
from nocompile import compile_once

SHAPE = (3, 4)

finite = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False, width=32)
tensor_values = st.lists(finite, min_size=12, max_size=12).map(lambda v: torch.tensor(v).reshape(SHAPE))
call_sequences = st.lists(st.tuples(tensor_values, tensor_values), min_size=1, max_size=8)

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    return torch.where(x > y, x * alpha, y - x).sum(dim=1) + y.mean()


@SETTINGS
@given(calls=call_sequences, policy=st.sampled_from(["none", "inputs", "dynamo"]))
def test_function_compiles_once_and_matches_eager(calls: list[tuple[torch.Tensor, torch.Tensor]], policy: str) -> None:
    f = compile_once(backend="eager", guards=policy)(reference)  # type: ignore[call-overload]
    for x, y in calls:
        torch.testing.assert_close(f(x, y), reference(x, y))
    assert f.stats.compiles == 1
    assert f.stats.calls == len(calls)


@SETTINGS
@given(calls=st.lists(st.lists(finite, min_size=8, max_size=8), min_size=1, max_size=8))
def test_module_compiles_once_and_matches_eager(calls: list[list[float]]) -> None:
    from models import Block

    block = Block()
    for values in calls:
        x = torch.tensor(values).reshape(1, 8)
        torch.testing.assert_close(block(x), eager_block(block, x))
    assert block.forward.stats.compiles == 1
