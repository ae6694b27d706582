"""Type-checker test: ``compile_once`` keeps a function's parameter and return types.

Not collected by pytest: ``mypy`` checks this file (``[tool.mypy] files`` in pyproject.toml,
run by ``.ci/run``). Each ``assert_type`` fails the check if a type is lost. Each
``# type: ignore[...]`` marks a call that *must* be an error: under ``--strict`` mypy reports an
ignore that suppresses nothing (``warn_unused_ignores``), so if the decorator erased the
parameters to ``...``/``Any``, those lines would fail the check too.
"""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import assert_type

from nocompile import CompiledFunction, CompileStats, compile_once


@compile_once
def scale(x: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
    return x * factor


@compile_once(backend="eager", guards="none")
def split(x: torch.Tensor, *, parts: int) -> tuple[torch.Tensor, ...]:
    return x.chunk(parts)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @compile_once(backend="eager")
    def forward(self, x: torch.Tensor, residual: bool = True) -> torch.Tensor:
        y: torch.Tensor = self.linear(x)
        return x + y if residual else y


def check_functions(x: torch.Tensor) -> None:
    # Return types survive, bare and keyword forms alike.
    assert_type(scale(x), torch.Tensor)
    assert_type(scale(x, 3.0), torch.Tensor)
    assert_type(scale(x, factor=3.0), torch.Tensor)
    assert_type(split(x, parts=2), tuple[torch.Tensor, ...])
    # Parameter types survive: each of these calls is an error for the checker.
    scale("not a tensor")  # type: ignore[arg-type]
    scale(x, factor="big")  # type: ignore[arg-type]
    scale(x, scaling=3.0)  # type: ignore[call-arg]
    split(x, 2)  # type: ignore[call-arg]  # keyword-only stays keyword-only
    # The decorator's own surface.
    assert_type(scale.stats, CompileStats)
    assert_type(scale.reset(), None)
    assert isinstance(scale, CompiledFunction)


def check_methods(block: Block, x: torch.Tensor) -> None:
    # Looked up through an instance, the method is bound: ``self`` is gone from the parameters.
    assert_type(block.forward(x), torch.Tensor)
    assert_type(block.forward(x, residual=False), torch.Tensor)
    block.forward(x, residual="yes")  # type: ignore[arg-type]
    block.forward()  # type: ignore[call-arg]
    # On the class: the CompiledFunction, with counters summed over live instances.
    assert_type(Block.forward.stats, CompileStats)
    Block.forward.reset()


class Scaler:
    """Not a module: ``instance.method`` also carries ``stats`` and ``reset`` for the checker."""

    @compile_once(backend="eager")
    def apply(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        return x * factor


def check_plain_methods(scaler: Scaler, x: torch.Tensor) -> None:
    assert_type(scaler.apply(x, 2.0), torch.Tensor)
    scaler.apply(x)  # type: ignore[call-arg]
    assert_type(scaler.apply.stats, CompileStats)
    scaler.apply.reset()
