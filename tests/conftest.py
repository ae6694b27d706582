"""Shared test helpers. Most tests compile with backend="eager": same Dynamo path, no C++ build."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_disable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide for themselves whether NOCOMPILE_DISABLE (or NOCOMPILE_CACHE_DIR) is set."""
    monkeypatch.delenv("NOCOMPILE_DISABLE", raising=False)
    monkeypatch.delenv("NOCOMPILE_CACHE_DIR", raising=False)
