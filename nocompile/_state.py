"""The state object: one per decorated function, or per instance for methods.

A ``CompileState`` owns everything about one compiled function: the validated options, the
specializations it holds (each a compile of the function for one call signature: the private
code copy Dynamo saw, the transformed bytecode it produced, the function object built on that
bytecode) and the counters behind ``stats``: the lifecycle of a compiled function. Compiling
itself is ``_compiler``'s job; whether a call may run a specialization under ``guards="inputs"``
is its ``InputGuard``'s (``_inputs``); reports and dumps read a frozen ``StateView``.

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

import contextlib
import itertools
import logging
import os
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from . import _artifacts, _bytecode_hook, _compat, _cudagraphs, _dump
from ._arguments import bound_arguments
from ._compiler import NOT_RUN, describe_function
from ._entry import TARGET, MethodFunction, build_direct_entry, prologue, prologue_globals
from ._errors import NoCompileError
from ._explain import ExplainReport, build_report
from ._inputs import Arrival, InputGuard, Request, request_for
from ._options import CompileOptions
from ._specialize import Job, Outcome, specialize
from ._view import CompileStats, Specialization, StateView

log = logging.getLogger("nocompile")

DISABLE_ENV = "NOCOMPILE_DISABLE"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_SERIALS = itertools.count(1)


def disabled_by_env() -> bool:
    """Whether ``NOCOMPILE_DISABLE`` asks for the original functions to run eagerly."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE_WORDS


def _none() -> None:
    """Unpickling target of a per-instance state: copies start uncompiled."""


class CompileState:
    """Compiled state of one function (or of one instance's method).

    Other modules use ``entry`` (what calls enter), ``bound`` (what ``instance.method`` binds),
    ``calls`` (incremented by the entry), ``function``, ``options``, ``owner``, ``inputs`` and the
    public methods; everything with a leading underscore is this module's.
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
        self.inputs = (
            InputGuard(fn, options, self._slow_call, (prologue(fn), prologue_globals(fn, self)))
            if options.policy.checks_inputs
            else None
        )
        """The input check (``guards="inputs"``): whether a call may run a specialization."""
        self._clear()

    @property
    def tag(self) -> str:
        return f"s{self.serial}"

    # -- the per-call path ------------------------------------------------------------------

    def _set_entry(self, entry: Callable[..., Any]) -> None:
        """Make ``entry`` what calls enter; ``bound`` is what ``instance.method`` binds."""
        self.bound = MethodFunction(entry, self)
        self.entry = entry

    def _enter_inputs(self) -> None:
        """Make the input check's per-call path what calls enter, and what the direct entry (held
        by a bound method taken before the first compile) calls after its prologue."""
        if self.inputs is not None and self.inputs.entry is not self.entry:  # a new front table
            self._direct_globals[TARGET] = self.inputs.dispatch
            self._set_entry(self.inputs.entry)

    def _set_target(self, target: Callable[..., Any]) -> None:
        """Make the direct entry call ``target``, and make the direct entry what calls enter."""
        self._direct_globals[TARGET] = target
        self._set_entry(self._direct_entry)

    # -- deciding what a call runs ----------------------------------------------------------

    def _clear(self) -> None:
        if self.inputs is not None:
            self.inputs.invalidate()  # an entry someone still holds misses from now on
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
            if isinstance(target, Request):
                return self._compile_and_call(target)
        return target(*args, **kwargs)

    def _ready_target(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | Request:
        """Under the lock: what to run for this call, or the request to compile it with (the call
        bound and walked once, for the message and the compile alike)."""
        if self._disabled:
            return self.function
        if not self._specs:
            if disabled_by_env():
                log.info("%s set: %s runs eagerly", DISABLE_ENV, self.function.__qualname__)
                self._disabled = True
                self._set_target(self.function)
                return self.function
            return request_for(self.function, self.options, args, kwargs)
        if self.inputs is None:
            return self._specs[0].call  # another thread compiled while we waited
        target = self.inputs.lookup(args, kwargs)
        if target is not None:
            self._enter_inputs()  # the table that served it may have moved to the front
            return target
        return self.inputs.miss(args, kwargs, self._specs)  # raises, or the request to compile

    # -- compiling --------------------------------------------------------------------------

    def _compile_and_call(self, request: Request) -> Any:
        outcome = self._compile_specialization(request, run=True)
        if outcome.error is not None:
            raise outcome.error
        if outcome.result is NOT_RUN:
            return outcome.spec.call(*request.args, **request.kwargs)
        return outcome.result

    def _compile_specialization(self, request: Request, run: bool) -> Outcome:
        """The one way a specialization is made and kept (first call, recompile, ``cache_dir``,
        ``aot_compile``): ``_specialize`` makes it, this state keeps it. Under the lock."""
        job = Job(
            self.function, self.options, self.inputs, self._graph_pool, self._count_dynamo_recompile, self._compiling
        )
        outcome = specialize(job, request, run=run)
        self._keep(outcome.spec, outcome.arrival)
        return outcome

    @contextlib.contextmanager
    def _compiling(self) -> Iterator[None]:
        self._compiling_thread = threading.get_ident()
        try:
            yield
        finally:
            self._compiling_thread = None

    def _count_dynamo_recompile(self) -> None:
        self._compiles += 1
        log.warning("%s: Dynamo recompiled (guards='dynamo'), compile #%d", self.function.__qualname__, self._compiles)

    def _keep(self, spec: Specialization, arrival: Arrival | None) -> None:
        """Count ``spec``, register it with the input check (or make it the target) and dump it."""
        self._specs.append(spec)
        if spec.origin == "loaded":
            self._loads += 1
        else:
            self._compiles += 1
            self._compile_seconds += spec.compile_seconds
        if self.inputs is not None and arrival is not None:
            self.inputs.install(spec, arrival)
            self._enter_inputs()
        else:
            self._set_target(spec.call)
        if spec.record is not None:
            _dump.after_compile(self.view(), spec, len(self._specs))  # never raises: problems are WARNINGs

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
            bound_arguments(fn, args, kwargs)  # before the lock: a bad call is the caller's TypeError
        except TypeError as exc:  # as Python would say it, with the function named
            raise TypeError(f"aot_compile of {describe_function(fn)}: {exc}") from None
        if self.options.policy.keeps_dynamo_guards:
            raise NoCompileError(
                f"{describe_function(fn)}: aot_compile() needs guards='inputs' or 'none'; under "
                "guards='dynamo' Dynamo compiles on the first call. Call the function once instead."
            )
        with self._lock:
            target = self._ready_target(args, kwargs)
            if target is fn and self._disabled:
                return None
            if not isinstance(target, Request):
                return next((s for s in reversed(self._specs) if s.call is target), self._specs[-1])
            if not _artifacts.aot_usable():
                raise NoCompileError(
                    f"{describe_function(fn)}: aot_compile() needs torch's ahead-of-time path, which "
                    f"torch {torch.__version__} lacks ({_compat.aot_available()}). Call the function once instead."
                )
            return self._compile_specialization(target, run=False).spec

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
