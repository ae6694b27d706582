"""Every ``torch.nn`` module class, through ``compile_once``, against eager.

``nn_zoo`` lists every class ``torch.nn`` exports with a small seeded call: the ones stock
``torch.compile(fullgraph=True)`` compiles (``CASES``), the ones it refuses with stock's reason
(``REFUSED``), and the ones with no call of their own (``NOT_CALLABLE``). Each case runs in both
forms users write for a module they do not edit, ``compile_once(module)`` and
``module.forward = compile_once(module.forward)``, twice (the second call is the fast path).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from nn_zoo import CASES, NOT_CALLABLE, REFUSED, REFUSED_CASES, Case, all_class_names, class_of

from nocompile import NoCompileError, compile_once


def _assert_same(got: Any, expected: Any) -> None:
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    elif isinstance(expected, (tuple, list)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e)
    else:
        assert got == expected


def test_every_torch_nn_class_is_in_exactly_one_list() -> None:
    covered = [class_of(case) for case in CASES]
    buckets = [set(covered), set(REFUSED), set(NOT_CALLABLE)]
    names = all_class_names()
    for name in names:
        assert sum(name in bucket for bucket in buckets) == 1, name
    assert set().union(*buckets) == set(names)
    for required in ("Sequential", "TransformerEncoder", "TransformerEncoderLayer", "MultiheadAttention"):
        assert required in covered


@pytest.mark.parametrize("form", ["module", "bound method"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_compiled_module_equals_eager(case: Case, form: str) -> None:
    module = case.make()
    with torch.no_grad():
        expected = module(*case.inputs(), **case.kwargs())
        if form == "module":
            compiled: Any = compile_once(module, backend="eager")
        else:
            module.forward = compile_once(module.forward, backend="eager")
            compiled = module
        for _ in range(2):
            _assert_same(compiled(*case.inputs(), **case.kwargs()), expected)
    stats = compiled.stats if form == "module" else module.forward.stats
    assert (stats.compiles, stats.calls) == (1, 2)


@pytest.mark.parametrize("case", REFUSED_CASES, ids=[case.name for case in REFUSED_CASES])
def test_what_stock_refuses_is_refused_with_dynamos_reason(case: Case) -> None:
    reason = REFUSED[class_of(case)]
    torch._dynamo.reset()
    with torch.no_grad(), pytest.raises(Exception, match=re.escape(reason)) as stock:
        torch.compile(case.make(), fullgraph=True, backend="eager")(*case.inputs(), **case.kwargs())
    assert str(stock.value).splitlines()[0] == reason  # the list stays honest as torch changes
    with torch.no_grad(), pytest.raises(NoCompileError, match="as one graph") as ours:
        compile_once(case.make(), backend="eager")(*case.inputs(), **case.kwargs())
    assert reason.split("(")[0].strip() in str(ours.value)
