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


class GuardAuditError(GuardMismatchError):
    """Under the audit switch (``audit=True`` or ``NOCOMPILE_AUDIT=1``): a call that
    ``guards="inputs"`` would have run on its fast path fails Dynamo's own guards.

    The per-call fingerprint did not see what changed, so without the audit the compiled code
    would have run on it, possibly returning a wrong result. The message names the failing
    guard(s); the compiled code was not run.
    """
