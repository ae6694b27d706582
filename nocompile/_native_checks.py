"""nocompile's own C checks (``nocompile/_native.c``, an optional extension): loading them, and
what each one compares by address.

This is nocompile's code, not torch's: a version tree (``_version_tree``) hands a check to
Dynamo's guard manager as one leaf, which does in one C call what guard-manager nodes do one a
value (a KV cache's layers, a helper function's parts, a decorator's closure cells). Where the
extension is not built, or does not apply (no dict version tags), ``NATIVE`` is None and the
trees check the same values with guard-manager nodes.
"""

from __future__ import annotations

import dataclasses
import os
import types
from typing import Any

from . import _compat


@dataclasses.dataclass(frozen=True)
class NativeCheck:
    """One of nocompile's C checks and what it compares by address: ``held`` must outlive every
    call of ``check`` (``_version_tree.VersionTree.native`` keeps it, and releases the check first)."""

    check: Any
    held: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class NativeChecks:
    """nocompile's C checks (``nocompile/_native.c``), each made from a value as it is now and then
    called with the value at a version tree's node (``VersionTree.native``)."""

    module: Any
    """``nocompile._native``."""

    def items(self, sequence: list[Any] | tuple[Any, ...], indices: tuple[int, ...]) -> NativeCheck:
        """The length, and each item's class (by identity) and ``__dict__`` version tag."""
        classes = tuple(type(sequence[i]) for i in indices)
        return NativeCheck(self.module.ItemsCheck(sequence, indices, classes), classes)

    def cells(self, cells: tuple[Any, ...]) -> NativeCheck:
        """Each closure cell holds an equal value of the same type (an empty cell raises here)."""
        values = tuple(cell.cell_contents for cell in cells)
        return NativeCheck(self.module.CellsCheck(values), values)

    def function(self, fn: types.FunctionType) -> NativeCheck:
        """The same code, defaults, keyword defaults and closure contents, by identity (an empty
        closure cell raises here)."""
        contents = tuple(cell.cell_contents for cell in fn.__closure__ or ())
        parts = (fn.__code__, fn.__defaults__, fn.__kwdefaults__, contents)
        return NativeCheck(self.module.FunctionCheck(*parts), parts)


def _load() -> NativeChecks | None:
    """nocompile's C checks where the extension is built and applies (Python 3.10 to 3.12, with
    dict version tags: ``_compat.DICT_VERSION``), else None: version trees then check the same
    values with guard-manager nodes, one or more a value. ``NOCOMPILE_NATIVE=0`` (or ``false``, ``no``,
    ``off``) in the environment at import turns them off: to rule them out when debugging, or to
    measure what they save."""
    switched_off = os.environ.get("NOCOMPILE_NATIVE", "").strip().lower() in {"0", "false", "no", "off"}
    if _compat.DICT_VERSION is None or switched_off:
        return None
    try:
        from . import _native
    except ImportError:  # installed without a C compiler: the extension is optional
        return None
    if not hasattr(_native, "ItemsCheck"):  # built on Python 3.13 or later: nothing in it
        return None
    return NativeChecks(_native)


#: nocompile's C checks, or None where the extension was not built or does not apply here.
NATIVE = _load()


def release(checks: list[Any]) -> None:
    """Release each of ``checks`` (C checks, ``NativeCheck.check``): a released check is false and
    holds nothing (``_version_tree.VersionTree.native`` says when)."""
    for check in checks:
        check.release()
