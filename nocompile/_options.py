"""Options of ``compile_once``: validated once, when the decorator is applied, into a frozen record.

A bad option is a ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, not allowed)
whose message names the option, the value given and what is allowed — at decoration time, never
on the first call.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict, get_args

from . import _compat

GuardPolicy = Literal["none", "inputs", "dynamo"]
Dispatch = Literal["bytecode", "dynamo"]
OnMismatch = Literal["raise", "recompile"]
CudagraphOutputs = Literal["static", "copy"]
DynamicSpec = Mapping[str, "int | Sequence[int]"]

GUARD_POLICIES: tuple[str, ...] = get_args(GuardPolicy)
ON_MISMATCH: tuple[str, ...] = get_args(OnMismatch)
DISPATCHES: tuple[str, ...] = get_args(Dispatch)
CUDAGRAPH_OUTPUTS: tuple[str, ...] = get_args(CudagraphOutputs)


@dataclasses.dataclass(frozen=True)
class Policy:
    """What a guard policy means for the rest of the package, so that code asks a question
    (``policy.checks_inputs``) instead of comparing names."""

    name: GuardPolicy
    keeps_dynamo_guards: bool
    """Dynamo's guards are kept and evaluated on every call (``"dynamo"``); else filtered out."""
    checks_inputs: bool
    """nocompile's own input check decides whether a call may run a specialization (``"inputs"``)."""
    persistable: bool
    """Its specializations can be saved to and loaded from ``cache_dir`` (not with Dynamo's guards)."""
    watches_recompiles: bool
    """Dynamo may recompile the code later on its own (its guards fail): keep catching its bytecode."""


POLICIES: dict[str, Policy] = {
    "none": Policy("none", keeps_dynamo_guards=False, checks_inputs=False, persistable=True, watches_recompiles=False),
    "inputs": Policy(
        "inputs", keeps_dynamo_guards=False, checks_inputs=True, persistable=True, watches_recompiles=False
    ),
    "dynamo": Policy(
        "dynamo", keeps_dynamo_guards=True, checks_inputs=False, persistable=False, watches_recompiles=True
    ),
}


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """The validated options of one ``compile_once`` decoration."""

    backend: str | Callable[..., Any] = "inductor"
    options: Mapping[str, Any] | None = None
    mode: str | None = None
    guards: GuardPolicy = "inputs"
    per_instance: bool = True
    dispatch: Dispatch = "bytecode"
    on_mismatch: OnMismatch = "raise"
    max_compiles: int = 8
    dynamic: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    automatic_dynamic: bool = True
    """Under ``on_mismatch="recompile"``: a call that differs from a specialization only in tensor
    sizes or int values recompiles with those dynamic (``dynamic=False`` turns it off)."""
    dump_dir: str | None = None
    """Where each compile's artifacts go (``NOCOMPILE_DUMP_DIR`` when None); see ``_dump``."""
    cudagraphs: bool = False
    cudagraph_sizes: tuple[int, ...] | None = None
    cudagraph_outputs: CudagraphOutputs = "static"
    cache_dir: str | None = None
    """Directory of compiled artifacts (``None``: ``NOCOMPILE_CACHE_DIR``, if set, at compile time)."""
    audit: bool | None = None
    """Under ``guards="inputs"``: evaluate Dynamo's guards on every call the per-call path serves and
    raise ``GuardAuditError`` when they fail (``None``: ``NOCOMPILE_AUDIT`` when a specialization is
    installed; see ``audits``)."""

    @property
    def policy(self) -> Policy:
        """The guard policy, as the questions the package asks of it."""
        return POLICIES[self.guards]

    @property
    def drops_guards(self) -> bool:
        """Whether Dynamo's guards are filtered out at compile time."""
        return not self.policy.keeps_dynamo_guards

    @property
    def calls_bytecode(self) -> bool:
        """Whether later calls run Dynamo's transformed bytecode rather than its entry point.

        Under ``guards="dynamo"`` they do too (``dispatch="bytecode"``): each call evaluates the
        guards of Dynamo's cache entries through their guard managers, without the frame hook.
        """
        return self.dispatch == "bytecode"

    def audits(self) -> bool:
        """Whether a specialization installed now is audited: ``audit``, else ``NOCOMPILE_AUDIT``
        as it is set now (ValueError for a value other than the accepted ones). Read per install,
        like ``NOCOMPILE_CACHE_DIR``, so a test can turn it off for the functions it compiles."""
        if not self.policy.checks_inputs:
            return False
        return audit_from_env() if self.audit is None else self.audit

    def backend_name(self) -> str:
        if isinstance(self.backend, str):
            return self.backend
        return getattr(self.backend, "__name__", type(self.backend).__name__)

    def describe(self) -> str:
        """``key=value`` text of the options, for ``repr`` and reports."""
        parts = [f"backend={self.backend_name()!r}", f"guards={self.guards!r}"]
        if self.mode is not None:
            parts.append(f"mode={self.mode!r}")
        if self.options:
            parts.append(f"options={dict(self.options)!r}")
        if self.dispatch != "bytecode":
            parts.append(f"dispatch={self.dispatch!r}")
        if not self.per_instance:
            parts.append("per_instance=False")
        if self.guards == "inputs" and self.on_mismatch != "raise":
            parts.append(f"on_mismatch={self.on_mismatch!r}, max_compiles={self.max_compiles}")
        if self.dynamic:
            parts.append(f"dynamic={dict(self.dynamic)!r}")
        if not self.automatic_dynamic:
            parts.append("dynamic=False")
        if self.dump_dir is not None:
            parts.append(f"dump_dir={self.dump_dir!r}")
        if self.cudagraphs:
            parts.append(f"cudagraphs=True, cudagraph_outputs={self.cudagraph_outputs!r}")
            if self.cudagraph_sizes:
                parts.append(f"cudagraph_sizes={list(self.cudagraph_sizes)!r}")
        if self.cache_dir is not None:
            parts.append(f"cache_dir={self.cache_dir!r}")
        if self.audit is not None:
            parts.append(f"audit={self.audit!r}")
        return ", ".join(parts)


def _choice(option: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"compile_once({option}=...) takes one of {_quoted(allowed)}; got {value!r} of type {type(value).__name__}."
        )
    if value not in allowed:
        raise ValueError(f"compile_once({option}={value!r}) is not allowed; choose one of {_quoted(allowed)}.")


#: The environment variable that turns the audit on for every ``compile_once`` without ``audit=``.
AUDIT_ENV = "NOCOMPILE_AUDIT"
#: What it accepts: on, off (unset or empty is off).
AUDIT_VALUES: dict[str, bool] = {"1": True, "0": False}


def audit_from_env() -> bool:
    """``NOCOMPILE_AUDIT`` as a bool (unset or empty: off); ValueError naming it for anything else."""
    value = os.environ.get(AUDIT_ENV, "").strip()
    if not value:
        return False
    if value not in AUDIT_VALUES:
        raise ValueError(
            f"{AUDIT_ENV}={value!r} is not understood; set it to {_quoted(list(AUDIT_VALUES))} "
            "(1: every guards='inputs' call also evaluates Dynamo's guards), or unset it."
        )
    return AUDIT_VALUES[value]


def _quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(v) for v in values)


class OptionArguments(TypedDict, total=False):
    """``compile_once``'s keyword options and their types, written once: the decorator's overloads
    take them as ``**options: Unpack[OptionArguments]``, ``validate_options`` checks their values.
    Defaults are ``CompileOptions``'."""

    backend: str | Callable[..., Any]
    options: Mapping[str, Any] | None
    mode: str | None
    guards: GuardPolicy
    on_mismatch: OnMismatch
    max_compiles: int
    dynamic: DynamicSpec | Literal[False] | None
    per_instance: bool
    dispatch: Dispatch
    dump_dir: str | os.PathLike[str] | None
    cudagraphs: bool
    cudagraph_sizes: Sequence[int] | None
    cudagraph_outputs: CudagraphOutputs
    cache_dir: str | os.PathLike[str] | None
    audit: bool | None


#: The names ``compile_once`` takes, in the order its docstring lists them.
OPTION_NAMES: tuple[str, ...] = tuple(OptionArguments.__annotations__)


def unknown_options(given: Mapping[str, object]) -> None:
    """``TypeError`` naming any keyword ``compile_once`` does not take, with the ones it does."""
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"compile_once() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(OPTION_NAMES)}."
        )


def validate_options(
    *,
    backend: object = "inductor",
    options: object = None,
    mode: object = None,
    guards: object = "inputs",
    per_instance: object = True,
    dispatch: object = "bytecode",
    on_mismatch: object = "raise",
    max_compiles: object = 8,
    dynamic: object = None,
    dump_dir: object = None,
    cudagraphs: object = False,
    cudagraph_sizes: object = None,
    cudagraph_outputs: object = "static",
    cache_dir: object = None,
    audit: object = None,
) -> CompileOptions:
    """Check every option and return the frozen record, or raise ``TypeError``/``ValueError``."""
    _choice("guards", guards, GUARD_POLICIES)
    _choice("dispatch", dispatch, DISPATCHES)
    _choice("on_mismatch", on_mismatch, ON_MISMATCH)
    if isinstance(max_compiles, bool) or not isinstance(max_compiles, int):
        raise TypeError(f"compile_once(max_compiles=...) takes an int >= 1; got {max_compiles!r}.")
    if max_compiles < 1:
        raise ValueError(f"compile_once(max_compiles={max_compiles}) must be at least 1.")
    automatic_dynamic = dynamic is not False
    dynamic_dims = _dynamic_dims(None if dynamic is False else dynamic)
    if dynamic_dims and guards == "none":
        raise ValueError(
            f"compile_once(dynamic={dynamic!r}, guards='none'): with every guard dropped and no "
            "check, the shape guards a dynamic dim needs would be lost silently. Use "
            "guards='inputs' (default), which keeps them, or guards='dynamo'."
        )
    if not isinstance(per_instance, bool):
        raise TypeError(f"compile_once(per_instance=...) takes True or False; got {per_instance!r}.")

    if isinstance(backend, str):
        known = _compat.registered_backends()
        if backend not in known:
            raise ValueError(
                f"compile_once(backend={backend!r}) is not a torch.compile backend registered in "
                f"this process; choose one of {_quoted(sorted(known))}, or pass a backend callable."
            )
    elif not callable(backend):
        raise TypeError(
            "compile_once(backend=...) takes a backend name (str) or a callable "
            f"(gm, example_inputs) -> callable; got {backend!r} of type {type(backend).__name__}."
        )

    if options is not None:
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise TypeError(
                "compile_once(options=...) takes a dict with str keys, as torch.compile(options=...) "
                f"does; got {options!r}."
            )
        if "guard_filter_fn" in options:
            raise ValueError(
                "compile_once(options=...) must not contain 'guard_filter_fn': nocompile sets it "
                "from guards=. Use guards='none' | 'inputs' | 'dynamo' instead."
            )
        options = dict(options)  # a private copy: later edits to the caller's dict change nothing

    if mode is not None:
        if not isinstance(mode, str):
            raise TypeError(f"compile_once(mode=...) takes a str or None; got {mode!r}.")
        if options:
            raise ValueError(
                f"compile_once(mode={mode!r}, options=...) gives both; torch.compile takes one or "
                "the other. Put the mode's settings into options, or drop options."
            )
        if backend == "inductor":
            modes = _compat.inductor_modes()
            if mode not in modes:
                raise ValueError(
                    f"compile_once(mode={mode!r}) is not an inductor mode; choose one of {_quoted(modes)}."
                )
        elif guards != "dynamo":
            raise ValueError(
                f"compile_once(mode={mode!r}) with backend={backend!r}: nocompile can only drop "
                "guards together with a mode for backend='inductor'. Pass options to your backend "
                "instead, or use guards='dynamo'."
            )

    if dump_dir is not None:
        if not isinstance(dump_dir, (str, os.PathLike)):
            raise TypeError(
                f"compile_once(dump_dir=...) takes a directory path (str or os.PathLike) or None; "
                f"got {dump_dir!r} of type {type(dump_dir).__name__}."
            )
        dump_dir = os.fspath(dump_dir)
        if not isinstance(dump_dir, str) or not dump_dir.strip():
            raise ValueError(
                f"compile_once(dump_dir={dump_dir!r}): give a non-empty directory path as str, or None "
                "for no dump (NOCOMPILE_DUMP_DIR then decides)."
            )
    sizes = _cudagraph_options(
        cudagraphs,
        cudagraph_sizes,
        cudagraph_outputs,
        guards=guards,
        dispatch=dispatch,
        mode=mode,
        options=options,
        dynamic=dynamic_dims,
        on_mismatch=on_mismatch,
    )
    cache_path = _cache_dir(cache_dir, backend, guards)
    if cache_path is not None and cudagraphs is True:
        raise ValueError(
            f"compile_once(cache_dir={cache_dir!r}, cudagraphs=True): a loaded artifact skips the compiling "
            "call, which is where cudagraphs=True checks that the function leaves its arguments' Python "
            "state alone; the two are not combined yet. Drop one of them."
        )
    _audit_option(audit, guards)

    return CompileOptions(
        backend=backend,
        options=options,
        mode=mode,
        guards=guards,  # type: ignore[arg-type]
        per_instance=per_instance,
        dispatch=dispatch,  # type: ignore[arg-type]
        on_mismatch=on_mismatch,  # type: ignore[arg-type]
        max_compiles=max_compiles,
        dynamic=dynamic_dims,
        automatic_dynamic=automatic_dynamic,
        dump_dir=dump_dir,
        cudagraphs=cudagraphs,  # type: ignore[arg-type]
        cudagraph_sizes=sizes,
        cudagraph_outputs=cudagraph_outputs,  # type: ignore[arg-type]
        cache_dir=cache_path,
        audit=audit,  # type: ignore[arg-type]
    )


def _audit_option(audit: object, guards: object) -> None:
    """Check ``audit``; with ``audit=None``, that ``NOCOMPILE_AUDIT`` is readable now (it is read
    again when a specialization is installed)."""
    if audit is not None and not isinstance(audit, bool):
        raise TypeError(
            f"compile_once(audit=...) takes True, False or None (None: the {AUDIT_ENV} environment "
            f"variable decides); got {audit!r}."
        )
    if audit and guards != "inputs":
        raise ValueError(
            f"compile_once(audit=True, guards={guards!r}): the audit checks what guards='inputs' lets "
            "run without Dynamo's guards. Under guards='dynamo' they are evaluated anyway; under "
            "guards='none' nothing is checked by design. Drop audit=, or use guards='inputs'."
        )
    if audit is None:
        audit_from_env()


def _cudagraph_options(
    cudagraphs: object,
    sizes: object,
    outputs: object,
    *,
    guards: object,
    dispatch: object,
    mode: object,
    options: Mapping[str, Any] | None,
    dynamic: Mapping[str, tuple[int, ...]],
    on_mismatch: object,
) -> tuple[int, ...] | None:
    """Check ``cudagraphs``, ``cudagraph_sizes`` and ``cudagraph_outputs``; the sizes as a tuple."""
    if not isinstance(cudagraphs, bool):
        raise TypeError(f"compile_once(cudagraphs=...) takes True or False; got {cudagraphs!r}.")
    _choice("cudagraph_outputs", outputs, CUDAGRAPH_OUTPUTS)
    if not cudagraphs:
        if sizes is not None or outputs != "static":
            given = "cudagraph_sizes" if sizes is not None else f"cudagraph_outputs={outputs!r}"
            raise ValueError(f"compile_once({given}) only applies to CUDA graphs; add cudagraphs=True, or drop it.")
        return None
    if guards == "dynamo":
        raise ValueError(
            "compile_once(cudagraphs=True, guards='dynamo'): a graph replay runs no Python, so "
            "Dynamo's guards would never be evaluated. Use guards='inputs' (default; checks each "
            "call's signature before replaying) or guards='none'."
        )
    if dispatch != "bytecode":
        raise ValueError(
            f"compile_once(cudagraphs=True, dispatch={dispatch!r}): a graph replay bypasses the "
            "dispatch entirely; only the captured bytecode is supported under graphs. Drop dispatch=."
        )
    wants_graphs = mode == "reduce-overhead" or bool(options and options.get("triton.cudagraphs"))
    if wants_graphs:
        raise ValueError(
            "compile_once(cudagraphs=True) with mode='reduce-overhead' (or options "
            "{'triton.cudagraphs': True}) would capture CUDA graphs twice. Use one: nocompile's "
            "cudagraphs=True, or inductor's mode with cudagraphs=False."
        )
    if dynamic and sizes is None:
        raise ValueError(
            f"compile_once(cudagraphs=True, dynamic={dict(dynamic)!r}): a CUDA graph has fixed shapes. "
            "Give the sizes to capture for the dynamic dim, e.g. cudagraph_sizes=[1, 2, 4, 8] "
            "(calls are padded up to the next size), or drop dynamic=."
        )
    if sizes is None:
        return None
    if (
        isinstance(sizes, (str, bytes))
        or not isinstance(sizes, Sequence)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes)
    ):
        raise TypeError(f"compile_once(cudagraph_sizes=...) takes a list of ints, e.g. [1, 2, 4, 8]; got {sizes!r}.")
    if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise ValueError(
            f"compile_once(cudagraph_sizes={list(sizes)!r}) must be positive ints in increasing order "
            "without repeats, e.g. [1, 2, 4, 8]."
        )
    dims = [(name, d) for name, ds in dynamic.items() for d in ds]
    if len(dims) != 1:
        raise ValueError(
            f"compile_once(cudagraph_sizes={list(sizes)!r}) pads calls along one dynamic dim, so it "
            f"needs exactly one, e.g. dynamic={{'x': 0}}; got dynamic={dict(dynamic)!r}."
        )
    if 1 in sizes and on_mismatch != "recompile":
        raise ValueError(
            f"compile_once(cudagraph_sizes={list(sizes)!r}): Dynamo compiles size 1 of a dynamic dim "
            "as a specialization of its own, so a size-1 call needs on_mismatch='recompile' (it then "
            "compiles and captures its own graph). Add on_mismatch='recompile', or drop 1 from the sizes."
        )
    return tuple(sizes)


def _cache_dir(cache_dir: object, backend: object, guards: object) -> str | None:
    """``cache_dir`` as an absolute path; persistence needs a backend name and dropped guards."""
    if cache_dir is None:
        return None
    if not isinstance(cache_dir, (str, os.PathLike)) or not os.fspath(cache_dir):
        raise TypeError(
            f"compile_once(cache_dir=...) takes a directory path (str or os.PathLike) or None; got {cache_dir!r}."
        )
    if guards == "dynamo":
        raise ValueError(
            f"compile_once(cache_dir={cache_dir!r}, guards='dynamo'): a saved artifact cannot keep Dynamo's "
            "recompile-on-guard-failure behaviour. Use guards='inputs' (default) or 'none' with cache_dir."
        )
    if not isinstance(backend, str):
        raise ValueError(
            f"compile_once(cache_dir={cache_dir!r}) with a backend callable: an artifact's key needs a "
            "backend name that means the same thing in the next process. Register the backend and pass its name."
        )
    return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


def _dynamic_dims(dynamic: object) -> dict[str, tuple[int, ...]]:
    """``{"x": 0}`` or ``{"x": (0, 1)}`` into ``{"x": (0,)}`` / ``{"x": (0, 1)}``."""
    if dynamic is None:
        return {}
    example = 'dynamic={"x": 0} or dynamic={"x": (0, 1)}'
    if not isinstance(dynamic, Mapping):
        raise TypeError(
            f"compile_once(dynamic=...) takes a dict of argument name to dim(s), e.g. {example}; got {dynamic!r}."
        )
    dims: dict[str, tuple[int, ...]] = {}
    for name, value in dynamic.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"compile_once(dynamic=...): keys are argument names, e.g. {example}; got {name!r}.")
        values = (value,) if isinstance(value, int) else value
        if (
            isinstance(value, bool)
            or not isinstance(values, (tuple, list))
            or not values
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in values)
        ):
            raise TypeError(
                f"compile_once(dynamic={{{name!r}: {value!r}}}): a dim is an int or a non-empty tuple of "
                f"ints, e.g. {example}."
            )
        if any(d < 0 for d in values):
            raise ValueError(
                f"compile_once(dynamic={{{name!r}: {value!r}}}): give dims as non-negative indices "
                "(count from the first dim)."
            )
        dims[name] = tuple(sorted(set(values)))
    return dims
