"""``nn.Module.__call__`` without ``_call_impl``: the module-call slot a decorated ``forward`` fills.

It names no private torch namespace (``_compat``'s job), only ``nn.Module``'s own slot and hook
dicts; ``tests/test_module_call.py`` checks the hook names against ``_call_impl``'s source.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as _module_module

# -- nn.Module.__call__ -------------------------------------------------------------------------
#
# ``nn.Module.__call__`` is ``_wrapped_call_impl``: it calls ``self._compiled_call_impl(*args,
# **kwargs)`` when that instance attribute is set (``Module.compile()`` sets it) and
# ``self._call_impl(*args, **kwargs)`` otherwise. ``_call_impl`` runs ``self.forward(*args,
# **kwargs)`` directly when the module and the process have no hooks and no JIT trace is
# running; its setup alone (a closure's cells, the hook checks, the ``forward`` lookup) is a
# large share of a small call (docs/design.md, "Methods"). ``_module_call`` takes that
# shortcut itself and hands every other case back to ``_call_impl``;
# ``tests/test_module_call.py`` compares the hook names with ``_call_impl``'s source.

#: Per-module hook dicts that make ``_call_impl`` leave its shortcut when non-empty.
MODULE_HOOK_ATTRS = ("_backward_hooks", "_backward_pre_hooks", "_forward_hooks", "_forward_pre_hooks")
#: Process-wide hook dicts (``torch.nn.modules.module``) that do the same. Mutated in place by
#: ``register_module_*_hook``, never rebound, so holding them here sees every registration.
GLOBAL_HOOK_NAMES = (
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
)
_global_backward_pre_hooks, _global_backward_hooks, _global_forward_hooks, _global_forward_pre_hooks = (
    getattr(_module_module, name) for name in GLOBAL_HOOK_NAMES
)
_tracing_state = torch._C._get_tracing_state
_is_compiling = torch.compiler.is_compiling
CALL_SLOT = "_compiled_call_impl"


#: Whether this torch's ``nn.Module`` has the ``_compiled_call_impl`` slot ``install_module_call`` fills.
MODULE_CALL_AVAILABLE = hasattr(torch.nn.Module, "_wrapped_call_impl") and hasattr(torch.nn.Module, CALL_SLOT)


def _module_call(module_ref: Callable[[], Any], state: Any, /, *args: Any, **kwargs: Any) -> Any:
    self = module_ref()
    if self is None:
        raise ReferenceError("nocompile: a module's call slot outlived its module")
    if (
        self._backward_hooks
        or self._backward_pre_hooks
        or self._forward_hooks
        or self._forward_pre_hooks
        or _global_backward_pre_hooks
        or _global_backward_hooks
        or _global_forward_hooks
        or _global_forward_pre_hooks
        or _tracing_state()
        or "forward" in self.__dict__
        or _is_compiling()
    ):
        return self._call_impl(*args, **kwargs)
    return state.entry(self, *args, **kwargs)


def install_module_call(module: torch.nn.Module, state: Any) -> bool:
    """Make ``module(...)`` enter ``state.entry(module, ...)`` without ``_call_impl`` when it can.

    Only for a module whose class's ``forward`` is the compiled one (the caller checks that),
    and never over a slot already set (``Module.compile()``). The slot holds the module weakly
    (no reference cycle: ``del module`` frees it at once) and ``Module.__getstate__`` drops
    it, so copies and pickles never carry it.
    """
    if not MODULE_CALL_AVAILABLE or module.__dict__.get(CALL_SLOT) is not None:
        return False
    # A code object of its own per slot: when ``torch.compile(module)`` runs, Dynamo compiles
    # this function's frame (``Module.__call__``, the frame above it, is one Dynamo skips) and
    # caches per code object, so a shared code object would count every module in the process
    # against one recompile limit.
    call = types.FunctionType(_module_call.__code__.replace(), _module_call.__globals__, _module_call.__name__)
    module.__dict__[CALL_SLOT] = functools.partial(call, weakref.ref(module), state)
    return True
