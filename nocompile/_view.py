"""Records of a state that other modules read: its counters, its specializations, a frozen view.

Each record is built once and not changed after (a specialization's ``verified_modules`` set
grows, nothing else); ``_explain``, ``_dump``, ``_bench`` and the public surface read them and
import them from here rather than reaching into the state.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any

from ._automatic import Dynamic
from ._describe import describe_key
from ._layout import KeyFunction
from ._options import CompileOptions
from ._record import CompileRecord
from ._selector import Selector, ShapeCheck
from ._watch import Verified


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


@dataclasses.dataclass(frozen=True)
class Expectations:
    """What a call must match to run one specialization under ``guards="inputs"``: built once, when
    the specialization is installed (``_inputs.InputGuard.expect``), from the compiling call's
    inputs as they arrived and from what the compile produced."""

    key_function: KeyFunction
    key: tuple[Any, ...]
    """The full key the specialization was compiled for (messages and reports)."""
    selector: Selector
    """The per-call check of its argument structure, which it is registered in."""
    fast_key: tuple[Any, ...]
    """Its key in the selector's table (what the per-call path computes before the fingerprint)."""
    object_key: tuple[Any, ...]
    """The argument objects' part of the key, as the compiling call had it."""
    tensor_match: Any
    """The C++ tensor check built from the compiling call's tensors (every tensor)."""
    argument_match: Any
    """The C++ tensor check of the tensors outside argument objects and of the modules' first
    parameters (per call)."""
    argument_dims: tuple[list[list[int | None]], list[list[int | None]]]
    tier_dims: tuple[list[list[int | None]], list[list[int | None]]]
    """Sizes and strides of the object tier's tensor check (the checked tensors, then the argument
    objects' tensors; None: a dynamic dim)."""
    """The ``(sizes, strides)`` that check compares, None for a dynamic dim."""
    sentinel_states: tuple[tuple[Any, ...], ...]
    """The layout, class, dispatch keys and ``requires_grad`` of the first parameter of ``self``, of
    each module argument and each global module, as compiled for (``_layout``,
    ``_watch.sentinel_state``)."""
    shape_check: ShapeCheck | None
    """With dynamic dims: Dynamo's shape guards, kept and checked."""
    global_state: Any
    """Dynamo's check of torch's global state as the compiling call had it."""
    torch_function_modes: tuple[type, ...]
    """The classes of the torch-function modes active when it compiled."""
    module_layouts: dict[str, tuple[Any, ...]]
    """The layout (shape, stride, dtype, device) of each module argument's parameters and buffers
    as compiled for, checked when the watch sees a change; Dynamo's guards do not see every
    parameter converted in place (docs/versions.md)."""
    guard_manager: Any
    """Compiled in this process: Dynamo's guard manager for this compile, evaluated (without
    Dynamo's frame hook) when the watch sees a change (``_watch``); else None."""
    module_digests: dict[str, str]
    """Without a guard manager (ahead of time, loaded, ``dispatch="dynamo"``): a digest of each module
    argument as compiled for, what a change the watch sees is verified against."""
    trace_watch: Any = None
    """Compiled in this process: what Dynamo's guards read outside the call's arguments, checked
    on every call the per-call path serves (``_trace_watch.TraceWatch``); else None."""
    audit: bool = False
    """Audited (``audit=True`` or ``NOCOMPILE_AUDIT=1`` when installed, ``_audit``): every call the
    per-call path serves evaluates what ``guard_manager`` or ``module_digests`` verify first."""
    verified_modules: Verified = dataclasses.field(default_factory=Verified)
    """The module parts of fingerprints this specialization was verified under (``_inputs``), with
    the identities in them pinned like the per-call keys' (``_watch.Verified``): the one part that
    grows after installing."""


@dataclasses.dataclass(frozen=True)
class Specialization:
    """One compilation of the function, installed: what it runs and, under ``guards="inputs"``,
    what a call must match to run it.

    ``source_code`` is the private copy of the function's code object that Dynamo compiled;
    ``transformed_code`` what Dynamo turned it into; ``call`` what later calls run.
    """

    source_code: types.CodeType
    compiled: Callable[..., Any]
    """``torch.compile``'s callable (in process) or torch's ``AOTCompiledFunction`` (ahead of time)."""
    transformed_code: types.CodeType | None
    call: Callable[..., Any]
    compile_seconds: float
    dropped_guards: tuple[tuple[str, str], ...]
    """``(guard_type, name)`` of each guard Dynamo wanted and nocompile dropped."""
    shape_check: ShapeCheck | None = None
    """Under ``guards="inputs"`` with dynamic dims: Dynamo's shape guards, kept and checked."""
    direct_graphs: int = 0
    """How many compiled graphs the bytecode calls past their Python wrappers (an inductor
    inference graph on a known torch: ``_compiler.bytecode_function``); 0 means through
    ``torch.compile``'s own wrappers."""
    record: CompileRecord | None = None
    """What the compile saw (guards, FX graph, signature text), for ``explain()`` and dumps."""
    origin: str = "compiled"
    """``"compiled"`` in this process, or ``"loaded"`` from an artifact file."""
    artifact_path: str | None = None
    """The artifact file it was loaded from or saved to; ``None`` when not persisted."""
    kernels: str | None = None
    """Ahead-of-time path: what made the compiled kernels, ``"aotinductor (<ISA>)"`` (they travel
    in the artifact) or ``"inductor (<why not AOTInductor>)"``; None in process."""
    expectations: Expectations | None = None
    """Under ``guards="inputs"``: what a call must match to run it."""
    static_key_function: KeyFunction | None = None
    static_key: tuple[Any, ...] | None = None
    """The compiling call's key with every size and int exact: what automatic dynamic compares with."""
    dynamic: Dynamic | None = None
    """What automatic dynamic compiled as dynamic (sizes by path and dim, ints by path), or None."""

    @property
    def key(self) -> tuple[Any, ...] | None:
        """Under ``guards="inputs"``: the full key it was compiled for (``key_function.describe``)."""
        return self.expectations.key if self.expectations is not None else None

    @property
    def key_function(self) -> KeyFunction | None:
        """Under ``guards="inputs"``: the full key function of its argument structure."""
        return self.expectations.key_function if self.expectations is not None else None

    def signature(self) -> str:
        """The compiled-for signature as text (``guards="inputs"`` only)."""
        if self.expectations is None:
            return "(not recorded: no input check under this guard policy)"
        text = describe_key(self.expectations.key_function, self.expectations.key)
        if self.shape_check is not None:
            text += "; shape guards: " + " and ".join(self.shape_check.expressions)
        return text


@dataclasses.dataclass(frozen=True)
class StateView:
    """A frozen view of one state, for reports and dumps (``_explain``, ``_dump``)."""

    function: types.FunctionType
    options: CompileOptions
    tag: str
    """Unique in the process (``s1``, ``s2``, ...): names reports and dump folders."""
    status: str
    disabled: bool
    specializations: tuple[Specialization, ...]
