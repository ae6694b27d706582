"""Compiling one specialization: in this process under Dynamo, or ahead of time (and from disk).

The state (``_state``) decides *when* a call needs a new specialization and keeps what comes
back; ``_specialize`` makes it, and this module does the compiling, the same way for a first call,
a recompile, ``cache_dir`` and ``aot_compile()``. ``compile_call`` picks the way:

* ``compile_in_process`` runs the call under ``torch.compile`` on a private copy of the
  function's code object — Dynamo caches per code object, so this specialization never sees (or
  disturbs) another's cache entries, and the package's bytecode hook matches it by identity —
  and returns Dynamo's transformed bytecode together with the call's result;
* ``compile_ahead`` loads the specialization from a cache directory, or compiles it with torch's
  ahead-of-time path without running it (and saves it when there is a directory).

Either way the result is a ``Compiled``: the private code object, the transformed bytecode,
the guards Dynamo wanted and the shape guards to keep, and a ``CompileRecord`` for reports.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import _artifacts, _bytecode_hook, _compat, _kernels
from ._arguments import ArgumentTree, dynamic_marks, identity_snapshot
from ._codegen import traced_alias
from ._errors import NoCompileError
from ._layout import KeyFunction
from ._options import CompileOptions
from ._record import Compiled, CompileRecord

log = logging.getLogger("nocompile")


class _NotRun:
    """The result of a compile that did not run the call (ahead of time, or loaded)."""

    def __repr__(self) -> str:
        return "<not run>"


NOT_RUN: Any = _NotRun()


def function_on_code(code: types.CodeType, like: types.FunctionType) -> types.FunctionType:
    """A new function running ``code`` with the globals, defaults and closure of ``like``."""
    fn = types.FunctionType(code, like.__globals__, like.__name__, like.__defaults__, like.__closure__)
    fn.__kwdefaults__ = dict(like.__kwdefaults__) if like.__kwdefaults__ else None
    fn.__qualname__ = like.__qualname__
    fn.__module__ = like.__module__
    return fn


def private_code(fn: types.FunctionType) -> types.CodeType:
    """The private copy of ``fn``'s code object that one specialization compiles.

    Dynamo caches per code object, so a copy of its own keeps this specialization apart from
    every other's, and the bytecode hook matches it by identity. Dynamo never starts a trace in
    torch's own files: a forward defined in ``torch.nn`` (``Sequential``, ``Linear``,
    ``TransformerEncoderLayer``...) would run untraced, where stock ``torch.compile`` enters
    through a frame of its own and inlines it. Such a copy gets a file name of nocompile's own
    (its lines registered in ``linecache`` under it), so Dynamo traces it as it traces stock's
    entry frame and inlines whatever it calls in ``torch.nn`` from there.
    """
    code = fn.__code__
    if not _compat.skipped_as_top_frame(code) and _source_findable(fn):
        return code.replace()
    return code.replace(co_filename=traced_alias(code.co_filename))


def _source_findable(fn: types.FunctionType) -> bool:
    """Whether ``inspect`` finds ``fn``'s source file. Where it does not (code run by ``exec``
    from a string, in globals without a module), torch 2.11's ``torch.compile`` traces an extra
    frame of its own around the function instead of the function's own frame, and the bytecode
    hook would catch nothing: the copy then takes a name ``linecache`` knows (``traced_alias``)."""
    try:
        return inspect.getsourcefile(fn) is not None
    except TypeError:  # pragma: no cover - a function always has a code object's file name
        return False


_DIRECT_NAMES = itertools.count(1)
_GRAPH_PREFIX = "__compiled_fn"
#: Prefix of the module globals holding ``_compat.direct_graph_call`` callables.
DIRECT_PREFIX = "__nc_direct_graph"


def bytecode_function(code: types.CodeType, like: types.FunctionType) -> tuple[types.FunctionType, int]:
    """``(function, graphs called directly)``: ``function_on_code`` of Dynamo's transformed
    bytecode, with each compiled graph it calls that ``_compat.direct_graph_call`` can call past
    its wrappers redirected there (saving several microseconds per call).

    The transformed code loads each graph as a global of the function's module
    (``__compiled_fn_N``, which Dynamo removes when that code dies). The function runs a copy of
    the code that loads a global of nocompile's own instead (``__nc_direct_graphN``, in the same
    module, removed when the copy dies); everything else it reads and stores stays the module's.
    """
    namespace = like.__globals__
    names = list(code.co_names)
    for i, name in enumerate(names):
        if not name.startswith(_GRAPH_PREFIX) or name not in namespace:
            continue
        graph = namespace[name]
        direct = graph.direct_call if isinstance(graph, _kernels.CompiledKernels) else _compat.direct_graph_call(graph)
        if direct is not None:
            names[i] = f"{DIRECT_PREFIX}{next(_DIRECT_NAMES)}"
            namespace[names[i]] = direct
    redirected = [new for old, new in zip(code.co_names, names, strict=True) if old != new]
    if not redirected:
        return function_on_code(code, like), 0
    copy = code.replace(co_names=tuple(names))
    for name in redirected:
        weakref.finalize(copy, namespace.pop, name, None)
    return function_on_code(copy, like), len(redirected)


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


def compile_error(fn: types.FunctionType, options: CompileOptions, exc: BaseException) -> NoCompileError:
    """The error for a function Dynamo could not trace as one graph."""
    return NoCompileError(
        f"torch.compile could not compile {describe_function(fn)} as one graph "
        f"(backend={options.backend_name()!r}, fullgraph=True). Dynamo said:\n"
        f"{_dynamo_reason(exc)}\n"
        "Fix: remove the graph break (print, data-dependent Python control flow, unsupported "
        "calls) from the function, or leave this function undecorated. Nothing was kept: the "
        "next call tries again."
    )


class _GuardCollector:
    """The ``guard_filter_fn`` of one compile: records every guard, keeps or drops them all."""

    def __init__(self, record: CompileRecord, keep: bool, where: str) -> None:
        self.record = record
        self.keep = keep
        self.where = where
        self.dropped: list[tuple[str, str]] = []
        self.shape_exprs: list[str] = []

    def __call__(self, entries: Iterable[Any]) -> list[bool]:
        entries = list(entries)
        self.record.note_guards(entries, kept=self.keep)
        for e in entries:
            if e.guard_type == "SHAPE_ENV":  # the input check evaluates these on every call
                self.shape_exprs.extend(_compat.guard_code(e))
        if self.keep:
            log.debug("%s: keeping all %d guards Dynamo wanted", self.where, len(entries))
            return [True] * len(entries)
        log.debug("%s: dropping all %d guards Dynamo wanted", self.where, len(entries))
        self.dropped.extend((str(e.guard_type), str(e.name)) for e in entries)
        return [False] * len(entries)


def keeps_guards(options: CompileOptions) -> bool:
    """Whether an in-process compile keeps Dynamo's guards in its cache entry.

    ``guards="dynamo"`` does, for Dynamo to evaluate on every call. So does ``guards="inputs"``
    with ``dispatch="bytecode"``: calls never go through Dynamo's frame hook, so nothing evaluates
    them per call, and the state evaluates them through the guard manager when the watch sees a
    change (``_watch``). ``guards="none"`` and ``dispatch="dynamo"`` drop them all.
    """
    policy = options.policy
    return policy.keeps_dynamo_guards or (policy.checks_inputs and options.dispatch == "bytecode")


def _implied_options(options: CompileOptions) -> dict[str, Any]:
    """Inductor options a guard policy implies (the user's ``options=`` override them).

    Under ``guards="inputs"`` the generated code's per-input ``assert_size_stride`` checks what
    the input check already checks for arguments, and what the watch verifies for parameters and
    buffers replaced through registration: ``size_asserts`` is off. Under ``"none"`` they stay:
    the only check that stops a call of another shape from reading out of bounds.
    """
    if options.policy.checks_inputs and options.backend == "inductor":
        return {"size_asserts": False}
    return {}


def _compile_kwargs(options: CompileOptions, guards: _GuardCollector, recording: bool = True) -> dict[str, Any]:
    """``torch.compile``'s keyword arguments (beside ``fullgraph``/``dynamic``) for these options.

    The backend is wrapped by one that records Dynamo's FX graph for ``explain()``/``dump_dir``
    and then calls what ``torch.compile(backend=, mode=, options=)`` would have built itself.
    ``mode`` is expanded into inductor options because guards are filtered through ``options``,
    which ``torch.compile`` refuses next to ``mode``.
    """
    record = guards.record
    if not options.drops_guards:
        user_options = dict(options.options) if options.options else None
        return {
            "backend": record.backend(options.backend, options.mode, user_options),
            "options": {"guard_filter_fn": guards},
        }
    mode_options = _compat.inductor_mode_options(options.mode) if options.mode else {}
    backend_options = {**_implied_options(options), **mode_options, **dict(options.options or {})}
    if not recording and options.backend == "inductor":  # kernels inside the artifact (``_kernels``)
        return {
            "backend": _kernels.KernelBackend(backend_options, cudagraphs=options.cudagraphs),
            "options": {"guard_filter_fn": guards},
        }
    if not recording:  # torch's ahead-of-time save needs torch.compile's own backend object
        return {"backend": options.backend, "options": {**backend_options, "guard_filter_fn": guards}}
    return {
        "backend": record.backend(options.backend, None, backend_options),
        "options": {"guard_filter_fn": guards},
    }


class _GuardsUnbuildable(Exception):
    """Dynamo traced the function but could not build a guard it wanted to keep."""


def compile_in_process(
    fn: types.FunctionType,
    options: CompileOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tree: ArgumentTree,
    record: CompileRecord,
    on_recompile: Callable[[], None],
    automatic_dynamic: bool = False,
) -> tuple[Compiled, Any, BaseException | None]:
    """Compile by running this call under Dynamo: ``(compiled, result, error)``.

    ``error`` is an exception the call raised *after* Dynamo compiled it (the caller keeps the
    specialization and re-raises it). A function Dynamo cannot trace as one graph is a
    ``NoCompileError`` here, and nothing is left watched. ``on_recompile`` is called for each
    later Dynamo recompile of this code (``guards="dynamo"`` only: the other policies drop the
    guards that would trigger one). ``automatic_dynamic`` compiles with ``dynamic=None`` (see below).
    When Dynamo cannot build a guard the policy keeps, the input check does without Dynamo's
    guards (verifying changes by digests instead): the call is compiled again, dropping them.
    """
    drop_guards = False
    while True:
        try:
            return _under_dynamo(fn, options, args, kwargs, tree, record, on_recompile, automatic_dynamic, drop_guards)
        except _GuardsUnbuildable as exc:
            log.info("%s: Dynamo could not build its guards (%s); compiling without them", fn.__qualname__, exc)
            drop_guards = True
            record = CompileRecord(signature=record.signature, unchecked=record.unchecked)


def _under_dynamo(
    fn: types.FunctionType,
    options: CompileOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tree: ArgumentTree,
    record: CompileRecord,
    on_recompile: Callable[[], None],
    automatic_dynamic: bool,
    drop_guards: bool,
) -> tuple[Compiled, Any, BaseException | None]:
    """One compile under Dynamo (``compile_in_process``); ``drop_guards`` drops the guards the
    policy would keep."""
    source = private_code(fn)
    fn_copy = function_on_code(source, fn)
    guards = _GuardCollector(record, keep=keeps_guards(options) and not drop_guards, where=fn.__qualname__)
    # dynamic=None lets Dynamo's automatic dynamic shapes make the sizes and ints that changed since
    # the function's last compile dynamic (its record of them is per function, shared by the copies).
    # Under guards="dynamo" Dynamo recompiles on its own, and with it as stock torch.compile does.
    automatic = automatic_dynamic or (options.policy.keeps_dynamo_guards and options.automatic_dynamic)
    dynamic = None if automatic else False
    compiled = torch.compile(fn_copy, fullgraph=True, dynamic=dynamic, **_compile_kwargs(options, guards))
    caught: list[types.CodeType] = []
    keep_watching = options.policy.watches_recompiles

    def on_bytecode(new_code: types.CodeType) -> None:
        caught.append(new_code)
        log.debug("%s: caught Dynamo's transformed bytecode (%d bytes)", fn.__qualname__, len(new_code.co_code))
        if keep_watching and len(caught) > 1:
            on_recompile()

    marks = dynamic_marks(tree, options.dynamic)  # ValueError on a bad name or dim
    # cudagraphs=True: what the arguments are before the call, to refuse a call that rebinds them.
    before = identity_snapshot(tree) if options.cudagraphs else None
    _bytecode_hook.ROUTER.watch(source, on_bytecode)
    log.info("compiling %s for %s (%s)", describe_function(fn), record.signature, options.describe())
    started = time.perf_counter()
    result: Any = None
    error: BaseException | None = None
    try:
        with _compat.compilation_config(), _compat.marked_dynamic(marks):
            result = compiled(*args, **kwargs)
    except BaseException as exc:
        if not caught or not _compat.has_dynamo_cache_entry(source):
            _bytecode_hook.ROUTER.unwatch(source)
            if guards.keep and options.policy.checks_inputs and _compat.is_guard_building_error(exc):
                raise _GuardsUnbuildable(str(exc)) from exc
            raise compile_error(fn, options, exc) from exc
        error = exc  # compiled fine, then the first run raised
    finally:
        if not keep_watching:
            _bytecode_hook.ROUTER.unwatch(source)
    seconds = time.perf_counter() - started
    if not caught:
        raise NoCompileError(
            f"torch.compile did not compile {describe_function(fn)}: Dynamo ran it without "
            "transforming it (the frame was skipped — a set_stance('force_eager'), "
            "torch._dynamo.config.disable, or a file Dynamo never traces). "
            "Remove what disables Dynamo, or set NOCOMPILE_DISABLE=1 to run eagerly on purpose."
        )
    made = Compiled(
        source_code=source,
        compiled=compiled,
        transformed_code=caught[0],
        seconds=seconds,
        dropped=tuple(guards.dropped),
        shape_exprs=tuple(guards.shape_exprs),
        record=record,
        keeps_guards=guards.keep,
        arguments_before=before,
    )
    if error is None:
        log.info("compiled %s for %s in %.3f s", fn.__qualname__, record.signature, seconds)
    return made, result, error


def compile_ahead(
    fn: types.FunctionType,
    options: CompileOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tree: ArgumentTree,
    signature: tuple[KeyFunction, tuple[Any, ...]],
    record: CompileRecord,
    directory: str | None,
    fall_back: bool,
) -> Compiled | None:
    """Load the specialization from ``directory``, or compile it ahead of time (without running it).

    With ``fall_back``, a failing ahead-of-time compile logs a warning and returns None, so the
    caller compiles in process as usual (which also reports a graph break properly); without,
    it raises ``NoCompileError``.
    """
    source = private_code(fn)
    # torch's ahead-of-time save needs torch.compile's own backend object, so no recording
    # backend here: explain() shows the guards but not the FX graph.
    guards = _GuardCollector(record, keep=False, where=fn.__qualname__)
    try:
        made = _artifacts.make(
            fn,
            function_on_code(source, fn),
            options,
            directory,
            args,
            kwargs,
            tree,
            signature,
            guards,
            _compile_kwargs(options, guards, recording=False),
            record,
        )
    except _artifacts.AheadOfTimeFailed as exc:
        cause = exc.__cause__ or exc
        if not fall_back and _compat.is_tracing_error(cause):
            raise compile_error(fn, options, cause) from cause
        if not fall_back:
            raise NoCompileError(
                f"{describe_function(fn)}: torch's ahead-of-time compile failed after Dynamo traced the "
                f"function (backend={options.backend_name()!r}, torch {torch.__version__}): {exc}\n"
                "Fix: call the function instead of aot_compile(): the first call compiles in-process "
                "(nothing is saved). docs/persistence.md lists the torch releases and backends whose "
                "ahead-of-time path is known to fail."
            ) from cause
        log.warning("%s: ahead-of-time compile failed (%s); compiling in-process, nothing saved", fn.__qualname__, exc)
        return None
    return made


def compile_call(
    fn: types.FunctionType,
    options: CompileOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tree: ArgumentTree,
    signature: tuple[KeyFunction, tuple[Any, ...]],
    record: CompileRecord,
    *,
    run: bool,
    on_recompile: Callable[[], None],
    automatic_dynamic: bool = False,
) -> tuple[Compiled, Any, BaseException | None]:
    """Compile one specialization for this call: ``(compiled, result, error)`` as
    ``compile_in_process`` returns them, ``result`` being ``NOT_RUN`` when the call did not run.

    ``run=True`` (a call): load or compile ahead of time when a cache directory is set and torch
    has the ahead-of-time path (falling back to an in-process compile), else compile by running
    the call under Dynamo. ``run=False`` (``aot_compile``): ahead of time only.
    """
    directory = _artifacts.cache_dir_for(options) if options.drops_guards else None
    if not run or (directory is not None and _artifacts.aot_usable()):
        made = compile_ahead(fn, options, args, kwargs, tree, signature, record, directory, fall_back=run)
        if made is not None:
            return made, NOT_RUN, None
    return compile_in_process(
        fn, options, args, kwargs, tree, record, on_recompile, automatic_dynamic=automatic_dynamic
    )
