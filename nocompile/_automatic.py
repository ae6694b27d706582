"""Automatic dynamic sizes: which sizes and ints to compile as dynamic, and whether Dynamo did.

Under ``on_mismatch="recompile"`` a call that differs from the latest specialization of its
argument structure *only* in tensor sizes (same rank) and int values — arguments, or attributes
of argument objects (a cache's position counter) — is compiled once with those dynamic, the way
Dynamo's automatic dynamic shapes do it, instead of once per size. Every prompt length of a
``generate()`` is then one prefill specialization, not one each.

The compile asks Dynamo (``dynamic=None``): Dynamo keeps a record of each function's last
compiled sizes and ints, shared by nocompile's code copies, and makes exactly the changed ones
dynamic. nocompile predicts the same set (``differences``) and, after the compile, checks that
Dynamo really did (``kept_static``): a dim it made dynamic shows in its shape guards
(``2 <= L['x'].size()[0]``), an int it kept static has a value guard. Only then does the
specialization's key leave those values out (``_layout``: a dynamic dim or int counts as 0, 1
or "2 or more"; Dynamo's shape guards, evaluated on every call, say the rest). Otherwise the key
checks them exactly: never looser than what was compiled.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from ._layout import KeyFunction
from ._record import CompileRecord

#: Key properties automatic dynamic may loosen: a tensor's shape (and strides, which follow it)
#: and an int's value. A difference in anything else is a static recompile.
_SIZES, _STRIDES, _VALUES = "shape", "stride", "value"


@dataclasses.dataclass(frozen=True)
class Dynamic:
    """Dims (by tensor path) and ints (by path) to compile as dynamic."""

    dims: dict[str, tuple[int, ...]]
    ints: frozenset[str]

    def describe(self) -> list[str]:
        """``x dim 0``, ``cache.step``: one item per dynamic dim or int."""
        items = [f"{path} dim {d}" for path, dims in self.dims.items() for d in dims]
        return items + sorted(self.ints)


def differences(
    key_function: KeyFunction, compiled: tuple[Any, ...], given: tuple[Any, ...], already: Dynamic | None
) -> Dynamic | None:
    """What a call (``given``) differs in from a specialization (``compiled``, same key function),
    as dynamic dims and ints, joined with what the specialization already had dynamic; None when
    the call differs in anything else, or in nothing."""
    dims: dict[str, set[int]] = {path: set(ds) for path, ds in (already.dims.items() if already else ())}
    ints = set(already.ints if already else ())
    stride_paths: set[str] = set()
    changed = False
    for element, old, new in zip(key_function.elements, compiled, given, strict=True):
        if old == new:
            continue
        if element.prop == _SIZES and len(old) == len(new):
            grown = {d for d, (a, b) in enumerate(zip(old, new, strict=True)) if a != b and b >= 2}
            if not grown:  # a size now 0 or 1: Dynamo specializes those, a static specialization
                return None
            dims.setdefault(element.path, set()).update(grown)
            changed = True
        elif element.prop == _STRIDES:
            stride_paths.add(element.path)
        elif element.prop == _VALUES and type(old) is int and type(new) is int:
            ints.add(element.path)
            changed = True
        else:
            return None
    if not changed or not stride_paths <= set(dims):  # strides changed without the sizes: a layout change
        return None
    return Dynamic({path: tuple(sorted(ds)) for path, ds in dims.items()}, frozenset(ints))


_SIZE_SOURCE = re.compile(
    r"L\['([A-Za-z_][A-Za-z0-9_]*)'\]((?:\[[^\]]+\]|\.[A-Za-z_][A-Za-z0-9_]*)*)\.size\(\)\[(\d+)\]"
)
_VALUE_GUARDS = frozenset({"CONSTANT_MATCH", "EQUALS_MATCH", "ID_MATCH", "BOOL_MATCH"})


def dynamic_dims_in(shape_exprs: Iterable[str]) -> set[tuple[str, int]]:
    """``(path, dim)`` of every size Dynamo's shape guards mention (a dynamic dim)."""
    found = set()
    for expr in shape_exprs:
        for root, rest, dim in _SIZE_SOURCE.findall(expr):
            found.add((root + rest, int(dim)))
    return found


def kept_static(asked: Dynamic, shape_exprs: Iterable[str], record: CompileRecord | None) -> list[str]:
    """What was asked dynamic and Dynamo compiled static after all (empty: all as asked).

    Without a record of the guards (an ahead-of-time compile), everything counts as static.
    """
    if record is None or not record.guards:
        return asked.describe()
    dims = dynamic_dims_in(shape_exprs)
    valued = {g.name for g in record.guards if g.guard_type in _VALUE_GUARDS}
    static = [f"{path} dim {d}" for path, ds in asked.dims.items() for d in ds if (path, d) not in dims]
    return static + sorted(name for name in asked.ints if name in valued)
