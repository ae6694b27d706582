"""``explain()`` and ``report()``: what was compiled, and what safety was given up for it.

``report()`` returns an ``ExplainReport``, a frozen record for programs; ``explain()`` returns
its text (``str(report)``). Both work before the first compile (they say so) and never raise on
account of the compiled code: a bytecode that ``depyf`` cannot decompile is reported as such.

The text is built for reading top to bottom: where the function is, which policy it runs
under and what that policy checks; then per specialization the signature it was compiled for,
its compile time, the FX graph's inputs (how many are parameters/buffers), the guards Dynamo
wanted grouped by kind with what each kind protects, and the transformed bytecode as Python.
"""

from __future__ import annotations

import dataclasses
import textwrap
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._codegen import qualified_name
from ._kernels import AOTI
from ._options import CompileOptions
from ._record import GUARD_KINDS, OTHER_KIND, CompileRecord, GraphRecord, GuardRecord

if TYPE_CHECKING:
    from ._view import Specialization, StateView

POLICY_TEXT = {
    "none": "every guard Dynamo wanted is dropped and nothing is checked per call: a call whose "
    "inputs differ from the compiled signature below may return a wrong result silently.",
    "inputs": "each call's signature (below: tensor class/shape/dtype/device/requires_grad/strides, "
    "scalar values, structure, grad mode, self.training) and torch's global state are checked before "
    "the compiled code runs; Dynamo's guards on everything else (attributes of self and its "
    "submodules, closure cells, globals, argument objects) are kept but evaluated only when a cheap "
    "per-call fingerprint of where those values live changes (a registration on a watched module, "
    "a store into self's, a module argument's, an argument object's or the globals' dict). What the "
    "fingerprint does not see (a plain attribute of a submodule set later, a tensor resized in "
    "place) is listed in docs/footguns.md.",
    "dynamo": "Dynamo keeps its guards and checks them on every call (stock torch.compile behaviour).",
}

AUDIT_TEXT = (
    "on (audit=True or NOCOMPILE_AUDIT=1): every call the per-call check lets run also evaluates "
    "Dynamo's guards, and raises GuardAuditError naming the guard instead of running the compiled code "
    "when they fail (a change the fingerprint does not see). For tests: it costs a full guard evaluation per call."
)

#: Guard names shown per guard type in the default text; ``verbose=True`` shows all.
NAMES_SHOWN = 6


@dataclasses.dataclass(frozen=True)
class SpecializationReport:
    """One compiled specialization."""

    index: int
    """1-based, in compile order."""
    signature: str
    """The call signature it was compiled for."""
    compile_seconds: float
    unchecked: tuple[str, ...]
    """Arguments nocompile's input check cannot see into (their attributes are not checked)."""
    guards_dropped: tuple[GuardRecord, ...]
    guards_kept: tuple[GuardRecord, ...]
    shape_guards_checked: tuple[str, ...]
    """Dynamo's shape guards nocompile checks per call (``guards="inputs"`` with dynamic sizes)."""
    graphs: tuple[GraphRecord, ...]
    transformed_source: str | None
    """The transformed bytecode decompiled to Python, or None (see ``decompile_error``)."""
    decompile_error: str | None
    dump_path: str | None
    dynamic: tuple[str, ...] = ()
    """What automatic dynamic compiled as dynamic: ``x dim 0``, ``cache.step``."""
    direct_graphs: int = 0
    """Graphs the bytecode calls past their Python wrappers (``Specialization.direct_graphs``)."""
    audited: bool = False
    """Every call it serves also evaluates Dynamo's guards (``audit=True`` / ``NOCOMPILE_AUDIT=1``)."""
    origin: str = "compiled"
    """``"compiled"`` in this process, or ``"loaded"`` from an artifact (``cache_dir``)."""
    artifact_path: str | None = None
    """The artifact it was loaded from or saved to, or None."""
    kernels: str | None = None
    """What made its kernels on the ahead-of-time path: ``"aotinductor (<ISA>)"`` (carried in the
    artifact, loaded without inductor) or ``"inductor (<why not>)"``; None in process."""


@dataclasses.dataclass(frozen=True)
class StateReport:
    """One compiled state: the function's, or one instance's for a method."""

    label: str
    status: str
    specializations: tuple[SpecializationReport, ...]


@dataclasses.dataclass(frozen=True)
class ExplainReport:
    """What ``f.report()`` returns; ``str(report)`` is ``f.explain()``."""

    qualname: str
    module: str
    filename: str
    lineno: int
    options: str
    guards: str
    states: tuple[StateReport, ...]
    """Compiled states (several for a method explained on the class: one per instance)."""
    uncompiled_states: int
    """States that exist but have not compiled (e.g. instances not called yet)."""
    disabled: bool = False
    """``NOCOMPILE_DISABLE`` made a state run the original function eagerly."""
    audit: bool = False
    """The audit is on: for a compiled function, some specialization is audited; before the first
    compile, one installed now would be (``audit=True``, or ``NOCOMPILE_AUDIT=1`` as set now)."""

    @property
    def compiled(self) -> bool:
        return any(s.specializations for s in self.states)

    @property
    def specializations(self) -> tuple[SpecializationReport, ...]:
        return tuple(spec for state in self.states for spec in state.specializations)

    def __str__(self) -> str:
        return self.render()

    def render(self, verbose: bool = False) -> str:
        """The report as text; ``verbose`` lists every guard and adds the FX graphs."""
        return _render(self, verbose)


# -- building ---------------------------------------------------------------------------------


def build_report(
    fn: types.FunctionType, options: CompileOptions, states: Sequence[tuple[str, StateView]]
) -> ExplainReport:
    """The report of ``fn``'s states, each given as ``(role, view)``: ``"state"``, ``"instance state"``..."""
    compiled: list[StateReport] = []
    uncompiled = 0
    disabled = False
    for role, view in states:
        if not view.specializations:
            uncompiled += 1
            disabled = disabled or view.disabled
            continue
        reports = tuple(_specialization_report(fn, i + 1, spec) for i, spec in enumerate(view.specializations))
        compiled.append(StateReport(f"{role} {view.tag}", view.status, reports))
    code = fn.__code__
    audited = [spec.audited for state in compiled for spec in state.specializations]
    return ExplainReport(
        qualname=fn.__qualname__,
        module=fn.__module__,
        filename=code.co_filename,
        lineno=code.co_firstlineno,
        options=options.describe(),
        guards=options.guards,
        states=tuple(compiled),
        uncompiled_states=uncompiled,
        disabled=disabled,
        audit=any(audited) if audited else _audits_now(options),
    )


def _audits_now(options: CompileOptions) -> bool:
    """Whether a specialization installed now would be audited (False where the variable is unreadable:
    the first call says why)."""
    try:
        return options.audits()
    except ValueError:
        return False


def _specialization_report(fn: types.FunctionType, index: int, spec: Specialization) -> SpecializationReport:
    record: CompileRecord | None = getattr(spec, "record", None)
    if record is None:  # a specialization loaded from an artifact: no compile to record
        record = CompileRecord(signature=spec.signature())
    source, error = record.decompiled(spec.transformed_code, qualified_name(fn))
    return SpecializationReport(
        index=index,
        signature=record.signature,
        compile_seconds=spec.compile_seconds,
        unchecked=record.unchecked,
        guards_dropped=record.dropped,
        guards_kept=record.kept,
        shape_guards_checked=spec.shape_check.expressions if spec.shape_check is not None else (),
        graphs=tuple(record.graphs),
        transformed_source=source,
        decompile_error=error,
        dump_path=record.dump_path,
        dynamic=tuple(spec.dynamic.describe()) if spec.dynamic is not None else (),
        direct_graphs=spec.direct_graphs,
        audited=spec.expectations is not None and spec.expectations.audit,
        origin=spec.origin,
        artifact_path=spec.artifact_path,
        kernels=spec.kernels,
    )


# -- text -------------------------------------------------------------------------------------


def _render(report: ExplainReport, verbose: bool) -> str:
    out: list[str] = [
        f"nocompile: {report.module}.{report.qualname}",
        f"  defined at {report.filename}:{report.lineno}",
        f"  options:   {report.options}",
        *_wrap(f"guards={report.guards!r}: {POLICY_TEXT[report.guards]}", "  policy:    ", "             "),
    ]
    if report.audit:
        out += _wrap(AUDIT_TEXT, "  audit:     ", "             ")
    if not report.states and report.disabled:
        out += ["", "Not compiled: NOCOMPILE_DISABLE is set, so the original function runs eagerly."]
        return "\n".join(out) + "\n"
    if not report.states:
        out += ["", "Not compiled yet: the first call compiles it. Nothing was dropped or checked so far."]
        if report.uncompiled_states > 1:
            out.append(f"({report.uncompiled_states} states exist, e.g. one per instance; none has compiled.)")
        return "\n".join(out) + "\n"
    for state in report.states:
        out += ["", f"{state.label}: {state.status}"]
        for spec in state.specializations:
            out += _render_spec(spec, report.guards, verbose)
    if report.uncompiled_states:
        out += ["", f"({report.uncompiled_states} more state(s) of this function have not compiled yet.)"]
    return "\n".join(out) + "\n"


def _render_spec(spec: SpecializationReport, policy: str, verbose: bool) -> list[str]:
    if spec.origin == "loaded":
        out = ["", f"  specialization #{spec.index}: loaded in {spec.compile_seconds:.3f} s from {spec.artifact_path}"]
    else:
        saved = f", saved to {spec.artifact_path}" if spec.artifact_path else ""
        out = ["", f"  specialization #{spec.index}: compiled in {spec.compile_seconds:.3f} s{saved}"]
    kernels = _kernels_text(spec.kernels)
    if kernels is not None:
        out += _wrap(kernels, "    kernels: ", "      ")
    label = "checked per call" if policy == "inputs" else "compiled for"
    out += _wrap(spec.signature, f"    {label}: ", "      ")
    if spec.dynamic:
        out += _wrap(", ".join(spec.dynamic), "    made dynamic (sizes and ints that changed): ", "      ")
    if spec.shape_guards_checked:
        out += _wrap(" and ".join(spec.shape_guards_checked), "    shape guards kept and checked: ", "      ")
    if spec.unchecked and policy == "inputs":
        out += _wrap(", ".join(spec.unchecked), "    not looked into by the check: ", "      ")
    if spec.dump_path:
        out.append(f"    dumped to: {spec.dump_path}")
    for i, graph in enumerate(spec.graphs):
        name = "graph" if len(spec.graphs) == 1 else f"graph {i + 1}"
        extra = f", {graph.attributes} tensor(s) held by the graph module (get_attr)" if graph.attributes else ""
        out.append(
            f"    {name}: {graph.inputs} input(s) = {graph.from_call} from the call + "
            f"{graph.parameters} parameter(s) + {graph.buffers} buffer(s){extra}"
        )
    if spec.direct_graphs:
        wrapper = (
            "AOTInductor's loader called directly"
            if kernels and kernels.startswith("AOTInductor")
            else ("AOTAutograd's runtime wrapper on inductor's kernels")
        )
        out.append(f"    called past its Python wrappers ({wrapper})")
    every = spec.guards_dropped + spec.guards_kept
    compiles = max((g.compile for g in every), default=1)
    for n in range(1, compiles + 1):
        dropped = [g for g in spec.guards_dropped if g.compile == n]
        kept = [g for g in spec.guards_kept if g.compile == n]
        which = "" if compiles == 1 else f" in Dynamo compile {n} of {compiles}" + (" (a recompile)" if n > 1 else "")
        kept_word = "watched" if policy == "inputs" else "kept"
        note = " (evaluated when the per-call fingerprint changes)" if kept and policy == "inputs" else ""
        out.append(
            f"    guards Dynamo wanted{which}: {len(dropped) + len(kept)}; dropped {len(dropped)}, "
            f"{kept_word} {len(kept)}{note}"
        )
        for verb, guards in (("dropped", dropped), (kept_word, kept)):
            out += _render_guards(verb, guards, verbose)
    first = " (of Dynamo's first compile)" if compiles > 1 else ""
    out.append(f"    transformed bytecode{first}, decompiled by depyf:")
    if spec.transformed_source is not None:
        out += ["      " + line if line else "" for line in spec.transformed_source.rstrip().splitlines()]
    else:
        out.append(f"      (not available: {spec.decompile_error})")
    if verbose:
        for i, graph in enumerate(spec.graphs):
            out.append(f"    FX graph {i + 1} (what the backend compiled):")
            out += ["      " + line if line else "" for line in graph.code.rstrip().splitlines()]
    return out


def _kernels_text(kernels: str | None) -> str | None:
    """What made an ahead-of-time specialization's kernels, for inductor (None for other backends)."""
    if kernels is not None and kernels.startswith(AOTI):
        return f"AOTInductor{kernels[len(AOTI) :]}, built into the artifact (a load compiles nothing)"
    if kernels is not None and kernels.startswith("inductor"):
        return f"inductor's own{kernels[len('inductor') :]}: a load on an empty inductor cache builds them"
    return None


def _render_guards(verb: str, guards: Sequence[GuardRecord], verbose: bool) -> list[str]:
    out: list[str] = []
    kinds = [(k, about) for k, about, _ in GUARD_KINDS] + [OTHER_KIND]
    for kind, about in kinds:
        members = [g for g in guards if g.kind == kind]
        if not members:
            continue
        out += _wrap(f"{about}", f"      {verb}, {kind} ({len(members)}): ", "          ")
        by_type: dict[str, list[GuardRecord]] = {}
        for g in members:
            by_type.setdefault(g.guard_type, []).append(g)
        if all(not _guard_text(g) for g in members):  # global-state guards have no name
            out += _wrap(", ".join(by_type), "        ", "        ")
            continue
        for guard_type, group in by_type.items():
            shown = list(dict.fromkeys(_guard_text(g) for g in group))
            limit = len(shown) if verbose else NAMES_SHOWN
            more = f", ... {len(shown) - limit} more" if len(shown) > limit else ""
            text = ", ".join(shown[:limit]) + more
            out += _wrap(text, f"        {guard_type} ({len(group)}): ", "          ")
    return out


def _guard_text(g: GuardRecord) -> str:
    """A guard's name; for constants and shape guards the check itself, which says more."""
    if g.kind in ("constants", "shape env"):
        # Drop Dynamo's object-id checks (``___check_type_id(...)``): numbers that mean nothing here.
        code = [c for c in g.code if not c.startswith("___")]
        if code:
            return " and ".join(code)
        if g.kind == "shape env":
            return "(no expressions: every size static)"
    return g.name


def _wrap(text: str, first: str, rest: str, width: int = 100) -> list[str]:
    return textwrap.wrap(
        text, width=width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
    ) or [first.rstrip()]
