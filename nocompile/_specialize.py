"""Making one specialization: the one pipeline a compile runs, from the request down.

``CompileState`` decides *when* a call needs a new specialization and keeps what it gets back;
this module makes it, for a first call, a recompile, ``cache_dir`` and ``aot_compile()`` alike,
in one pass down from the request the slow path built:

1. the input check's *arrival* (``InputGuard.arrive``, ``guards="inputs"``): the call's keys and
   tensor checks as the call arrived, taken before it runs (it may change its argument objects),
   and under automatic dynamic the same arguments walked again with the changed sizes and ints
   marked dynamic;
2. the compile (``_compiler.compile_call``): loaded or ahead of time with a cache directory, else
   in process under Dynamo, running the call;
3. what a call must match to run it (``InputGuard.expect``: the frozen ``Expectations``);
4. what its calls run (``_entry.specialization_call``), replayed from CUDA graphs with
   ``cudagraphs=True`` (``_cudagraphs.GraphPool.graphed``).

The call is bound once (by the request); automatic dynamic walks the bound arguments once more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import types
from collections.abc import Callable
from typing import Any

from . import _automatic, _compat, _watch
from ._compiler import compile_call
from ._cudagraphs import GraphPool
from ._entry import specialization_call
from ._inputs import Arrival, InputGuard, Request
from ._options import CompileOptions
from ._record import CompileRecord
from ._view import Specialization

log = logging.getLogger("nocompile")


@dataclasses.dataclass(frozen=True)
class Job:
    """What making a specialization needs from the state that will keep it."""

    function: types.FunctionType
    options: CompileOptions
    inputs: InputGuard | None
    graph_pool: GraphPool | None
    on_dynamo_recompile: Callable[[], None]
    compiling: Callable[[], contextlib.AbstractContextManager[None]]
    """Marks the state's thread as compiling (a call re-entering from the compile runs eagerly)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A specialization made for one call, and what that call did."""

    spec: Specialization
    arrival: Arrival | None
    """What the input check registers the specialization with (``guards="inputs"``)."""
    result: Any
    """The call's result, or ``_compiler.NOT_RUN`` (ahead of time, or loaded)."""
    error: BaseException | None
    """An exception the call raised after compiling (the specialization is kept, then it is raised)."""


def specialize(job: Job, request: Request, *, run: bool) -> Outcome:
    """Make the specialization for ``request`` (see the module docstring). Under the state's lock."""
    fn, opts, inputs = job.function, job.options, job.inputs
    arrival = inputs.arrive(request) if inputs is not None else None
    if arrival is not None:
        # Watch registrations from before the first compile on: Dynamo traces the registration
        # hooks a forward runs into (a sliced ModuleList registers its layers) and guards on them.
        _watch.EPOCH.install()
    # Torch's global state and function modes as the call arrived: what the code is compiled under.
    request = dataclasses.replace(
        request,
        global_state=_compat.global_state_guard(),
        modes=tuple(type(m) for m in _compat.torch_function_modes()),
    )
    static_request = request
    record = CompileRecord(signature=request.signature, unchecked=request.layout.unchecked)
    with job.compiling():
        made, result, error = compile_call(
            fn,
            opts,
            request.args,
            request.kwargs,
            request.tree,
            (request.key_function, request.key),
            record,
            run=run,
            on_recompile=job.on_dynamo_recompile,
            automatic_dynamic=arrival is not None and arrival.dynamic is not None,
        )
    if arrival is not None and arrival.dynamic is not None and made.origin == "compiled":
        dynamic_request, dynamic_arrival = arrival.dynamic
        asked = dynamic_request.dynamic
        kept_static = _automatic.kept_static(asked, made.shape_exprs, made.record) if asked is not None else []
        if kept_static:
            log.info(
                "%s: Dynamo kept %s static; this specialization checks them exactly",
                fn.__qualname__,
                ", ".join(kept_static),
            )
        else:
            request = dataclasses.replace(dynamic_request, global_state=request.global_state, modes=request.modes)
            arrival = dynamic_arrival
            if made.record is not None:
                made.record.signature = request.signature
            log.info(
                "%s: compiled dynamic in %s (they differed from the last specialization)",
                fn.__qualname__,
                ", ".join(asked.describe()) if asked is not None else "",
            )
    expectations = inputs.expect(arrival, request, made) if inputs is not None and arrival is not None else None
    call, direct_graphs = specialization_call(fn, opts, made)
    if job.graph_pool is not None:
        call = job.graph_pool.graphed(
            fn,
            call,
            opts,
            request.args,
            request.kwargs,
            made.transformed_code,
            expectations.shape_check if expectations is not None else None,
            made.arguments_before,
            request.dynamic,
            bound=request.arguments,
        )
    spec = Specialization(
        source_code=made.source_code,
        compiled=made.compiled,
        transformed_code=made.transformed_code,
        call=call,
        compile_seconds=made.seconds,
        dropped_guards=made.dropped,
        shape_check=expectations.shape_check if expectations is not None else None,
        record=made.record,
        origin=made.origin,
        artifact_path=made.artifact_path,
        kernels=made.kernels,
        direct_graphs=direct_graphs,
        expectations=expectations,
        static_key_function=static_request.key_function,
        static_key=static_request.key,
        dynamic=request.dynamic,
    )
    return Outcome(spec, arrival, result, error)
