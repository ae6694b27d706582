"""The bytecode hook that catches Dynamo's transformed code, and the context every compilation runs in.

One bytecode hook serves the whole package. It is registered while at least one code object is
being watched and removed when the last watcher goes away, so nocompile leaves no hook behind.
Dynamo calls it with ``(old_code, new_code)`` for every frame it transforms, in any thread;
the hook routes ``new_code`` to the watcher registered for ``old_code`` *by identity*. Code
objects compare and hash by value, so two states' copies of one function's code are equal —
identity is what tells them apart, hence the table keyed by ``id()``. A watcher holds its code
object alive for as long as it is registered, which keeps the ``id`` from being reused.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

from . import _compat

CodeCallback = Callable[[types.CodeType], None]


class _BytecodeRouter:
    """Routes Dynamo's transformed code objects to whoever watches the original."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[int, tuple[types.CodeType, CodeCallback]] = {}
        self._handle: Any = None

    def watch(self, code: types.CodeType, callback: CodeCallback) -> None:
        """Call ``callback(new_code)`` whenever Dynamo transforms exactly this ``code`` object."""
        with self._lock:
            self._watchers[id(code)] = (code, callback)
            if self._handle is None:
                self._handle = _compat.register_bytecode_hook(self._on_bytecode)

    def unwatch(self, code: types.CodeType) -> None:
        """Stop watching ``code``; the package hook goes away with the last watcher."""
        with self._lock:
            entry = self._watchers.get(id(code))
            if entry is not None and entry[0] is code:
                del self._watchers[id(code)]
            if not self._watchers and self._handle is not None:
                self._handle.remove()
                self._handle = None

    def _on_bytecode(self, old_code: types.CodeType, new_code: types.CodeType) -> None:
        entry = self._watchers.get(id(old_code))
        if entry is not None and entry[0] is old_code:
            entry[1](new_code)


ROUTER = _BytecodeRouter()
