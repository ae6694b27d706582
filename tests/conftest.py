"""Shared test helpers. Most tests compile with backend="eager": same Dynamo path, no C++ build."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_disable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide for themselves whether NOCOMPILE_DISABLE is set."""
    monkeypatch.delenv("NOCOMPILE_DISABLE", raising=False)
