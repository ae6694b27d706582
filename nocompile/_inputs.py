"""The input check of ``guards="inputs"``, in one owner: which specialization a call may run.

``CompileState`` decides *when* to compile; an ``InputGuard`` decides *whether a call may run
what was compiled*, and owns everything that takes:

* its tables, one per argument structure (``KeyTable``: the full key function and the generated
  ``Selector`` whose ``call`` is the per-call path, ``_selector``);
* ``arrive(request)``: what the compiling call's inputs were as they arrived (keys and tensor
  checks are taken before the call runs: it may change its argument objects);
* ``expect(...)``: the frozen ``Expectations`` a specialization is installed with, and
  ``install(spec)``, which registers it in its table;
* ``lookup(args, kwargs)``: under the state's lock, a call the per-call path did not vouch for
  (a new fingerprint, ``_watch``), verified in full against each candidate's expectations;
* ``explain_miss(request)`` and the mismatch errors, from the request the miss built once;
* ``invalidate()`` on ``reset``, reaching every entry someone still holds.

Everything the state used to drive member by member happens here; the state reads ``entry``
(the front table's per-call path) after ``lookup`` and ``install``, and rebinds its own entry.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import _artifacts, _audit, _automatic, _compat, _watch
from ._arguments import ArgumentTree, Kind, bound_arguments, closure_values, walk
from ._codegen import parameter_names
from ._compiler import describe_function
from ._describe import describe_difference, describe_key
from ._errors import GuardMismatchError, NoCompileError
from ._layout import CheckLayout, KeyFunction, TensorArg, global_values
from ._options import CompileOptions
from ._record import Compiled
from ._selector import Candidate, Selector, ShapeCheck, build_shape_check, key_function, selector
from ._trace_watch import TraceWatch
from ._view import Expectations, Specialization

log = logging.getLogger("nocompile")


@dataclasses.dataclass(frozen=True)
class Request:
    """One call that needs a specialization: the call, its walked arguments and what they describe.

    Built once per slow-path event (a first call, a miss, ``aot_compile``) and passed to
    everything that needs it: the miss's message, the compile, the install, the artifact key.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tree: ArgumentTree
    layout: CheckLayout
    key_function: KeyFunction
    key: tuple[Any, ...]
    global_state: Any = None
    modes: tuple[type, ...] = ()
    dynamic: _automatic.Dynamic | None = None
    alternative: Request | None = None
    """Automatic dynamic (a recompile): the same call walked again with the sizes and ints in which
    it differs from the latest specialization of its structure marked dynamic (``InputGuard.miss``)."""

    @property
    def signature(self) -> str:
        return describe_key(self.key_function, self.key)

    @property
    def arguments(self) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied (the tree's roots)."""
        return self.tree.arguments


def request_for(
    fn: types.FunctionType,
    options: CompileOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dynamic: _automatic.Dynamic | None = None,
    bound: Mapping[str, Any] | None = None,
) -> Request:
    """Bind and walk the call once (TypeError if it does not bind); everything the compile and the
    check need is projected from that. ``dynamic``: dims and ints, by path, compiled as dynamic;
    ``bound``: the arguments an earlier request bound (walked again, not bound again)."""
    # follow_modules: the CUDA-graph snapshot compares modules' attributes before and after.
    tree = walk(
        fn,
        args,
        kwargs,
        options.dynamic,
        follow_modules=options.cudagraphs,
        dynamic_paths=dynamic.dims if dynamic is not None else None,
        dynamic_ints=dynamic.ints if dynamic is not None else frozenset(),
        bound=bound,
    )
    layout = CheckLayout.of(tree)
    key_fn = key_function(layout)
    return Request(args, kwargs, tree, layout, key_fn, key_fn.fn(*args, **kwargs), dynamic=dynamic)


@dataclasses.dataclass
class KeyTable:
    """The specializations of one argument structure: its full key function and its selector."""

    key_function: KeyFunction
    selector: Selector


@dataclasses.dataclass(frozen=True)
class Arrival:
    """What the compiling call's inputs were as they arrived, taken *before* the call runs.

    The compiled call may change its argument objects (a cache allocating its tensors on first
    use), so the keys and the tensor checks describe the arguments as they arrived.
    """

    table: KeyTable
    key: tuple[Any, ...]
    fast_key: tuple[Any, ...]
    object_key: tuple[Any, ...]
    tensor_match: Any
    argument_match: Any
    argument_dims: tuple[list[list[int | None]], list[list[int | None]]]
    tier_dims: tuple[list[list[int | None]], list[list[int | None]]]
    sentinel_states: tuple[tuple[Any, ...], ...]
    modules: tuple[torch.nn.Module, ...]
    dynamic: tuple[Request, Arrival] | None = None
    """Automatic dynamic: the call walked again with the sizes and ints that changed since the
    latest specialization of its structure marked dynamic, and its arrival; the compile uses them
    if Dynamo compiles those as dynamic."""
    audit: bool = False
    """Whether the specialization is audited (``CompileOptions.audits``, read before compiling)."""


class InputGuard:
    """The ``guards="inputs"`` check of one ``CompileState`` (see the module docstring).

    ``slow(args, kwargs)`` is the state's slow path, which every selector's per-call path calls
    on a miss; ``entry_prologue`` is the state's entry prologue (``_entry.prologue``) and its
    globals, so that a selector's ``call`` is the state's entry itself.
    """

    def __init__(
        self,
        fn: types.FunctionType,
        options: CompileOptions,
        slow: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        entry_prologue: tuple[str, Mapping[str, Any]],
    ) -> None:
        self.function = fn
        self.options = options
        self._slow = slow
        self._prologue = entry_prologue
        self.tables: list[KeyTable] = []
        """The tables in use, the one the per-call path reads first."""
        self._retired: list[KeyTable] = []
        """Tables forgotten by ``invalidate``: a held entry may still be one's ``call``."""

    @property
    def entry(self) -> Callable[..., Any]:
        """The per-call path: the front table's selector (after at least one ``install``)."""
        return self.tables[0].selector.call

    @property
    def dispatch(self) -> Callable[..., Any]:
        """The same without the entry prologue, for the state's direct entry."""
        return self.tables[0].selector.dispatch

    def invalidate(self) -> None:
        """Forget every table (``reset``). A held bound method (``held = model.forward``) may still
        enter through a table's selector: make it miss, and keep the table, so the next compile of
        its structure fills that same selector and the held method is on the per-call path again."""
        for table in self.tables:
            table.selector.invalidate()
        self._retired = [*self._retired, *self.tables]  # disjoint: a table in use left the retired
        self.tables = []

    # -- before and after a compile -----------------------------------------------------------

    def arrive(self, request: Request) -> Arrival:
        """The call's keys and tensor checks, for the table of its argument structure; with the
        request's automatic-dynamic alternative and its arrival, if it has one."""
        arrivals = []
        for one in (request, request.alternative):
            if one is not None:
                arrivals.append(self._arrival(one))
        if request.alternative is None:
            return arrivals[0]
        return dataclasses.replace(arrivals[0], dynamic=(request.alternative, arrivals[1]))

    def _arrival(self, request: Request) -> Arrival:
        table = self._table_for(request)
        args, kwargs, layout = request.args, request.kwargs, request.layout
        return Arrival(
            table=table,
            key=request.key,
            fast_key=table.selector.fast(*args, **kwargs),
            object_key=table.selector.object_key(*args, **kwargs),
            tensor_match=_tensor_match(layout.all_tensors),
            argument_match=_tensor_match(layout.checked_tensors),
            argument_dims=_tensor_dims(layout.checked_tensors),
            tier_dims=_tensor_dims((*layout.checked_tensors, *layout.object_tensors)),
            sentinel_states=tuple(_watch.sentinel_state(t.tensor) for t in layout.sentinels),
            modules=layout.modules,
            audit=self.options.audits(),
        )

    def _table_for(self, request: Request) -> KeyTable:
        """The table for this call's argument structure: an existing one, or a new one (not yet added)."""
        if request.layout.unchecked:
            log.warning(
                "%s: guards='inputs' cannot check %s; a later call that changes them runs the code "
                "compiled for these (see docs/footguns.md)",
                self.function.__qualname__,
                ", ".join(request.layout.unchecked),
            )
        for table in (*self.tables, *self._retired):  # the same structure as an existing table: share it
            if table.key_function.source == request.key_function.source:
                return table
        return KeyTable(request.key_function, selector(request.layout, self._slow, entry_prologue=self._prologue))

    def _shape_check(self, exprs: tuple[str, ...], request: Request) -> ShapeCheck | None:
        """Dynamo's shape guards on dynamic dims as one function, proven to evaluate on this call."""
        if not exprs:
            return None
        unique = list(dict.fromkeys(exprs))
        fn = self.function
        try:
            check = build_shape_check(fn, unique)
            if check is not None:
                # Evaluated once to prove nocompile can; the result may be False now, since the
                # compiled call may have changed what they read (a cache's position counter).
                check(*request.args, **request.kwargs)
        except Exception as exc:
            raise NoCompileError(
                f"{describe_function(fn)}: Dynamo left shape guards {unique} that nocompile "
                f"cannot evaluate ({type(exc).__name__}: {exc}). Use guards='dynamo' for this function."
            ) from exc
        return check

    def expect(self, arrival: Arrival, request: Request, made: Compiled) -> Expectations:
        """The frozen record of what a call must match to run the specialization ``made`` for it.

        With Dynamo's guard manager (an in-process compile that kept its guards) a change is
        verified against Dynamo's guards; without, against each module argument's digest.
        """
        fn = self.function
        shape_check = self._shape_check(made.shape_exprs, request)
        keeps = made.origin == "compiled" and made.keeps_guards
        guard_manager = _compat.dynamo_guard_manager(made.source_code) if keeps else None
        trace_watch = TraceWatch(fn, guard_manager, request.arguments) if guard_manager is not None else None
        return Expectations(
            key_function=arrival.table.key_function,
            key=arrival.key,
            selector=arrival.table.selector,
            object_key=arrival.object_key,
            tensor_match=arrival.tensor_match,
            argument_match=arrival.argument_match,
            argument_dims=arrival.argument_dims,
            tier_dims=arrival.tier_dims,
            sentinel_states=arrival.sentinel_states,
            fast_key=arrival.fast_key,
            shape_check=shape_check,
            global_state=request.global_state,
            torch_function_modes=request.modes,
            module_layouts={
                where: _watch.tensor_layout(module) for where, module in _layout_sources(fn, request.arguments).items()
            },
            guard_manager=guard_manager,
            trace_watch=trace_watch,
            module_digests={}
            if guard_manager is not None
            else {
                root.path: _artifacts.module_digest(root.value)
                for root in request.tree.roots
                if root.kind is Kind.MODULE
            },
            audit=arrival.audit,
        )

    def install(self, spec: Specialization, arrival: Arrival) -> None:
        """Register ``spec`` in its table; its table is then the one the per-call path reads first
        when it is new (read ``entry`` after). The registration epoch watches the modules the call
        brought (``arrival``; the specialization does not hold them: a module holding its own
        compiled method would be kept alive by it)."""
        expected = spec.expectations
        if expected is None:  # pragma: no cover - the state installs only specs with expectations here
            raise RuntimeError("nocompile: a specialization without expectations installed in the input check")
        table = next((t for t in self.tables if t.selector is expected.selector), None)
        if table is None:  # a new structure, or one in use before a reset
            table = KeyTable(expected.key_function, expected.selector)
            self.tables.append(table)
            self._retired = [t for t in self._retired if t.selector is not expected.selector]
        for root in arrival.modules:
            _watch.EPOCH.watch(root)
        shape_ok = _trace_and_shape(expected)
        # Audited: the candidate runs the guards first (``_audit``); otherwise the call itself.
        call = _audit.audited(self.function, self.baked_in_failure, spec) if expected.audit else spec.call
        candidate = Candidate(expected.global_state.check, expected.argument_match.check, shape_ok, call, spec)
        table.selector.add(expected.fast_key, candidate)
        _open_module_part(table.selector)

    def _automatic_dynamic(self, request: Request, specs: Sequence[Specialization]) -> _automatic.Dynamic | None:
        """What to compile as dynamic for this call: the sizes and ints in which it differs from the
        latest specialization of its argument structure, if that is all it differs in (and what that
        specialization already had dynamic), or None. Only under ``on_mismatch="recompile"``."""
        if not (self.options.automatic_dynamic and self.options.on_mismatch == "recompile"):
            return None
        for spec in reversed(specs):
            function, key = spec.static_key_function, spec.static_key
            if function is not None and key is not None and function.source == request.key_function.source:
                return _automatic.differences(function, key, request.key, spec.dynamic)
        return None

    # -- a call the per-call path did not vouch for -------------------------------------------

    def lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
        """Under the state's lock: what this call may run, verified, or None. The table that
        served it moves to the front (read ``entry`` after)."""
        for table in self.tables:
            target = self._verified_target(table, args, kwargs)
            if target is not None:
                self._promote(table)
                return target
        return None

    def _verified_target(
        self, table: KeyTable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[..., Any] | None:
        """The specialization of ``table`` this call may run, verified, or None.

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
            seen = check.verification(*args, **kwargs)
            pins = _watch.pinned_objects(check.pins(*args, **kwargs))
        except Exception:  # the call does not have this table's structure inside its objects
            return None
        checked = seen.argument_tensors
        sentinel_states = tuple(map(_watch.sentinel_state, checked[len(checked) - check.sentinel_count :]))
        module_part = seen.fingerprint[: check.module_part]
        vouched = check.module_part_vouched(seen.fingerprint)
        for candidate in candidates:
            spec: Specialization = candidate.spec
            expected = spec.expectations
            if expected is None or expected.object_key != seen.object_key:
                continue
            if not expected.global_state.check() or not expected.tensor_match.check(*seen.tensors):
                continue
            # Converted in place (``model.half()``), or unfrozen since compiling.
            if not all(map(_watch.sentinel_holds, expected.sentinel_states, sentinel_states)):
                continue
            if expected.shape_check is not None and not expected.shape_check(*args, **kwargs):
                continue
            if expected.trace_watch is not None and not expected.trace_watch.holds(args, kwargs):
                continue
            if check.keyword_order is not None and not self._keyword_order_holds(spec, args, kwargs):
                continue
            if not vouched or module_part not in expected.verified_modules:
                if self.baked_in_failure(spec, args, kwargs) is not None:
                    continue
                if vouched:
                    expected.verified_modules.add(module_part, (), pins)
            elif expected.audit:  # a vouched module part skips the guards; the audit does not
                _audit.check(self.function, self.baked_in_failure, spec, args, kwargs)
            if vouched:  # argument objects of this layout, under this module state, run from now on
                _enter_object_tier(check, candidate, expected, args, kwargs)
            # Verified: now a version tree may vouch for the argument objects, and the key name it.
            try:
                check.remember_objects(args, kwargs)
                key = check.verified_key(*args, **kwargs)
            except Exception:  # a tree cannot be built for these objects: run, record nothing
                return spec.call
            if vouched and check.vouched(key):
                per_call = _per_call_candidate(candidate, expected, checked)
                if per_call is not None:
                    check.verify(key, per_call, pins)
            return spec.call
        return None

    def _keyword_order_holds(self, spec: Specialization, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether ``spec`` may run a call whose ``**kwargs`` come in another order than it was
        compiled for: only where Dynamo's guards hold for it (they guard the order where the trace
        iterated the names); without them, never."""
        expected = spec.expectations
        if expected is None or expected.fast_key == expected.selector.fast(*args, **kwargs):
            return True
        return expected.guard_manager is not None and self.baked_in_failure(spec, args, kwargs) is None

    def baked_in_failure(
        self,
        spec: Specialization,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        arguments: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Why values the code baked in (attributes of modules, closure cells, globals, torch
        function modes) no longer hold for this call, or None when they do.

        First the layout of every parameter and buffer of each module argument (kernels assume
        it; Dynamo's guards do not see every in-place conversion: docs/versions.md). Then, with
        Dynamo's guard manager (an in-process compile): every guard Dynamo built, evaluated
        directly. Without one (ahead of time or loaded from ``cache_dir``, or ``dispatch="dynamo"``):
        the digest of each module argument and the torch-function modes, as compiled for.
        """
        fn, expected = self.function, spec.expectations
        if expected is None:  # pragma: no cover - only specializations with expectations are verified
            return None
        bound = arguments if arguments is not None else bound_arguments(fn, args, kwargs)
        layout_failure = _layout_failure(expected.module_layouts, _layout_sources(fn, bound))
        if layout_failure is not None:
            return layout_failure
        if expected.guard_manager is not None:
            failure = _compat.guard_failure(expected.guard_manager, {**bound, **closure_values(fn)})
            return None if failure is None else f"Dynamo's guard: {failure}"
        modes = tuple(type(m) for m in _compat.torch_function_modes())
        if modes != expected.torch_function_modes:
            return f"torch function modes compiled for {expected.torch_function_modes}, now {modes}"
        for name, digest in expected.module_digests.items():
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
        take the slow path and the lock. Each selector only finds its own structure's
        specializations.
        """
        if table is not self.tables[0]:
            self.tables.remove(table)
            self.tables.insert(0, table)

    # -- a call that matches nothing ----------------------------------------------------------

    def miss(self, args: tuple[Any, ...], kwargs: dict[str, Any], specs: list[Specialization]) -> Request:
        """A call no specialization may run: ``GuardMismatchError`` saying how it differs from the
        latest one (``on_mismatch="raise"``, or ``max_compiles`` reached), else that logged and the
        request to compile it with (the call bound and walked once, for both; under automatic
        dynamic walked once more, with what changed marked dynamic: ``Request.alternative``)."""
        options = self.options
        try:
            request = request_for(self.function, options, args, kwargs)
        except TypeError as exc:  # the call does not bind to the function's parameters
            if options.on_mismatch == "raise":
                raise self.mismatch_error([f"the call does not bind to the parameters: {exc}"]) from None
            raise
        differences = self.explain_miss(request, specs[-1])
        if options.on_mismatch == "raise":
            raise self.mismatch_error(differences)
        if len(specs) >= options.max_compiles:
            raise self.limit_error(differences, specs)
        dynamic = self._automatic_dynamic(request, specs)
        if dynamic is not None:  # the same bound arguments, walked with what changed marked dynamic
            alternative = request_for(self.function, options, args, kwargs, dynamic, bound=request.arguments)
            request = dataclasses.replace(request, alternative=alternative)
        number, bound = len(specs) + 1, options.max_compiles
        # Expected in normal use (a prefill, then decode steps): INFO; WARNING once the bound is near.
        level = logging.WARNING if number >= bound - 1 else logging.INFO
        log.log(
            level,
            "%s: recompiling for a new signature (specialization #%d of at most %d): %s",
            self.function.__qualname__,
            number,
            bound,
            "; ".join(differences),
        )
        return request

    def explain_miss(self, request: Request, spec: Specialization) -> list[str]:
        """One line per way this call differs from ``spec``, from the request the miss built."""
        expected = spec.expectations
        if expected is None:  # pragma: no cover - "inputs" always records expectations
            return ["no signature was recorded for the compiled specialization"]
        args, kwargs = request.args, request.kwargs
        lines = describe_difference(expected.key_function, expected.key, request.key_function, request.key)
        if not lines:
            tensors = expected.selector.verification(*args, **kwargs).tensors
            reason = _compat.tensor_mismatch(expected.tensor_match, tensors, expected.selector.paths)
            if reason is not None:
                lines = [f"tensor check: {reason}"]
        if not lines and expected.shape_check is not None and not expected.shape_check(*args, **kwargs):
            lines = ["Dynamo's shape guards do not hold: " + " and ".join(expected.shape_check.expressions)]
        if not lines and not expected.global_state.check():
            lines = [f"torch's global state changed since compiling: {expected.global_state.reason().strip()}"]
        if not lines:
            failure = self.baked_in_failure(spec, args, kwargs, request.arguments)
            if failure is not None:
                lines = [f"a value the compiled code baked in changed: {failure}"]
        return lines or ["the signature differs in a way nocompile could not pin down"]

    def mismatch_error(self, differences: list[str]) -> GuardMismatchError:
        hints = []
        parameters = set(parameter_names(self.function))
        # Only a parameter's own dims can be dynamic (not a tensor inside a list or an object).
        shape_paths = [
            p for p in (line.split(":", 1)[0] for line in differences if ": shape" in line) if p in parameters
        ]
        if shape_paths:
            hints.append(f"mark the varying dim dynamic, e.g. compile_once(dynamic={{{shape_paths[0]!r}: <dim>}})")
        hints.append(
            "compile one specialization per signature with "
            f'on_mismatch="recompile" (max_compiles={self.options.max_compiles})'
        )
        return GuardMismatchError(
            f'{describe_function(self.function)} was compiled for another signature (guards="inputs"); '
            "running it on this call could return a wrong result, so nocompile refuses.\n"
            + "".join(f"  {line}\n" for line in differences)
            + "Fix: "
            + "; or ".join(hints)
            + "."
        )

    def limit_error(self, differences: list[str], specs: list[Specialization]) -> GuardMismatchError:
        seen = "".join(f"  #{i + 1}: {spec.signature()}\n" for i, spec in enumerate(specs))
        return GuardMismatchError(
            f"{describe_function(self.function)} already has max_compiles={self.options.max_compiles} "
            f"specializations and this call matches none of them:\n"
            + "".join(f"  {line}\n" for line in differences)
            + f"Signatures compiled:\n{seen}"
            + "Fix: mark varying dims dynamic (dynamic={...}), raise max_compiles, or make the calls agree."
        )


def _open_module_part(check: Selector) -> None:
    """While every candidate of ``check`` has a trace watch, the module part of its fingerprint
    (the globals, ``self``'s dicts, global objects and helpers as version trees) is open: the
    trace watches check exactly what the code read there, per call, so a store the code never
    read (a loop variable at a script's top level, a counter) costs no verification. A candidate
    without one (loaded from ``cache_dir``, compiled ahead of time) closes it again."""
    if check.module_watch is None:
        return
    watch = check.module_watch[0]
    watches = [
        c.spec.expectations.trace_watch if c.spec.expectations is not None else None
        for candidates in check.table.values()
        for c in candidates
    ]
    watched = all(w is not None for w in watches) and all(
        _outside_arguments(check.module_roots, w.self_name) for w in watches if w is not None
    )
    if watched and not watch.is_open:
        watch.open()
    elif not watched and watch.is_open:
        watch.forget()


def _outside_arguments(roots: tuple[str, ...], self_name: str | None) -> bool:
    """Whether the module part's roots are all the globals, closure cells (generated names) or
    ``self``: what a trace watch follows (not argument objects, a callable or a module passed in)."""
    allowed = {self_name} if self_name is not None else set()
    for root in roots:
        names = {node.id for node in ast.walk(ast.parse(root, mode="eval")) if isinstance(node, ast.Name)}
        if any(not name.startswith("__nc_") and name not in allowed for name in names):
            return False
    return True


def _trace_and_shape(expected: Expectations) -> Callable[..., bool] | None:
    """The candidate's last per-call check: the trace watch, then Dynamo's shape guards (either may be missing)."""
    shape_ok = expected.shape_check.fn if expected.shape_check is not None else None
    watch = expected.trace_watch
    if watch is None:
        return shape_ok
    holds = watch.holds
    if shape_ok is None and watch.predicate is not None:
        predicate: Callable[..., bool] = watch.predicate  # one C call, ``holds`` where it does not pass
        return predicate
    if shape_ok is None:
        return lambda *args, **kwargs: holds(args, kwargs)
    return lambda *args, **kwargs: holds(args, kwargs) and shape_ok(*args, **kwargs)


def _module_digests(request: Request) -> dict[str, str]:
    """Each module argument's digest as the call has it (``_artifacts.module_digest``)."""
    return {root.path: _artifacts.module_digest(root.value) for root in request.tree.roots if root.kind is Kind.MODULE}


def _enter_object_tier(
    check: Selector, candidate: Candidate, expected: Expectations, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Let the selector's object tier run ``candidate`` for calls whose argument objects have this
    verified call's layout (object key) under its verified module state: a fresh object of a known
    layout each call (a dataclass of tensors, a cache) then skips the slow path, checked like a
    dict argument. The tensor check is built from this call's tensors with the dynamic dims the
    specialization was compiled with."""
    if check.object_tier is None:
        return
    try:
        key, tensors = check.object_tier(*args, **kwargs)
        hash(key)
        sizes, strides = expected.tier_dims
        match = _compat.tensor_match(list(tensors), sizes, strides)
    except Exception:  # unhashable values in the key, or tensors the check cannot take: no tier
        return
    check.verify_objects(key, candidate._replace(tensors_ok=match.check))


def _per_call_candidate(
    candidate: Candidate, expected: Expectations, tensors: tuple[torch.Tensor, ...]
) -> Candidate | None:
    """``candidate`` for the per-call path of a verified key, with a tensor check that passes for
    this verified call (None: record nothing, the next such call verifies again).

    The check made at compile time compares the sentinels' ``requires_grad``; a sentinel frozen
    since (fine-tuning freezes the embeddings) passed verification (``_watch.sentinel_holds``:
    every other property the check compares is the same), and would otherwise fail that check
    on every call. The check is then built again from this call's tensors, with the compiled
    dynamic dims."""
    if candidate.tensors_ok(*tensors):
        return candidate
    sizes, strides = expected.argument_dims
    try:
        rebuilt = _compat.tensor_match(list(tensors), sizes, strides)
    except Exception:  # pragma: no cover - the tensors just passed the verification's check
        return None
    return candidate._replace(tensors_ok=rebuilt.check)


def _tensor_dims(tensors: tuple[TensorArg, ...]) -> tuple[list[list[int | None]], list[list[int | None]]]:
    """``(sizes, strides)`` as the tensor check compares them (None: any value, a dynamic dim)."""
    return [t.sizes() for t in tensors], [t.strides() for t in tensors]


def _tensor_match(tensors: tuple[TensorArg, ...]) -> Any:
    return _compat.tensor_match([t.tensor for t in tensors], *_tensor_dims(tensors))


def _layout_sources(fn: types.FunctionType, bound: Mapping[str, Any]) -> dict[str, torch.nn.Module]:
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
