"""The address key of a CUDA-graphed call: where the tensors of its argument objects are.

A graph reads the tensors of non-tensor argument objects (a KV cache) at the addresses it
captured. ``GraphedCall`` reuses a set of graphs for a call with *other* objects only when their
tensors sit at exactly those addresses with the same layouts; ``AddressKey`` computes that key
(generated code: one attribute chain per tensor). Computed only by a call that brings objects the
last call did not; the replay of a call with the same objects never runs it. See
docs/cudagraphs.md, "Argument objects and stale addresses".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._arguments import Kind, Node
from ._codegen import bound_names

_KEY_NAMES = itertools.count()


def _addressable(root: Node) -> bool:
    """Whether every tensor under an argument object can be reached again by attribute.

    Only plain objects (not modules: they are matched by identity), walked whole: no value
    nocompile cannot look into (an opaque value, an object too deep), no module inside, and an
    expression for every object and tensor.
    """
    if root.kind is not Kind.OBJECT:
        return False
    for node in root.walk():
        if node.kind in (Kind.OPAQUE, Kind.MODULE):
            return False
        if node.kind is Kind.OBJECT and (node.expr is None or node.local is None):
            return False
        if node.kind is Kind.TENSOR and node.expr is None:
            return False
    return True


class AddressKey:
    """Where the tensors of a call's argument objects are: the key graph sets are reused by.

    Built from the compiling call's walk; called with a later call's argument objects (layout
    order), it returns ``(key, tensors)``: per argument object, either None (matched by
    identity: a module, an object not walked whole) or a tuple of ``(data_ptr, size, stride,
    dtype, device)`` of each tensor at the paths the compiling call had (``None`` where a path
    no longer holds a tensor), and the tensors themselves. Two keys are equal only if every
    tensor the graph reads sits at the same address with the same layout, so a replay reads
    exactly the current objects' memory. Generated code: one attribute chain per tensor.
    """

    def __init__(self, roots: Sequence[Node]) -> None:
        self.addressable = tuple(_addressable(root) for root in roots)
        self.paths: tuple[tuple[str, ...], ...] = tuple(
            tuple(n.path for n in root.walk() if n.kind is Kind.TENSOR) if ok else ()
            for root, ok in zip(roots, self.addressable, strict=True)
        )
        lines = ["def address_key(objects):", "    key = []", "    tensors = []"]
        for i, (root, ok) in enumerate(zip(roots, self.addressable, strict=True)):
            if not ok:
                lines.append("    key.append(None)")
                lines.append("    tensors.append(())")
                continue
            lines.append("    try:")
            lines.append(f"        {root.local} = objects[{i}]")
            names: list[str] = []
            for node in root.walk():
                if node is root:
                    continue
                if node.kind is Kind.OBJECT:
                    lines.append(f"        {node.local} = {node.expr}")
                elif node.kind is Kind.TENSOR:
                    name = f"_nc_t{len(names)}"
                    names.append(name)
                    lines.append(f"        {name} = {node.expr}")
            lines.append(f"        ts = ({''.join(n + ', ' for n in names)})")
            lines.append("        key.append(tuple(_describe(t) for t in ts))")
            lines.append("        tensors.append(ts)")
            lines.append("    except Exception:  # the object no longer has the structure: no address match")
            lines.append("        key.append(('unreachable',))")
            lines.append("        tensors.append(())")
        lines.append("    return tuple(key), tuple(tensors)")
        source = "\n".join(lines) + "\n"
        namespace: dict[str, Any] = {"_describe": _describe, **bound_names(source)}
        exec(compile(source, f"<nocompile address key {next(_KEY_NAMES)}>", "exec"), namespace)
        self.source = source
        self._fn: Callable[[tuple[Any, ...]], tuple[tuple[Any, ...], tuple[tuple[torch.Tensor, ...], ...]]] = namespace[
            "address_key"
        ]

    @property
    def any(self) -> bool:
        """Whether any argument object is matched by address (else identity alone decides)."""
        return any(self.addressable)

    def __call__(self, objects: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[tuple[torch.Tensor, ...], ...]]:
        return self._fn(objects)


def _describe(t: Any) -> Any:
    """What a graph assumes of a tensor it reads in place: address, sizes, strides, dtype, device."""
    if not isinstance(t, torch.Tensor):
        return None
    return (t.data_ptr(), t.size(), t.stride(), t.dtype, t.device)
