"""The one place that touches private torch names.

Everything else in nocompile uses public torch API. When a torch release moves one of the
names below, this module is the only file that changes. Every helper runs on each release in the
supported range (``MIN_TORCH`` to ``NEWEST_VERIFIED_TORCH``; docs/versions.md says which
releases and Pythons ran the test suite); where releases differ, the helper's docstring says how.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import functools
import inspect
import os
import re
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch

from ._codegen import closure_values

#: Oldest torch release nocompile runs on: the oldest the suite has run against (docs/versions.md).
#: Before 2.10 ``guard_filter_fn`` cannot drop the GLOBAL_STATE and TORCH_FUNCTION_MODE_STACK
#: guards, nor is there the bytecode-hook handle API; 2.10 itself was never verified.
MIN_TORCH = (2, 11)

#: Newest torch release the test suite has run against. A newer one gets a warning, not an
#: error: the private names in this module may have moved, and the warning says what to do.
NEWEST_VERIFIED_TORCH = (2, 14)

BytecodeHook = Callable[[types.CodeType, types.CodeType], "types.CodeType | None"]


def torch_version() -> tuple[int, int]:
    """``(major, minor)`` of the running torch, ignoring local and pre-release suffixes."""
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if match is None:  # pragma: no cover - torch always has a version
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def check_torch_supported() -> None:
    """Refuse a torch too old for nocompile's mechanics; warn on one newer than verified.

    Called when ``compile_once`` is applied, so an unsupported torch is reported where the
    user's module is imported, not as a crash deep inside Dynamo on the first call.
    """
    from ._errors import NoCompileError

    version = torch_version()
    oldest = ".".join(map(str, MIN_TORCH))
    newest = ".".join(map(str, NEWEST_VERIFIED_TORCH))
    if version < MIN_TORCH:
        raise NoCompileError(
            f"nocompile needs torch>={oldest}; this process runs torch {torch.__version__}. "
            f"Upgrade torch (pip install 'torch>={oldest}')."
        )
    if version > NEWEST_VERIFIED_TORCH:
        warnings.warn(
            f"nocompile is verified on torch {oldest} to {newest}; this process runs torch "
            f"{torch.__version__}. It relies on private Dynamo names that may have moved: if a "
            f"compile fails inside Dynamo, pin torch<={newest} (or set NOCOMPILE_DISABLE=1) and report it.",
            RuntimeWarning,
            stacklevel=3,
        )


def register_bytecode_hook(hook: BytecodeHook) -> Any:
    """Register ``hook(old_code, new_code)`` for every frame Dynamo transforms.

    Returns a handle with ``remove()``.
    """
    from torch._dynamo.convert_frame import register_bytecode_hook as register

    # torch types the hook as a Protocol with named parameters, which differ between releases.
    return register(cast(Any, hook))


@contextlib.contextmanager
def compilation_config(limit: int = 1 << 20) -> Iterator[None]:
    """Dynamo settings for one nocompile compilation, restored on exit (also when it raises):
    recompile limits raised (each specialization compiles a fresh code object; the process-wide
    accumulated limit is what a long-running process would hit), and ``record_runtime_overhead``
    off where torch has it (else the bytecode brackets its prologue with profiler calls that cost
    per call and only feed the profiler's "Pregraph bytecode" event)."""
    import torch._dynamo.config as dynamo_config

    changes: dict[str, Any] = {"recompile_limit": limit, "accumulated_recompile_limit": limit}
    if hasattr(dynamo_config, "record_runtime_overhead"):
        changes["record_runtime_overhead"] = False
    with dynamo_config.patch(**changes):
        yield


@contextlib.contextmanager
def marked_dynamic(marks: list[tuple[torch.Tensor, tuple[int, ...]]]) -> Iterator[None]:
    """Mark dims dynamic for one compile, then leave the caller's tensors as they were:
    ``mark_dynamic`` records them on the tensor itself (attributes that vary by release), which
    would change how a later ``torch.compile`` treats it; what it adds or changes is put back."""
    saved = [(t, {name: copy.copy(value) for name, value in vars(t).items()}) for t, _ in marks]
    try:
        for tensor, dims in marks:
            torch._dynamo.mark_dynamic(tensor, list(dims))
        yield
    finally:
        for tensor, before in saved:
            for name in list(vars(tensor)):
                if name not in before:
                    delattr(tensor, name)
                elif vars(tensor)[name] != before[name]:
                    setattr(tensor, name, before[name])


def inductor_mode_options(mode: str) -> dict[str, Any]:
    """The inductor options a ``torch.compile`` mode stands for.

    ``torch.compile`` refuses ``mode`` and ``options`` together, but dropping guards needs
    ``options={"guard_filter_fn": ...}``; so nocompile expands the mode into its options.
    """
    from torch._inductor import list_mode_options

    return dict(list_mode_options(mode))


def inductor_modes() -> tuple[str, ...]:
    """The ``mode`` strings ``torch.compile`` accepts for the inductor backend."""
    from torch._inductor import list_mode_options

    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    return tuple(m for m in modes if _mode_known(list_mode_options, m))


def _mode_known(list_mode_options: Callable[[str], Any], mode: str) -> bool:
    try:
        list_mode_options(mode)
    except Exception:  # an unknown mode raises; any failure means "not offered here"
        return False
    return True


def registered_backends() -> list[str]:
    """Names ``torch.compile(backend=...)`` accepts in this process."""
    return list(torch._dynamo.list_backends(exclude_tags=()))


def skipped_as_top_frame(code: types.CodeType) -> bool:
    """Whether Dynamo runs a frame of ``code`` untraced when the frame is not an inlined call.

    Dynamo never starts a trace in torch's own files (``torch.nn``'s forwards among them): it
    only inlines them from a frame it does trace. Its trace rules decide by the code's file.
    """
    from torch._dynamo import trace_rules

    return bool(trace_rules.check(code))


def has_dynamo_cache_entry(code: types.CodeType) -> bool:
    """Whether Dynamo finished compiling ``code``: a cache entry exists. The bytecode hook fires
    before the guards are built, which can still fail (a dynamic dim the code specialized)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return bool(_debug_get_cache_entry_list(code))


def tensor_match(tensors: list[torch.Tensor], sizes: list[list[int | None]], strides: list[list[int | None]]) -> Any:
    """Dynamo's C++ TENSOR_MATCH check for these tensors, as one object with ``check(*tensors)``:
    each tensor's class, dispatch keys (under the thread's dispatch state), dtype, device,
    requires_grad, sizes and strides as recorded here (``None``: a dynamic dim, any value), in C++.
    It keeps no reference to the tensors."""
    from torch._C._dynamo.guards import TensorGuards

    # The .pyi stub types these as one flat list[SymInt | None]; the C++ binding takes one list
    # of (int | None) per tensor, as passed here.
    return TensorGuards(
        *tensors,
        dynamic_dims_sizes=sizes,  # type: ignore[arg-type]
        dynamic_dims_strides=strides,  # type: ignore[arg-type]
    )


def tensor_mismatch(match: Any, tensors: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> str | None:
    """Why ``match.check(*tensors)`` fails, in Dynamo's words (None when it passes)."""
    reason = match.check_verbose(*tensors, tensor_check_names=list(names))
    return None if reason is True else str(reason)


def compile_backend(backend: str | Callable[..., Any], mode: str | None, options: dict[str, Any] | None) -> Any:
    """The backend callable ``torch.compile(backend=, mode=, options=)`` would build itself (its
    ``_TorchCompileInductorWrapper`` or ``_TorchCompileWrapper``), which nocompile's recording
    backend calls: ``mode`` and ``options`` mean exactly what they mean to ``torch.compile``."""
    if mode is None and options is None:
        mode = "default"
    # torch leaves both wrapper classes unannotated: called through Callable[..., Any] names.
    if backend == "inductor":
        wrapper = torch._TorchCompileInductorWrapper
        make_inductor: Callable[..., Any] = wrapper
        if "name" in inspect.signature(wrapper.__init__).parameters:  # newer releases; older ones take no name
            return make_inductor(mode, options, False, None)
        return make_inductor(mode, options, False)
    make_wrapper: Callable[..., Any] = torch._TorchCompileWrapper
    return make_wrapper(backend, mode, options, False)


def sole_owner(tensors: tuple[torch.Tensor, ...], holders: list[int]) -> bool:
    """Whether ``holders[i]`` (the containers the caller knows of, ``tensors`` among them) are the
    only references to ``tensors[i]`` and its memory: no other reference to the tensor object,
    no other tensor (a view) on its storage."""
    for i in range(len(tensors)):
        tensor = tensors[i]
        # The known holders, this local and getrefcount's own argument.
        if sys.getrefcount(tensor) > holders[i] + 2:
            return False
    return storage_unshared(tensors)


def storage_unshared(tensors: tuple[torch.Tensor, ...]) -> bool:
    """Whether no other tensor (a view) shares a storage with any of ``tensors``: each storage has
    the tensor's own reference and that of the Python storage object asked for here."""
    return all(torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) <= 2 for tensor in tensors)


def tensor_version(tensor: torch.Tensor) -> int:
    """``tensor``'s version counter, bumped by every in-place change (a CUDA graph's static input
    copy would hide a function mutating its argument)."""
    return int(tensor._version)


def current_raw_stream_getter() -> Callable[[int], int]:
    """``index -> handle`` of device ``index``'s current CUDA stream, as an int: what inductor's
    code calls each launch, a fraction of ``torch.cuda.current_stream()`` (which builds an object;
    the fallback), so that a replay notices a change of stream cheaply."""
    getter = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if getter is None:
        return lambda index: int(torch.cuda.current_stream(index).cuda_stream)
    return getter  # type: ignore[no-any-return]


# -- ahead-of-time compilation and artifacts (persistence) -------------------------------------

#: Prefixes of the globals Dynamo's transformed bytecode loads that Dynamo itself creates: the
#: compiled graph (``__compiled_fn_<n>_<uuid>``) and aliases of modules it imports
#: (``__import_torch_dot_nn_dot_modules_dot_linear``).
DYNAMO_GLOBAL_PREFIXES = ("__compiled_fn", "__import_")


def aot_available() -> str | None:
    """``None`` when this torch can compile ahead of time and load artifacts; else why not.

    Needs ``torch.compiler.load_compiled_function`` and the ``aot_compile`` attribute that
    ``torch.compile`` adds to its wrapper while ``torch._dynamo.config.enable_aot_compile`` is
    on (the default on the newer supported releases; docs/versions.md).
    """
    import torch._dynamo.config as dynamo_config

    if not hasattr(torch.compiler, "load_compiled_function"):
        return f"torch {torch.__version__} has no torch.compiler.load_compiled_function"
    if not hasattr(dynamo_config, "enable_aot_compile"):
        return f"torch {torch.__version__} has no torch._dynamo.config.enable_aot_compile"
    return None


def aot_compile(
    fn: types.FunctionType, compile_kwargs: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``torch.compile(fn, fullgraph=True, dynamic=False, **compile_kwargs).aot_compile(...)``.

    Traces and compiles for ``(args, kwargs)`` without running the function and without adding
    a Dynamo cache entry. Returns torch's ``AOTCompiledFunction``. ``guard_filter_fn`` in the
    options replaces torch's default filter, so the artifact keeps only the guards it keeps.
    """
    import torch._dynamo.config as dynamo_config

    with dynamo_config.patch(enable_aot_compile=True):
        compiled = torch.compile(fn, fullgraph=True, dynamic=False, **compile_kwargs)
    aot = getattr(compiled, "aot_compile", None)
    if aot is None:  # pragma: no cover - aot_available() said yes
        raise RuntimeError(f"torch {torch.__version__}: torch.compile(...) has no aot_compile")
    with _old_aot_mended():
        return aot((tuple(args), dict(kwargs)))


_OLD_AOT = threading.RLock()


@contextlib.contextmanager
def _old_aot_mended() -> Iterator[None]:
    """Torch 2.11's ahead-of-time path, mended where 2.13 needs nothing. Its ``aot_compile`` builds
    guards that count their latency on an outermost compile event it does not open ("No toplevel
    event active"), and which inductor's own ``aot_compile`` (AOTInductor's kernels) clears on its
    way out: one is opened here, the clearing held off. And a builtin the bytecode names that the
    module lacks (``type`` in Hugging Face's code) is "Missing required external references",
    though the function reads it through ``__builtins__``: here it counts as present."""
    if torch_version() >= (2, 13):
        yield
        return
    from torch._dynamo.convert_frame import GraphRuntimeEnv
    from torch._dynamo.utils import ChromiumEventLogger, dynamo_timed, get_metrics_context

    check, reset = GraphRuntimeEnv._check_external_refs, ChromiumEventLogger.reset

    def builtins_count(env: Any, f_globals: dict[str, Any]) -> None:
        space = f_globals.get("__builtins__", builtins)
        names = vars(space) if isinstance(space, types.ModuleType) else space
        check(env, {**dict.fromkeys(r for r in env.external_refs if r in names), **f_globals})

    # One at a time (the classes are torch's); RLock: a load may run inside a compile.
    with _OLD_AOT, get_metrics_context(), dynamo_timed("nocompile_aot_compile"):
        GraphRuntimeEnv._check_external_refs = builtins_count  # type: ignore[method-assign, assignment]
        ChromiumEventLogger.reset = lambda self: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            GraphRuntimeEnv._check_external_refs = check  # type: ignore[method-assign]
            ChromiumEventLogger.reset = reset  # type: ignore[method-assign]


def aoti_runner(module: torch.nn.Module, x: torch.Tensor, path: str) -> Callable[[], Any]:
    """``module(x)`` exported, compiled by AOTInductor into a package at ``path`` and loaded: a
    call of its C++ runner (``loader.run``) with ``x``."""
    exported = torch.export.export(module, (x,))
    package = torch._inductor.aoti_compile_and_package(exported, package_path=path)
    loaded = torch._inductor.aoti_load_package(package)
    run = loaded.loader.run
    return functools.partial(run, [x])


def aot_payload(aot: Any, external: dict[str, Any]) -> bytes:
    """The bytes ``save_compiled_function`` would write for ``aot``, ``external``'s values by key."""
    return bytes(type(aot).serialize(aot, external).serialized_data)


def aot_load(payload: bytes, f_globals: dict[str, Any], external: dict[str, Any]) -> Any:
    """Unpickle an artifact with ``torch.compiler.load_compiled_function``. Runs its code."""
    import io

    with _old_aot_mended():
        return torch.compiler.load_compiled_function(io.BytesIO(payload), f_globals=f_globals, external_data=external)


def aot_outside_names(aot: Any) -> list[str]:
    """Globals the transformed bytecode loads that the artifact does not carry: the loading process
    must have them in ``f_globals`` (names Dynamo installed in the function's module while tracing,
    such as ``___module_collections_<id>_c0`` for a module reached through another module)."""
    env, backend_id = aot._artifacts.runtime_env, aot._artifacts.backend_id
    carried = {*env.import_sources, *env.used_globals, backend_id}
    # A builtin (torch 2.11 does not carry them) is read through the function's ``__builtins__``.
    return sorted(set(getattr(env, "external_refs", ())) - carried - set(vars(builtins)))


def aot_bytecode_function(aot: Any) -> types.FunctionType:
    """The function on Dynamo's transformed bytecode inside an ``AOTCompiledFunction``.

    ``AOTCompiledFunction.__call__`` evaluates the artifact's guard manager on every call
    (a guard-manager call per call, even with every guard dropped) and then calls this function, ``aot.fn``.
    Its globals are a private dict holding the compiled graph.
    """
    fn = getattr(aot, "fn", None)
    if not isinstance(fn, types.FunctionType):
        raise RuntimeError(f"torch {torch.__version__}: the AOT-compiled function exposes no bytecode function")
    return fn


# -- AOTInductor kernels carried in artifacts (``_kernels``) ------------------------------------


def aoti_unavailable(serializable: type) -> str | None:
    """``None`` when this torch can compile one of Dynamo's graphs with AOTInductor and load the
    package from C++, after making ``serializable`` count as torch's ``SerializableCallable`` (the
    ahead-of-time save stores ``serialize_compile_artifacts(obj)``; the load calls
    ``deserialize_compile_artifacts(data)``); else why not."""
    try:
        from torch._dynamo.aot_compile_types import SerializableCallable
        from torch._inductor.package.package import package_aoti  # noqa: F401
    except ImportError as exc:
        return f"torch {torch.__version__}: {exc}"
    if not hasattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader"):
        return f"torch {torch.__version__} has no AOTInductor package loader"
    SerializableCallable.register(serializable)
    return None


def aoti_package(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor], options: dict[str, Any]) -> bytes:
    """AOTInductor's ``.pt2`` package (kernels and the C++ calling them in a shared library; on CUDA
    kernel binaries too) of one of Dynamo's graphs, called with its flat tensors. From a copy (after a
    failure inductor's backend takes the graph), outside torch's tracing context (it traces anew)."""
    from torch._inductor.package.package import package_aoti

    with torch._guards.tracing(None):
        files = torch._inductor.aot_compile(
            copy.deepcopy(gm), tuple(example_inputs), options={**options, "aot_inductor.package": True}
        )
    with tempfile.TemporaryDirectory(prefix="nocompile-aoti-") as folder:
        package_aoti(os.path.join(folder, "kernels.pt2"), cast(Any, files))
        with open(os.path.join(folder, "kernels.pt2"), "rb") as fh:
            return fh.read()


def aoti_loader(package: bytes, device_index: int) -> Any:
    """AOTInductor's C++ loader of ``package`` (``run(tensors) -> tensors``), which imports nothing
    of inductor and compiles nothing. The package goes to a private temporary file (removed once
    loaded); the loader unpacks it into a temporary directory of its own."""
    fd, path = tempfile.mkstemp(prefix="nocompile-", suffix=".pt2")  # mode 0o600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(package)
        return torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, device_index)
    finally:
        os.unlink(path)


@functools.cache
def cpu_isa_candidates() -> tuple[str, ...]:
    """The vector ISAs inductor may build CPU kernels for here, and the features its flags follow
    (``torch.cpu._is_*_supported``), by the CPU's flags alone: ``valid_vec_isa_list`` without its
    compiler probe (a test program built and run per ISA, seconds; x86 only) and without
    ``bool(isa)``, whose cached answer later compiles would reuse."""
    import platform

    from torch._inductor import cpu_vec_isa

    features = tuple(n[4:-10] for n in sorted(dir(torch.cpu)) if n.startswith("_is_") and n.endswith("_supported"))
    present = tuple(f"+{name}" for name in features if getattr(torch.cpu, f"_is_{name}_supported")())
    if platform.machine() not in ("x86_64", "AMD64"):  # valid_vec_isa_list probes nothing there
        return tuple(str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()) + present
    flags = cpu_vec_isa.x86_isa_checker()
    isas = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
    return tuple(map(str, isas)) + present


def built_cpu_isa() -> str:
    """The vector ISA inductor builds CPU kernels for in this process (after its compiler probe)."""
    from torch._inductor import cpu_vec_isa

    return str(cpu_vec_isa.pick_vec_isa())


def size_stride_assert() -> Callable[..., None]:
    """Inductor's per-input ``size_asserts`` check: ``AssertionError`` unless the sizes and strides match."""
    from torch._C._dynamo.guards import assert_size_stride

    return assert_size_stride


def guard_code(entry: Any) -> tuple[str, ...]:
    """The Python source of a guard handed to ``guard_filter_fn`` (``orig_guard.code_list``).

    For a ``SHAPE_ENV`` entry these are the symbolic shape expressions, such as
    ``4 <= L['x'].size()[0]``.
    """
    return tuple(map(str, getattr(getattr(entry, "orig_guard", None), "code_list", None) or ()))


def is_guard_building_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it came from) was raised while Dynamo built the guards of
    a compile it had traced: a frame of ``torch/_dynamo/guards.py`` on its traceback."""
    marker = os.path.join("_dynamo", "guards.py")
    seen: BaseException | None = exc
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith(marker):
                return True
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return False


def is_tracing_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is Dynamo refusing to trace the code
    (a graph break under ``fullgraph=True``, an unsupported construct, a user error), as opposed
    to a failure after tracing (a backend, torch's ahead-of-time save).
    """
    from torch._dynamo import exc as dynamo_exc

    kinds = tuple(k for k in (getattr(dynamo_exc, "Unsupported", None), getattr(dynamo_exc, "UserError", None)) if k)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__
    return False


# -- evidence that nothing changed: the input check's watch (``_watch``) -------------------------


def _dict_version_function() -> Callable[[dict[str, Any]], int] | None:
    """``torch._C._dynamo.guards.dict_version`` where it tells dicts' versions apart, else None.

    It returns CPython's per-dict version tag, which every store into the dict changes (also a
    store of an equal value; not a store of the very same object). On Python 3.13 an instance's
    ``__dict__`` keeps its version while attributes are set and deleted (the values live inline in
    the object), so a probe of exactly that decides: the watch then compares dict contents instead.
    """
    try:
        from torch._C._dynamo.guards import dict_version
    except ImportError:  # pragma: no cover - every supported torch has it
        return None

    class Probe:
        pass

    probe = Probe()
    probe.a = 1  # type: ignore[attr-defined]
    attributes = probe.__dict__
    plain: dict[str, Any] = {"a": 1}
    versions = [dict_version(attributes), dict_version(plain)]
    probe.a = 2  # type: ignore[attr-defined]
    plain["a"] = 2
    versions += [dict_version(attributes), dict_version(plain)]
    del probe.a  # type: ignore[attr-defined]
    versions.append(dict_version(attributes))
    if len(set(versions)) != len(versions):
        return None
    return dict_version


#: ``dict -> int`` that changes with every store into the dict, or None where this Python has none.
DICT_VERSION = _dict_version_function()


def guard_tree_root() -> tuple[Any, Any]:
    """A fresh root of Dynamo's C++ guard manager (``RootGuardManager``) and the node kind
    (``GuardManagerType.GUARD_MANAGER``) its ``*_manager`` methods take for child nodes: what
    ``_version_tree.VersionTree`` builds its checks from."""
    from torch._C._dynamo.guards import RootGuardManager
    from torch._dynamo.guards import GuardManagerType

    return RootGuardManager(), GuardManagerType.GUARD_MANAGER


def add_guard_leaf(add: Callable[..., None], value: Any, parts: list[str]) -> None:
    """Call ``add``, one of a guard-manager node's ``add_*_guard`` methods, with ``value`` and the
    check's description ``parts``: newer releases also take the user stack (passed as None)."""
    try:
        add(value, parts, None)  # newer releases: (value, verbose code parts, user stack)
    except TypeError:
        add(value, parts)


def _no_dispatch_keys(t: torch.Tensor) -> None:
    return None


#: ``tensor -> DispatchKeySet`` (comparable with ``==``): what Dynamo's tensor check compares
#: besides the metadata. A torch without it compares nothing there (None for every tensor).
dispatch_keys: Callable[[torch.Tensor], Any] = getattr(torch._C, "_dispatch_keys", _no_dispatch_keys)


def global_state_guard() -> Any:
    """Dynamo's C++ check of torch's global state as it is now (``check()`` -> bool, ``reason()``).

    It covers what Dynamo's ``GLOBAL_STATE`` guard covers: grad mode, deterministic algorithms,
    matmul precision and TF32/reduced-precision flags, the default dtype, autocast, the torch
    function state, the number of threads.
    """
    from torch._C._dynamo.guards import GlobalStateGuard

    return GlobalStateGuard()


def torch_function_modes() -> tuple[Any, ...]:
    """The ``TorchFunctionMode`` objects on the stack now, innermost last.

    ``torch.set_default_device`` pushes one too (a new mode object per call), so this also
    tells default devices apart.
    """
    return tuple(torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack()))


#: ``() -> int``: how many torch-function modes are on the stack (cheap enough for every call).
torch_function_mode_count: Callable[[], int] = torch._C._len_torch_function_stack


def dynamo_guard_manager(code: types.CodeType) -> Any | None:
    """The guard manager of Dynamo's first cache entry for ``code``, or None.

    ``check(f_locals)`` evaluates every guard Dynamo built for that compile without its frame
    hook; ``check_verbose(f_locals).verbose_code_parts`` says which failed. ``f_locals`` maps the
    function's parameter and free-variable names to the call's values.
    """
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    entries = _debug_get_cache_entry_list(code)
    return entries[0].guard_manager if entries else None


def dynamo_cache_entries(code: types.CodeType) -> list[tuple[Any, types.CodeType]]:
    """``(guard_manager, transformed_code)`` of each of Dynamo's cache entries for ``code``, in the
    order Dynamo tries them."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return [(entry.guard_manager, entry.code) for entry in _debug_get_cache_entry_list(code)]


def guard_failure(manager: Any, f_locals: dict[str, Any]) -> str | None:
    """Why ``manager.check(f_locals)`` fails, in Dynamo's words (None when every guard holds)."""
    if manager.check(f_locals):
        return None
    verbose = manager.check_verbose(f_locals)
    parts = []
    for part in getattr(verbose, "verbose_code_parts", ()):
        # "L['self'].scale == 1.0      #   # model.py:9 in forward": the check, then where it was read.
        check, _, where = str(part).partition("#")
        where = where.strip(" #")
        parts.append(f"{check.strip()} (read at {where})" if where else check.strip())
    return "; ".join(parts) if parts else "a Dynamo guard failed"


#: The dicts an ``nn.Module`` keeps its state in: plain attributes, parameters, buffers, submodules.
MODULE_DICTS = ("__dict__", "_parameters", "_buffers", "_modules")


def first_parameter(module: torch.nn.Module, depth: int = 0) -> tuple[str, torch.Tensor] | None:
    """``(suffix, parameter)``: the suffix (``._modules['0']._parameters['weight']``) reaching
    ``module``'s first parameter through its ``_parameters`` and ``_modules`` dicts (no
    ``__getattr__``), and that parameter; None when it has none within a few levels."""
    for name, p in module._parameters.items():
        if p is not None and not torch.nn.parameter.is_lazy(p):  # a lazy one has no strides yet
            return f"._parameters[{name!r}]", p
    if depth >= 6:
        return None
    for name, sub in module._modules.items():
        if sub is not None:
            found = first_parameter(sub, depth + 1)
            if found is not None:
                return f"._modules[{name!r}]{found[0]}", found[1]
    return None


# -- calling an inductor inference graph past its wrappers ----------------------------------------


def _no_prologue_record() -> None:
    """What the runtime wrapper's ``_on_before_call_`` does outside the profiler: nothing."""


def _unserializable(fn: Any) -> Any:
    """``fn`` without its ``SerializableCompiledFunction`` layers (each only calls the next): a
    fresh compile has one around the graph, a cache hit one around the runtime wrapper."""
    while type(fn).__name__ == "SerializableCompiledFunction":
        fn = fn.compiled_fn
    return fn


def direct_graph_call(compiled: Any) -> Callable[..., Any] | None:
    """The inductor inference graph behind one of Dynamo's ``__compiled_fn_*`` globals, callable
    with the same flat arguments past four layers of per-call Python, or None where the structure
    is not the one known here (another torch release's, another backend, a training graph).

    Dynamo's ``disable`` wrapper, AOTAutograd's ``forward``, its ``runtime_wrapper`` and
    ``CompiledFxGraph`` are skipped; AOTAutograd's *generated* runtime wrapper, which carries the
    semantics (grad mode, input mutations, aliased outputs, the output count), is kept and called
    with the kernel runner itself. Given up: the eval-frame callback stays on around the kernels
    (nocompile's per-call code never runs under a trace) and two profiler record ranges."""
    try:
        from torch._inductor.output_code import CompiledFxGraph

        aot_forward = compiled.__wrapped__
        if aot_forward.__qualname__ != "aot_module_simplified.<locals>.forward":
            return None
        if not aot_forward.__code__.co_flags & inspect.CO_VARARGS:  # the boxed variant clears its list
            return None
        forward_cells = closure_values(aot_forward)  # a cell missing or empty: KeyError below
        lifted = list(forward_cells["params_buffers_flat"])
        runtime = _unserializable(forward_cells["compiled_fn"])
        if runtime.__qualname__ != "_create_runtime_wrapper.<locals>.runtime_wrapper":
            return None
        runtime_cells = closure_values(runtime)
        generated = runtime_cells["_codegen_runtime_wrapper"]
        first_call = runtime_cells["_first_invocation_ctx"]
        graph = _unserializable(runtime_cells["_inner_compiled_fn"])
        if type(graph) is not CompiledFxGraph or graph.current_callable is None:
            return None
        if generated.__code__.co_varnames[:4] != ("_compiled_fn_", "_first_ctx_", "_on_before_call_", "args"):
            return None
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    no_record = _no_prologue_record

    if lifted:

        def direct(*args: Any) -> Any:
            return generated(graph.current_callable, first_call, no_record, [*lifted, *args])

    else:

        def direct(*args: Any) -> Any:
            return generated(graph.current_callable, first_call, no_record, list(args))

    direct.__wrapped__ = compiled  # type: ignore[attr-defined]
    return direct
