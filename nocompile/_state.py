"""The state object: one per decorated function, or per instance for methods.

A ``CompileState`` owns everything about one compiled function: the validated options, the
specializations it holds (each a compile of the function for one call signature: the private
code copy Dynamo saw, the transformed bytecode it produced, the function object built on that
bytecode), the tables the input check selects them from, and the counters behind ``stats``.
Compiling itself is ``_compiler``'s job; reports and dumps read a frozen ``StateView``.

The call path is deliberately tiny: every call enters ``state.entry``, a generated function with
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
import itertools
import logging
import os
import threading
import types
from collections.abc import Callable
from typing import Any

import torch

from . import _artifacts, _automatic, _bytecode_hook, _compat, _cudagraphs, _dump, _watch
from ._arguments import ArgumentTree, Kind, bound_arguments, closure_values, identity_snapshot, walk
from ._codegen import parameter_names
from ._compiler import (
    Compiled,
    bytecode_function,
    compile_ahead,
    compile_in_process,
    describe_function,
)
from ._describe import build_key_function, describe_difference, describe_key
from ._entry import TARGET, MethodFunction, build_direct_entry, build_guarded_call, prologue, prologue_globals
from ._errors import GuardMismatchError, NoCompileError
from ._explain import ExplainReport, build_report
from ._layout import CheckLayout, KeyFunction, TensorArg, global_values
from ._options import CompileOptions
from ._record import CompileRecord
from ._selector import Candidate, Selector, ShapeCheck, build_shape_check, key_function, selector
from ._view import CompileStats, Specialization, StateView

log = logging.getLogger("nocompile")

DISABLE_ENV = "NOCOMPILE_DISABLE"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_SERIALS = itertools.count(1)


def disabled_by_env() -> bool:
    """Whether ``NOCOMPILE_DISABLE`` asks for the original functions to run eagerly."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE_WORDS


@dataclasses.dataclass
class KeyTable:
    """The specializations of one argument structure: its full key function and its selector."""

    key_function: KeyFunction
    selector: Selector


@dataclasses.dataclass(frozen=True)
class InputCheck:
    """What ``guards="inputs"`` records of the compiling call, taken *before* it runs.

    The compiled call may change its argument objects (a cache allocating its tensors on first
    use), so the keys and the tensor check describe the arguments as they arrived.
    """

    table: KeyTable
    key: tuple[Any, ...]
    fast_key: tuple[Any, ...]
    object_key: tuple[Any, ...]
    tensor_match: Any
    """The C++ tensor check of every tensor of the call (verification, messages)."""
    modules: tuple[torch.nn.Module, ...]
    """The modules among the arguments and closure variables, whose trees the registration epoch watches."""
    argument_match: Any
    """The C++ tensor check of the tensors outside argument objects and of the sentinels (every call)."""
    argument_dims: tuple[list[list[int | None]], list[list[int | None]]]
    """``(sizes, strides)`` that check compares (None: a dynamic dim), to build it again (``_verified_target``)."""
    sentinel_states: tuple[tuple[Any, ...], ...]
    """``_watch.sentinel_state`` of each sentinel (``CheckLayout.sentinels``) as the call arrived."""


@dataclasses.dataclass(frozen=True)
class _Request:
    """One call that needs a specialization: the call, its walked arguments and what they describe."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tree: ArgumentTree
    layout: CheckLayout
    key_function: KeyFunction
    key: tuple[Any, ...]
    global_state: Any = None
    modes: tuple[type, ...] = ()
    dynamic: _automatic.Dynamic | None = None

    @property
    def signature(self) -> str:
        return describe_key(self.key_function, self.key)


def _none() -> None:
    """Unpickling target of a per-instance state: copies start uncompiled."""


class CompileState:
    """Compiled state of one function (or of one instance's method).

    Other modules use ``entry`` (what calls enter), ``bound`` (what ``instance.method`` binds),
    ``calls`` (incremented by the entry), ``function``, ``options``, ``owner`` and the public
    methods; everything with a leading underscore is this module's.
    """

    def __init__(self, fn: types.FunctionType, options: CompileOptions) -> None:
        self.function = fn
        self.options = options
        self.serial = next(_SERIALS)
        """Creation order, unique in the process: ``tag`` is ``s<serial>``."""
        self.owner: Callable[[], Any] | None = None
        """What ``aot_compile`` passes first: a weak reference to the instance, or (a callable
        instance, a classmethod) a callable returning the object the state serves."""
        self.calls = 0
        """Calls made; the entry's prologue increments it."""
        self._lock = threading.Lock()
        self._compiling_thread: int | None = None
        self._direct_entry, self._direct_globals = build_direct_entry(fn, self)
        self._tables: list[KeyTable] = []
        self._retired: list[KeyTable] = []
        """Tables forgotten by ``reset``, invalidated: a held entry may still be one's ``call``."""
        self._clear()

    @property
    def tag(self) -> str:
        return f"s{self.serial}"

    # -- the per-call path ------------------------------------------------------------------

    def _set_entry(self, entry: Callable[..., Any]) -> None:
        """Make ``entry`` what calls enter; ``bound`` is what ``instance.method`` binds."""
        self.bound = MethodFunction(entry, self)
        self.entry = entry

    def _set_target(self, target: Callable[..., Any]) -> None:
        """Make the direct entry call ``target``, and make the direct entry what calls enter."""
        self._direct_globals[TARGET] = target
        self._set_entry(self._direct_entry)

    # -- deciding what a call runs ----------------------------------------------------------

    def _clear(self) -> None:
        # A held bound method (``held = model.forward``) may still enter through a table's
        # selector: make it miss, and keep the table, so the next compile of its structure
        # fills that same selector and the held method is on the per-call path again.
        for table in self._tables:
            table.selector.invalidate()
        self._retired = [*self._retired, *self._tables]  # disjoint: a table in use left the retired
        self._tables = []
        self._specs: list[Specialization] = []
        self._disabled = False
        self.calls = 0
        self._compiles = 0
        self._loads = 0
        self._compile_seconds = 0.0
        self._graph_pool = _cudagraphs.GraphPool() if self.options.cudagraphs else None
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
            return self.function(*args, **kwargs)
        with self._lock:
            target = self._ready_target(args, kwargs)
            if target is None:
                return self._compile_and_call(args, kwargs)
        return target(*args, **kwargs)

    def _ready_target(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """Under the lock: what to run for this call, or None when it must compile."""
        if self._disabled:
            return self.function
        if not self._specs:
            if disabled_by_env():
                log.info("%s set: %s runs eagerly", DISABLE_ENV, self.function.__qualname__)
                self._disabled = True
                self._set_target(self.function)
                return self.function
            return None
        if self.options.guards != "inputs":
            return self._specs[0].call  # another thread compiled while we waited
        for table in self._tables:
            target = self._verified_target(table, args, kwargs)
            if target is not None:
                self._promote(table)
                return target
        if self.options.on_mismatch == "raise":
            raise self._mismatch_error(args, kwargs)
        if len(self._specs) >= self.options.max_compiles:
            raise self._limit_error(args, kwargs)
        number, bound = len(self._specs) + 1, self.options.max_compiles
        # Expected in normal use (a prefill, then decode steps): INFO; WARNING once the bound is near.
        level = logging.WARNING if number >= bound - 1 else logging.INFO
        log.log(
            level,
            "%s: recompiling for a new signature (specialization #%d of at most %d): %s",
            self.function.__qualname__,
            number,
            bound,
            "; ".join(self._differences(args, kwargs)),
        )
        return None

    # -- compiling --------------------------------------------------------------------------

    def _request(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        dynamic: _automatic.Dynamic | None = None,
    ) -> _Request:
        """Walk the call once; everything the compile and the check need is projected from it.

        ``dynamic``: dims and ints, by path, compiled as dynamic (automatic dynamic).
        """
        opts = self.options
        # follow_modules: the CUDA-graph snapshot compares modules' attributes before and after.
        tree = walk(
            self.function,
            args,
            kwargs,
            opts.dynamic,
            follow_modules=opts.cudagraphs,
            dynamic_paths=dynamic.dims if dynamic is not None else None,
            dynamic_ints=dynamic.ints if dynamic is not None else frozenset(),
        )
        layout = CheckLayout.of(tree)
        key_fn = key_function(layout)
        return _Request(args, kwargs, tree, layout, key_fn, key_fn.fn(*args, **kwargs), dynamic=dynamic)

    def _compile_and_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = self._request(args, kwargs)
        dynamic = self._automatic_dynamic(request)
        alternative = self._request(args, kwargs, dynamic) if dynamic is not None else None
        spec, result, error = self._compile_specialization(request, run=True, dynamic_request=alternative)
        if error is not None:
            raise error
        return spec.call(*args, **kwargs) if result is _NOT_RUN else result

    def _automatic_dynamic(self, request: _Request) -> _automatic.Dynamic | None:
        """What to compile as dynamic for this call: the sizes and ints in which it differs from the
        latest specialization of its argument structure, if that is all it differs in (and what that
        specialization already had dynamic), or None. Only under ``on_mismatch="recompile"``."""
        opts = self.options
        if not (opts.automatic_dynamic and opts.on_mismatch == "recompile" and opts.guards == "inputs"):
            return None
        for spec in reversed(self._specs):
            function, key = spec.static_key_function, spec.static_key
            if function is not None and key is not None and function.source == request.key_function.source:
                return _automatic.differences(function, key, request.key, spec.dynamic)
        return None

    def _compile_specialization(
        self, request: _Request, run: bool, dynamic_request: _Request | None = None
    ) -> tuple[Specialization, Any, BaseException | None]:
        """The one way a specialization is made (first call, recompile, ``cache_dir``, ``aot_compile``).

        ``run=True`` (a call): load or compile ahead of time when a cache directory is set (falling
        back to an in-process compile), else compile by running the call under Dynamo. ``run=False``
        (``aot_compile``): ahead of time only. Returns ``(spec, result, error)``: the call's result
        when it ran (``_NOT_RUN`` when not), and an exception it raised after compiling.
        Under the lock.
        """
        opts, fn = self.options, self.function
        static_request = request
        check = self._input_check(request) if opts.guards == "inputs" else None
        if check is not None:
            # Watch registrations from before the first compile on: Dynamo traces the registration
            # hooks a forward runs into (a sliced ModuleList registers its layers) and guards on them.
            _watch.EPOCH.install()
        # Keys are taken before the call runs (it may change its argument objects): the dynamic
        # layout's too, in case Dynamo compiles what was asked dynamic as dynamic.
        dynamic_check = self._input_check(dynamic_request) if dynamic_request is not None and check else None
        record = CompileRecord(signature=request.signature, unchecked=request.layout.unchecked)
        # Torch's global state and function modes as the call arrived: what the code is compiled under.
        request = dataclasses.replace(
            request,
            global_state=_compat.global_state_guard(),
            modes=tuple(type(m) for m in _compat.torch_function_modes()),
        )
        directory = _artifacts.cache_dir_for(opts) if opts.drops_guards else None
        self._compiling_thread = threading.get_ident()
        try:
            if not run or (directory is not None and _artifacts.aot_usable()):
                made = compile_ahead(
                    fn, opts, request.args, request.kwargs, request.tree, record, directory, fall_back=run
                )
                if made is not None:
                    return self._install(made, check, request, None), _NOT_RUN, None
            # cudagraphs=True: what the arguments are before the call, to refuse a call that rebinds them.
            before = identity_snapshot(request.tree) if opts.cudagraphs else None
            made, result, error = compile_in_process(
                fn,
                opts,
                request.args,
                request.kwargs,
                request.tree,
                record,
                self._count_dynamo_recompile,
                automatic_dynamic=dynamic_request is not None,
            )
        finally:
            self._compiling_thread = None
        if dynamic_request is not None and dynamic_request.dynamic is not None and dynamic_check is not None:
            kept_static = _automatic.kept_static(dynamic_request.dynamic, made.shape_exprs, made.record)
            if kept_static:
                log.info(
                    "%s: Dynamo kept %s static; this specialization checks them exactly",
                    fn.__qualname__,
                    ", ".join(kept_static),
                )
            else:
                request = dataclasses.replace(dynamic_request, global_state=request.global_state, modes=request.modes)
                check = dynamic_check
                if made.record is not None:
                    made.record.signature = request.signature
                log.info(
                    "%s: compiled dynamic in %s (they differed from the last specialization)",
                    fn.__qualname__,
                    ", ".join(dynamic_request.dynamic.describe()),
                )
        return self._install(made, check, request, before, static_request), result, error

    def _count_dynamo_recompile(self) -> None:
        self._compiles += 1
        log.warning("%s: Dynamo recompiled (guards='dynamo'), compile #%d", self.function.__qualname__, self._compiles)

    def _install(
        self,
        made: Compiled,
        check: InputCheck | None,
        request: _Request,
        before: dict[str, Any] | None,
        static_request: _Request | None = None,
    ) -> Specialization:
        fn, opts = self.function, self.options
        transformed = made.transformed_code
        call: Callable[..., Any] = made.compiled
        direct_graphs = 0
        if opts.calls_bytecode:
            if opts.guards == "dynamo":
                call = self._guarded_call(made)
            elif transformed.co_freevars == fn.__code__.co_freevars:
                # Dynamo removes the __compiled_fn_* globals this code loads once the code
                # object dies: the specialization keeps it (``transformed_code``).
                call, direct_graphs = bytecode_function(transformed, fn)
            else:  # pragma: no cover - has not happened on supported torch versions
                log.warning(
                    "%s: Dynamo's transformed code has free variables %s, the function %s; "
                    "calling through torch.compile instead of the transformed bytecode",
                    fn.__qualname__,
                    transformed.co_freevars,
                    fn.__code__.co_freevars,
                )
        shape_check = None
        if opts.guards == "inputs" and made.shape_exprs:
            shape_check = self._shape_check(list(made.shape_exprs), request.args, request.kwargs)
        spec = Specialization(
            source_code=made.source_code,
            compiled=made.compiled,
            transformed_code=transformed,
            call=call,
            compile_seconds=made.seconds,
            dropped_guards=made.dropped,
            shape_check=shape_check,
            record=made.record,
            origin=made.origin,
            artifact_path=made.artifact_path,
            direct_graphs=direct_graphs,
        )
        static_request = static_request or request
        spec.static_key_function, spec.static_key = static_request.key_function, static_request.key
        spec.dynamic = request.dynamic
        if check is not None:
            spec.key_function = check.table.key_function
            spec.key = check.key
            spec.selector = check.table.selector
            spec.tensor_match = check.tensor_match
            spec.argument_match = check.argument_match
            spec.argument_dims = check.argument_dims
            spec.sentinel_states = check.sentinel_states
            spec.global_state = request.global_state
            spec.torch_function_modes = request.modes
            spec.module_layouts = {
                where: _watch.tensor_layout(module)
                for where, module in _layout_sources(fn, bound_arguments(fn, request.args, request.kwargs)).items()
            }
            if made.origin == "compiled" and made.keeps_guards:
                spec.guard_manager = _compat.dynamo_guard_manager(made.source_code)
            if spec.guard_manager is None:  # verified by digests instead (see _baked_in_failure)
                spec.module_digests = {
                    root.path: _artifacts.module_digest(root.value)
                    for root in request.tree.roots
                    if root.kind is Kind.MODULE
                }
        if self._graph_pool is not None and spec.dynamic is not None:
            # A graph has fixed shapes: a specialization made dynamic automatically runs ungraphed
            # (cudagraph_sizes=[...] with dynamic={...} pads calls to captured sizes instead).
            log.info(
                "%s: specialization #%d is dynamic in %s; it runs without CUDA graphs",
                fn.__qualname__,
                len(self._specs) + 1,
                ", ".join(spec.dynamic.describe()),
            )
        elif self._graph_pool is not None:  # replay a CUDA graph of the call (captured on first use)
            after = walk(fn, request.args, request.kwargs, follow_modules=True)  # what the call left
            spec.call = _cudagraphs.GraphedCall.for_call(
                fn,
                call,
                self._graph_pool,
                after,
                transformed_code=transformed,
                copy_outputs=opts.cudagraph_outputs == "copy",
                dynamic=opts.dynamic,
                sizes=opts.cudagraph_sizes,
                shape_check=shape_check,
                state_before=before,
            )
        self._specs.append(spec)
        if made.origin == "loaded":
            self._loads += 1
        else:
            self._compiles += 1
            self._compile_seconds += made.seconds
        if check is not None:
            self._add_to_table(spec, check)
        else:
            self._set_target(spec.call)
        if made.record is not None:
            _dump.after_compile(self.view(), spec, len(self._specs))  # never raises: problems are WARNINGs
        return spec

    def _guarded_call(self, made: Compiled) -> Callable[..., Any]:
        """``guards="dynamo"``: Dynamo's cache entries for this compile, each guard manager
        evaluated directly and the first passing entry's bytecode run; a call none passes goes
        through ``torch.compile``'s entry (Dynamo recompiles), and the entries are read again."""
        fn, source, dynamo_entry = self.function, made.source_code, made.compiled
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

    def _input_check(self, request: _Request) -> InputCheck:
        """The call's keys and tensor check, for the table of its argument structure."""
        table = self._table_for(request)
        args, kwargs = request.args, request.kwargs
        return InputCheck(
            table=table,
            key=request.key,
            fast_key=table.selector.fast(*args, **kwargs),
            object_key=table.selector.object_key(*args, **kwargs),
            tensor_match=_tensor_match(request.layout.all_tensors),
            argument_match=_tensor_match(request.layout.checked_tensors),
            argument_dims=_tensor_dims(request.layout.checked_tensors),
            sentinel_states=tuple(_watch.sentinel_state(t.tensor) for t in request.layout.sentinels),
            modules=tuple(n.value for n in request.tree.all_nodes() if n.kind is Kind.MODULE and not n.inside_object),
        )

    def _table_for(self, request: _Request) -> KeyTable:
        """The table for this call's argument structure: an existing one, or a new one (not yet added)."""
        if request.layout.unchecked:
            log.warning(
                "%s: guards='inputs' cannot check %s; a later call that changes them runs the code "
                "compiled for these (see docs/footguns.md)",
                self.function.__qualname__,
                ", ".join(request.layout.unchecked),
            )
        for table in (*self._tables, *self._retired):  # the same structure as an existing table: share it
            if table.key_function.source == request.key_function.source:
                return table
        check = selector(
            request.layout,
            self._slow_call,
            entry_prologue=(prologue(self.function), prologue_globals(self.function, self)),
        )
        return KeyTable(request.key_function, check)

    def _shape_check(self, exprs: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> ShapeCheck:
        unique = list(dict.fromkeys(exprs))
        fn = self.function
        try:
            check = build_shape_check(fn, unique)
            if check is not None:
                # Evaluated once to prove nocompile can; the result may be False now, since the
                # compiled call may have changed what they read (a cache's position counter).
                check(*args, **kwargs)
        except Exception as exc:
            raise NoCompileError(
                f"{describe_function(fn)}: Dynamo left shape guards {unique} that nocompile "
                f"cannot evaluate ({type(exc).__name__}: {exc}). Use guards='dynamo' for this function."
            ) from exc
        if check is None:  # pragma: no cover - build_shape_check returns one for any expression
            raise NoCompileError(f"{describe_function(fn)}: no shape check for {unique}.")
        return check

    def _add_to_table(self, spec: Specialization, check: InputCheck) -> None:
        table = check.table
        if table not in self._tables:
            self._tables.append(table)
            self._retired = [t for t in self._retired if t is not table]
        for root in check.modules:
            _watch.EPOCH.watch(root)
        shape_ok = spec.shape_check.fn if spec.shape_check is not None else None
        spec.object_key = check.object_key
        candidate = (spec.global_state.check, check.argument_match.check, shape_ok, spec.call)
        table.selector.add(check.fast_key, candidate)
        self._set_entry(self._tables[0].selector.call)

    # -- verification: a call whose fingerprint is new (see _watch) --------------------------

    def _verified_target(
        self, table: KeyTable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[..., Any] | None:
        """Under the lock: the specialization of ``table`` this call may run, verified, or None.

        The per-call path found no verified fingerprint (or no candidate passing); here every
        check runs in full: the object key (argument objects' attributes), every tensor, torch's
        global state, the shape guards, and — when the module part of the fingerprint is new for
        the candidate — Dynamo's guards on what the code baked in. A pass records the
        fingerprint, so the next such call is fast again.
        """
        check = table.selector
        candidates = check.candidates(args, kwargs)
        if not candidates:
            return None
        try:
            # The module dicts' version tree first: the module part names it (``_watch.ObjectWatch``).
            check.remember_modules(args, kwargs)
            fingerprint = check.fingerprint(*args, **kwargs)
            pins = _watch.pinned_objects(check.pins(*args, **kwargs))
            object_key = check.object_key(*args, **kwargs)
            tensors = check.tensors(*args, **kwargs)
            checked = check.argument_tensors(*args, **kwargs)
        except Exception:  # the call does not have this table's structure inside its objects
            return None
        sentinel_states = tuple(map(_watch.sentinel_state, checked[len(checked) - check.sentinel_count :]))
        module_part = fingerprint[: check.module_part]
        vouched = check.module_part_vouched(fingerprint)
        for candidate in candidates:
            spec = self._spec_of(candidate[3])
            if spec is None or spec.object_key != object_key:
                continue
            if not spec.global_state.check() or not spec.tensor_match.check(*tensors):
                continue
            # Converted in place (``model.half()``), or unfrozen since compiling.
            if not all(map(_watch.sentinel_holds, spec.sentinel_states, sentinel_states)):
                continue
            if spec.shape_check is not None and not spec.shape_check(*args, **kwargs):
                continue
            if not vouched or module_part not in spec.verified_modules:
                if self._baked_in_failure(spec, args, kwargs) is not None:
                    continue
                if vouched:
                    spec.verified_modules.add(module_part, (), pins)
            # Verified: now a version tree may vouch for the argument objects, and the key name it.
            try:
                check.remember_objects(args, kwargs)
                key = check.verified_key(*args, **kwargs)
            except Exception:  # a tree cannot be built for these objects: run, record nothing
                return spec.call
            if vouched and check.vouched(key):
                per_call = _per_call_candidate(candidate, spec, checked)
                if per_call is not None:
                    check.verify(key, per_call, pins)
            return spec.call
        return None

    def _spec_of(self, call: Callable[..., Any]) -> Specialization | None:
        return next((s for s in self._specs if s.call is call), None)

    def _baked_in_failure(self, spec: Specialization, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Why values the code baked in (attributes of modules, closure cells, globals, torch
        function modes) no longer hold for this call, or None when they do.

        First the layout of every parameter and buffer of each module argument (kernels assume
        it; Dynamo's guards miss an in-place ``model.double()`` on some supported releases). Then, with Dynamo's
        guard manager (an in-process compile): every guard Dynamo built, evaluated directly.
        Without one (ahead of time or loaded from ``cache_dir``, or ``dispatch="dynamo"``): the
        digest of each module argument and the torch-function modes, as compiled for.
        """
        fn = self.function
        bound = bound_arguments(fn, args, kwargs)
        layout_failure = _layout_failure(spec.module_layouts, _layout_sources(fn, bound))
        if layout_failure is not None:
            return layout_failure
        if spec.guard_manager is not None:
            failure = _compat.guard_failure(spec.guard_manager, {**bound, **closure_values(fn)})
            return None if failure is None else f"Dynamo's guard: {failure}"
        modes = tuple(type(m) for m in _compat.torch_function_modes())
        if modes != spec.torch_function_modes:
            return f"torch function modes compiled for {spec.torch_function_modes}, now {modes}"
        for name, digest in spec.module_digests.items():
            if _artifacts.module_digest(bound[name]) != digest:
                return (
                    f"{name}: its parameters, buffers, submodules or plain attributes differ from what this "
                    f"specialization was compiled for ({spec.origin} without Dynamo's guards)"
                )
        return None

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

    def _differences(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        spec = self._specs[-1]
        if spec.key_function is None or spec.key is None:  # pragma: no cover - "inputs" always records both
            return ["no signature was recorded for the compiled specialization"]
        try:
            given_function, _ = build_key_function(self.function, args, kwargs, self.options.dynamic)
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
        if not lines and spec.global_state is not None and not spec.global_state.check():
            lines = [f"torch's global state changed since compiling: {spec.global_state.reason().strip()}"]
        if not lines:
            failure = self._baked_in_failure(spec, args, kwargs)
            if failure is not None:
                lines = [f"a value the compiled code baked in changed: {failure}"]
        return lines or ["the signature differs in a way nocompile could not pin down"]

    def _mismatch_error(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardMismatchError:
        lines = self._differences(args, kwargs)
        hints = []
        parameters = set(parameter_names(self.function))
        # Only a parameter's own dims can be dynamic (not a tensor inside a list or an object).
        shape_paths = [p for p in (line.split(":", 1)[0] for line in lines if ": shape" in line) if p in parameters]
        if shape_paths:
            hints.append(f"mark the varying dim dynamic, e.g. compile_once(dynamic={{{shape_paths[0]!r}: <dim>}})")
        hints.append(
            "compile one specialization per signature with "
            f'on_mismatch="recompile" (max_compiles={self.options.max_compiles})'
        )
        return GuardMismatchError(
            f'{describe_function(self.function)} was compiled for another signature (guards="inputs"); '
            "running it on this call could return a wrong result, so nocompile refuses.\n"
            + "".join(f"  {line}\n" for line in lines)
            + "Fix: "
            + "; or ".join(hints)
            + "."
        )

    def _limit_error(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardMismatchError:
        seen = "".join(f"  #{i + 1}: {spec.signature()}\n" for i, spec in enumerate(self._specs))
        return GuardMismatchError(
            f"{describe_function(self.function)} already has max_compiles={self.options.max_compiles} "
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
            calls=self.calls,
            compiles=self._compiles,
            compile_seconds=self._compile_seconds,
            specializations=len(self._specs),
            loads=self._loads,
        )

    @property
    def specializations(self) -> tuple[Specialization, ...]:
        """The compiled specializations, oldest first."""
        return tuple(self._specs)

    def view(self) -> StateView:
        """A frozen view of this state for reports and dumps."""
        return StateView(self.function, self.options, self.tag, self.status(), self._disabled, tuple(self._specs))

    def report(self) -> ExplainReport:
        """What was compiled and what was given up for it, as a frozen record (see ``explain``)."""
        return build_report(self.function, self.options, [("state", self.view())])

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
        owner = self.owner() if self.owner is not None else None
        if owner is not None:
            args = (owner, *args)
        fn = self.function
        try:
            bound_arguments(fn, args, kwargs)
        except TypeError as exc:  # as Python would say it, with the function named
            raise TypeError(f"aot_compile of {describe_function(fn)}: {exc}") from None
        if self.options.guards == "dynamo":
            raise NoCompileError(
                f"{describe_function(fn)}: aot_compile() needs guards='inputs' or 'none'; under "
                "guards='dynamo' Dynamo compiles on the first call. Call the function once instead."
            )
        with self._lock:
            target = self._ready_target(args, kwargs)
            if target is fn and self._disabled:
                return None
            if target is not None:
                return next((s for s in reversed(self._specs) if s.call is target), self._specs[-1])
            if not _artifacts.aot_usable():
                raise NoCompileError(
                    f"{describe_function(fn)}: aot_compile() needs torch's ahead-of-time path, which "
                    f"torch {torch.__version__} lacks ({_compat.aot_available()}). Call the function once instead."
                )
            spec, _, _ = self._compile_specialization(self._request(args, kwargs), run=False)
            return spec

    def reset(self) -> None:
        """Forget the compiled state and zero the counters; the next call compiles again."""
        with self._lock:
            for spec in self._specs:
                _bytecode_hook.ROUTER.unwatch(spec.source_code)
            self._clear()

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # Copies and unpickled objects start uncompiled: a compiled state holds code objects
        # and Dynamo artifacts bound to this process.
        return (_none, ())

    def status(self) -> str:
        """One line: disabled, not compiled yet, or how many compiles and calls."""
        if self._disabled:
            return f"disabled by {DISABLE_ENV}"
        if not self._specs:
            return "not compiled yet"
        return f"compiled, {self._compiles} compile(s), {self.calls} call(s)"

    def __repr__(self) -> str:
        return f"<nocompile state of {self.function.__qualname__}: {self.options.describe()}; {self.status()}>"


class _NotRun:
    """The result of a compile that did not run the call (ahead of time, or loaded)."""

    def __repr__(self) -> str:
        return "<not run>"


_NOT_RUN: Any = _NotRun()


def _per_call_candidate(
    candidate: Candidate, spec: Specialization, tensors: tuple[torch.Tensor, ...]
) -> Candidate | None:
    """``candidate`` for the per-call path of a verified key, with a tensor check that passes for
    this verified call (None: record nothing, the next such call verifies again).

    The check made at compile time compares the sentinels' ``requires_grad``; a sentinel frozen
    since (fine-tuning freezes the embeddings) passed verification (``_watch.sentinel_holds``:
    every other property the check compares is the same), and would otherwise fail that check
    on every call. The check is then built again from this call's tensors, with the compiled
    dynamic dims."""
    if candidate[1](*tensors):
        return candidate
    sizes, strides = spec.argument_dims
    try:
        rebuilt = _compat.tensor_match(list(tensors), sizes, strides)
    except Exception:  # pragma: no cover - the tensors just passed the verification's check
        return None
    return (candidate[0], rebuilt.check, candidate[2], candidate[3])


def _tensor_dims(tensors: tuple[TensorArg, ...]) -> tuple[list[list[int | None]], list[list[int | None]]]:
    """``(sizes, strides)`` as the tensor check compares them (None: any value, a dynamic dim)."""
    return [t.sizes() for t in tensors], [t.strides() for t in tensors]


def _tensor_match(tensors: tuple[TensorArg, ...]) -> Any:
    return _compat.tensor_match([t.tensor for t in tensors], *_tensor_dims(tensors))


def _layout_sources(fn: types.FunctionType, bound: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """The modules whose parameters' layout a specialization is compiled for, by where the code
    reaches them: module arguments (``self``; ``bound``: the call's arguments by name), modules in
    closure cells, modules the code names as globals."""
    found = {name: value for name, value in bound.items() if isinstance(value, torch.nn.Module)}
    for name, value in closure_values(fn).items():
        if isinstance(value, torch.nn.Module):
            found[f"closure cell {name}"] = value
    for name, value in global_values(fn):
        if isinstance(value, torch.nn.Module):
            found[f"global {name}"] = value
    return found


def _layout_failure(layouts: dict[str, tuple[Any, ...]], now: dict[str, torch.nn.Module]) -> str | None:
    """The first parameter or buffer whose layout differs from what was compiled for, as text;
    ``now``: :func:`_layout_sources` of this call."""
    for where, layout in layouts.items():
        module = now.get(where)
        if module is None:
            return f"{where} is no longer a module"
        changed = _watch.layout_change(where, layout, _watch.tensor_layout(module))
        if changed is not None:
            return changed
    return None
