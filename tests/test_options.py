"""Every option is validated when the decorator is applied, with a message that says how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from nocompile import compile_once


def _identity(x: Any) -> Any:
    return x


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"guards": "all"}, ValueError, r"guards='all'.*'none', 'inputs', 'dynamo'"),
        ({"guards": None}, TypeError, r"guards=.*None"),
        ({"dispatch": "fast"}, ValueError, r"dispatch='fast'.*'bytecode', 'dynamo'"),
        ({"per_instance": "yes"}, TypeError, r"per_instance.*True or False"),
        ({"backend": "no-such-backend"}, ValueError, r"backend='no-such-backend'.*'inductor'"),
        ({"backend": 3}, TypeError, r"backend=.*name \(str\) or a callable"),
        ({"options": ["a"]}, TypeError, r"options=.*dict with str keys"),
        ({"options": {"guard_filter_fn": _identity}}, ValueError, r"guard_filter_fn.*guards="),
        ({"mode": 5}, TypeError, r"mode=.*str or None"),
        ({"mode": "turbo"}, ValueError, r"mode='turbo'.*'max-autotune'"),
        ({"mode": "max-autotune", "options": {"x": 1}}, ValueError, r"both"),
        ({"mode": "max-autotune", "backend": "eager"}, ValueError, r"backend='inductor'"),
    ],
)
def test_bad_option_fails_at_decoration(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        compile_once(**kwargs)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cudagraph"):
        compile_once(cudagraph=True)  # type: ignore[call-overload]


def test_good_options_are_accepted_and_recorded() -> None:
    user_options = {"max_autotune": False}
    f = compile_once(backend="inductor", options=user_options, guards="dynamo", dispatch="dynamo")(_identity)
    user_options["max_autotune"] = True  # the caller's dict is copied, not kept
    assert "options={'max_autotune': False}" in repr(f)
    g = compile_once(mode="max-autotune-no-cudagraphs")(_identity)
    assert "mode='max-autotune-no-cudagraphs'" in repr(g)
    h = compile_once(backend="eager", mode="anything-the-backend-takes", guards="dynamo")(_identity)
    assert "mode='anything-the-backend-takes'" in repr(h)


def test_every_guard_policy_is_described_by_a_policy_object() -> None:
    from nocompile._options import GUARD_POLICIES, POLICIES, CompileOptions

    assert set(POLICIES) == set(GUARD_POLICIES)
    for name in GUARD_POLICIES:
        policy = CompileOptions(guards=name).policy  # type: ignore[arg-type]
        assert policy.name == name
        assert policy.keeps_dynamo_guards == (name == "dynamo") == (not CompileOptions(guards=name).drops_guards)  # type: ignore[arg-type]
        assert policy.checks_inputs == (name == "inputs")
        assert policy.persistable == (name != "dynamo")


def test_an_unknown_option_is_a_type_error_listing_the_options() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'guard'; its options are backend, "):
        compile_once(guard="none")  # type: ignore[call-overload]


def test_the_typed_options_are_the_ones_validated() -> None:
    import inspect

    from nocompile._options import OPTION_NAMES, validate_options

    assert set(OPTION_NAMES) == set(inspect.signature(validate_options).parameters)
