"""The reference model of the measurements in docs/design.md and ``python -m nocompile bench``.

A residual MLP: ``layers`` blocks of ``x + gelu(linear(x))``, then a LayerNorm. Small enough
that per-call overhead dominates at batch 1, which is exactly what nocompile is about.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceMLP(nn.Module):
    """``layers`` residual Linear+GELU blocks of ``width`` features, then LayerNorm."""

    def __init__(self, width: int = 16, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + nn.functional.gelu(layer(x))
        out: torch.Tensor = self.norm(x)
        return out


def sequential_mlp(width: int = 16, layers: int = 4) -> nn.Sequential:
    """The reference's layers as an ``nn.Sequential`` (Linear, GELU, ..., LayerNorm; no residual):
    a model whose ``forward`` is torch's own."""
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*parts, nn.LayerNorm(width))


class LayerStack(nn.Module):
    """A Sequential's layers called in turn by a ``forward`` of the user's own: the class a user
    would decorate to get what ``compile_once(sequential_mlp())`` compiles."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
