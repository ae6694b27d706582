"""The real-world battery of issue #25 (item 7): the table is ``tests/real_world.py``.

For every scenario: the change matters to eager, and stock ``torch.compile(fullgraph=True,
backend="eager")`` gives eager's answer after it (a scenario stock gets wrong has no place in the
table). Then ``compile_once(backend="eager")`` under ``guards="inputs"``, after two warm-up calls,
in three modes: ``on_mismatch="raise"`` (eager's answer or ``GuardMismatchError``),
``on_mismatch="recompile"`` (eager's answer) and the control without the change (eager's answer
from one compile).

What fails today is marked ``xfail(strict=True)`` with the exception type of what actually
happens (``SilentWrongAnswer``, ``CallRefused``, ``Crash<Type>`` such as ``CrashKeyError``): a
scenario that starts failing differently fails the suite, and a fix turns its row XPASS, which
strict makes a failure until the marker goes. ``python tests/real_world.py`` prints the table.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import real_world
from real_world import (
    AUDITED,
    MODES,
    REFUSED,
    SCENARIOS,
    SILENT,
    Scenario,
    eager_answers,
    outcome,
    same,
    stock_outcome,
)

from nocompile._options import audit_from_env

#: The suite runs under ``NOCOMPILE_AUDIT=1`` (CI's second run), read at collection: the xfail
#: markers expect what the audit makes of each known failure.
AUDIT = audit_from_env()

ISSUE_KINDS = {
    "python module",
    "other globals",
    "indirect callable",
    "module edit",
    "value not followed",
    "kwargs order",
    "crash case",
}


class SilentWrongAnswer(AssertionError):
    """compile_once returned an answer other than eager's, without an error."""


class CallRefused(AssertionError):
    """GuardMismatchError where none is right (a call that changed nothing, or under "recompile")."""


class CaughtByAudit(AssertionError):
    """Under ``NOCOMPILE_AUDIT=1``: ``GuardAuditError`` where ``guards="inputs"`` alone runs the old code."""


class Crash(AssertionError):
    """Any exception other than GuardMismatchError."""


@functools.cache
def crash_type(name: str) -> type[Crash]:
    """One subclass per exception type, so that an xfail names exactly the crash it expects."""
    return type(f"Crash{name}", (Crash,), {"__doc__": f"compile_once raised {name}."})


def failure(result: str) -> type[AssertionError]:
    if result == AUDITED:
        return CaughtByAudit
    if result == SILENT:
        return SilentWrongAnswer
    if result == REFUSED:
        return CallRefused
    assert result.startswith("crash "), result
    return crash_type(result.removeprefix("crash "))


def expected_failure(known: str) -> type[AssertionError] | tuple[type[AssertionError], ...]:
    """What a known failure raises: as today, or under the audit what the audit makes of it. Every
    silent wrong answer must become ``GuardAuditError`` (stock gets it right, so Dynamo guards it,
    and the audit evaluates those guards); a crash or a refusal may come before the audit or after."""
    if not AUDIT:
        return failure(known)
    if known == SILENT:
        return CaughtByAudit
    return (failure(known), CaughtByAudit)


def reason(scenario: Scenario, result: str) -> str:
    if result == SILENT:
        what = "silent wrong answer"
    elif result == REFUSED:
        what = "unchanged call refused" if scenario.unchanged else "call refused"
    else:
        what = result
    return f"#25 {scenario.kind}: {what}"


def cases() -> list[Any]:
    params: list[Any] = []
    for scenario in SCENARIOS:
        for mode in MODES:
            if mode == "unchanged" and scenario.unchanged:
                continue  # the scenario is its own control
            known = scenario.today.get(mode)
            marks = []
            if known:
                expected = expected_failure(known)
                marks.append(pytest.mark.xfail(strict=True, raises=expected, reason=reason(scenario, known)))
            params.append(pytest.param(scenario, mode, id=f"{scenario.id}-{mode}", marks=marks))
    return params


def test_the_battery_covers_the_issue() -> None:
    ids = [s.id for s in SCENARIOS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(SCENARIOS) >= 60
    assert {s.kind for s in SCENARIOS} == ISSUE_KINDS
    for scenario in SCENARIOS:
        assert scenario.source, scenario.id
        assert set(scenario.today) <= set(MODES), scenario.id
        for result in scenario.today.values():
            failure(result)  # a known result has a failure type


@pytest.mark.unaudited(reason="pins the report's silent-wrong cells, which the audit turns into GuardAuditError")
def test_the_report_prints_every_scenario() -> None:
    chosen = [s for s in SCENARIOS if s.id in ("config_module_constant", "argument_mappingproxy")]
    text = real_world.report(list(real_world.run_battery(chosen)))
    rows = text.splitlines()[1:3]
    # A module constant the trace read is watched (the trace watch): caught under "raise", right
    # under "recompile"; a mappingproxy argument is not (docs/footguns.md).
    assert rows[0].split() == ["config_module_constant", "python", "module", "ok", "caught", "ok", "ok"]
    assert rows[1].split()[:4] == ["argument_mappingproxy", "(doc)", "value", "not"]
    assert rows[1].count(SILENT) == 2 and rows[1].split()[-1] == "ok"
    assert "2 scenarios, 2 right under stock torch.compile" in text


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_stock_torch_compile_gives_eager_answer(scenario: Scenario) -> None:
    """The scenario is valid: the change shows in eager's answer, and stock gets it right."""
    before, after = eager_answers(scenario)
    if not scenario.unchanged:
        assert not same(before, after), "the change does not change eager's answer"
    result = stock_outcome(scenario)
    assert result.result == "ok", f"stock torch.compile: {result.result} {result.detail}"


@pytest.mark.parametrize(("scenario", "mode"), cases())
def test_compile_once(scenario: Scenario, mode: str) -> None:
    """Eager's answer, or under "raise" a GuardMismatchError for a change; never another answer
    without an error, another exception, or a refused call that changed nothing."""
    result = outcome(scenario, mode)
    if result.right:
        return
    raise failure(result.result)(f"{result.result}: {result.detail}")
