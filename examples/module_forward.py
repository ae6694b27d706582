"""compile_once on nn.Module.forward: one compiled state per instance, weights read on every call."""

import torch
from torch import nn

from nocompile import compile_once


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10))

    @compile_once(backend="eager")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).log_softmax(-1)


if __name__ == "__main__":
    model = Classifier().eval()
    x = torch.randn(8, 32)
    with torch.no_grad():
        before = model(x)
        model.body[0].weight.mul_(0.5)  # in-place weight changes are seen by the next call
        after = model(x)
    print("changed:", not torch.allclose(before, after), "|", model.forward.stats)
