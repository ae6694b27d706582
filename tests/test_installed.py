"""Run by .ci/wheel-check: the suite really exercised the installed wheel, not the checkout."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib

import pytest

import nocompile

EXPECTED = os.environ.get("NOCOMPILE_EXPECT_INSTALLED_IN")


@pytest.mark.skipif(not EXPECTED, reason="only under .ci/wheel-check (NOCOMPILE_EXPECT_INSTALLED_IN)")
def test_nocompile_is_imported_from_the_installed_wheel() -> None:
    assert EXPECTED is not None
    package = pathlib.Path(nocompile.__file__).resolve().parent
    assert package.is_relative_to(pathlib.Path(EXPECTED).resolve()), package
    assert importlib.metadata.version("nocompile") == nocompile.__version__
    assert (package / "py.typed").is_file()
    if os.environ.get("NOCOMPILE_EXPECT_NATIVE"):  # the wheel's C extension, not a build in the checkout
        from nocompile import _native

        assert pathlib.Path(_native.__file__).resolve().parent == package


def test_version_is_written_once() -> None:
    try:
        installed = importlib.metadata.version("nocompile")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout on PYTHONPATH (the GPU machine)
        pytest.skip("nocompile is not installed here: no package metadata to compare with")
    assert nocompile.__version__ == installed
