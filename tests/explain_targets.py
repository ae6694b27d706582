"""Targets and example factories for ``python -m nocompile explain`` tests (importable by name)."""

from __future__ import annotations

import torch

from models import Block
from nocompile import compile_once


@compile_once(backend="eager", guards="none")
def scale_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * 2 + y


def make_scale_add_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(2, 3), torch.ones(2, 3)


def make_mlp_inputs() -> torch.Tensor:
    """One tensor for ReferenceMLP(width=16); the CLI builds ReferenceMLP() itself."""
    return torch.randn(1, 16)


def make_block_inputs() -> tuple[Block, torch.Tensor]:
    """The instance first: the CLI uses it instead of building Block()."""
    return Block(width=4).eval(), torch.randn(2, 4)


def graph_break(x: torch.Tensor) -> torch.Tensor:
    """Data-dependent Python control flow: cannot be one graph."""
    if x.sum() > 0:
        return x + 1
    return x - 1
