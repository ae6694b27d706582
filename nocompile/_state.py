"""The state object: one per decorated function, or per instance for methods.

A ``CompileState`` owns everything about one compiled function: the validated options, the
specialization it compiled (the code copy Dynamo saw, the transformed bytecode it produced,
the function object built on that bytecode) and the counters behind ``stats``.

The call path is deliberately tiny. ``__call__`` checks whether an outer ``torch.compile`` is
tracing (then it runs the original so the outer trace inlines it), counts the call and jumps
through ``self._dispatch``: before the first compile that is ``_first_call``; afterwards it is
the function built on Dynamo's transformed bytecode (``dispatch="bytecode"``) or the
``torch.compile`` callable (``dispatch="dynamo"``, ``guards="dynamo"``). Swapping that one
attribute is atomic, so concurrent callers always see either the old or the new target.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import _capture
from ._errors import NoCompileError
from ._options import CompileOptions

log = logging.getLogger("nocompile")

_is_compiling = torch.compiler.is_compiling

DISABLE_ENV = "NOCOMPILE_DISABLE"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def disabled_by_env() -> bool:
    """Whether ``NOCOMPILE_DISABLE`` asks for the original functions to run eagerly."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE_WORDS


@dataclasses.dataclass(frozen=True)
class CompileStats:
    """Counters of one compiled function (or the sum over a method's instances).

    ``calls`` counts every call, the compiling one included. Under concurrent callers an
    increment can be lost (the counter is a plain attribute, not a lock-protected one); in
    single-threaded use it is exact.
    """

    calls: int = 0
    """Calls made, including the one that compiled."""
    compiles: int = 0
    """Compilations run (with ``guards="dynamo"``, Dynamo's recompiles are counted too)."""
    compile_seconds: float = 0.0
    """Wall-clock seconds spent in compiling calls (compile plus that first run)."""
    specializations: int = 0
    """Compiled specializations currently held."""

    def __add__(self, other: CompileStats) -> CompileStats:
        return CompileStats(
            calls=self.calls + other.calls,
            compiles=self.compiles + other.compiles,
            compile_seconds=self.compile_seconds + other.compile_seconds,
            specializations=self.specializations + other.specializations,
        )


@dataclasses.dataclass
class Specialization:
    """One compilation of the function.

    ``source_code`` is the private copy of the function's code object that Dynamo compiled;
    ``transformed_code`` what Dynamo turned it into; ``call`` what later calls run.
    """

    source_code: types.CodeType
    compiled: Callable[..., Any]
    transformed_code: types.CodeType | None
    call: Callable[..., Any]
    compile_seconds: float
    dropped_guards: tuple[tuple[str, str], ...]
    """``(guard_type, name)`` of each guard Dynamo wanted and nocompile dropped."""


def function_on_code(code: types.CodeType, like: types.FunctionType) -> types.FunctionType:
    """A new function running ``code`` with the globals, defaults and closure of ``like``."""
    fn = types.FunctionType(code, like.__globals__, like.__name__, like.__defaults__, like.__closure__)
    fn.__kwdefaults__ = dict(like.__kwdefaults__) if like.__kwdefaults__ else None
    fn.__qualname__ = like.__qualname__
    fn.__module__ = like.__module__
    return fn


def describe_function(fn: types.FunctionType) -> str:
    """``module.qualname (file:line)``, for messages."""
    code = fn.__code__
    return f"{fn.__module__}.{fn.__qualname__} ({code.co_filename}:{code.co_firstlineno})"


def _dynamo_reason(exc: BaseException, limit: int = 25) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines; see the chained exception)"]
    return "\n".join("    " + line for line in lines)


def _none() -> None:
    """Unpickling target of a per-instance state: copies start uncompiled."""
    return None


class CompileState:
    """Compiled state of one function (or of one instance's method)."""

    def __init__(self, fn: types.FunctionType, options: CompileOptions) -> None:
        self._fn = fn
        self._options = options
        # __name__, __qualname__, __doc__, __module__, __wrapped__: so that the state, and the
        # bound method ``instance.forward`` made on it, look like the original function.
        functools.update_wrapper(self, fn)
        self._lock = threading.Lock()
        self._compiling_thread: int | None = None
        self._clear()

    # -- the per-call path ------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _is_compiling():
            return self._fn(*args, **kwargs)
        self._calls += 1
        return self._dispatch(*args, **kwargs)

    # -- compiling --------------------------------------------------------------------------

    def _clear(self) -> None:
        self._dispatch: Callable[..., Any] = self._first_call
        self._spec: Specialization | None = None
        self._disabled = False
        self._calls = 0
        self._compiles = 0
        self._compile_seconds = 0.0

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiling_thread == threading.get_ident():
            # Re-entered from our own compilation (e.g. Dynamo fell back to running Python):
            # run the original rather than deadlock on our own lock.
            return self._fn(*args, **kwargs)
        with self._lock:
            if self._dispatch != self._first_call:  # another thread compiled while we waited
                return self._dispatch(*args, **kwargs)
            if disabled_by_env():
                log.info("%s set: %s runs eagerly", DISABLE_ENV, self._fn.__qualname__)
                self._disabled = True
                self._dispatch = self._fn
                return self._fn(*args, **kwargs)
            self._compiling_thread = threading.get_ident()
            try:
                return self._compile_and_call(args, kwargs)
            finally:
                self._compiling_thread = None

    def _compile_and_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        opts = self._options
        fn = self._fn
        # A private code object: Dynamo caches per code object, so this state never sees (or
        # disturbs) another state's cache entries, and the bytecode hook matches on identity.
        source = fn.__code__.replace()
        fn_copy = function_on_code(source, fn)
        dropped: list[tuple[str, str]] = []
        captured: list[types.CodeType] = []
        compiled = torch.compile(fn_copy, fullgraph=True, dynamic=False, **self._torch_compile_kwargs(dropped))

        keep_watching = opts.guards == "dynamo"
        state_ref = weakref.ref(self)

        def on_bytecode(new_code: types.CodeType) -> None:
            captured.append(new_code)
            state = state_ref()
            if keep_watching and state is not None and len(captured) > 1:
                state._compiles += 1  # a Dynamo recompile after a guard failure
                log.warning("%s: Dynamo recompiled (guards='dynamo'), compile #%d", fn.__qualname__, state._compiles)

        _capture.ROUTER.watch(source, on_bytecode)
        log.info("compiling %s (%s)", fn.__qualname__, opts.describe())
        started = time.perf_counter()
        try:
            with _capture.compilation_context():
                result = compiled(*args, **kwargs)
        except BaseException as exc:
            if not captured:
                _capture.ROUTER.unwatch(source)
                raise self._compile_error(exc) from exc
            # Compiled fine, then the first run raised: keep the compiled state, re-raise as is.
            self._install(source, compiled, captured, dropped, time.perf_counter() - started)
            raise
        finally:
            if not keep_watching:
                _capture.ROUTER.unwatch(source)
        seconds = time.perf_counter() - started
        if not captured:
            raise NoCompileError(
                f"torch.compile did not compile {describe_function(fn)}: Dynamo ran it without "
                "transforming it (the frame was skipped — a set_stance('force_eager'), "
                "torch._dynamo.config.disable, or a file Dynamo never traces). "
                "Remove what disables Dynamo, or set NOCOMPILE_DISABLE=1 to run eagerly on purpose."
            )
        self._install(source, compiled, captured, dropped, seconds)
        log.info("compiled %s in %.3f s", fn.__qualname__, seconds)
        return result

    def _torch_compile_kwargs(self, dropped: list[tuple[str, str]]) -> dict[str, Any]:
        opts = self._options
        kwargs: dict[str, Any] = {"backend": opts.backend}
        if not opts.drops_guards:
            if opts.mode is not None:
                kwargs["mode"] = opts.mode
            if opts.options:
                kwargs["options"] = dict(opts.options)
            return kwargs

        def drop_all_guards(entries: Iterable[Any]) -> list[bool]:
            entries = list(entries)
            dropped.extend((str(e.guard_type), str(e.name)) for e in entries)
            return [False] * len(entries)

        from . import _compat

        inductor_options = _compat.inductor_mode_options(opts.mode) if opts.mode else {}
        kwargs["options"] = {**inductor_options, **dict(opts.options or {}), "guard_filter_fn": drop_all_guards}
        return kwargs

    def _install(
        self,
        source: types.CodeType,
        compiled: Callable[..., Any],
        captured: list[types.CodeType],
        dropped: list[tuple[str, str]],
        seconds: float,
    ) -> None:
        transformed = captured[0]
        call: Callable[..., Any] = compiled
        if self._options.calls_bytecode:
            if transformed.co_freevars == self._fn.__code__.co_freevars:
                # Dynamo removes the __compiled_fn_* globals this code loads once the code
                # object dies, so the function below keeps them alive exactly as long as needed.
                call = function_on_code(transformed, self._fn)
            else:  # pragma: no cover - has not happened on supported torch versions
                log.warning(
                    "%s: Dynamo's transformed code has free variables %s, the function %s; "
                    "calling through torch.compile instead of the captured bytecode",
                    self._fn.__qualname__, transformed.co_freevars, self._fn.__code__.co_freevars,
                )
        self._spec = Specialization(
            source_code=source,
            compiled=compiled,
            transformed_code=transformed,
            call=call,
            compile_seconds=seconds,
            dropped_guards=tuple(dropped),
        )
        self._compiles += 1
        self._compile_seconds += seconds
        self._dispatch = call

    def _compile_error(self, exc: BaseException) -> NoCompileError:
        fn = self._fn
        return NoCompileError(
            f"torch.compile could not compile {describe_function(fn)} as one graph "
            f"(backend={self._options.backend_name()!r}, fullgraph=True). Dynamo said:\n"
            f"{_dynamo_reason(exc)}\n"
            "Fix: remove the graph break (print, data-dependent Python control flow, unsupported "
            "calls) from the function, or leave this function undecorated. Nothing was kept: the "
            "next call tries again."
        )

    # -- public surface ---------------------------------------------------------------------

    @property
    def stats(self) -> CompileStats:
        """A frozen snapshot of this state's counters."""
        return CompileStats(
            calls=self._calls,
            compiles=self._compiles,
            compile_seconds=self._compile_seconds,
            specializations=0 if self._spec is None else 1,
        )

    def reset(self) -> None:
        """Forget the compiled state and zero the counters; the next call compiles again."""
        with self._lock:
            spec = self._spec
            if spec is not None:
                _capture.ROUTER.unwatch(spec.source_code)
            self._clear()

    @property
    def compiled(self) -> bool:
        """Whether a compiled specialization is installed."""
        return self._spec is not None

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # Copies and unpickled objects start uncompiled: a compiled state holds code objects
        # and Dynamo artifacts bound to this process.
        return (_none, ())

    def _status(self) -> str:
        if self._disabled:
            return f"disabled by {DISABLE_ENV}"
        if self._spec is None:
            return "not compiled yet"
        return f"compiled, {self._compiles} compile(s), {self._calls} call(s)"

    def __repr__(self) -> str:
        return f"<nocompile state of {self._fn.__qualname__}: {self._options.describe()}; {self._status()}>"
