"""The supported torch range: refused below it, warned above it, silent inside it."""

from __future__ import annotations

import warnings

import pytest
import torch

from nocompile import NoCompileError, compile_once
from nocompile._compat import MIN_TORCH, NEWEST_VERIFIED_TORCH, torch_version


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_the_running_torch_is_in_the_verified_range() -> None:
    assert MIN_TORCH <= torch_version() <= NEWEST_VERIFIED_TORCH
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_once(backend="eager")(_double)


def test_too_old_torch_is_refused_at_decoration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1+cu126")
    with pytest.raises(NoCompileError, match=r"needs torch>=2\.11; this process runs torch 2\.9\.1\+cu126"):
        compile_once(_double)


def test_newer_torch_than_verified_warns_and_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    major, minor = NEWEST_VERIFIED_TORCH
    monkeypatch.setattr(torch, "__version__", f"{major}.{minor + 1}.0.dev20270101")
    with pytest.warns(RuntimeWarning, match=rf"verified on torch 2\.11 to {major}\.{minor}; .* pin torch<="):
        f = compile_once(backend="eager")(_double)
    monkeypatch.undo()
    x = torch.randn(3)
    torch.testing.assert_close(f(x), x * 2)


@pytest.mark.parametrize(
    ("text", "expected"), [("2.13.0+cpu", (2, 13)), ("2.14.1", (2, 14)), ("2.15.0a0+git1234", (2, 15))]
)
def test_version_parsing_ignores_local_and_pre_release_parts(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: tuple[int, int]
) -> None:
    monkeypatch.setattr(torch, "__version__", text)
    assert torch_version() == expected
