"""The audit switch of ``guards="inputs"`` (``audit=True`` or ``NOCOMPILE_AUDIT=1``).

The per-call path of ``guards="inputs"`` runs a specialization when the call's fast key and
fingerprint were verified before; Dynamo's guards are evaluated only when the fingerprint is
new. A change the fingerprint does not see (docs/footguns.md) therefore runs code compiled for
the old value. Under the audit, every call the per-call path serves from an existing
specialization also runs the verification's own evaluation of what the code baked in
(``InputGuard.baked_in_failure``: Dynamo's guard manager on the call's frame locals, or the
module digests of a specialization without one) and raises ``GuardAuditError`` naming the
failing guard instead of running the code.

Nothing here is on the normal path: ``InputGuard.install`` puts ``audited(...)`` into the
selector's candidate instead of the specialization's call only when the audit is on, so the
generated per-call entry is the same function, calling the same target, as without the module.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from ._compiler import describe_function
from ._errors import GuardAuditError

#: ``baked_in_failure(spec, args, kwargs)``: why what the code baked in no longer holds, or None.
BakedInFailure = Callable[[Any, tuple[Any, ...], dict[str, Any]], "str | None"]


def check(
    fn: types.FunctionType, failure: BakedInFailure, spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Raise ``GuardAuditError`` when ``spec``'s guards fail on this call (``failure``: the
    input check's ``baked_in_failure``)."""
    reason = failure(spec, args, kwargs)
    if reason is not None:
        raise audit_error(fn, reason)


def audited(fn: types.FunctionType, failure: BakedInFailure, spec: Any) -> Callable[..., Any]:
    """``spec.call``, audited: what an audited candidate runs instead of it."""
    call = spec.call

    def audited_call(*args: Any, **kwargs: Any) -> Any:
        reason = failure(spec, args, kwargs)
        if reason is not None:
            raise audit_error(fn, reason)
        return call(*args, **kwargs)

    audited_call.__wrapped__ = call  # type: ignore[attr-defined]
    return audited_call


def audit_error(fn: types.FunctionType, reason: str) -> GuardAuditError:
    """The error for a call the fast path would have run although Dynamo's guards fail on it."""
    failed = [part.strip() for part in reason.split("; ") if part.strip()]
    return GuardAuditError(
        f'{describe_function(fn)}: audit (audit=True / NOCOMPILE_AUDIT=1): guards="inputs" would have run '
        "the compiled code on this call without checking, but what it was compiled for no longer holds:\n"
        + "".join(f"  {line}\n" for line in failed)
        + 'What changed is not watched by guards="inputs"\'s per-call fingerprint, so without the audit this '
        "call could have returned a wrong result silently. The compiled code was NOT run.\n"
        "Fix: call .reset() on the compiled function (method, module) after such a change, so the next call "
        'compiles again; or use guards="dynamo", which evaluates Dynamo\'s guards on every call; and report '
        "it to nocompile as a change the fingerprint misses."
    )
