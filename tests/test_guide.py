"""Claims of docs/guide.md and examples/ that no other test file pins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nocompile import GuardMismatchError, compile_once


class Shared(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(8, hidden)
        self.down = nn.Linear(hidden, 8)

    @compile_once(backend="eager", per_instance=False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


def test_shared_state_checks_each_instance_once() -> None:
    # per_instance=False: every instance of the same structure reuses one compile. The first call
    # of each instance has a new fingerprint (self's dicts), so Dynamo's guards verify that
    # instance once: one of another hidden size is a mismatch (its parameters' layout), not a
    # silent reuse. The guide says: share only among equals.
    Shared.forward.reset()
    small, other_small, large = Shared(16), Shared(16), Shared(32)
    x = torch.randn(2, 8)
    with torch.no_grad():
        small(x)
        torch.testing.assert_close(other_small(x), Shared.forward.__wrapped__(other_small, x))
        with pytest.raises(GuardMismatchError, match=r"self\.up\.weight: compiled for shape \(16, 8\)"):
            large(x)
    assert Shared.forward.stats.compiles == 1
