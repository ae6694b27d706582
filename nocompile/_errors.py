"""Exceptions raised by nocompile."""

from __future__ import annotations


class NoCompileError(RuntimeError):
    """nocompile could not compile a function, or refuses to run a call.

    The message names the function, where it is defined, what went wrong and how to fix it.
    When the cause is an exception from Dynamo, it is chained as ``__cause__``.
    """


class GuardMismatchError(NoCompileError):
    """A call's inputs differ from the signature the function was compiled for.

    Raised under ``guards="inputs"`` with ``on_mismatch="raise"``: running the compiled code
    on these inputs could return a wrong result, so nocompile refuses instead.
    """
