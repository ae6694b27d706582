"""Compiled artifacts on disk: compile in one process, load in the next.

With ``compile_once(cache_dir=...)`` (or ``NOCOMPILE_CACHE_DIR``) a specialization is made with
torch's ahead-of-time path instead of a first run under Dynamo: ``torch.compile(...).aot_compile``
traces and compiles for the call's inputs, the result is serialized into one file, and a later
process that needs the same specialization unpickles it with
``torch.compiler.load_compiled_function`` instead of compiling. Either way the state ends up with
the same thing it gets from an in-process compile — a function on Dynamo's transformed bytecode —
and installs it in the same tables, so the per-call path (and the ``guards="inputs"`` check)
does not know where it came from. See docs/persistence.md for the design and its measurements.

The file name is the *artifact key*: a hash of everything the compiled code depends on that
nocompile can see (the function's code and what it reaches by name, torch and Python versions,
backend, options, mode, guard policy, dynamic dims, and the call's signature). A file that is
truncated, corrupted or does not load is logged, renamed ``*.bad`` and compiled anew. Files are
written to a temporary name and renamed, so racing processes each leave a complete file.

Artifacts are pickles: loading one runs code. The directory is created owner-only (0o700) and a
directory or file owned by another user, or writable by group or others, is refused with
``NoCompileError`` before anything is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import platform
import re
import stat
import sys
import tempfile
import time
import types
from typing import Any, Protocol

import torch

from . import _compat, _kernels, _watch
from ._arguments import ArgumentTree, Kind, dynamic_marks
from ._codegen import EMPTY_CELL, closure_variables, qualified_name
from ._errors import NoCompileError
from ._layout import KeyFunction
from ._options import CompileOptions
from ._record import Compiled, CompileRecord
from ._selector import build_shape_check

log = logging.getLogger("nocompile")

CACHE_ENV = "NOCOMPILE_CACHE_DIR"
MAGIC = b"NOCOMPILE-ARTIFACT\n"
FORMAT = 2
SUFFIX = ".nocompile"

#: The torch version the key uses. A module attribute so a test can pretend another release.
TORCH_VERSION: str = torch.__version__

_warned_unavailable = False


class AheadOfTimeFailed(Exception):
    """torch's ahead-of-time compile raised; ``__cause__`` says why. The caller may fall back."""


class BadArtifact(Exception):
    """An artifact file that cannot be used: truncated, corrupted, or from another format."""


# -- where artifacts go ----------------------------------------------------------------------


def cache_dir_for(options: CompileOptions) -> str | None:
    """The cache directory this compile uses: the option, else ``NOCOMPILE_CACHE_DIR``, else None.

    The environment variable is read at compile time. It applies only where persistence can
    work (a backend given by name, guards dropped); elsewhere it is ignored with an info log.
    """
    if options.cache_dir is not None:
        return options.cache_dir
    env = os.environ.get(CACHE_ENV, "").strip()
    if not env:
        return None
    if not options.policy.persistable or not isinstance(options.backend, str) or options.cudagraphs:
        log.info(
            "%s is set, but guards='dynamo', a backend callable or cudagraphs=True cannot be persisted; "
            "compiling as usual",
            CACHE_ENV,
        )
        return None
    return os.path.abspath(os.path.expanduser(env))


def aot_usable() -> bool:
    """Whether this torch has the ahead-of-time path; warns once when it does not."""
    global _warned_unavailable
    reason = _compat.aot_available()
    if reason is None:
        return True
    if not _warned_unavailable:
        _warned_unavailable = True
        log.warning("nocompile cache_dir: %s; compiling in-process without saving artifacts.", reason)
    return False


def ensure_private_dir(directory: str) -> None:
    """Create ``directory`` owner-only, or check that an existing one is safe to load from.

    Refused (``NoCompileError``): not a directory, owned by another uid, or writable by group or
    others. Anyone who can write there can plant a pickle that runs code in this process.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise NoCompileError(
            f"nocompile cache_dir {directory!r}: cannot create it ({exc}). Fix: choose a writable path."
        ) from exc
    check_safe(directory, os.stat(directory), "directory")


def check_safe(path: str, st: os.stat_result, what: str) -> None:
    """Refuse a file or directory another user owns or others may write."""
    if what == "directory" and not stat.S_ISDIR(st.st_mode):
        raise NoCompileError(f"nocompile cache_dir {path!r} exists and is not a directory. Fix: choose another path.")
    if st.st_uid != os.getuid():
        raise NoCompileError(
            f"nocompile refuses the artifact {what} {path!r}: it is owned by uid {st.st_uid}, not by this "
            f"process's uid {os.getuid()}. Artifacts are pickles that run code when loaded, so only your own "
            "are trusted. Fix: use a cache_dir of your own (it is created with mode 0o700)."
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NoCompileError(
            f"nocompile refuses the artifact {what} {path!r}: mode {stat.S_IMODE(st.st_mode):o} lets group or "
            "others write it, and anyone who can write there can plant a pickle that runs code in this "
            f"process. Fix: chmod go-w {path!r} (nocompile creates its directories with mode 0o700)."
        )


# -- the key ---------------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _code_digest(
    code: types.CodeType, h: Any, reached: set[types.CodeType], fn_globals: dict[str, Any], depth: int
) -> None:
    """Feed ``code`` (bytecode, constants, names, nested code) and what it reaches by name into ``h``."""
    if code in reached:
        return
    reached.add(code)
    h.update(code.co_code)
    h.update(
        repr(
            (
                code.co_names,
                code.co_varnames,
                code.co_freevars,
                code.co_cellvars,
                code.co_argcount,
                code.co_kwonlyargcount,
                code.co_posonlyargcount,
                code.co_flags,
            )
        ).encode()
    )
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h, reached, fn_globals, depth)
        else:
            h.update(_ADDRESS.sub("", repr(const)).encode())
    if depth <= 0:
        return
    for name in code.co_names:  # functions this one calls by global name, in the user's code
        target = fn_globals.get(name)
        target = getattr(target, "__wrapped__", target)
        if isinstance(target, types.FunctionType) and not (target.__module__ or "").startswith("torch"):
            h.update(f"->{name}".encode())
            _code_digest(target.__code__, h, reached, target.__globals__, depth - 1)


def function_digest(fn: types.FunctionType) -> str:
    """Hash of ``fn``'s code, nested code objects and the functions it reaches through globals.

    Covers what the compiled graph was traced from as far as names can be followed statically
    (three calls deep). Code reached through attributes (``self.layer(x)``, ``module.helper``)
    is not followed: change it and a stale artifact is loaded (docs/persistence.md).
    """
    h = hashlib.sha256()
    _code_digest(fn.__code__, h, set(), fn.__globals__, depth=3)
    for name, _, value in closure_variables(fn):
        if value is EMPTY_CELL:
            h.update(f"cell {name}: empty;".encode())
            continue
        h.update(f"cell {name}: {_closure_value(value)};".encode())
        if isinstance(value, types.FunctionType):
            _code_digest(value.__code__, h, set(), value.__globals__, depth=2)
    return h.hexdigest()


def _closure_value(value: Any) -> str:
    """What a captured variable contributes to the key: Dynamo bakes its value into the graph.

    Plain values by ``repr``, tensors by shape, dtype and device (their data is read at run
    time), functions and classes by name (their code is hashed separately). Anything else by
    identity, which no other process shares: such a function compiles in each process rather
    than load an artifact made for another value.
    """
    if _plain_value(value):
        return repr(value)
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}:{value.dtype}:{value.device}"
    if isinstance(value, (types.FunctionType, type)):
        return qualified_name(value)
    if isinstance(value, torch.nn.Module):
        return module_digest(value)
    return f"{type(value).__qualname__}@{id(value):x}"


_SCALAR_ATTRS = (int, float, bool, str, type(None), torch.dtype, torch.device)


def _plain_value(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, _SCALAR_ATTRS) for v in value)
    return isinstance(value, _SCALAR_ATTRS)


def module_digest(module: torch.nn.Module) -> str:
    """Hash of what a module argument (``self``) contributes to the compiled graph.

    Dynamo bakes into the graph the shapes, dtypes and devices of the parameters and buffers,
    the code of every submodule's ``forward`` and plain attributes such as ``eps`` or
    ``in_features``; the per-call ``guards="inputs"`` check sees none of them. In one process
    that is the model the compile saw; across processes it may be another (a config change),
    so all of it goes into the artifact key.
    """
    h = hashlib.sha256()
    forwards: dict[type, None] = {}
    for name, sub in module.named_modules():
        kind = type(sub)
        h.update(f"{name}:{qualified_name(kind)};".encode())
        attrs = sorted((k, repr(v)) for k, v in vars(sub).items() if not k.startswith("_") and _plain_value(v))
        h.update(repr(attrs).encode())
        forwards.setdefault(kind)
    for name, t in _watch.module_tensors(module):
        shape, stride, dtype, device = _watch.layout(t)
        h.update(f"{name}:{shape}:{dtype}:{device}:{t.requires_grad}:{stride};".encode())
    for kind in forwards:
        forward = getattr(kind.forward, "__wrapped__", kind.forward)
        if isinstance(forward, types.FunctionType) and not (forward.__module__ or "").startswith("torch"):
            _code_digest(forward.__code__, h, set(), forward.__globals__, depth=2)
    return h.hexdigest()


def key_material(
    fn: types.FunctionType,
    options: CompileOptions,
    tree: ArgumentTree,
    key_fn: KeyFunction,
    key: tuple[Any, ...],
    signature_text: str,
) -> dict[str, Any]:
    """Everything the artifact key hashes, as JSON-able text (also written into the header):
    ``key_fn`` and ``key`` are the call's full key (its request's), ``tree`` its walked arguments,
    ``signature_text`` the key as the compile record shows it (``describe_key``)."""
    modules = [f"{root.path}={module_digest(root.value)}" for root in tree.roots if root.kind is Kind.MODULE]
    kernels = _kernels.identity(_devices(tree)) if options.backend == "inductor" else None
    return {
        "function": qualified_name(fn),
        "code": function_digest(fn),
        "torch": TORCH_VERSION,
        "python": platform.python_version(),
        "backend": options.backend_name(),
        "options": _ADDRESS.sub("", repr(sorted((options.options or {}).items()))),
        "mode": options.mode,
        "guards": options.guards,
        "dynamic": sorted((k, list(v)) for k, v in options.dynamic.items()),
        "signature": _ADDRESS.sub("", key_fn.source + repr(key)),
        "modules": modules,
        "distributed": _distributed_identity(),
        "kernels": kernels,
        "signature_text": signature_text,
    }


def _devices(tree: ArgumentTree) -> set[torch.device]:
    """The devices of the call's tensors and of its module arguments' parameters and buffers."""
    found = {node.value.device for node in tree.tensors()}
    for root in tree.roots:
        if root.kind is Kind.MODULE:
            found.update(t.device for _, t in _watch.module_tensors(root.value))
    return found


def _distributed_identity() -> list[int] | None:
    """``[rank, world_size]`` when ``torch.distributed`` is initialised, else None.

    A graph may bake in the rank and the world size (a forward that reads ``dist.get_rank()``),
    and ranks on one CPU host, or on hosts sharing a directory each on its own ``cuda:0``, would
    otherwise compute one key and load each other's graphs.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return [dist.get_rank(), dist.get_world_size()]


def artifact_key(material: dict[str, Any]) -> str:
    hashed = {k: v for k, v in material.items() if k != "signature_text"}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:40]


def artifact_path(directory: str, fn: types.FunctionType, key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", qualified_name(fn))[-80:]
    return os.path.join(directory, f"{name}-{key}{SUFFIX}")


# -- the file format -------------------------------------------------------------------------


def encode(header: dict[str, Any], payload: bytes) -> bytes:
    """``MAGIC``, 8-byte header length, JSON header (with the payload's sha256 and size), payload."""
    header = {
        **header,
        "format": FORMAT,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + len(head).to_bytes(8, "big") + head + payload


def decode(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and payload of an artifact; ``BadArtifact`` on any inconsistency."""
    if not data.startswith(MAGIC):
        raise BadArtifact("not a nocompile artifact (bad magic)")
    start = len(MAGIC) + 8
    if len(data) < start:
        raise BadArtifact("truncated header")
    head_len = int.from_bytes(data[len(MAGIC) : start], "big")
    try:
        header = json.loads(data[start : start + head_len])
    except ValueError as exc:
        raise BadArtifact(f"unreadable header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BadArtifact(f"format {header.get('format') if isinstance(header, dict) else '?'}, expected {FORMAT}")
    payload = data[start + head_len :]
    if len(payload) != header.get("payload_bytes"):
        raise BadArtifact(f"payload is {len(payload)} bytes, header says {header.get('payload_bytes')} (truncated?)")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise BadArtifact("payload checksum mismatch (corrupted)")
    return header, payload


def read_artifact(path: str) -> bytes | None:
    """The file's bytes, ``None`` when absent; ``NoCompileError`` when it is not safe to load."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NoCompileError(
            f"nocompile refuses the artifact {path!r}: cannot open it without following links ({exc}). "
            "Fix: remove it; artifacts must be regular files of your own."
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NoCompileError(f"nocompile refuses the artifact {path!r}: not a regular file. Fix: remove it.")
        check_safe(path, st, "file")
        return fh.read()


def write_artifact(path: str, data: bytes) -> None:
    """Write ``data`` to a private temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=os.path.dirname(path))  # mode 0o600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def set_aside(path: str, reason: str) -> None:
    """Rename an unusable artifact to ``*.bad`` (kept for inspection) and log a warning."""
    bad = path + ".bad"
    try:
        os.replace(path, bad)
        where = f"moved to {bad!r}"
    except OSError as exc:
        where = f"could not be moved aside ({exc})"
    log.warning("nocompile: artifact %r is unusable (%s); %s; compiling instead.", path, reason, where)


# -- making a specialization -----------------------------------------------------------------


def install_dynamo_globals(loaded: types.FunctionType, fn_globals: dict[str, Any]) -> None:
    """Put the compiled graph and Dynamo's import aliases into the function's own globals.

    The state builds its call on ``fn.__globals__`` (live module globals, as an in-process
    compile does) rather than on the AOT function's private snapshot of them; Dynamo's own
    names carry a uuid, so they collide with nothing. They are overwritten, not just added:
    while tracing, Dynamo already installs ``__compiled_fn_*`` in the module under the same
    name, bound to the *uncompiled* graph module (an eager FX graph, several times slower than the
    backend's kernels; docs/persistence.md); only the AOT
    function's own globals hold the backend's compiled callable.
    """
    source = loaded.__globals__
    for name in loaded.__code__.co_names:
        if name.startswith(_compat.DYNAMO_GLOBAL_PREFIXES) and name in source:
            fn_globals[name] = source[name]


def external_values(fn: types.FunctionType) -> dict[str, Any]:
    """Closure values of ``fn`` that pickle cannot find again by module and name: an artifact
    refers to them by key and the loading process supplies its own (the key says they match).

    A decorated method's inner function is one: ``functools.wraps`` gives the wrapper the inner
    function's name, so the name leads to the wrapper (Hugging Face models' ``forward``).
    """
    found = {}
    for name, _, value in closure_variables(fn):
        if isinstance(value, types.FunctionType) and "<locals>" not in value.__qualname__:
            owner: Any = sys.modules.get(value.__module__)
            for part in value.__qualname__.split("."):
                owner = getattr(owner, part, None)
            if owner is not value:
                found[f"closure {name}"] = value
    return found


def outside_modules(aot: Any, fn_globals: dict[str, Any]) -> dict[str, str]:
    """``{global name: module name}`` of the globals the bytecode loads that the artifact does not
    carry (``_compat.aot_outside_names``), all modules Dynamo installed under names of its own;
    the load installs them again. ``ValueError`` (nothing saved) for anything else, which no other
    process would have."""
    found, missing = {}, []
    for name in _compat.aot_outside_names(aot):
        value = fn_globals.get(name)
        if isinstance(value, types.ModuleType):
            found[name] = value.__name__
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"the compiled code reads globals Dynamo installed in this process only: {missing}")
    return found


def install_outside_modules(header: dict[str, Any], fn_globals: dict[str, Any]) -> None:
    """Put the modules of ``outside_modules`` back under their names (``BadArtifact`` if a name is
    taken by something else)."""
    for name, module in dict(header.get("outside_modules") or {}).items():
        live = fn_globals.get(name)
        if live is None:
            fn_globals[name] = importlib.import_module(str(module))
        elif getattr(live, "__name__", None) != module or not isinstance(live, types.ModuleType):
            raise BadArtifact(f"global {name!r} should be module {module!r}, is {type(live).__name__}")


def check_header(header: dict[str, Any], material: dict[str, Any]) -> None:
    """``BadArtifact`` unless the header records the key material this process computed: the file
    name is a hash of it, so a header that says otherwise (a file renamed or edited: kernels for
    another CPU ISA, GPU, CUDA or torch under this key) does not belong here."""
    expected = json.loads(json.dumps(material))
    differ = [k for k in sorted(expected) if k != "signature_text" and header.get(k) != expected[k]]
    if differ:
        shown = "; ".join(f"{k}: file {header.get(k)!r}, here {expected[k]!r}" for k in differ)
        raise BadArtifact(f"its header does not match its key ({shown})")


def _load(
    path: str,
    fn: types.FunctionType,
    source: types.CodeType,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    material: dict[str, Any],
) -> Compiled | None:
    data = read_artifact(path)  # NoCompileError when unsafe: refused, nothing loaded
    if data is None:
        return None
    started = time.perf_counter()
    try:
        header, payload = decode(data)
        check_header(header, material)
        install_outside_modules(header, fn.__globals__)
        aot = _compat.aot_load(payload, fn.__globals__, external_values(fn))
        bytecode_fn = _compat.aot_bytecode_function(aot)
    except Exception as exc:  # BadArtifact, an unpickling error, torch's compatibility check...
        set_aside(path, f"{type(exc).__name__}: {exc}")
        return None
    shape_exprs = [str(e) for e in header.get("shape_guards", [])]
    if shape_exprs:
        check = build_shape_check(fn, list(dict.fromkeys(shape_exprs)))
        if check is not None and not check(*args, **kwargs):
            log.info(
                "nocompile: artifact %r: its shape guards %s do not hold for this call; compiling", path, shape_exprs
            )
            return None
    install_dynamo_globals(bytecode_fn, fn.__globals__)
    dropped = [(str(t), str(n)) for t, n in header.get("dropped_guards", [])]
    return Compiled(
        source_code=source,
        compiled=aot,
        transformed_code=bytecode_fn.__code__,
        seconds=time.perf_counter() - started,
        dropped=tuple(dropped),
        shape_exprs=tuple(shape_exprs),
        record=None,
        origin="loaded",
        artifact_path=path,
        kernels=header.get("kernels_made_by"),
    )


class GuardsSeen(Protocol):
    """What a compile's guard filter collected (``_compiler``'s collector)."""

    dropped: list[tuple[str, str]]
    shape_exprs: list[str]


def make(
    fn: types.FunctionType,
    fn_copy: types.FunctionType,
    options: CompileOptions,
    directory: str | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tree: ArgumentTree,
    signature: tuple[KeyFunction, tuple[Any, ...]],
    guards: GuardsSeen,
    compile_kwargs: dict[str, Any],
    record: CompileRecord,
) -> Compiled:
    """Load the specialization for this call from ``directory``, or compile it ahead of time and save it.

    Returns the ``Compiled`` record (``record`` is what the compile saw; a loaded one has none).
    ``fn_copy`` is the state's private copy of ``fn``; ``signature`` the call's full key function and
    key (what the artifact key hashes of the arguments); ``compile_kwargs`` are ``torch.compile``'s
    keyword arguments, whose guard filter records into ``guards``. ``directory=None`` compiles
    ahead of time without loading or saving.
    ``AheadOfTimeFailed`` when torch's ahead-of-time compile raises; ``NoCompileError`` when the
    directory or the artifact is refused as unsafe.
    """
    material: dict[str, Any] = {}
    path: str | None = None
    if directory is not None:
        ensure_private_dir(directory)
        material = key_material(fn, options, tree, *signature, record.signature)
        path = artifact_path(directory, fn, artifact_key(material))
        made = _load(path, fn, fn_copy.__code__, args, kwargs, material)
        if made is not None:
            log.info("nocompile: loaded %s from %s in %.3f s", fn.__qualname__, path, made.seconds)
            return made

    marks = dynamic_marks(tree, options.dynamic)  # ValueError on a bad name or dim
    started = time.perf_counter()
    try:
        with _compat.compilation_config(), _compat.marked_dynamic(marks):
            aot = _compat.aot_compile(fn_copy, compile_kwargs, args, kwargs)
        bytecode_fn = _compat.aot_bytecode_function(aot)
    except Exception as exc:
        raise AheadOfTimeFailed(f"{type(exc).__name__}: {exc}") from exc
    install_dynamo_globals(bytecode_fn, fn.__globals__)
    seconds = time.perf_counter() - started
    dropped, shape_exprs = list(guards.dropped), list(guards.shape_exprs)
    kernels = getattr(compile_kwargs.get("backend"), "outcome", options.backend_name())
    saved = path

    def compiled(saved: str | None) -> Compiled:
        return Compiled(
            source_code=fn_copy.__code__,
            compiled=aot,
            transformed_code=bytecode_fn.__code__,
            seconds=seconds,
            dropped=tuple(dropped),
            shape_exprs=tuple(shape_exprs),
            record=record,
            artifact_path=saved,
            kernels=kernels,
        )

    if path is None:
        return compiled(None)
    try:
        header = {
            **material,
            "dropped_guards": [list(d) for d in dropped],
            "shape_guards": shape_exprs,
            "compile_seconds": round(seconds, 3),
            "kernels_made_by": kernels,
            "outside_modules": outside_modules(aot, fn.__globals__),
            "created": time.time(),
        }
        write_artifact(path, encode(header, _compat.aot_payload(aot, external_values(fn))))
        log.info("nocompile: compiled %s in %.3f s, saved %s", fn.__qualname__, seconds, path)
    except Exception as exc:  # not serializable (an unusual backend), disk full...
        saved = None
        log.warning(
            "nocompile: compiled %s but could not save its artifact to %r (%s: %s)",
            fn.__qualname__,
            path,
            type(exc).__name__,
            exc,
        )
    return compiled(saved)
