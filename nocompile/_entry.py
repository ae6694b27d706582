"""The per-call entry: the first frame of every call of a compiled function.

Each ``CompileState`` has one *entry* at a time, a generated function with exactly the decorated
function's parameters (and its name, so Python's own binding errors read as they would for the
undecorated function). Every entry starts with the same prologue:

* inside an outer ``torch.compile`` trace (``torch.compiler.is_compiling()``), run the original
  function, so the outer trace inlines it;
* count the call (``stats.calls``).

Then it does its policy's work. The *direct* entry (``guards="none"``/``"dynamo"``, and every
state before its first compile) calls ``__nc_target``, a name in its own globals that the state
rebinds: ``_first_call`` before the first compile, then the function on Dynamo's transformed
bytecode, ``torch.compile``'s callable, a CUDA-graph replay or the original (``NOCOMPILE_DISABLE``).
Under ``guards="inputs"`` the entry is the selector's generated ``call`` (see ``_selector``),
which has this prologue too: check, choose a specialization, call it, in one frame.

``instance.method`` binds a ``MethodFunction``: a ``functools.partial`` on the state's current entry,
so the call enters the generated function straight from C, with no ``__call__`` method and no
``*args`` tuple in between; its class gives the bound method the state's public surface
(``stats``, ``reset()``, ``explain()``...), which a bound method reads from its ``__func__``.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from . import _compat
from ._codegen import (
    UNSET,
    call_list,
    closure_globals,
    closure_variables,
    code_signature_names,
    define_like,
    live_defaults,
    parameter_list,
)
from ._compiler import bytecode_function
from ._options import CompileOptions
from ._record import Compiled

if TYPE_CHECKING:
    from ._explain import ExplainReport
    from ._state import CompileState
    from ._view import CompileStats, Specialization

log = logging.getLogger("nocompile")

TARGET = "__nc_target"
"""The name, in the direct entry's globals, of what it calls."""


def prologue(fn: types.FunctionType) -> str:
    """The first lines of every entry of ``fn`` (indented for a function body)."""
    return f"    if __nc_is_compiling():\n        return __nc_original({call_list(fn)})\n    __nc_state.calls += 1\n"


def prologue_globals(fn: types.FunctionType, state: CompileState) -> dict[str, Any]:
    """The names ``prologue`` and ``live_defaults``' lines read."""
    return {
        "__nc_is_compiling": torch.compiler.is_compiling,
        "__nc_original": fn,
        "__nc_state": state,
        "__nc_fn": fn,
        "__nc_unset": UNSET,
    }


def build_direct_entry(fn: types.FunctionType, state: CompileState) -> tuple[types.FunctionType, dict[str, Any]]:
    """The direct entry of ``fn`` and its globals (rebind ``globals[TARGET]`` to change its target).

    Like every entry it binds ``fn``'s current defaults (``_codegen.live_defaults``).
    """
    params, resolve = live_defaults(fn)
    source = f"def entry({params}):\n{resolve}{prologue(fn)}    return {TARGET}({call_list(fn)})\n"
    namespace = {**prologue_globals(fn, state), TARGET: None}
    entry = define_like(fn, source, namespace, named_like=("entry",), own_defaults=("entry",))["entry"]
    return entry, namespace


def build_guarded_call(
    fn: types.FunctionType,
    candidates: list[tuple[Callable[[dict[str, Any]], bool], Callable[..., Any]]],
    fallback: Callable[..., Any],
) -> types.FunctionType:
    """``guards="dynamo"`` without Dynamo's frame hook: a function with ``fn``'s parameters that
    builds the frame's locals (parameters and free variables, as Dynamo's guards name them), runs
    the first of ``candidates`` — ``(guard check, function on that compile's transformed bytecode)``,
    in the order of Dynamo's cache — whose guards hold, and otherwise calls ``fallback`` (Dynamo's
    own entry, which recompiles). ``candidates`` is read on every call, so refilling it in place
    takes effect at once."""
    names = list(code_signature_names(fn))
    cells = [f"{name!r}: {expr}" for name, expr, _ in closure_variables(fn) if name != "__class__"]
    frame = "{" + ", ".join([*(f"{n!r}: {n}" for n in names), *cells]) + "}"
    source = (
        f"def guarded({parameter_list(fn)}):\n"
        f"    __nc_locals = {frame}\n"
        "    for __nc_check, __nc_target in __nc_candidates:\n"
        "        if __nc_check(__nc_locals):\n"
        f"            return __nc_target({call_list(fn)})\n"
        f"    return __nc_fallback({call_list(fn)})\n"
    )
    namespace = {"__nc_candidates": candidates, "__nc_fallback": fallback, **closure_globals(fn)}
    return define_like(fn, source, namespace)["guarded"]


def guarded_call(
    fn: types.FunctionType, source: types.CodeType, dynamo_entry: Callable[..., Any]
) -> types.FunctionType:
    """``guards="dynamo"``: Dynamo's cache entries for ``source`` (the compile's private code), each
    guard manager evaluated directly and the first passing entry's bytecode run; a call none passes
    goes through ``dynamo_entry`` (``torch.compile``'s, which recompiles), and the entries are read
    again (``build_guarded_call``)."""
    candidates: list[tuple[Callable[[dict[str, Any]], bool], Callable[..., Any]]] = []

    def refill() -> None:
        entries = _compat.dynamo_cache_entries(source)
        candidates[:] = [(manager.check, bytecode_function(code, fn)[0]) for manager, code in entries]

    def through_dynamo(*args: Any, **kwargs: Any) -> Any:
        result = dynamo_entry(*args, **kwargs)
        refill()
        return result

    refill()
    return build_guarded_call(fn, candidates, through_dynamo)


def specialization_call(
    fn: types.FunctionType, options: CompileOptions, made: Compiled
) -> tuple[Callable[..., Any], int]:
    """What calls of a specialization run, and how many graphs it calls past their wrappers:
    the function on Dynamo's transformed bytecode (``dispatch="bytecode"``), Dynamo's cache
    entries evaluated directly (``guards="dynamo"``), or ``torch.compile``'s callable."""
    if not options.calls_bytecode:
        return made.compiled, 0
    if options.policy.keeps_dynamo_guards:
        return guarded_call(fn, made.source_code, made.compiled), 0
    if made.transformed_code.co_freevars == fn.__code__.co_freevars:
        # Dynamo removes the __compiled_fn_* globals this code loads once the code
        # object dies: the specialization keeps it (``transformed_code``).
        return bytecode_function(made.transformed_code, fn)
    log.warning(  # pragma: no cover - has not happened on supported torch versions
        "%s: Dynamo's transformed code has free variables %s, the function %s; "
        "calling through torch.compile instead of the transformed bytecode",
        fn.__qualname__,
        made.transformed_code.co_freevars,
        fn.__code__.co_freevars,
    )
    return made.compiled, 0  # pragma: no cover


class FunctionLike:
    """Lets a stand-in for a Python function pass for that function where only functions are accepted.

    ``inspect.getfile`` accepts functions, methods and code objects only (it does not follow
    ``__wrapped__``), and Dynamo's ``trace_rules.check`` asks it about ``module.forward`` when
    ``torch.compile(module)`` wraps a module. A compiled state and its bound entry must carry live
    state (``stats``) that a real function cannot, so they are objects; this mixin makes
    ``isinstance(obj, types.FunctionType)`` true (through ``__class__``, as ``unittest.mock`` does)
    and forwards the function attributes that such callers read next to the original function.
    Anyone who treats the stand-in as a function therefore sees the original: its file, source,
    signature and code. ``type(obj)`` still tells the truth.
    """

    __slots__ = ()
    _passes_as: ClassVar[type] = types.FunctionType
    """What ``isinstance`` sees: a function, or (for a stand-in of a bound method) a method."""

    def _stands_for(self) -> types.FunctionType:
        """The function whose code, globals, closure and defaults this object shows."""
        raise NotImplementedError

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return self._passes_as

    @property
    def __code__(self) -> types.CodeType:
        return self._stands_for().__code__

    @property
    def __globals__(self) -> dict[str, Any]:
        return self._stands_for().__globals__

    @property
    def __closure__(self) -> tuple[types.CellType, ...] | None:
        return self._stands_for().__closure__

    @property
    def __defaults__(self) -> tuple[Any, ...] | None:
        return self._stands_for().__defaults__

    @property
    def __kwdefaults__(self) -> dict[str, Any] | None:
        return self._stands_for().__kwdefaults__


class StateSurface:
    """The public surface of a compiled state, for objects that stand for one (``_state``)."""

    __slots__ = ()
    _state: CompileState

    @property
    def state(self) -> CompileState:
        """The compiled state this object stands for."""
        return self._state

    @property
    def stats(self) -> CompileStats:
        """Counters of this state (see ``CompileStats``)."""
        return self._state.stats

    @property
    def specializations(self) -> tuple[Specialization, ...]:
        """The compiled specializations, oldest first."""
        return self._state.specializations

    def reset(self) -> None:
        """Forget the compiled state; the next call compiles again."""
        self._state.reset()

    def explain(self, verbose: bool = False) -> str:
        """A readable report of what was compiled and which guards were given up."""
        return self._state.explain(verbose=verbose)

    def report(self) -> ExplainReport:
        """The same report as a frozen record."""
        return self._state.report()

    def aot_compile(self, *args: Any, **kwargs: Any) -> Specialization | None:
        """Compile (or load) the specialization for these example inputs now, without running."""
        return self._state.aot_compile(*args, **kwargs)


class MethodFunction(FunctionLike, StateSurface, functools.partial):  # type: ignore[type-arg]
    """A state's current entry, as the ``__func__`` of ``instance.method``.

    Calling it calls the entry (``functools.partial`` calls from C); reading ``stats``,
    ``reset``, ``__name__``, ``__wrapped__``... gives the state's. The state makes a new one
    whenever its entry changes, so the one a bound method holds never goes stale in a way
    that matters: an old entry still counts and dispatches through the same state.
    """

    def __new__(cls, entry: Callable[..., Any], state: CompileState) -> MethodFunction:
        self = super().__new__(cls, entry)
        self._state = state
        functools.update_wrapper(self, state.function)
        return self

    def _stands_for(self) -> types.FunctionType:
        return self._state.function

    def __repr__(self) -> str:
        return f"<nocompile entry of {self._state.function.__qualname__}>"
