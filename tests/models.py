"""Small modules used across the tests, at module level so that pickle can find them."""

from __future__ import annotations

import torch
from torch import nn

from nocompile import compile_once


class Block(nn.Module):
    """Linear + GELU residual block with a LayerNorm; one state per instance."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    @compile_once(backend="eager", guards="none")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + nn.functional.gelu(self.linear(x)))


class SharedBlock(nn.Module):
    """Same as Block, but every instance shares one compiled state."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    @compile_once(backend="eager", guards="none", per_instance=False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + nn.functional.gelu(self.linear(x)))


def eager_block(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What Block/SharedBlock.forward computes, without nocompile."""
    return module.norm(x + nn.functional.gelu(module.linear(x)))  # type: ignore[operator]
