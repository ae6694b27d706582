"""What one compilation saw, recorded while it runs, for ``explain()`` and ``dump_dir``.

A ``CompileRecord`` is filled during a compile by three observers that cost nothing per call:

* the guard filter (``guard_filter_fn``) notes every guard Dynamo wanted, and whether nocompile
  dropped or kept it;
* a small recording backend notes Dynamo's FX graph (its readable code and its inputs) and then
  calls the backend ``torch.compile`` would have called; it never changes what is compiled;
* the state gives it the signature the compile was for and the paths the input check cannot see.

Decompiling the transformed bytecode with ``depyf`` is done lazily (it is slow on large code and
only needed by a report) and cached; a failure is kept as a reason, logged once, never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from . import _compat

log = logging.getLogger("nocompile")

#: Guard kinds, in report order: (kind, what Dynamo checks with them), and the guard types of each.
GUARD_KINDS: tuple[tuple[str, str, frozenset[str]], ...] = (
    (
        "tensor match",
        "each tensor's class, shape, dtype, device, strides and requires_grad (arguments, parameters, buffers)",
        frozenset({"TENSOR_MATCH", "TENSOR_SUBCLASS_METADATA_MATCH", "DTENSOR_SPEC_MATCH", "DISPATCH_KEY_SET_MATCH"}),
    ),
    (
        "shape env",
        "relations between the symbolic sizes of dynamic dims",
        frozenset({"SHAPE_ENV"}),
    ),
    (
        "module and global identity",
        "the same classes, modules, functions and objects as at compile time, attributes present or "
        "absent, no hooks added, inputs that aliased still alias",
        frozenset(
            {
                "ID_MATCH",
                "TYPE_MATCH",
                "CLASS_MATCH",
                "MODULE_MATCH",
                "BUILTIN_MATCH",
                "CLOSURE_MATCH",
                "FUNCTION_MATCH",
                "NN_MODULE",
                "NONE_MATCH",
                "NOT_NONE_MATCH",
                "WEAKREF_ALIVE",
                "HASATTR",
                "NOT_PRESENT_IN_GENERIC_DICT",
                "EMPTY_NN_MODULE_HOOKS_DICT",
                "DICT_VERSION",
                "DUPLICATE_INPUT",
                "FAKE_SCRIPT_TYPE_MATCH",
                "OPAQUE_OBJ_GUARD_FN_MATCH",
                "NO_TENSOR_ALIASING",
            }
        ),
    ),
    (
        "constants",
        "Python values the code was specialized on: module attributes (eps, normalized_shape), "
        "scalars, lengths, dict keys",
        frozenset(
            {
                "CONSTANT_MATCH",
                "CONSTANT_SUBCLASS_MATCH",
                "EQUALS_MATCH",
                "BOOL_MATCH",
                "SEQUENCE_LENGTH",
                "DICT_KEYS_MATCH",
                "DICT_CONTAINS",
                "DICT_NOT_CONTAINS",
                "MAPPING_KEYS_CHECK",
                "SET_CONTAINS",
                "SET_NOT_CONTAINS",
                "TUPLE_ITERATOR_LEN",
                "RANGE_ITERATOR_MATCH",
                "COUNT_ITERATOR_MATCH",
                "DICT_LENGTH",
                "LIST_LENGTH",
            }
        ),
    ),
    (
        "global state",
        "grad mode, deterministic algorithms, default device, autocast and other torch-global state",
        frozenset(
            {
                "GLOBAL_STATE",
                "GRAD_MODE",
                "DETERMINISTIC_ALGORITHMS",
                "TORCH_FUNCTION_STATE",
                "TORCH_FUNCTION_MODE_STACK",
                "DEFAULT_DEVICE",
                "AUTOGRAD_SAVED_TENSORS_HOOKS",
                "DUAL_LEVEL",
                "FUNCTORCH_STACK_MATCH",
                "FSDP_TRAINING_STATE",
                "BACKEND_MATCH",
            }
        ),
    ),
)
OTHER_KIND = ("other", "guard types nocompile does not group (see the guard type)")


def guard_kind(guard_type: str) -> str:
    """The report group of a Dynamo guard type (``"other"`` for types this torch added)."""
    for kind, _, types_ in GUARD_KINDS:
        if guard_type in types_:
            return kind
    return OTHER_KIND[0]


@dataclasses.dataclass(frozen=True)
class GuardRecord:
    """One guard Dynamo wanted for a compile."""

    guard_type: str
    """Dynamo's guard type, e.g. ``TENSOR_MATCH``, ``CONSTANT_MATCH``."""
    name: str
    """What it guards, as Dynamo names it: ``x`` (a local), ``self._modules['norm'].eps``,
    ``G['torch']`` (a global); empty for global-state guards."""
    code: tuple[str, ...]
    """Dynamo's Python rendering of the check, where it has one (e.g. ``L['self']...eps == 1e-05``)."""
    kept: bool
    """True under ``guards="dynamo"`` (Dynamo still checks it); False when nocompile dropped it."""
    compile: int = 1
    """Which Dynamo compile of this specialization asked for it (>1 only for Dynamo's recompiles)."""

    @property
    def kind(self) -> str:
        return guard_kind(self.guard_type)


@dataclasses.dataclass(frozen=True)
class GraphRecord:
    """The FX graph Dynamo handed to the backend."""

    input_names: tuple[str, ...]
    """Placeholder names in order, e.g. ``L_x_``, ``L_self_modules_norm_parameters_weight_``."""
    parameters: int
    """Graph inputs that are ``nn.Parameter`` objects (or that Dynamo sourced from ``_parameters``)."""
    buffers: int
    """Graph inputs Dynamo sourced from a module's ``_buffers``."""
    attributes: int
    """``get_attr`` nodes: tensors held by the graph module itself rather than passed in."""
    code: str
    """``GraphModule.print_readable()``: the graph as readable Python."""

    @property
    def inputs(self) -> int:
        return len(self.input_names)

    @property
    def from_call(self) -> int:
        """Graph inputs that are neither parameters nor buffers (the call's tensors, mostly)."""
        return self.inputs - self.parameters - self.buffers


_BUFFER_NAME = re.compile(r"(^|_)buffers_")
_PARAMETER_NAME = re.compile(r"(^|_)parameters_")


def graph_record(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> GraphRecord:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    names = tuple(str(n.target) for n in placeholders)
    parameters = buffers = 0
    for i, name in enumerate(names):
        example = example_inputs[i] if i < len(example_inputs) else None
        if isinstance(example, torch.nn.Parameter) or _PARAMETER_NAME.search(name):
            parameters += 1
        elif _BUFFER_NAME.search(name):
            buffers += 1
    attributes = sum(1 for n in gm.graph.nodes if n.op == "get_attr")
    return GraphRecord(names, parameters, buffers, attributes, gm.print_readable(print_output=False))


class RecordingBackend:
    """Notes each FX graph in a ``CompileRecord``, then calls the backend it wraps.

    Attribute lookups fall through to the wrapped backend, so Dynamo sees the same
    ``get_compiler_config`` or ``reset`` it would see on ``torch.compile``'s own wrapper.
    """

    def __init__(self, inner: Callable[..., Any], record: CompileRecord) -> None:
        self._inner = inner
        self._record = record
        # torch.compile names a callable backend by its __name__ (in Dynamo's logs, metrics and
        # repro scripts): keep the real backend's name ("inductor", "eager", ...).
        self.__name__ = str(getattr(inner, "compiler_name", type(inner).__name__))

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
        try:
            graph = graph_record(gm, example_inputs)
            self._record.graphs.append(graph)
            log.debug(
                "FX graph for the backend: %d inputs (%d parameters, %d buffers), %d get_attr",
                graph.inputs,
                graph.parameters,
                graph.buffers,
                graph.attributes,
            )
        except Exception as exc:  # recording is for reports only: never fail the compile
            log.warning("could not record the FX graph for explain(): %s: %s", type(exc).__name__, exc)
        return self._inner(gm, example_inputs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_record"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@dataclasses.dataclass(eq=False)
class CompileRecord:
    """Everything ``explain()`` and ``dump_dir`` show about one specialization."""

    signature: str
    """The call signature the specialization was compiled for, as text."""
    unchecked: tuple[str, ...] = ()
    """Arguments the input check cannot see into (objects other than tensors, scalars, containers)."""
    guards: list[GuardRecord] = dataclasses.field(default_factory=list)
    graphs: list[GraphRecord] = dataclasses.field(default_factory=list)
    dump_path: str | None = None
    _filter_calls: int = 0
    _decompiled: tuple[str | None, str | None] | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    # -- observers, called by Dynamo during the compile ------------------------------------

    def note_guards(self, entries: Iterable[Any], kept: bool) -> None:
        with self._lock:
            self._filter_calls += 1
            batch = self._filter_calls
            for e in entries:
                code = _compat.guard_code(e)
                self.guards.append(GuardRecord(str(e.guard_type), str(e.name), tuple(map(str, code)), kept, batch))

    def backend(
        self, backend: str | Callable[..., Any], mode: str | None, options: dict[str, Any] | None
    ) -> RecordingBackend:
        """The recording backend to give ``torch.compile`` in place of ``backend``/``mode``/``options``."""
        return RecordingBackend(_compat.compile_backend(backend, mode, options), self)

    # -- for reports -----------------------------------------------------------------------

    @property
    def dropped(self) -> tuple[GuardRecord, ...]:
        return tuple(g for g in self.guards if not g.kept)

    @property
    def kept(self) -> tuple[GuardRecord, ...]:
        return tuple(g for g in self.guards if g.kept)

    def decompiled(self, code: types.CodeType | None, where: str) -> tuple[str | None, str | None]:
        """``(source, None)`` or ``(None, reason)``: the transformed bytecode through ``depyf``.

        Computed once; a failure is logged as a WARNING naming ``where`` (the function) the
        first time and is reported, never raised.
        """
        if self._decompiled is None:
            if code is None:
                self._decompiled = (None, "no transformed bytecode was captured")
            else:
                try:
                    import depyf

                    self._decompiled = (str(depyf.decompile(code)), None)
                except Exception as exc:
                    reason = f"depyf could not decompile it: {type(exc).__name__}: {exc}"
                    log.warning("%s: transformed bytecode not decompiled (%s)", where, reason)
                    self._decompiled = (None, reason)
        return self._decompiled


@dataclasses.dataclass
class Compiled:
    """What one compilation produced, before the state installs it as a specialization: in process
    (``_compiler``), ahead of time or loaded from disk (``_artifacts``)."""

    source_code: types.CodeType
    """The private copy of the function's code object that Dynamo compiled."""
    compiled: Callable[..., Any]
    """``torch.compile``'s callable (in process) or torch's ``AOTCompiledFunction`` (ahead of time)."""
    transformed_code: types.CodeType
    """Dynamo's transformed bytecode: what later calls run."""
    seconds: float
    dropped: tuple[tuple[str, str], ...]
    """``(guard_type, name)`` of each guard Dynamo wanted and nocompile dropped."""
    shape_exprs: tuple[str, ...]
    """Dynamo's shape guards (``SHAPE_ENV``) on dynamic dims, which the input check keeps."""
    record: CompileRecord | None
    origin: str = "compiled"
    """``"compiled"`` in this process, or ``"loaded"`` from an artifact file."""
    artifact_path: str | None = None
    kernels: str | None = None
    """Ahead-of-time path: what made the kernels (the artifact header's ``kernels_made_by``)."""
    keeps_guards: bool = False
    """Whether Dynamo's cache entry for ``source_code`` kept its guards (see ``keeps_guards``)."""
    arguments_before: dict[str, Any] | None = None
    """``cudagraphs=True``, compiled in process: the arguments' ``identity_snapshot`` before the
    compiling call ran, to refuse a call that rebinds what a graph would read."""
