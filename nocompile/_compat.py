"""The one place that touches private torch names.

Everything else in nocompile uses public torch API. When a torch release moves one of the
names below, this module is the only file that changes. Each helper says which torch
versions it was checked on.
"""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

#: Oldest torch release nocompile runs on. Older releases cannot filter the GLOBAL_STATE and
#: TORCH_FUNCTION_MODE_STACK guards through ``guard_filter_fn`` (added in 2.10) and lack the
#: bytecode-hook handle API this package relies on.
MIN_TORCH = (2, 10)

BytecodeHook = Callable[[types.CodeType, types.CodeType], "types.CodeType | None"]


def torch_version() -> tuple[int, int]:
    """``(major, minor)`` of the running torch, ignoring local and pre-release suffixes."""
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if match is None:  # pragma: no cover - torch always has a version
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def check_torch_supported() -> None:
    """Raise a clear ``RuntimeError`` on a torch too old for nocompile's mechanics."""
    if torch_version() < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise RuntimeError(
            f"nocompile needs torch>={need}; this process runs torch {torch.__version__}. "
            f"Upgrade torch (pip install 'torch>={need}')."
        )


def register_bytecode_hook(hook: BytecodeHook) -> Any:
    """Register ``hook(old_code, new_code)`` for every frame Dynamo transforms.

    Returns a handle with ``remove()``. Checked on torch 2.11 and 2.13.
    """
    from torch._dynamo.convert_frame import register_bytecode_hook as register

    return register(hook)


@contextlib.contextmanager
def compilation_config(limit: int = 1 << 20) -> Iterator[None]:
    """Dynamo settings for the duration of one nocompile compilation, restored on exit.

    * Recompile limits raised: each nocompile specialization compiles a fresh code object, so
      the per-code limit is never the issue; the process-wide accumulated limit is, in a
      long-running process with many decorated functions.
    * ``record_runtime_overhead`` off (where the torch version has it): otherwise the
      transformed bytecode brackets its weight-fetching prologue with profiler bookkeeping
      calls (``record_pregraph_bytecode_enter/exit``, the latter wrapped in a Dynamo-disable
      shim) that cost about a microsecond per call and only feed the profiler's
      "Pregraph bytecode" event.

    ``config.patch`` restores the previous values also when compilation raises. Checked on
    torch 2.11 and 2.13.
    """
    import torch._dynamo.config as dynamo_config

    changes: dict[str, Any] = {"recompile_limit": limit, "accumulated_recompile_limit": limit}
    if hasattr(dynamo_config, "record_runtime_overhead"):
        changes["record_runtime_overhead"] = False
    with dynamo_config.patch(**changes):
        yield


@contextlib.contextmanager
def marked_dynamic(marks: list[tuple[torch.Tensor, tuple[int, ...]]]) -> Iterator[None]:
    """Mark dims dynamic for one compile, then leave the caller's tensors as they were.

    ``torch._dynamo.mark_dynamic`` records the dims on the tensor object itself
    (``_dynamo_dynamic_indices``); left there, they would change how any later
    ``torch.compile`` treats the user's tensor. Checked on torch 2.11 and 2.13.
    """
    attribute = "_dynamo_dynamic_indices"
    saved = [(t, getattr(t, attribute, None)) for t, _ in marks]
    try:
        for tensor, dims in marks:
            torch._dynamo.mark_dynamic(tensor, list(dims))
        yield
    finally:
        for tensor, before in saved:
            if before is None:
                if hasattr(tensor, attribute):
                    delattr(tensor, attribute)
            else:
                setattr(tensor, attribute, before)


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


def has_compiled_entry(code: types.CodeType) -> bool:
    """Whether Dynamo finished compiling ``code``: a cache entry (guards and all) exists.

    The bytecode hook fires before Dynamo builds guards, and guard building can still fail
    (a dynamic dim the code specialized raises a constraint violation there); only the cache
    entry says the compilation really completed. Checked on torch 2.11 and 2.13.
    """
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return bool(_debug_get_cache_entry_list(code))


# -- ahead-of-time compilation and artifacts (persistence) -------------------------------------

#: Prefixes of the globals Dynamo's transformed bytecode loads that Dynamo itself creates: the
#: compiled graph (``__compiled_fn_<n>_<uuid>``) and aliases of modules it imports
#: (``__import_torch_dot_nn_dot_modules_dot_linear``). Checked on torch 2.13.
DYNAMO_GLOBAL_PREFIXES = ("__compiled_fn", "__import_")


def aot_available() -> str | None:
    """``None`` when this torch can compile ahead of time and load artifacts; else why not.

    Needs ``torch.compiler.load_compiled_function`` and the ``aot_compile`` attribute that
    ``torch.compile`` adds to its wrapper while ``torch._dynamo.config.enable_aot_compile`` is
    on (the default on torch 2.13). Checked on torch 2.13.
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
    Checked on torch 2.13.
    """
    import torch._dynamo.config as dynamo_config

    with dynamo_config.patch(enable_aot_compile=True):
        compiled = torch.compile(fn, fullgraph=True, dynamic=False, **compile_kwargs)
    aot = getattr(compiled, "aot_compile", None)
    if aot is None:  # pragma: no cover - aot_available() said yes
        raise RuntimeError(f"torch {torch.__version__}: torch.compile(...) has no aot_compile")
    return aot((tuple(args), dict(kwargs)))


def aot_payload(aot: Any) -> bytes:
    """The bytes ``save_compiled_function`` would write for ``aot``. Checked on torch 2.13."""
    return bytes(type(aot).serialize(aot).serialized_data)


def aot_load(payload: bytes, f_globals: dict[str, Any]) -> Any:
    """Unpickle an artifact with ``torch.compiler.load_compiled_function``. Runs its code."""
    import io

    return torch.compiler.load_compiled_function(io.BytesIO(payload), f_globals=f_globals)


def aot_bytecode_function(aot: Any) -> types.FunctionType:
    """The function on Dynamo's transformed bytecode inside an ``AOTCompiledFunction``.

    ``AOTCompiledFunction.__call__`` evaluates the artifact's guard manager on every call
    (about 30 µs here even with every guard dropped) and then calls this function, ``aot.fn``.
    Its globals are a private dict holding the compiled graph. Checked on torch 2.13.
    """
    fn = getattr(aot, "fn", None)
    if not isinstance(fn, types.FunctionType):
        raise RuntimeError(f"torch {torch.__version__}: the AOT-compiled function exposes no bytecode function")
    return fn
