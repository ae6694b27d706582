"""The state object: one per decorated function, or per instance for methods.

A ``CompileState`` owns everything about one compiled function: the validated options, the
specialization it compiled (the code copy Dynamo saw, the transformed bytecode it produced,
the function object built on that bytecode) and the counters behind ``stats``.

The call path is deliberately tiny: every call enters ``self._entry``, a generated function with
the decorated function's own parameters (see ``_entry``). It runs the original under an outer
``torch.compile`` trace, counts the call, and calls the current target: ``_first_call`` before
the first compile; afterwards the function built on Dynamo's transformed bytecode
(``dispatch="bytecode"``) or the ``torch.compile`` callable (``dispatch="dynamo"``,
``guards="dynamo"``); under ``guards="inputs"`` the entry is the selector's ``call``, which
checks the call's signature and picks the specialization itself. Rebinding the entry or its
target is one atomic store, so concurrent callers always see either the old or the new one.
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

from . import _artifacts, _capture, _compat, _cudagraphs, _dump
from ._entry import TARGET, BoundEntry, build_direct_entry, prologue, prologue_globals
from ._errors import GuardMismatchError, NoCompileError
from ._explain import ExplainReport, build_report, state_label
from ._options import CompileOptions
from ._record import CompileRecord
from ._signature import (
    KeyFunction,
    Selector,
    ShapeCheck,
    TensorArg,
    bound_arguments,
    build_key_function,
    build_selector,
    build_shape_check,
    describe_difference,
    describe_key,
    dynamic_marks,
    parameter_names,
    tensor_args,
)

log = logging.getLogger("nocompile")

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
    loads: int = 0
    """Specializations loaded from a cache directory instead of compiled (not in ``compiles``)."""

    def __add__(self, other: CompileStats) -> CompileStats:
        return CompileStats(
            calls=self.calls + other.calls,
            compiles=self.compiles + other.compiles,
            compile_seconds=self.compile_seconds + other.compile_seconds,
            specializations=self.specializations + other.specializations,
            loads=self.loads + other.loads,
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
    key: tuple[Any, ...] | None = None
    """Under ``guards="inputs"``: the signature key this specialization was compiled for."""
    key_function: KeyFunction | None = None
    shape_check: ShapeCheck | None = None
    """Under ``guards="inputs"`` with dynamic dims: Dynamo's shape guards, kept and checked."""
    selector: Selector | None = None
    """Under ``guards="inputs"``: the per-call check this specialization is registered in."""
    tensor_match: Any = None
    """Under ``guards="inputs"``: the C++ tensor check built from the compiling call's tensors."""
    record: CompileRecord | None = None
    """What the compile saw (guards, FX graph, signature text), for ``explain()`` and dumps."""
    origin: str = "compiled"
    """``"compiled"`` in this process, or ``"loaded"`` from an artifact file."""
    artifact_path: str | None = None
    """The artifact file it was loaded from or saved to; ``None`` when not persisted."""

    def signature(self) -> str:
        """The compiled-for signature as text (``guards="inputs"`` only)."""
        if self.key is None or self.key_function is None:
            return "(not recorded: no input check under this guard policy)"
        text = describe_key(self.key_function, self.key)
        if self.shape_check is not None:
            text += "; shape guards: " + " and ".join(self.shape_check.expressions)
        return text


@dataclasses.dataclass(frozen=True)
class InputCheck:
    """What ``guards="inputs"`` records of the compiling call, taken *before* it runs.

    The compiled call may change its argument objects (a cache allocating its tensors on first
    use), so the keys and the tensor check describe the arguments as they arrived.
    """

    table: KeyTable
    key: tuple[Any, ...]
    fast_key: tuple[Any, ...]
    tensor_match: Any


@dataclasses.dataclass
class KeyTable:
    """The specializations of one argument structure: its full key function and its selector."""

    key_function: KeyFunction
    selector: Selector

    def find(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """What the per-call path would run for this call, or None."""
        try:
            return self.selector.select(*args, **kwargs)
        except Exception:  # the call does not have this table's structure
            return None


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
        self._owner: weakref.ref[Any] | None = None  # per-instance states: the instance, for aot_compile
        self._direct_entry, self._direct_globals = build_direct_entry(fn, self)
        self._tables: list[KeyTable] = []
        self._clear()

    # -- the per-call path ------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A call that does not bind raises TypeError here, as Python words it for the function.
        return self._entry(*args, **kwargs)

    def _set_entry(self, entry: Callable[..., Any]) -> None:
        """Make ``entry`` what calls enter; ``_bound`` is what ``instance.method`` binds."""
        self._bound = BoundEntry(entry, self)
        self._entry = entry

    def _set_target(self, target: Callable[..., Any]) -> None:
        """Make the direct entry call ``target``, and make the direct entry what calls enter."""
        self._direct_globals[TARGET] = target
        self._set_entry(self._direct_entry)

    # -- compiling --------------------------------------------------------------------------

    def _clear(self) -> None:
        for table in self._tables:  # a bound method may still hold a selector: make it miss
            with table.selector.lock:
                table.selector.table.clear()
        self._tables = []
        self._specs: list[Specialization] = []
        self._disabled = False
        self._calls = 0
        self._compiles = 0
        self._loads = 0
        self._compile_seconds = 0.0
        self._graph_pool = _cudagraphs.GraphPool() if self._options.cudagraphs else None
        self._set_target(self._first_call)

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._slow_call(args, kwargs)

    def _slow_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Everything that is not the fast path: first compile, lookups, mismatches, recompiles.

        Only entries call it, so the call binds to the function's parameters.
        """
        if self._compiling_thread == threading.get_ident():
            # Re-entered from our own compilation (e.g. Dynamo fell back to running Python):
            # run the original rather than deadlock on our own lock.
            return self._fn(*args, **kwargs)
        with self._lock:
            target = self._ready_target(args, kwargs)
            if target is None:
                self._compiling_thread = threading.get_ident()
                try:
                    return self._compile_and_call(args, kwargs)
                finally:
                    self._compiling_thread = None
        return target(*args, **kwargs)

    def _ready_target(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """Under the lock: what to run for this call, or None when it must compile."""
        if self._disabled:
            return self._fn
        if not self._specs:
            if disabled_by_env():
                log.info("%s set: %s runs eagerly", DISABLE_ENV, self._fn.__qualname__)
                self._disabled = True
                self._set_target(self._fn)
                return self._fn
            return None
        if self._options.guards != "inputs":
            return self._specs[0].call  # another thread compiled while we waited
        for table in self._tables:
            target = table.find(args, kwargs)
            if target is not None:
                self._promote(table)
                return target
        if self._options.on_mismatch == "raise":
            raise self._mismatch_error(args, kwargs)
        if len(self._specs) >= self._options.max_compiles:
            raise self._limit_error(args, kwargs)
        log.warning(
            "%s: recompiling for a new signature (specialization #%d of at most %d): %s",
            self._fn.__qualname__, len(self._specs) + 1, self._options.max_compiles,
            "; ".join(self._differences(args, kwargs)),
        )
        return None

    def _compile_and_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        opts = self._options
        fn = self._fn
        check: InputCheck | None = None
        if opts.guards == "inputs":
            check = self._input_check(args, kwargs)
        directory = _artifacts.cache_dir_for(opts) if opts.drops_guards else None
        if directory is not None and _artifacts.aot_usable():
            spec = self._make_ahead(args, kwargs, check, directory, fall_back=True)
            if spec is not None:
                return spec.call(*args, **kwargs)
        # A private code object: Dynamo caches per code object, so this specialization never
        # sees (or disturbs) another's cache entries, and the bytecode hook matches on identity.
        source = fn.__code__.replace()
        fn_copy = function_on_code(source, fn)
        dropped: list[tuple[str, str]] = []
        shape_exprs: list[str] = []
        captured: list[types.CodeType] = []
        record = CompileRecord.for_call(fn, args, kwargs, opts.dynamic)
        compiled = torch.compile(
            fn_copy, fullgraph=True, dynamic=False, **self._torch_compile_kwargs(dropped, shape_exprs, record)
        )

        keep_watching = opts.guards == "dynamo"
        state_ref = weakref.ref(self)

        def on_bytecode(new_code: types.CodeType) -> None:
            captured.append(new_code)
            log.debug("%s: captured Dynamo's transformed bytecode (%d bytes)", fn.__qualname__, len(new_code.co_code))
            state = state_ref()
            if keep_watching and state is not None and len(captured) > 1:
                state._compiles += 1  # a Dynamo recompile after a guard failure
                log.warning("%s: Dynamo recompiled (guards='dynamo'), compile #%d", fn.__qualname__, state._compiles)

        marks = dynamic_marks(fn, args, kwargs, opts.dynamic)  # ValueError on a bad name or dim
        # cudagraphs=True: what the arguments are before the call, to refuse a call that rebinds them.
        state_before = _cudagraphs.argument_state(fn, args, kwargs) if opts.cudagraphs else None
        _capture.ROUTER.watch(source, on_bytecode)
        log.info("compiling %s for %s (%s)", describe_function(fn), record.signature, opts.describe())
        started = time.perf_counter()
        try:
            with _capture.compilation_context(), _compat.marked_dynamic(marks):
                result = compiled(*args, **kwargs)
        except BaseException as exc:
            if not captured or not _compat.has_compiled_entry(source):
                _capture.ROUTER.unwatch(source)
                raise self._compile_error(exc) from exc
            # Compiled fine, then the first run raised: keep the compiled state, re-raise as is.
            self._install(
                source, compiled, captured, dropped, time.perf_counter() - started, check, shape_exprs,
                args, kwargs, record, state_before,
            )
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
        self._install(
            source, compiled, captured, dropped, seconds, check, shape_exprs, args, kwargs, record, state_before
        )
        log.info("compiled %s for %s in %.3f s", fn.__qualname__, record.signature, seconds)
        return result

    def _input_check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> InputCheck:
        """The call's keys and tensor check, for the table of its argument structure."""
        table = self._table_for(args, kwargs)
        return InputCheck(
            table=table,
            key=table.key_function.fn(*args, **kwargs),
            fast_key=table.selector.key(*args, **kwargs),
            tensor_match=self._tensor_match(tensor_args(self._fn, args, kwargs, self._options.dynamic)),
        )

    def _make_ahead(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        check: InputCheck | None,
        directory: str | None,
        fall_back: bool,
    ) -> Specialization | None:
        """Load the specialization from ``directory`` or compile it ahead of time (no run), install it.

        With ``fall_back``, a failing ahead-of-time compile logs a warning and returns None so
        the caller compiles in-process as usual (which also reports a graph break properly).
        """
        fn = self._fn
        source = fn.__code__.replace()
        marks = dynamic_marks(fn, args, kwargs, self._options.dynamic)  # ValueError on a bad name or dim
        record = CompileRecord.for_call(fn, args, kwargs, self._options.dynamic)

        def compile_kwargs(dropped: list[tuple[str, str]], shape_exprs: list[str]) -> dict[str, Any]:
            # torch's ahead-of-time save needs torch.compile's own backend object, so no
            # recording backend here: explain() shows the guards but not the FX graph.
            return self._torch_compile_kwargs(dropped, shape_exprs, record, recording=False)

        try:
            made = _artifacts.make(
                fn, function_on_code(source, fn), self._options, directory, args, kwargs, compile_kwargs, marks
            )
        except _artifacts.AheadOfTimeFailed as exc:
            cause = exc.__cause__ or exc
            if not fall_back and _compat.is_tracing_error(cause):
                raise self._compile_error(cause) from cause
            if not fall_back:
                raise NoCompileError(
                    f"{describe_function(fn)}: torch's ahead-of-time compile failed after Dynamo traced the "
                    f"function (backend={self._options.backend_name()!r}, torch {torch.__version__}): {exc}\n"
                    "Fix: call the function instead of aot_compile(): the first call compiles in-process "
                    "(nothing is saved). docs/persistence.md lists the torch releases and backends whose "
                    "ahead-of-time path is known to fail."
                ) from cause
            log.warning(
                "%s: ahead-of-time compile failed (%s); compiling in-process, nothing saved", fn.__qualname__, exc
            )
            return None
        return self._install(
            source, made.aot, [made.bytecode_fn.__code__], made.dropped, made.seconds, check,
            made.shape_exprs, args, kwargs, record if made.origin == "compiled" else None,
            origin=made.origin, artifact_path=made.path,
        )

    def _table_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KeyTable:
        """The table for this call's argument structure: an existing one, or a new one (not yet added)."""
        key_function, unchecked = build_key_function(self._fn, args, kwargs, self._options.dynamic)
        if unchecked:
            log.warning(
                "%s: guards='inputs' cannot check %s; a later call that changes them runs the code "
                "compiled for these (see docs/footguns.md)",
                self._fn.__qualname__, ", ".join(unchecked),
            )
        for table in self._tables:  # the same structure as an existing table: share it
            if table.key_function.source == key_function.source:
                return table
        selector = build_selector(
            self._fn, args, kwargs, self._options.dynamic, self._slow_call,
            entry_prologue=(prologue(self._fn), prologue_globals(self._fn, self)),
        )
        return KeyTable(key_function, selector)

    def _torch_compile_kwargs(
        self, dropped: list[tuple[str, str]], shape_exprs: list[str], record: CompileRecord, recording: bool = True
    ) -> dict[str, Any]:
        # The backend is wrapped by one that records Dynamo's FX graph for explain()/dump_dir and
        # then calls what torch.compile(backend=, mode=, options=) would have built itself.
        opts = self._options
        if not opts.drops_guards:
            user_options = dict(opts.options) if opts.options else None
            return {
                "backend": record.backend(opts.backend, opts.mode, user_options),
                "options": {"guard_filter_fn": record.keep_all_guards},
            }

        def drop_all_guards(entries: Iterable[Any]) -> list[bool]:
            entries = list(entries)
            record.note_guards(entries, kept=False)
            log.debug("%s: dropping all %d guards Dynamo wanted", self._fn.__qualname__, len(entries))
            for e in entries:
                dropped.append((str(e.guard_type), str(e.name)))
                if e.guard_type == "SHAPE_ENV":
                    shape_exprs.extend(_compat.guard_code(e))
            return [False] * len(entries)

        inductor_options = _compat.inductor_mode_options(opts.mode) if opts.mode else {}
        backend_options = {**inductor_options, **dict(opts.options or {})}
        if not recording:
            return {"backend": opts.backend, "options": {**backend_options, "guard_filter_fn": drop_all_guards}}
        return {
            "backend": record.backend(opts.backend, None, backend_options),
            "options": {"guard_filter_fn": drop_all_guards},
        }

    def _install(
        self,
        source: types.CodeType,
        compiled: Callable[..., Any],
        captured: list[types.CodeType],
        dropped: list[tuple[str, str]],
        seconds: float,
        check: InputCheck | None,
        shape_exprs: list[str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        record: CompileRecord | None = None,
        state_before: dict[str, Any] | None = None,
        origin: str = "compiled",
        artifact_path: str | None = None,
    ) -> Specialization:
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
        shape_check = None
        if self._options.guards == "inputs" and shape_exprs:
            shape_check = self._shape_check(shape_exprs, args, kwargs)
        spec = Specialization(
            source_code=source,
            compiled=compiled,
            transformed_code=transformed,
            call=call,
            compile_seconds=seconds,
            dropped_guards=tuple(dropped),
            shape_check=shape_check,
            record=record,
            origin=origin,
            artifact_path=artifact_path,
        )
        if check is not None:
            spec.key_function = check.table.key_function
            spec.key = check.key
            spec.selector = check.table.selector
            spec.tensor_match = check.tensor_match
        if self._graph_pool is not None:  # replay a CUDA graph of the call (captured on first use)
            spec.call = _cudagraphs.GraphedCall.for_call(
                self._fn, call, self._graph_pool, args, kwargs,
                transformed_code=transformed,
                copy_outputs=self._options.cudagraph_outputs == "copy",
                dynamic=self._options.dynamic, sizes=self._options.cudagraph_sizes, shape_check=shape_check,
                state_before=state_before,
            )
        self._specs.append(spec)
        if origin == "loaded":
            self._loads += 1
        else:
            self._compiles += 1
            self._compile_seconds += seconds
        if check is not None:
            self._add_to_table(spec, check)
        else:
            self._set_target(spec.call)
        if record is not None:
            _dump.after_compile(self, spec, len(self._specs))  # never raises: problems are WARNINGs
        return spec

    @staticmethod
    def _tensor_match(tensors: list[TensorArg]) -> Any:
        return _compat.tensor_match(
            [t.tensor for t in tensors], [t.sizes() for t in tensors], [t.strides() for t in tensors]
        )

    def _shape_check(self, exprs: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> ShapeCheck:
        unique = list(dict.fromkeys(exprs))
        try:
            check = build_shape_check(self._fn, unique)
            holds = check is not None and check(*args, **kwargs)
        except Exception as exc:
            raise NoCompileError(
                f"{describe_function(self._fn)}: Dynamo left shape guards {unique} that nocompile "
                f"cannot evaluate ({type(exc).__name__}: {exc}). Use guards='dynamo' for this function."
            ) from exc
        if not holds or check is None:  # pragma: no cover - Dynamo's guards hold for its own inputs
            raise NoCompileError(
                f"{describe_function(self._fn)}: Dynamo's shape guards {unique} fail on the compiling call."
            )
        return check

    def _add_to_table(self, spec: Specialization, check: InputCheck) -> None:
        table = check.table
        if table not in self._tables:
            self._tables.append(table)
        shape_ok = spec.shape_check.fn if spec.shape_check is not None else None
        table.selector.add(check.fast_key, (check.tensor_match.check, shape_ok, spec.call))
        self._set_entry(self._tables[0].selector.call)

    def _promote(self, table: KeyTable) -> None:
        """Make ``table`` the one the fast path reads: the structure seen last is the one seen next.

        Calls alternate between argument structures (a prefill without an attention mask, then
        many decode steps with one): without this, every call of the second structure would
        take the slow path and the lock. The entry is one attribute, swapped atomically, and
        each selector only finds its own structure's specializations.
        """
        if table is self._tables[0]:
            return
        self._tables.remove(table)
        self._tables.insert(0, table)
        self._set_entry(table.selector.call)

    # -- errors -----------------------------------------------------------------------------

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

    def _differences(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        spec = self._specs[-1]
        if spec.key_function is None or spec.key is None:  # pragma: no cover - "inputs" always records both
            return ["no signature was recorded for the compiled specialization"]
        try:
            given_function, _ = build_key_function(self._fn, args, kwargs, self._options.dynamic)
        except TypeError as exc:  # the call does not bind to the function's parameters
            return [f"the call does not bind to the parameters: {exc}"]
        given = given_function.fn(*args, **kwargs)
        lines = describe_difference(spec.key_function, spec.key, given_function, given)
        if not lines and spec.selector is not None:
            tensors = spec.selector.tensors(*args, **kwargs)
            reason = _compat.tensor_mismatch(spec.tensor_match, tensors, spec.selector.paths)
            if reason is not None:
                lines = [f"tensor check: {reason}"]
        if not lines and spec.shape_check is not None and not spec.shape_check(*args, **kwargs):
            lines = ["Dynamo's shape guards do not hold: " + " and ".join(spec.shape_check.expressions)]
        return lines or ["the signature differs in a way nocompile could not pin down"]

    def _mismatch_error(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardMismatchError:
        lines = self._differences(args, kwargs)
        hints = []
        parameters = set(parameter_names(self._fn))
        # Only a parameter's own dims can be dynamic (not a tensor inside a list or an object).
        shape_paths = [p for p in (line.split(":", 1)[0] for line in lines if ": shape" in line) if p in parameters]
        if shape_paths:
            hints.append(f"mark the varying dim dynamic, e.g. compile_once(dynamic={{{shape_paths[0]!r}: <dim>}})")
        hints.append(
            "compile one specialization per signature with "
            f"on_mismatch=\"recompile\" (max_compiles={self._options.max_compiles})"
        )
        return GuardMismatchError(
            f"{describe_function(self._fn)} was compiled for another signature (guards=\"inputs\"); "
            "running it on this call could return a wrong result, so nocompile refuses.\n"
            + "".join(f"  {line}\n" for line in lines)
            + "Fix: " + "; or ".join(hints) + "."
        )

    def _limit_error(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardMismatchError:
        seen = "".join(f"  #{i + 1}: {spec.signature()}\n" for i, spec in enumerate(self._specs))
        return GuardMismatchError(
            f"{describe_function(self._fn)} already has max_compiles={self._options.max_compiles} "
            f"specializations and this call matches none of them:\n"
            + "".join(f"  {line}\n" for line in self._differences(args, kwargs))
            + f"Signatures compiled:\n{seen}"
            + "Fix: mark varying dims dynamic (dynamic={...}), raise max_compiles, or make the calls agree."
        )

    # -- public surface ---------------------------------------------------------------------

    @property
    def stats(self) -> CompileStats:
        """A frozen snapshot of this state's counters."""
        return CompileStats(
            calls=self._calls,
            compiles=self._compiles,
            compile_seconds=self._compile_seconds,
            specializations=len(self._specs),
            loads=self._loads,
        )

    @property
    def specializations(self) -> tuple[Specialization, ...]:
        """The compiled specializations, oldest first."""
        return tuple(self._specs)

    def report(self) -> ExplainReport:
        """What was compiled and what was given up for it, as a frozen record (see ``explain``)."""
        return build_report(self._fn, self._options, [(state_label(self, "state"), self)])

    def explain(self, verbose: bool = False) -> str:
        """A readable report: the signature compiled for, the policy, the guards Dynamo wanted
        (dropped or kept, by kind), the FX graph's inputs and the transformed bytecode as Python.
        ``verbose`` lists every guard and adds the FX graph. Before the first compile it says so.
        """
        return self.report().render(verbose=verbose)

    def aot_compile(self, *args: Any, **kwargs: Any) -> Specialization | None:
        """Compile (or load from the cache directory) the specialization for these example
        inputs now, without running the function; later calls with that signature are fast.

        Returns the specialization (``origin``, ``artifact_path``), the existing one when these
        inputs already have one, or None under ``NOCOMPILE_DISABLE``. For a method, called on
        an instance (``model.forward.aot_compile(x)``) it compiles that instance's state.
        """
        owner = self._owner() if self._owner is not None else None
        if owner is not None:
            args = (owner, *args)
        try:
            bound_arguments(self._fn, args, kwargs)
        except TypeError as exc:  # as Python would say it, with the function named
            raise TypeError(f"aot_compile of {describe_function(self._fn)}: {exc}") from None
        if self._options.guards == "dynamo":
            raise NoCompileError(
                f"{describe_function(self._fn)}: aot_compile() needs guards='inputs' or 'none'; under "
                "guards='dynamo' Dynamo compiles on the first call. Call the function once instead."
            )
        with self._lock:
            target = self._ready_target(args, kwargs)
            if target is self._fn and self._disabled:
                return None
            if target is not None:
                return next((s for s in reversed(self._specs) if s.call is target), self._specs[-1])
            if not _artifacts.aot_usable():
                raise NoCompileError(
                    f"{describe_function(self._fn)}: aot_compile() needs torch's ahead-of-time path, which "
                    f"torch {torch.__version__} lacks ({_compat.aot_available()}). Call the function once instead."
                )
            check = self._input_check(args, kwargs) if self._options.guards == "inputs" else None
            self._compiling_thread = threading.get_ident()
            try:
                spec = self._make_ahead(args, kwargs, check, _artifacts.cache_dir_for(self._options), fall_back=False)
            finally:
                self._compiling_thread = None
            return spec

    def reset(self) -> None:
        """Forget the compiled state and zero the counters; the next call compiles again."""
        with self._lock:
            for spec in self._specs:
                _capture.ROUTER.unwatch(spec.source_code)
            self._clear()

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # Copies and unpickled objects start uncompiled: a compiled state holds code objects
        # and Dynamo artifacts bound to this process.
        return (_none, ())

    def _status(self) -> str:
        if self._disabled:
            return f"disabled by {DISABLE_ENV}"
        if not self._specs:
            return "not compiled yet"
        return f"compiled, {self._compiles} compile(s), {self._calls} call(s)"

    def __repr__(self) -> str:
        return f"<nocompile state of {self._fn.__qualname__}: {self._options.describe()}; {self._status()}>"
