"""The watch: cheap evidence, on every call, that nothing a specialization was verified against changed.

Dynamo's guards protect values the compiled code baked in — attributes of ``self`` and of its
submodules, closure cells, globals, argument objects, torch's global state. Evaluating them all
on every call costs tens of microseconds on a real model. ``guards="inputs"`` instead keeps a
*fingerprint* of where those values live and checks that per call, then runs the expensive
verification (Dynamo's own guard manager, the full key of argument objects) only when the
fingerprint is one it has not verified before. The fingerprint of a call is a tuple of:

* the registration epoch: a counter that ``torch.nn``'s public registration hooks bump whenever a
  module, parameter or buffer is registered anywhere in the process (``m.weight = Parameter(...)``,
  ``m.act = nn.Tanh()``, ``register_buffer``);
* how many torch-function modes are on the stack (``torch.set_default_device`` pushes one);
* a *dict fingerprint* of each dict the compiled code reads values through: the function's
  globals, ``self``'s and each module argument's ``__dict__``, ``_parameters``, ``_buffers`` and
  ``_modules``, and every argument object's ``__dict__`` (a KV cache and its layers), plus the
  length of each list inside argument objects.

With CPython's per-dict version tag (Python 3.11 and 3.12, through ``_compat.DICT_VERSION``) a
dict's fingerprint is one int that every store into the dict changes and that no other dict
shares, so an equal tuple means the very same dicts, unchanged. Where the tag is missing (Python
3.13) the fingerprint is the dict's keys and the identities of its values (a value replaced twice
between two calls, the newest at the very address of the one verified, would go unseen there).

What the fingerprint does not see (a plain attribute of a *submodule* set after compiling, a
tensor's shape changed in place through ``.data``) is listed in docs/footguns.md with what
watching it would cost.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch.nn.modules import module as module_hooks

from . import _compat

#: Verified fingerprints kept per argument structure; the oldest is forgotten beyond this.
MAX_VERIFIED = 256

_is_compiling = torch.compiler.is_compiling


class RegistrationEpoch:
    """A counter bumped whenever a module, parameter or buffer is registered on a watched module.

    The three hooks are torch's public global registration hooks, installed when the first state
    starts watching and then kept for the life of the process: they are traced by every
    ``torch.compile`` of a forward that registers a module (a sliced ``nn.ModuleList``), whose
    guards then name them, and a hook removed while such a compile builds its guards breaks it
    (``KeyError`` inside Dynamo). Kept, they cost nothing but a set lookup per registration. Only
    registrations on modules in a watched tree count (``watch``: every module of ``self`` and of
    module arguments when a specialization is installed, and whatever is registered on them
    later): Hugging Face models slice their ``nn.ModuleList`` of layers on every forward, which
    registers the layers on a new, temporary list each time. Inside a ``torch.compile`` trace the
    hook does nothing, so no compiled code ever replays it.
    """

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()
        self._users = 0
        self._handles: list[Any] = []
        self._watched: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    def watch(self, module: torch.nn.Module) -> None:
        """Count registrations on ``module`` and on every module below it from now on."""
        self._watched.update(module.modules())

    def bump(self, module: Any, name: str, value: Any) -> None:
        if _is_compiling() or module not in self._watched:
            return
        self.n += 1
        if isinstance(value, torch.nn.Module):  # a new submodule: registrations below it count too
            self.watch(value)

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if not self._handles:
                self._handles = [
                    module_hooks.register_module_module_registration_hook(self.bump),
                    module_hooks.register_module_parameter_registration_hook(self.bump),
                    module_hooks.register_module_buffer_registration_hook(self.bump),
                ]

    def release(self) -> None:
        """One state stopped watching. The hooks stay (see the class docstring)."""
        with self._lock:
            self._users = max(0, self._users - 1)

    @property
    def installed(self) -> bool:
        return bool(self._handles)


EPOCH = RegistrationEpoch()


def _contents(d: dict[str, Any]) -> tuple[Hashable, ...]:
    """A dict's fingerprint without version tags: its keys and the identities of its values."""
    return (*d, *map(id, d.values()))


#: ``dict -> hashable`` that changes whenever something is stored into the dict.
dict_fingerprint: Callable[[dict[str, Any]], Hashable] = _compat.DICT_VERSION or _contents


class Verified:
    """What the per-call path may run for each key it has verified (fast key + fingerprint).

    ``get(key)`` (per call) gives the candidates verified for that key, or None. ``add`` (slow
    path) records them; beyond ``MAX_VERIFIED`` keys the oldest goes.
    """

    def __init__(self) -> None:
        self.table: dict[Hashable, tuple[Any, ...]] = {}
        self.get = self.table.get

    def add(self, key: Hashable, candidates: tuple[Any, ...]) -> None:
        self.table.pop(key, None)  # re-inserted last: the newest is the last to be forgotten
        self.table[key] = candidates
        while len(self.table) > MAX_VERIFIED:
            del self.table[next(iter(self.table))]

    def clear(self) -> None:
        self.table.clear()
