"""Records of a state that other modules read: its counters, its specializations, a frozen view.

``_state`` owns and mutates these; ``_explain``, ``_dump``, ``_bench`` and the public surface only
read them, and import them from here rather than reaching into the state.
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


@dataclasses.dataclass
class Specialization:
    """One compilation of the function, installed.

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
    direct_graphs: int = 0
    """How many compiled graphs the bytecode calls past their Python wrappers (an inductor
    inference graph on a known torch: ``_compiler.bytecode_function``); 0 means through
    ``torch.compile``'s own wrappers."""
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
    guard_manager: Any = None
    """Under ``guards="inputs"``, compiled in this process: Dynamo's guard manager for this compile,
    evaluated (without Dynamo's frame hook) when the watch sees a change (``_watch``)."""
    global_state: Any = None
    """Under ``guards="inputs"``: Dynamo's check of torch's global state as the compiling call had it."""
    argument_match: Any = None
    """Under ``guards="inputs"``: the C++ tensor check of the tensors outside argument objects and of
    the modules' first parameters (per call)."""
    argument_dims: tuple[list[list[int | None]], list[list[int | None]]] = ([], [])
    """The ``(sizes, strides)`` that check compares, None for a dynamic dim."""
    sentinel_states: tuple[tuple[Any, ...], ...] = ()
    """Under ``guards="inputs"``: the layout, class, dispatch keys and ``requires_grad`` of the first
    parameter of ``self``, of each module argument and each global module, as compiled for
    (``_layout``, ``_watch.sentinel_state``)."""
    object_key: tuple[Any, ...] = ()
    """Under ``guards="inputs"``: the argument objects' part of the key, as the compiling call had it."""
    module_digests: dict[str, str] = dataclasses.field(default_factory=dict)
    """Without a guard manager (ahead of time, loaded, ``dispatch="dynamo"``): a digest of each module
    argument as compiled for, what a change the watch sees is verified against."""
    module_layouts: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    """Under ``guards="inputs"``: the layout (shape, stride, dtype, device) of each module argument's
    parameters and buffers as compiled for, checked when the watch sees a change; Dynamo's guards
    do not see a parameter converted in place (``model.double()``) on every supported torch."""
    torch_function_modes: tuple[type, ...] = ()
    """The classes of the torch-function modes active when it compiled."""
    verified_modules: Verified = dataclasses.field(default_factory=Verified)
    """The module parts of fingerprints this specialization was verified under (``_state``), with
    the identities in them pinned like the per-call keys' (``_watch.Verified``)."""
    static_key_function: KeyFunction | None = None
    static_key: tuple[Any, ...] | None = None
    """The compiling call's key with every size and int exact: what automatic dynamic compares with."""
    dynamic: Dynamic | None = None
    """What automatic dynamic compiled as dynamic (sizes by path and dim, ints by path), or None."""

    def signature(self) -> str:
        """The compiled-for signature as text (``guards="inputs"`` only)."""
        if self.key is None or self.key_function is None:
            return "(not recorded: no input check under this guard policy)"
        text = describe_key(self.key_function, self.key)
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
