"""The input check of ``guards="inputs"``: what a specialization was compiled for, checked cheaply.

At compile time nocompile walks the compiling call's arguments and writes a small Python
function, the *key function*, with exactly the decorated function's parameters (so Python binds
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
import enum
import functools
import math
import re
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._codegen import call_list, code_signature, define_like, parameter_list, pass_on, tuple_source, varkw_name

KeyFn = Callable[..., tuple[Any, ...]]

_SCALARS = (int, float, bool, str, type(None), enum.Enum, torch.dtype, torch.device)
# Arguments the compiled code calls or indexes with: Dynamo specializes on exactly which.
_BY_VALUE = (types.FunctionType, types.BuiltinFunctionType, type, range)
_GRAD_ENABLED = "_grad_enabled"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One element of the key: which argument (``path``), which property, how to compute it."""

    path: str
    prop: str
    expr: str


@dataclasses.dataclass
class KeyFunction:
    """A generated key function for one argument structure, with its labels and source."""

    fn: KeyFn
    entries: tuple[Entry, ...]
    source: str

    def describe(self, key: tuple[Any, ...]) -> list[tuple[str, str, Any]]:
        """``(path, property, value)`` for each element of ``key``."""
        return [(e.path, e.prop, v) for e, v in zip(self.entries, key, strict=True)]


def parameter_names(fn: types.FunctionType) -> list[str]:
    return list(code_signature(fn).parameters)


def bound_arguments(fn: types.FunctionType, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults applied (the slow, exact binding)."""
    bound = code_signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


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
        return [
            None if any(d > i for d in self.dynamic_dims) else int(stride[i]) for i in range(self.tensor.ndim)
        ]
#: How deep the check follows objects' attributes (a cache object -> its list of layers -> a
#: layer is depth 2), and how many key elements it writes before it stops following them.
MAX_OBJECT_DEPTH = 4
MAX_ENTRIES = 20_000
_NOT_FOLLOWED = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    functools.partial,
)


class _Builder:
    """Walks one call's arguments and writes down what to check, two ways.

    ``entries`` is the full description (every property of every argument), for messages and
    reports. The per-call path uses ``fast`` (everything except what the tensor check
    covers) plus ``tensors`` (checked in C++ by Dynamo's own tensor-match check).
    """

    def __init__(self, dynamic: Mapping[str, tuple[int, ...]]) -> None:
        self.dynamic = dynamic
        self.entries: list[Entry] = []
        self.fast: list[Entry] = []
        self.tensors: list[TensorArg] = []
        self.unchecked: list[str] = []
        self.objects = 0
        self.depth = 0

    def add(self, path: str, prop: str, expr: str, *, fast: bool = True) -> None:
        entry = Entry(path, prop, expr)
        self.entries.append(entry)
        if fast:
            self.fast.append(entry)

    def visit(self, value: Any, expr: str, path: str, top_name: str | None) -> None:
        if isinstance(value, torch.Tensor):
            self.tensor(value, expr, path, top_name)
        elif isinstance(value, torch.nn.Module):
            if path != "self":  # a method's own module is fixed by the state that compiled it
                self.add(path, "type", f"{expr}.__class__")
            self.add(path, "training", f"{expr}.training")
        elif isinstance(value, _SCALARS):
            self.add(path, "type", f"{expr}.__class__")  # 1, 1.0 and True hash alike
            self.add(path, "value", expr)
        elif isinstance(value, _BY_VALUE):  # functions, builtins, classes by identity; ranges by value
            self.add(path, "type", f"{expr}.__class__")
            self.add(path, "value", expr)
        elif isinstance(value, slice):  # not hashable before Python 3.12
            self.add(path, "type", f"{expr}.__class__")
            self.add(path, "value", f"({expr}.start, {expr}.stop, {expr}.step)")
        elif isinstance(value, (list, tuple)):
            self.add(path, "type", f"{expr}.__class__")
            self.add(path, "length", f"len({expr})")
            for i, item in enumerate(value):
                self.visit(item, f"{expr}[{i}]", f"{path}[{i}]", None)
        elif isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
            self.add(path, "keys", f"tuple({expr})")
            for k, item in value.items():
                self.visit(item, f"{expr}[{k!r}]", f"{path}[{k!r}]", None)
        elif self.followable(value):
            self.obj(value, expr, path)
        else:
            self.unchecked.append(f"{path} ({type(value).__name__})")

    def followable(self, value: Any) -> bool:
        return (
            isinstance(getattr(value, "__dict__", None), dict)
            and not isinstance(value, _NOT_FOLLOWED)
            and self.depth < MAX_OBJECT_DEPTH
            and len(self.entries) < MAX_ENTRIES
        )

    def obj(self, value: Any, expr: str, path: str) -> None:
        """An argument object (a KV cache, a config): its class, its instance attributes' names,
        and each attribute checked like an argument. The compiled code reads the tensors inside
        it (their shapes were baked in) and Python values of it (baked in as constants), so those
        are what a later call must match. Class attributes, properties and ``__slots__`` are not
        followed. The object is bound to a local on first use, so deep paths stay cheap."""
        self.objects += 1
        local = f"_nocompile_o{self.objects}"
        self.add(path, "type", f"({local} := {expr}).__class__")
        self.add(path, "attributes", f"tuple({local}.__dict__)")
        self.depth += 1
        try:
            for name, item in vars(value).items():
                if name.isidentifier() and not name.startswith("__"):
                    self.visit(item, f"{local}.{name}", f"{path}.{name}", None)
                else:
                    self.unchecked.append(f"{path}.{name}")
        finally:
            self.depth -= 1

    def tensor(self, t: torch.Tensor, expr: str, path: str, top_name: str | None) -> None:
        # The tensor check (class, dispatch keys, dtype, device, requires_grad, sizes, strides)
        # runs in C++; the fast key keeps only what it cannot express: for a dynamic dim,
        # whether the size is 0, 1 or more (Dynamo specializes 0 and 1), and contiguity.
        dims = tuple(d for d in (self.dynamic.get(top_name, ()) if top_name is not None else ()) if d < t.ndim)
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


def _walk(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
) -> _Builder:
    """Walk the call's arguments, bound to ``fn``'s parameters (TypeError if they do not bind)."""
    builder = _Builder(dynamic)
    varkw = varkw_name(fn)
    for name, value in bound_arguments(fn, args, kwargs).items():
        if name == varkw:
            builder.add(name, "keys", f"tuple(sorted({name}))")
            for k in sorted(value):
                builder.visit(value[k], f"{name}[{k!r}]", f"{name}[{k!r}]", None)
        else:
            builder.visit(value, name, name, name)
    builder.add("torch", "grad_enabled", f"{_GRAD_ENABLED}()")
    return builder


def build_key_function(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
) -> tuple[KeyFunction, list[str]]:
    """Generate the full key function for the structure of this call; also the unchecked arguments.

    The full key describes every property of every argument: what messages and reports show.
    The per-call path uses a ``Selector`` instead.
    """
    builder = _walk(fn, args, kwargs, dynamic)
    body = ",\n        ".join(e.expr for e in builder.entries)
    source = f"def key({parameter_list(fn)}):\n    return (\n        {body},\n    )\n"
    key_fn = define_like(fn, source, {_GRAD_ENABLED: torch.is_grad_enabled})["key"]
    return KeyFunction(key_fn, tuple(builder.entries), source), builder.unchecked


#: One way to run a specialization: its tensor check, its shape check (or None), its callable.
SelectorEntry = tuple[Callable[..., bool], "Callable[..., bool] | None", Callable[..., Any]]


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
    table: dict[tuple[Any, ...], tuple[SelectorEntry, ...]]
    lock: threading.Lock
    """Taken by ``add`` and by the generated code's reordering, so neither loses the other's entry."""

    def add(self, key: tuple[Any, ...], entry: SelectorEntry) -> None:
        """Make ``entry`` the first candidate under ``key``."""
        with self.lock:
            self.table[key] = (entry, *self.table.get(key, ()))


def tensor_args(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
) -> list[TensorArg]:
    """The call's tensors, in the order a selector for its structure checks them."""
    return _walk(fn, args, kwargs, dynamic).tensors


def _unreachable_slow(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    raise RuntimeError("nocompile: a selector built without a slow path was called")


def build_selector(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _unreachable_slow,
    entry_prologue: tuple[str, Mapping[str, Any]] = ("", {}),
) -> Selector:
    """Generate the selector for the structure of this call; ``slow(args, kwargs)`` serves misses.

    ``entry_prologue`` is source (and the globals it reads) that ``call`` runs first: with the
    state's prologue (``_entry.prologue``), ``call`` is the state's entry itself.
    """
    builder = _walk(fn, args, kwargs, dynamic)
    params, call = parameter_list(fn), call_list(fn)
    fast = tuple_source([e.expr for e in builder.fast])
    tensors = ", ".join(t.expr for t in builder.tensors)
    rebuilt_args, rebuilt_kwargs = pass_on(fn)
    source = (
        f"def key({params}):\n    return {fast}\n\n"
        # The fast key first: it binds the locals (``_nocompile_oN``) that paths into argument
        # objects go through.
        f"def tensors({params}):\n    __nc_key = {fast}\n"
        f"    return {tuple_source([t.expr for t in builder.tensors])}\n\n"
        f"def select({params}):\n"
        f"    __nc_key = {fast}\n"
        "    __nc_entries = __nc_table.get(__nc_key)\n"
        "    if __nc_entries is None:\n"
        "        return None\n"
        "    for __nc_check, __nc_shape_ok, __nc_target in __nc_entries:\n"
        f"        if __nc_check({tensors}) and (__nc_shape_ok is None or __nc_shape_ok({call})):\n"
        "            if __nc_target is not __nc_entries[0][2]:\n"
        "                __nc_promote(__nc_key, __nc_target)\n"
        "            return __nc_target\n"
        "    return None\n\n"
        # The per-call path: the check inside try (a call of another structure raises there),
        # the chosen callable outside it (its own exceptions are the user's). The loop repeats
        # select's on purpose: calling select from here costs 0.2-0.3 us more per call (measured).
        f"def call({params}):\n"
        f"{entry_prologue[0]}"
        "    try:\n"
        f"        __nc_key = {fast}\n"
        "        __nc_entries = __nc_table.get(__nc_key)\n"
        "        __nc_hit = None\n"
        "        if __nc_entries is not None:\n"
        "            for __nc_check, __nc_shape_ok, __nc_target in __nc_entries:\n"
        f"                if __nc_check({tensors}) and (__nc_shape_ok is None or __nc_shape_ok({call})):\n"
        "                    __nc_hit = __nc_target\n"
        "                    break\n"
        "    except Exception:\n"
        "        __nc_hit = None\n"
        "    if __nc_hit is None:\n"
        f"        return __nc_slow({rebuilt_args}, {rebuilt_kwargs})\n"
        "    if __nc_hit is not __nc_entries[0][2]:\n"
        "        __nc_promote(__nc_key, __nc_hit)\n"
        f"    return __nc_hit({call})\n"
    )
    table: dict[tuple[Any, ...], tuple[SelectorEntry, ...]] = {}

    lock = threading.Lock()

    def promote(key: tuple[Any, ...], target: Callable[..., Any]) -> None:
        with lock:  # rare (a hit that was not first); never loses an entry a compile adds meanwhile
            entries = table.get(key, ())
            table[key] = tuple(sorted(entries, key=lambda entry: entry[2] is not target))

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
        paths=tuple(t.path for t in builder.tensors),
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
                f"{path}: {prop} compiled for {format_value(prop, value)}, "
                f"got {format_value(prop, new[(path, prop)])}"
            )
    for path, _prop in new:
        if not any(p == path for p, _ in old):
            lines.append(f"{path}: not in the compiled signature (new argument or element)")
            break
    return list(dict.fromkeys(lines))


def dynamic_marks(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """Which dims of which tensors to mark dynamic for this compile; ValueError on a bad spec.

    Dims of size 0 or 1 are left static: Dynamo specializes those sizes anyway (marking them
    raises a constraint violation), and the key buckets sizes as 0, 1 and "2 or more", so such
    a call gets a static specialization of its own.
    """
    if not dynamic:
        return []
    bound = bound_arguments(fn, args, kwargs)
    marks = []
    for name, dims in dynamic.items():
        value = bound.get(name)
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"compile_once(dynamic={{{name!r}: ...}}) on {fn.__qualname__}: argument {name!r} is "
                f"{type(value).__name__}, not a tensor; only a tensor argument's dims can be dynamic."
            )
        bad = [d for d in dims if d >= value.ndim]
        if bad:
            raise ValueError(
                f"compile_once(dynamic={{{name!r}: {dims if len(dims) > 1 else dims[0]!r}}}) on "
                f"{fn.__qualname__}: {name!r} has {value.ndim} dim(s) (shape {tuple(value.shape)}), so "
                f"dim {bad[0]} does not exist. Use dims 0..{value.ndim - 1}."
            )
        sized = tuple(d for d in dims if value.shape[d] >= 2)
        if sized:
            marks.append((value, sized))
    return marks
