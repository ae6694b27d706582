"""The input check of ``guards="inputs"``: what a specialization was compiled for, checked cheaply.

At compile time nocompile projects the compiling call's ``ArgumentTree`` (``_arguments``: the
one walk over a call's arguments) onto what the check compares, a ``CheckLayout``, and writes a
small Python function, the *key function*, with exactly the decorated function's parameters (so Python binds
a call to it exactly as it binds the real call: positional or keyword, defaults, missing or extra
arguments). It returns one tuple, the *key*, of everything the compiled graph was specialized on:

* for each tensor (also inside lists, tuples and dicts): its class, shape (a dynamic dim
  contributes only whether it is 0, 1 or larger: Dynamo specializes 0 and 1), dtype, device,
  ``requires_grad`` and strides (the compiled code may assume them; a dynamic-dims tensor
  contributes ``is_contiguous()`` instead);
* each int, float, bool, str, None, enum, ``torch.dtype``/``torch.device`` value and its class
  (``1``, ``1.0`` and ``True`` hash alike, Dynamo does not treat them alike);
* the length of each list and tuple, and the keys of each dict, on the way down;
* ``training`` of each ``nn.Module`` argument (``self`` for a method);
* for any other object with a ``__dict__`` (a KV cache, a config object): its class, the names
  of its instance attributes, and each attribute by the same rules, up to
  ``MAX_OBJECT_DEPTH`` objects deep;
* ``torch.is_grad_enabled()``.

A call is fast when its key is in the table of compiled specializations. Generated code, rather
than a generic tree walk, because it is the per-call path: one tensor costs a handful of
attribute reads and a tuple. ``key_source`` keeps the text for ``explain``-style reports.

Dynamic dims leave *shape guards* — Python expressions over the call's locals such as
``4 <= L['x'].size()[0]`` — that dropping Dynamo's guards would throw away. ``ShapeCheck``
compiles them into a function with the same parameters, evaluated after the key matched.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._arguments import ArgumentTree, Kind, Node, walk
from ._codegen import call_list, code_signature, define_like, parameter_list, pass_on, tuple_source

KeyFn = Callable[..., tuple[Any, ...]]

_GRAD_ENABLED = "_grad_enabled"


@dataclasses.dataclass(frozen=True)
class KeyElement:
    """One element of the key: which argument (``path``), which property, how to compute it."""

    path: str
    prop: str
    expr: str


@dataclasses.dataclass
class KeyFunction:
    """A generated key function for one argument structure, with its labels and source."""

    fn: KeyFn
    elements: tuple[KeyElement, ...]
    source: str

    def describe(self, key: tuple[Any, ...]) -> list[tuple[str, str, Any]]:
        """``(path, property, value)`` for each element of ``key``."""
        return [(e.path, e.prop, v) for e, v in zip(self.elements, key, strict=True)]


def parameter_names(fn: types.FunctionType) -> list[str]:
    return list(code_signature(fn).parameters)


@dataclasses.dataclass(frozen=True)
class TensorArg:
    """A tensor the compiled graph was specialized on, and which of its dims are dynamic."""

    path: str
    expr: str
    tensor: torch.Tensor
    dynamic_dims: tuple[int, ...]

    def sizes(self) -> list[int | None]:
        """Sizes as the tensor check compares them: None for a dynamic dim."""
        return [None if d in self.dynamic_dims else int(s) for d, s in enumerate(self.tensor.shape)]

    def strides(self) -> list[int | None]:
        """Strides as the tensor check compares them: None where a later dim is dynamic.

        In the contiguous layout a dynamic-dims tensor is checked for (see the fast key), the
        stride of dim ``i`` is the product of the sizes after it, so it varies exactly when
        one of those is dynamic.
        """
        stride = self.tensor.stride()
        return [None if any(d > i for d in self.dynamic_dims) else int(stride[i]) for i in range(self.tensor.ndim)]


class _KeyWriter:
    """Projects an ``ArgumentTree`` onto what the check compares, two ways.

    ``elements`` is the full description (every property of every argument), for messages and
    reports. The per-call path uses ``fast`` (everything except what the tensor check covers)
    plus ``tensors`` (checked in C++ by Dynamo's own tensor-match check).
    """

    def __init__(self, tree: ArgumentTree) -> None:
        self.elements: list[KeyElement] = []
        self.fast: list[KeyElement] = []
        self.tensors: list[TensorArg] = []
        self.unchecked: list[str] = []
        for root in tree.roots:
            self.visit(root)
        self.add("torch", "grad_enabled", f"{_GRAD_ENABLED}()")

    def add(self, path: str, prop: str, expr: str, *, fast: bool = True) -> None:
        element = KeyElement(path, prop, expr)
        self.elements.append(element)
        if fast:
            self.fast.append(element)

    def visit(self, node: Node) -> None:
        path, expr = node.path, node.expr
        if expr is None:  # an attribute whose name Python cannot spell after a dot
            self.unchecked.append(path)
            return
        kind = node.kind
        if kind is Kind.TENSOR:
            self.tensor(node, expr)
        elif kind is Kind.MODULE:
            if path != "self":  # a method's own module is fixed by the state that compiled it
                self.add(path, "type", f"{expr}.__class__")
            self.add(path, "training", f"{expr}.training")
        elif kind is Kind.SCALAR:
            self.add(path, "type", f"{expr}.__class__")  # 1, 1.0 and True hash alike
            self.add(path, "value", expr)
        elif kind is Kind.CONSTANT:  # functions, builtins, classes by identity; ranges and slices by value
            self.add(path, "type", f"{expr}.__class__")
            if isinstance(node.value, slice):  # not hashable before Python 3.12
                self.add(path, "value", f"({expr}.start, {expr}.stop, {expr}.step)")
            else:
                self.add(path, "value", expr)
        elif kind is Kind.SEQUENCE:
            self.add(path, "type", f"{expr}.__class__")
            self.add(path, "length", f"len({expr})")
            self.children(node)
        elif kind is Kind.MAPPING:
            self.add(path, "keys", f"tuple(sorted({expr}))" if node.varkw else f"tuple({expr})")
            self.children(node)
        elif kind is Kind.OBJECT:
            # An argument object (a KV cache, a config): its class, its instance attributes' names,
            # and each attribute checked like an argument. The compiled code reads the tensors
            # inside it (their shapes were baked in) and its Python values (baked in as
            # constants). Class attributes, properties and ``__slots__`` are not followed. The
            # object is bound to a local where it is first read, so deep paths stay cheap.
            self.add(path, "type", f"({node.local} := {expr}).__class__")
            self.add(path, "attributes", f"tuple({node.local}.__dict__)")
            self.children(node)
        else:
            self.unchecked.append(f"{path} ({node.note})")

    def children(self, node: Node) -> None:
        for child in node.children:
            self.visit(child)

    def tensor(self, node: Node, expr: str) -> None:
        # The tensor check (class, dispatch keys, dtype, device, requires_grad, sizes, strides)
        # runs in C++; the fast key keeps only what it cannot express: for a dynamic dim,
        # whether the size is 0, 1 or more (Dynamo specializes 0 and 1), and contiguity.
        t, path, dims = node.value, node.path, node.dynamic_dims
        self.tensors.append(TensorArg(path, expr, t, dims))
        self.add(path, "type", f"{expr}.__class__", fast=False)
        if dims:
            self.add(path, "rank", f"{expr}.ndim", fast=False)
            shape = ", ".join(
                f"min({expr}.shape[{d}], 2)" if d in dims else f"{expr}.shape[{d}]" for d in range(t.ndim)
            )
            self.add(path, "shape (dynamic dims as min(size, 2))", f"({shape},)")
        else:
            self.add(path, "shape", f"{expr}.shape", fast=False)
        self.add(path, "dtype", f"{expr}.dtype", fast=False)
        self.add(path, "device", f"{expr}.device", fast=False)
        self.add(path, "requires_grad", f"{expr}.requires_grad", fast=False)
        if dims:
            self.add(path, "contiguous", f"{expr}.is_contiguous()")
        else:
            self.add(path, "stride", f"{expr}.stride()", fast=False)


@dataclasses.dataclass(frozen=True)
class CheckLayout:
    """What the input check compares for one argument structure: the projection of its tree."""

    fn: types.FunctionType
    elements: tuple[KeyElement, ...]
    """Every property of every argument: what messages and reports show (the full key)."""
    fast: tuple[KeyElement, ...]
    """What the per-call key computes: everything the C++ tensor check does not cover."""
    tensors: tuple[TensorArg, ...]
    """The tensors the C++ tensor check compares, arguments' objects' tensors included."""
    unchecked: tuple[str, ...]
    """Paths the check cannot look into."""

    @classmethod
    def of(cls, tree: ArgumentTree) -> CheckLayout:
        writer = _KeyWriter(tree)
        return cls(tree.fn, tuple(writer.elements), tuple(writer.fast), tuple(writer.tensors), tuple(writer.unchecked))

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(t.path for t in self.tensors)


def key_function(layout: CheckLayout) -> KeyFunction:
    """Generate the full key function of this structure (for messages and reports).

    The full key describes every property of every argument. The per-call path uses a
    ``Selector`` instead.
    """
    fn = layout.fn
    body = ",\n        ".join(e.expr for e in layout.elements)
    source = f"def key({parameter_list(fn)}):\n    return (\n        {body},\n    )\n"
    key_fn = define_like(fn, source, {_GRAD_ENABLED: torch.is_grad_enabled})["key"]
    return KeyFunction(key_fn, layout.elements, source)


def build_key_function(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
) -> tuple[KeyFunction, list[str]]:
    """The full key function of this call's structure and its unchecked paths, for a one-off call
    (a mismatch message describing the call that missed). Raises TypeError if the call does not bind."""
    layout = CheckLayout.of(walk(fn, args, kwargs, dynamic))
    return key_function(layout), list(layout.unchecked)


#: One specialization a selector may pick: its tensor check, its shape check (or None), its callable.
Candidate = tuple[Callable[..., bool], "Callable[..., bool] | None", Callable[..., Any]]


@dataclasses.dataclass
class Selector:
    """The per-call check of ``guards="inputs"`` for one argument structure.

    ``select(*args, **kwargs)`` (generated, with the decorated function's parameters) computes
    the *fast key* — scalar values and types, container structure, ``training``, grad mode —
    looks it up in ``table``, and returns the callable of the first specialization under that
    key whose tensor check (Dynamo's C++ tensor match on the call's tensors: class, dispatch
    keys, dtype, device, requires_grad, sizes, strides) and shape guards pass; None if none
    does. A hit that was not first moves to the front, so a repeated signature costs one check.

    ``call(*args, **kwargs)`` is the per-call path itself: the same choice, then the chosen
    callable called with the call's arguments — or, on a miss (or a call of another structure),
    ``slow(args, kwargs)``. One generated frame, no tuple of arguments built on the hit.
    """

    select: Callable[..., Callable[..., Any] | None]
    call: Callable[..., Any]
    key: KeyFn
    tensors: Callable[..., tuple[torch.Tensor, ...]]
    paths: tuple[str, ...]
    source: str
    table: dict[tuple[Any, ...], tuple[Candidate, ...]]
    lock: threading.Lock
    """Taken by ``add`` and by the generated code's reordering, so neither loses the other's candidate."""

    def add(self, key: tuple[Any, ...], candidate: Candidate) -> None:
        """Make ``candidate`` the first one under ``key``."""
        with self.lock:
            self.table[key] = (candidate, *self.table.get(key, ()))


def _unreachable_slow(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    raise RuntimeError("nocompile: a selector built without a slow path was called")


def build_selector(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _unreachable_slow,
) -> Selector:
    """The selector of this call's structure, walked afresh (for tests and one-off checks)."""
    return selector(CheckLayout.of(walk(fn, args, kwargs, dynamic)), slow)


def selector(
    layout: CheckLayout,
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _unreachable_slow,
    entry_prologue: tuple[str, Mapping[str, Any]] = ("", {}),
) -> Selector:
    """Generate the selector of this structure; ``slow(args, kwargs)`` serves misses.

    ``entry_prologue`` is source (and the globals it reads) that ``call`` runs first: with the
    state's prologue (``_entry.prologue``), ``call`` is the state's entry itself.
    """
    fn = layout.fn
    params, call = parameter_list(fn), call_list(fn)
    fast = tuple_source([e.expr for e in layout.fast])
    tensors = ", ".join(t.expr for t in layout.tensors)
    rebuilt_args, rebuilt_kwargs = pass_on(fn)
    source = (
        f"def key({params}):\n    return {fast}\n\n"
        # The fast key first: it binds the locals (``_nc_oN``) that paths into argument
        # objects go through.
        f"def tensors({params}):\n    __nc_key = {fast}\n"
        f"    return {tuple_source([t.expr for t in layout.tensors])}\n\n"
        f"def select({params}):\n"
        f"    __nc_key = {fast}\n"
        "    __nc_candidates = __nc_table.get(__nc_key)\n"
        "    if __nc_candidates is None:\n"
        "        return None\n"
        "    for __nc_check, __nc_shape_ok, __nc_target in __nc_candidates:\n"
        f"        if __nc_check({tensors}) and (__nc_shape_ok is None or __nc_shape_ok({call})):\n"
        "            if __nc_target is not __nc_candidates[0][2]:\n"
        "                __nc_promote(__nc_key, __nc_target)\n"
        "            return __nc_target\n"
        "    return None\n\n"
        # The per-call path: the check inside try (a call of another structure raises there),
        # the chosen callable outside it (its own exceptions are the user's). The loop repeats
        # select's on purpose: one more Python call per call is a measurable share of the check.
        f"def call({params}):\n"
        f"{entry_prologue[0]}"
        "    try:\n"
        f"        __nc_key = {fast}\n"
        "        __nc_candidates = __nc_table.get(__nc_key)\n"
        "        __nc_hit = None\n"
        "        if __nc_candidates is not None:\n"
        "            for __nc_check, __nc_shape_ok, __nc_target in __nc_candidates:\n"
        f"                if __nc_check({tensors}) and (__nc_shape_ok is None or __nc_shape_ok({call})):\n"
        "                    __nc_hit = __nc_target\n"
        "                    break\n"
        "    except Exception:\n"
        "        __nc_hit = None\n"
        "    if __nc_hit is None:\n"
        f"        return __nc_slow({rebuilt_args}, {rebuilt_kwargs})\n"
        "    if __nc_hit is not __nc_candidates[0][2]:\n"
        "        __nc_promote(__nc_key, __nc_hit)\n"
        f"    return __nc_hit({call})\n"
    )
    table: dict[tuple[Any, ...], tuple[Candidate, ...]] = {}

    lock = threading.Lock()

    def promote(key: tuple[Any, ...], target: Callable[..., Any]) -> None:
        with lock:  # rare (a hit that was not first); never loses a candidate a compile adds meanwhile
            candidates = table.get(key, ())
            table[key] = tuple(sorted(candidates, key=lambda candidate: candidate[2] is not target))

    defined = define_like(
        fn,
        source,
        {
            **entry_prologue[1],
            _GRAD_ENABLED: torch.is_grad_enabled,
            "__nc_table": table,
            "__nc_promote": promote,
            "__nc_slow": slow,
        },
        named_like=("call",),
    )
    return Selector(
        select=defined["select"],
        call=defined["call"],
        key=defined["key"],
        tensors=defined["tensors"],
        paths=layout.paths,
        source=source,
        table=table,
        lock=lock,
    )


_LOCAL = re.compile(r"L\['([A-Za-z_][A-Za-z0-9_]*)'\]")


@dataclasses.dataclass
class ShapeCheck:
    """Dynamo's symbolic shape guards for one specialization, as one Python function."""

    expressions: tuple[str, ...]
    fn: Callable[..., bool]

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return self.fn(*args, **kwargs)


def build_shape_check(fn: types.FunctionType, expressions: Sequence[str]) -> ShapeCheck | None:
    """A function of the decorated function's parameters that is True when every guard holds."""
    if not expressions:
        return None
    rewritten = [_LOCAL.sub(r"\1", e) for e in expressions]
    body = " and ".join(f"({e})" for e in rewritten)
    source = f"def shape_ok({parameter_list(fn)}):\n    return bool({body})\n"
    check = define_like(fn, source, {"torch": torch, "math": math})["shape_ok"]
    return ShapeCheck(tuple(expressions), check)


def format_value(prop: str, value: Any) -> str:
    if prop == "shape":
        return str(tuple(value))
    if prop == "type" and isinstance(value, type):
        return value.__name__
    return repr(value)


def describe_key(key_fn: KeyFunction, key: tuple[Any, ...]) -> str:
    """The key as ``path: prop=value, ...`` text, one group per argument."""
    groups: dict[str, list[str]] = {}
    for path, prop, value in key_fn.describe(key):
        if prop == "stride":
            continue  # noise in a summary; differences still name it
        groups.setdefault(path, []).append(f"{prop}={format_value(prop, value)}")
    return "; ".join(f"{path}: {', '.join(props)}" for path, props in groups.items())


def describe_difference(
    compiled_fn: KeyFunction, compiled: tuple[Any, ...], given_fn: KeyFunction, given: tuple[Any, ...]
) -> list[str]:
    """One line per property that differs between a compiled key and a call's key.

    The two keys may come from different structures (a list where a tensor was): properties
    are matched by argument path and name, and a path present on one side only is reported.
    """
    old = {(path, prop): value for path, prop, value in compiled_fn.describe(compiled)}
    new = {(path, prop): value for path, prop, value in given_fn.describe(given)}
    lines = []
    for (path, prop), value in old.items():
        if (path, prop) not in new:
            if not any(p == path for p, _ in new):
                lines.append(f"{path}: missing from this call")
            continue
        if new[(path, prop)] != value:
            lines.append(
                f"{path}: {prop} compiled for {format_value(prop, value)}, got {format_value(prop, new[(path, prop)])}"
            )
    for path, _prop in new:
        if not any(p == path for p, _ in old):
            lines.append(f"{path}: not in the compiled signature (new argument or element)")
            break
    return list(dict.fromkeys(lines))
