"""nocompile: compile once with torch.compile, drop Dynamo's guards, call the bytecode directly.

Public API::

    from nocompile import compile_once, NoCompileError, GuardMismatchError

See the README and docs/ for the guide; ``python -m nocompile bench`` for the comparison table.
"""

from ._decorator import CompiledFunction, MethodOnInstance, compile_once
from ._errors import GuardAuditError, GuardMismatchError, NoCompileError
from ._explain import ExplainReport
from ._view import CompileStats
from ._wrappers import CompiledBoundMethod, CompiledModule

__version__ = "0.1.0.dev0"

__all__ = [
    "CompileStats",
    "CompiledBoundMethod",
    "CompiledFunction",
    "CompiledModule",
    "ExplainReport",
    "GuardAuditError",
    "GuardMismatchError",
    "MethodOnInstance",
    "NoCompileError",
    "__version__",
    "compile_once",
]
