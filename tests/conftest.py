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


@pytest.fixture(autouse=True)
def _unaudited(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``@pytest.mark.unaudited(reason=...)``: the test demonstrates on purpose what the audit
    (``NOCOMPILE_AUDIT=1``, under which CI runs the suite a second time) would refuse, such as a
    change ``guards="inputs"`` does not see; it runs with the audit off. Every other test runs
    with ``NOCOMPILE_AUDIT`` as the process has it. The reason is required: it says which miss."""
    marker = request.node.get_closest_marker("unaudited")
    if marker is None:
        return
    if not marker.kwargs.get("reason") and not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.unaudited needs reason='...'")
    monkeypatch.setenv("NOCOMPILE_AUDIT", "0")
