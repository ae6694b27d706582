"""N identical blocks, one compile: per_instance=False shares one state across instances."""

import torch
from torch import nn

from nocompile import compile_once


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    @compile_once(backend="eager", per_instance=False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


if __name__ == "__main__":
    blocks = nn.Sequential(*(Block(32) for _ in range(6))).eval()
    with torch.no_grad():
        y = blocks(torch.randn(2, 32))
    print(y.shape, "| compiles for 6 blocks:", Block.forward.stats.compiles)
