"""Source text for generated functions that take exactly a decorated function's parameters.

The input check's key and selector functions, the shape check and the per-call entry are all
written as Python source with the decorated function's own parameter list, so that Python binds
a call to them exactly as it binds it to the function (positional or keyword, defaults, missing
or extra arguments), and then compiled with ``define_like``.
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import linecache
import re
import types
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from ._errors import NoCompileError


def code_signature(fn: types.FunctionType) -> inspect.Signature:
    """The signature of ``fn``'s own code, not of what ``functools.wraps`` says it wraps.

    The generated functions below are written from ``fn.__code__``; a wrapper such as
    transformers' ``can_return_tuple`` (``wrapper(self, *args, **kwargs)`` with ``__wrapped__``)
    must be bound as the wrapper, or the generated code names parameters it does not have.
    """
    return inspect.signature(fn, follow_wrapped=False)


def code_signature_names(fn: types.FunctionType) -> tuple[str, ...]:
    """The names of ``fn``'s own parameters (``*args`` and ``**kwargs`` by their names), in order."""
    code = fn.__code__
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return code.co_varnames[:count]


def parameter_list(fn: types.FunctionType) -> str:
    """The parameter list of ``fn`` as source text, defaults by reference to ``__defaults__``."""
    code = fn.__code__
    names = code.co_varnames
    pos_only = code.co_posonlyargcount
    n_pos = code.co_argcount
    n_kwonly = code.co_kwonlyargcount
    parts: list[str] = []
    for i in range(n_pos):
        parts.append(names[i])
        if pos_only and i == pos_only - 1:
            parts.append("/")
    index = n_pos
    if code.co_flags & inspect.CO_VARARGS:
        parts.append("*" + names[n_pos + n_kwonly])
    elif n_kwonly:
        parts.append("*")
    parts.extend(names[index : index + n_kwonly])
    if code.co_flags & inspect.CO_VARKEYWORDS:
        extra = 1 if code.co_flags & inspect.CO_VARARGS else 0
        parts.append("**" + names[n_pos + n_kwonly + extra])
    return ", ".join(parts)


def varkw_name(fn: types.FunctionType) -> str | None:
    code = fn.__code__
    if not code.co_flags & inspect.CO_VARKEYWORDS:
        return None
    varargs = 1 if code.co_flags & inspect.CO_VARARGS else 0
    return code.co_varnames[code.co_argcount + code.co_kwonlyargcount + varargs]


def call_list(fn: types.FunctionType) -> str:
    """Arguments that pass ``fn``'s parameters on, as source text: ``self, x, *rest, k=k, **kw``."""
    code = fn.__code__
    names = code.co_varnames
    n_pos, n_kwonly = code.co_argcount, code.co_kwonlyargcount
    parts = list(names[:n_pos])
    if code.co_flags & inspect.CO_VARARGS:
        parts.append("*" + names[n_pos + n_kwonly])
    parts.extend(f"{k}={k}" for k in names[n_pos : n_pos + n_kwonly])
    varkw = varkw_name(fn)
    if varkw is not None:
        parts.append("**" + varkw)
    return ", ".join(parts)


class _Unset:
    """The default of every defaulted parameter of an entry: "not passed, use the live default"."""

    def __repr__(self) -> str:
        return "<not passed>"


UNSET: Any = _Unset()


def live_defaults(fn: types.FunctionType) -> tuple[str, str]:
    """``(parameters, resolve)``: source of ``fn``'s parameter list with ``__nc_unset`` as every
    default, and of the lines (indented for a function body) that replace a parameter still
    ``__nc_unset`` with ``__nc_fn``'s *current* default.

    A function generated with these binds a call as Python binds it to ``fn`` now, also after
    ``fn.__defaults__`` or ``fn.__kwdefaults__`` were reassigned: the default is read at the call,
    not copied when the entry was written. Parameters without a default cost nothing; a
    defaulted one costs an identity check, and a read of the default when it was not passed.
    """
    code = fn.__code__
    names = code.co_varnames
    n_pos, n_kwonly = code.co_argcount, code.co_kwonlyargcount
    n_defaults = len(fn.__defaults__ or ())
    defaulted_pos = set(names[n_pos - n_defaults : n_pos])
    defaulted_kw = set(fn.__kwdefaults__ or ())
    parts = []
    for part in parameter_list(fn).split(", ") if parameter_list(fn) else []:
        parts.append(f"{part}=__nc_unset" if part in defaulted_pos or part in defaulted_kw else part)
    lines = []
    for p in range(n_pos - n_defaults, n_pos):
        lines.append(f"    if {names[p]} is __nc_unset:\n        {names[p]} = __nc_fn.__defaults__[-{n_pos - p}]\n")
    for name in names[n_pos : n_pos + n_kwonly]:
        if name in defaulted_kw:
            lines.append(f"    if {name} is __nc_unset:\n        {name} = __nc_fn.__kwdefaults__[{name!r}]\n")
    return ", ".join(parts), "".join(lines)


#: The name generated code binds the function's ``__closure__`` to (``closure_globals``): closure
#: variables' expressions read it (``ClosureVariable.expr``).
CLOSURE_CELLS = "__nc_cells"


class _EmptyCell:
    """The value of a closure variable whose cell is empty: assigned later in the enclosing function, or never."""

    def __repr__(self) -> str:
        return "<empty cell>"


EMPTY_CELL: Any = _EmptyCell()


class ClosureVariable(NamedTuple):
    """One free variable of a function, read from its closure cell."""

    name: str
    expr: str
    """Source reading it again in generated code that has ``closure_globals`` among its globals."""
    value: Any
    """What the cell holds now; ``EMPTY_CELL`` for an empty cell."""


def closure_variables(fn: types.FunctionType) -> list[ClosureVariable]:
    """``fn``'s free variables, in ``co_freevars`` order: every reading of a closure cell goes
    through here (the argument walk, the frame a guard check sees, the shape check, the artifact
    key)."""
    variables = []
    for i, (name, cell) in enumerate(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False)):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: assigned later, or never
            value = EMPTY_CELL
        variables.append(ClosureVariable(name, f"{CLOSURE_CELLS}[{i}].cell_contents", value))
    return variables


def closure_values(fn: types.FunctionType) -> dict[str, Any]:
    """The function's closure variables by name, as a frame of it would have them (an empty
    cell, assigned later or never, is absent)."""
    return {name: value for name, _, value in closure_variables(fn) if value is not EMPTY_CELL}


def closure_globals(fn: types.FunctionType) -> dict[str, Any]:
    """The global that ``ClosureVariable.expr`` reads: ``fn``'s closure cells (read at the call,
    so a cell rebound later is read as it is then)."""
    return {CLOSURE_CELLS: fn.__closure__ or ()}


def tuple_source(exprs: Sequence[str]) -> str:
    return "(" + "".join(f"{e}, " for e in exprs) + ")"


def pass_on(fn: types.FunctionType) -> tuple[str, str]:
    """``(args tuple, kwargs dict)`` source rebuilding a call from ``fn``'s parameters."""
    code = fn.__code__
    names = code.co_varnames
    n_pos, n_kwonly = code.co_argcount, code.co_kwonlyargcount
    positional = [*names[:n_pos]]
    if code.co_flags & inspect.CO_VARARGS:
        positional.append("*" + names[n_pos + n_kwonly])
    keywords = [f"{k!r}: {k}" for k in names[n_pos : n_pos + n_kwonly]]
    varkw = varkw_name(fn)
    if varkw is not None:
        keywords.append("**" + varkw)
    return tuple_source(positional), "{" + ", ".join(keywords) + "}"


# -- names the generated code reads: never a user's name ----------------------------------------
#
# A generated function takes the decorated function's own parameters, so a parameter named like a
# builtin (``min``, ``len``, ``type``) is a local of the generated frame and shadows that builtin
# there. Generated code therefore reads every builtin it calls, and every value it needs that has
# no literal (an enum dict key), through a global of its own, whose name no parameter may take
# (``RESERVED_PREFIXES``): ``define_like`` binds them.

#: Prefixes of every name generated code binds (globals ``__nc_...``, object locals ``_nc_o3``).
RESERVED_PREFIXES = ("__nc_", "_nc_")


def builtin(name: str) -> str:
    """The name generated code calls the builtin ``name`` by (``__nc_b_len``)."""
    if not hasattr(builtins, name):  # pragma: no cover - a generator's own mistake
        raise ValueError(f"no builtin named {name!r}")
    return f"__nc_b_{name}"


LEN, MIN, TUPLE, SORTED, MAP, GETATTR, VARS, BOOL = map(
    builtin, ("len", "min", "tuple", "sorted", "map", "getattr", "vars", "bool")
)

#: One NaN object: a float argument compiled as NaN is keyed by this (``nan_canonical``), so that a
#: new ``float('nan')`` each call (NaN != NaN, and hashed by identity) is the same key.
NAN = "__nc_nan"
_NAN_VALUE = float("nan")

_CONSTANT_PREFIX = "__nc_k"
_BOUND_NAMES = re.compile(r"\b(__nc_b_\w+|__nc_k\d+|__nc_nan)\b")
#: Constants generated code indexes dicts with, by name, and their names by (type, value).
_CONSTANTS: dict[str, Any] = {}
_CONSTANT_NAMES: dict[tuple[type, Any], str] = {}


def literal_key(key: Any) -> bool:
    """Whether ``key`` is written into generated code as its ``repr`` (exactly a str, int, bool or
    None: a subclass such as an ``IntEnum`` member has a ``repr`` that is no literal)."""
    return type(key) in (str, int, bool, type(None))


def key_source(key: Any) -> str:
    """Source naming the dict key ``key`` in generated code: its literal, or a global bound to it."""
    if literal_key(key):
        return repr(key)
    found = _CONSTANT_NAMES.get((type(key), key))
    if found is None:
        found = f"{_CONSTANT_PREFIX}{len(_CONSTANTS)}"
        _CONSTANTS[found] = key
        _CONSTANT_NAMES[(type(key), key)] = found
    return found


def nan_canonical(expr: str, value: Any) -> str:
    """``expr`` as a key element: where the value was compiled as a float NaN, any NaN reads as one
    object (``NAN``), so that a fresh ``float('nan')`` per call is equal to it."""
    if isinstance(value, float) and value != value:
        return f"({expr} if {expr} == {expr} else {NAN})"
    return expr


def bound_names(source: str) -> dict[str, Any]:
    """The globals ``source`` reads by the reserved names above (builtins, key constants, NaN)."""
    found: dict[str, Any] = {}
    for name in set(_BOUND_NAMES.findall(source)):
        if name == NAN:
            found[name] = _NAN_VALUE
        elif name.startswith(_CONSTANT_PREFIX):
            found[name] = _CONSTANTS[name]
        else:
            found[name] = getattr(builtins, name[len("__nc_b_") :])
    return found


def reserved_parameters(fn: types.FunctionType) -> list[str]:
    """``fn``'s parameters whose names generated code reserves for itself (``RESERVED_PREFIXES``)."""
    return [name for name in code_signature_names(fn) if name.startswith(RESERVED_PREFIXES)]


def _register_source(fn: types.FunctionType, source: str) -> str:
    """A file name for generated ``source``, registered in ``linecache`` so that tracebacks, ``pdb``
    and ``inspect.getsource`` show the generated lines (as attrs does for its generated methods).

    The name carries a hash of the source: every state of one function and argument structure
    generates the same text and shares one entry, so the cache grows with the distinct sources,
    not with the instances.
    """
    digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:12]
    filename = f"<nocompile generated for {fn.__qualname__} {digest}>"
    if filename not in linecache.cache:
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return filename


def traced_alias(filename: str) -> str:
    """A file name of nocompile's own standing for ``filename``, registered in ``linecache``
    with that file's lines, so tracebacks and ``pdb`` show the original source under it."""
    alias = f"<nocompile copy of {filename}>"
    if alias not in linecache.cache:
        lines = linecache.getlines(filename)
        linecache.cache[alias] = (sum(map(len, lines)), None, lines, alias)
    return alias


def define_like(
    fn: types.FunctionType,
    source: str,
    namespace: dict[str, Any],
    named_like: Collection[str] = (),
    own_defaults: Collection[str] = (),
) -> dict[str, types.FunctionType]:
    """Run ``source`` (``def name(<fn's parameters>)`` blocks); give each function ``fn``'s defaults.

    Sharing the parameter list and the very default objects makes Python bind a call to a
    generated function exactly as it binds it to ``fn``. The functions in ``named_like`` also
    take ``fn``'s name and qualified name (code object included): they are what a call enters
    first, so Python's own binding errors ("f() missing 1 required positional argument") and
    tracebacks read as they would for ``fn``. The functions in ``own_defaults`` keep the defaults
    their source gives them (``live_defaults``) instead.
    """
    reserved = reserved_parameters(fn)
    if reserved:
        raise NoCompileError(
            f"{qualified_name(fn)}: parameter(s) {', '.join(map(repr, reserved))} begin with a prefix that "
            f"nocompile reserves for the names in its generated code ({' or '.join(map(repr, RESERVED_PREFIXES))}); "
            "rename them."
        )
    for name, value in bound_names(source).items():
        namespace.setdefault(name, value)
    before = set(namespace)
    exec(compile(source, _register_source(fn, source), "exec"), namespace)
    defined = {}
    for name in set(namespace) - before:
        generated = namespace[name]
        if isinstance(generated, types.FunctionType):
            code, qualname = generated.__code__, name
            if name in named_like:
                code, qualname = code.replace(co_name=fn.__name__), fn.__qualname__
                if hasattr(code, "co_qualname"):  # Python 3.11+
                    code = code.replace(co_qualname=qualname)
            if name in own_defaults:  # written with ``live_defaults``: keeps its own (sentinel) defaults
                defaults, kwdefaults = generated.__defaults__, generated.__kwdefaults__
            else:
                defaults, kwdefaults = fn.__defaults__, fn.__kwdefaults__
            function = types.FunctionType(code, namespace, code.co_name, defaults)
            function.__kwdefaults__ = kwdefaults
            function.__qualname__ = qualname
            defined[name] = function
    return defined


def qualified_name(obj: types.FunctionType | type) -> str:
    """``module.Qualified.name`` of a function or class: how nocompile names it in messages,
    dumps, reports and artifact keys."""
    return f"{obj.__module__}.{obj.__qualname__}"


def parameter_names(fn: types.FunctionType) -> list[str]:
    """The names of ``fn``'s parameters, in order (``*args`` and ``**kwargs`` by their names)."""
    return list(code_signature(fn).parameters)
