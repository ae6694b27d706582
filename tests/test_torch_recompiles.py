"""Scenarios where stock ``torch.compile`` recompiles, ported from PyTorch's and vLLM's own tests.

Each scenario is a behaviour taken from a test in PyTorch's ``test/dynamo`` (test_recompiles.py,
test_recompile_ux.py, test_guard_manager.py, test_modules.py, test_misc.py, test_functions.py,
test_ctx_manager.py, test_modes.py) or vLLM's ``tests/compile``, rewritten as a table row: a
function or module, a first call (the one that compiles), a change made after it (an argument,
a module attribute, a closure cell, ``__defaults__``, torch's global state, aliasing of the
inputs, ...) and a second call. ``source`` names the test the behaviour comes from.

For every scenario, separately:

* ``test_eager_reference``: the second call's eager answer is deterministic (each mode builds
  its own objects, so nothing leaks from one to the next) and the change shows in it;
* ``test_stock_torch_compile_recompiles``: stock ``torch.compile`` really recompiles (or
  raises) on the second call, so this is a case where Dynamo's guards matter; a scenario where
  it does not has no place in the table;
* ``test_compile_once_unchanged_call_runs_the_compiled_code``: the control. Without the change,
  the second call neither raises nor recompiles (backend "eager"): a check that refused every
  call would pass the table, not this;
* ``test_compile_once``: ``compile_once(guards="inputs")`` with ``on_mismatch`` "raise" and
  "recompile" on backends "eager" and "aot_eager". The promise under test: the second call
  raises ``GuardMismatchError`` (only with "raise") or returns eager's answer. A different
  answer without an error is a silent wrong answer, the one thing the policy rules out,
  except what docs/footguns.md lists: a scenario marked ``expected="documented:<why>"`` pins
  that the answer IS wrong, so that a fix flips the test.

A module scenario is compiled the way ``@compile_once`` on its class's ``forward`` compiles it
(the instance moves into a subclass whose ``forward`` is decorated, see ``decorate_forward``) and
called as ``module(x)``; stock compiles ``torch.compile(module)``. ``outcome()`` is what the tests
assert on, and what a report of the whole table is built from.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from nocompile import GuardAuditError, GuardMismatchError, compile_once
from nocompile._options import audit_from_env

# -- the table's machinery -------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """One mode's own objects: it calls ``target(*args, **kwargs)`` twice.

    ``target`` is a function or an ``nn.Module``; ``handles`` holds what ``change`` needs to
    reach (a closure's setter, the module's original class). ``change`` may replace ``args``.
    """

    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    handles: dict[str, Any] = dataclasses.field(default_factory=dict)


Change = Callable[[Setup], AbstractContextManager[object]]
"""Entered around the second call: makes the change on entry, restores global state on exit."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the table: ``build`` makes fresh objects for each mode, ``change`` runs between the calls."""

    name: str
    kind: str
    source: str
    build: Callable[[], Setup]
    change: Change
    expected: str = "caught"
    """``"caught"``: an error or eager's answer. ``"documented:<why>"``: docs/footguns.md lists it as unchecked."""
    steady: str = ""
    """The same for the change made after a verified call (``test_compile_once_steady``); empty: as ``expected``."""
    first: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    """Entered around the first call (a context the change then leaves)."""
    dynamic: Mapping[str, int | tuple[int, ...]] | None = None
    """``compile_once(dynamic=...)``; stock compiles with ``dynamic=True`` then."""
    missed: str = ""
    """After a verified call, the per-call path runs the old code although Dynamo's guards fail,
    and the answer is eager's only by luck of the backend: why (found by the audit,
    ``NOCOMPILE_AUDIT=1``, under which ``test_compile_once_steady`` expects ``GuardAuditError``)."""


def mutate(action: Callable[[Setup], object]) -> Change:
    """A change made to the setup's own objects: nothing global to restore."""

    @contextlib.contextmanager
    def change(setup: Setup) -> Iterator[None]:
        action(setup)
        yield

    return change


def within(factory: Callable[[], AbstractContextManager[object]]) -> Change:
    """The second call runs inside a context the first did not (autocast, a mode, no_grad)."""
    return lambda setup: factory()


@contextlib.contextmanager
def global_setting(getter: Callable[[], Any], setter: Callable[[Any], object], value: Any) -> Iterator[None]:
    """A process-wide setting changed, and restored on leaving even when the call failed."""
    old = getter()
    setter(value)
    try:
        yield
    finally:
        setter(old)


def flipped(getter: Callable[[], Any], setter: Callable[[Any], object], value: Any) -> Change:
    """A process-wide setting changed for the second call only."""
    return lambda setup: global_setting(getter, setter, value)


def flipped_first(
    getter: Callable[[], Any], setter: Callable[[Any], object], value: Any
) -> Callable[[], AbstractContextManager[object]]:
    """A process-wide setting changed for the first call only: compiled under it, called without."""
    return lambda: global_setting(getter, setter, value)


NOTHING: Change = mutate(lambda setup: None)
"""For scenarios whose change is leaving the context the first call ran in."""


def set_global(name: str, value: Any) -> Change:
    """A module-level global of this file rebound for the second call, restored after."""
    namespace = globals()
    return flipped(lambda: namespace[name], lambda v: namespace.__setitem__(name, v), value)


def set_args(*args: Any, **kwargs: Any) -> Change:
    """The second call passes other arguments."""

    def action(setup: Setup) -> None:
        setup.args, setup.kwargs = args, kwargs

    return mutate(action)


class FirstCallFailed(Exception):
    """The compiling call itself failed: the scenario is broken, not the policy."""


def observe(
    scenario: Scenario, prepare: Callable[[Setup], Callable[..., Any]], changed: bool = True, steady: bool = False
) -> Any:
    """Build fresh objects, make both calls, return what the second one produced.

    ``changed=False`` makes the second call exactly like the first (no change), which the
    eager test compares against. The tensors of the arguments are part of the answer: a
    scenario may mutate its inputs. ``steady=True`` makes the first call twice before the
    change: compile_once verifies a call's fingerprint on the call after a compile, so the
    change then meets the per-call check alone (``nocompile._watch``).
    """
    torch.manual_seed(0)
    setup = scenario.build()
    call = prepare(setup)
    try:
        for _ in range(2 if steady else 1):
            with scenario.first():
                call(*setup.args, **setup.kwargs)
    except Exception as exc:
        raise FirstCallFailed(f"{type(exc).__name__}: {exc}") from exc
    context = scenario.change(setup) if changed else scenario.first()
    with context:
        out = call(*setup.args, **setup.kwargs)
    return out, [t for t in tree_leaves((setup.args, setup.kwargs)) if isinstance(t, torch.Tensor)]


def same(a: Any, b: Any) -> bool:
    """Equal values, dtypes, devices, structure and ``requires_grad``."""
    try:
        torch.testing.assert_close(a, b, equal_nan=True)
    except (AssertionError, TypeError, ValueError, RuntimeError):
        return False
    grads_a = [t.requires_grad for t in tree_leaves(a) if isinstance(t, torch.Tensor)]
    grads_b = [t.requires_grad for t in tree_leaves(b) if isinstance(t, torch.Tensor)]
    return grads_a == grads_b


def difference(got: Any, expected: Any) -> str:
    """The first line of what ``assert_close`` says about a wrong answer, for reports."""
    try:
        torch.testing.assert_close(got, expected, equal_nan=True)
    except (AssertionError, TypeError, ValueError, RuntimeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join(lines[:2])
    return "requires_grad differs"


def eager(setup: Setup) -> Callable[..., Any]:
    """The reference: the function or module itself."""
    return setup.target


def decorate_forward(module: nn.Module, **options: Any) -> Any:
    """Put ``module`` in a subclass whose ``forward`` is decorated: ``@compile_once`` on the class,
    without touching the class other modes use. Returns the decorated ``forward``."""
    cls = type(module)
    namespace = {"forward": compile_once(**options)(cls.forward), "__module__": cls.__module__}
    module.__class__ = type(cls.__name__, (cls,), namespace)
    return type(module).forward


def with_compile_once(
    scenario: Scenario, backend: str, on_mismatch: str, stats: list[Any]
) -> Callable[[Setup], Callable[..., Any]]:
    options: dict[str, Any] = {"backend": backend, "on_mismatch": on_mismatch}
    if scenario.dynamic:
        options["dynamic"] = dict(scenario.dynamic)

    def prepare(setup: Setup) -> Callable[..., Any]:
        if isinstance(setup.target, nn.Module):
            stats.append(decorate_forward(setup.target, **options))
            return setup.target
        compiled = compile_once(**options)(setup.target)
        stats.append(compiled)
        return compiled

    return prepare


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What compile_once did with a scenario's second call."""

    kind: str
    """``caught`` (GuardMismatchError), ``recompiled`` or ``equal`` (eager's answer, with or without
    a second compile), ``SILENT WRONG``, or ``error`` (any other exception)."""
    detail: str = ""


def outcome(scenario: Scenario, backend: str, on_mismatch: str, steady: bool = False) -> Outcome:
    """What ``compile_once`` does with the scenario's second call, against eager's answer."""
    reference = observe(scenario, eager, steady=steady)
    stats: list[Any] = []
    try:
        got = observe(scenario, with_compile_once(scenario, backend, on_mismatch, stats), steady=steady)
    except GuardAuditError as exc:  # NOCOMPILE_AUDIT=1: the per-call path would have run it
        reason = [line.strip() for line in str(exc).splitlines()[1:2]]
        return Outcome("audited", reason[0] if reason else "")
    except GuardMismatchError as exc:
        reason = [line.strip() for line in str(exc).splitlines()[1:2]]
        return Outcome("caught", reason[0] if reason else "")
    except FirstCallFailed as exc:
        return Outcome("error", f"first call: {str(exc).splitlines()[0]}")
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return Outcome("error", f"{type(exc).__name__}: {text[0] if text else ''}")
    compiles = stats[0].stats.compiles
    if same(got, reference):
        return Outcome("recompiled" if compiles > 1 else "equal", f"{compiles} compile(s)")
    return Outcome("SILENT WRONG", f"{compiles} compile(s); {difference(got, reference)}")


def stock_frames(scenario: Scenario) -> tuple[int, BaseException | None, Any]:
    """Frames stock ``torch.compile(backend="eager")`` compiled over both calls, the exception the
    second call raised (if any) and its answer."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("eager")

    def prepare(setup: Setup) -> Callable[..., Any]:
        return torch.compile(setup.target, backend=counter, fullgraph=True, dynamic=bool(scenario.dynamic))

    try:
        got = observe(scenario, prepare)
    except FirstCallFailed:
        raise
    except Exception as exc:
        return counter.frame_count, exc, None
    finally:
        torch._dynamo.reset()
    return counter.frame_count, None, got


# -- shared pieces -----------------------------------------------------------------------------


def x23() -> torch.Tensor:
    return torch.randn(2, 3)


class Scale(nn.Module):
    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class TrainOnly(nn.Module):
    """Deterministic stand-in for dropout: a different answer in training and in eval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if self.training else x - 1


class Wrapper(nn.Module):
    """A module around a submodule, so that the submodule's own state can change."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 1


def module_setup(module: nn.Module, *args: Any) -> Setup:
    return Setup(module, args or (x23(),), handles={"cls": type(module)})


def call_module(x: torch.Tensor, mod: nn.Module) -> torch.Tensor:
    return mod(x)


def minus_hundred(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x - 100


# -- torch global state --------------------------------------------------------------------


def deterministic_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if torch.are_deterministic_algorithms_enabled() else x - 1


def tf32_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if torch.backends.cuda.matmul.allow_tf32 else x - 1


def grad_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if torch.is_grad_enabled() else x - 1


def plus_fresh_ones(x: torch.Tensor) -> torch.Tensor:
    return x + torch.ones(3)


def to_default_dtype(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.get_default_dtype()) * 2


def fresh_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[0]) * 2


def add_one(x: torch.Tensor) -> torch.Tensor:
    return torch.add(x, 1)


def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x @ w).relu() + 1


def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class AddIsSub(TorchFunctionMode):
    """A torch function mode that changes the answer: ``torch.add`` runs as ``torch.sub``."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.add:
            func = torch.sub
        return func(*args, **(kwargs or {}))


def allow_tf32() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def set_allow_tf32(value: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = value


@contextlib.contextmanager
def default_device(device: str) -> Iterator[None]:
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(None)


def autocast(dtype: torch.dtype = torch.bfloat16) -> Callable[[], AbstractContextManager[object]]:
    return lambda: torch.autocast("cpu", dtype=dtype)


def fn_setup(fn: Callable[..., Any], *args: Any) -> Callable[[], Setup]:
    return lambda: Setup(fn, args or (x23(),))


def matmul_setup() -> Setup:
    return Setup(matmul, (torch.randn(3, 4), torch.randn(4, 4)))


def leaf_setup() -> Setup:
    return Setup(double, (torch.randn(3, requires_grad=True),))


GLOBAL_STATE = [
    Scenario(
        "deterministic_algorithms_turned_on",
        "global_state",
        "test_misc.py::test_recompile_on_global_state_change",
        fn_setup(deterministic_branch),
        flipped(torch.are_deterministic_algorithms_enabled, torch.use_deterministic_algorithms, True),
    ),
    Scenario(
        "deterministic_algorithms_turned_off",
        "global_state",
        "test_guard_manager.py::test_global_state_guard",
        fn_setup(deterministic_branch),
        NOTHING,
        first=flipped_first(torch.are_deterministic_algorithms_enabled, torch.use_deterministic_algorithms, True),
    ),
    Scenario(
        "cuda_matmul_allow_tf32_set",
        "global_state",
        "test_misc.py::test_recompile_on_global_state_change",
        fn_setup(tf32_branch),
        flipped(allow_tf32, set_allow_tf32, True),
    ),
    Scenario(
        "float32_matmul_precision_high",
        "global_state",
        "test_misc.py::test_recompile_on_global_state_change",
        fn_setup(tf32_branch),
        flipped(torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "high"),
    ),
    Scenario(
        "default_dtype_float64_factory",
        "global_state",
        "test_guard_manager.py::test_global_state_guard",
        fn_setup(plus_fresh_ones),
        flipped(torch.get_default_dtype, torch.set_default_dtype, torch.float64),
    ),
    Scenario(
        "default_dtype_float64_read",
        "global_state",
        "test_guard_manager.py::test_global_state_guard",
        fn_setup(to_default_dtype),
        flipped(torch.get_default_dtype, torch.set_default_dtype, torch.float64),
    ),
    Scenario(
        "set_default_device_meta",
        "global_state",
        "test_guard_manager.py::test_default_device_guard",
        fn_setup(fresh_ones),
        lambda setup: default_device("meta"),
    ),
    Scenario(
        "torch_function_mode_entered",
        "global_state",
        "test_modes.py::test_torch_function_mode_guards_cpp",
        fn_setup(add_one),
        within(AddIsSub),
    ),
    Scenario(
        "torch_function_mode_exited",
        "global_state",
        "test_modes.py::test_torch_function_mode_guards_cpp",
        fn_setup(add_one),
        NOTHING,
        first=AddIsSub,
    ),
    Scenario(
        "autocast_entered",
        "global_state",
        "test_ctx_manager.py::test_autocast_cpu",
        matmul_setup,
        within(autocast()),
    ),
    Scenario(
        "autocast_exited",
        "global_state",
        "test_ctx_manager.py::test_autocast_cpu",
        matmul_setup,
        NOTHING,
        first=autocast(),
    ),
    Scenario(
        "autocast_dtype_changed",
        "global_state",
        "test_guard_manager.py::test_global_state_reason_autocast_cache",
        matmul_setup,
        within(autocast(torch.float16)),
        first=autocast(),
    ),
    Scenario(
        "no_grad_then_grad",
        "global_state",
        "test_ctx_manager.py::test_grad_mode_guard",
        leaf_setup,
        NOTHING,
        first=torch.no_grad,
    ),
    Scenario(
        "grad_then_no_grad",
        "global_state",
        "test_guard_manager.py::test_global_state_reason",
        fn_setup(grad_branch),
        within(torch.no_grad),
    ),
    Scenario(
        "inference_mode_entered",
        "global_state",
        "test_misc.py::test_inference_mode",
        fn_setup(grad_branch),
        within(torch.inference_mode),
    ),
    Scenario(
        "inference_mode_exited",
        "global_state",
        "test_misc.py::test_inference_mode",
        fn_setup(grad_branch),
        NOTHING,
        first=torch.inference_mode,
    ),
]


# -- the compiled function's closure cells and defaults ----------------------------------------


def closure_int() -> Setup:
    k = 2

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * k

    def rebind(value: int) -> None:
        nonlocal k
        k = value

    return Setup(fn, (x23(),), handles={"rebind": rebind})


def closure_tensor() -> Setup:
    w = torch.randn(3)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1, keepdim=True) * w / w.shape[0]  # mean-normalised: the size is a Python int

    def rebind(value: torch.Tensor) -> None:
        nonlocal w
        w = value

    return Setup(fn, (x23(),), handles={"rebind": rebind})


def closure_tensor_dtype() -> Setup:
    w = torch.randn(3)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (x * w).to(w.dtype)  # the output in the weight's dtype

    def rebind(value: torch.Tensor) -> None:
        nonlocal w
        w = value

    return Setup(fn, (x23(),), handles={"rebind": rebind})


def closure_module() -> Setup:
    mod = Scale(2.0)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return mod(x) + 1

    return Setup(fn, (x23(),), handles={"mod": mod})


def closure_train_only() -> Setup:
    mod = TrainOnly()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return mod(x) + 1

    return Setup(fn, (x23(),), handles={"mod": mod})


def closure_function() -> Setup:
    act: Callable[[torch.Tensor], torch.Tensor] = torch.relu

    def fn(x: torch.Tensor) -> torch.Tensor:
        return act(x) + 1

    def rebind(value: Callable[[torch.Tensor], torch.Tensor]) -> None:
        nonlocal act
        act = value

    return Setup(fn, (x23(),), handles={"rebind": rebind})


def closure_list() -> Setup:
    scales = [1.0, 2.0]

    def fn(x: torch.Tensor) -> torch.Tensor:
        for s in scales:
            x = x * s + 1
        return x

    return Setup(fn, (x23(),), handles={"scales": scales})


class Config:
    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale


def closure_object() -> Setup:
    cfg = Config(2.0)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * cfg.scale

    return Setup(fn, (x23(),), handles={"cfg": cfg})


def closure_nested_function() -> Setup:
    k = 2

    def helper(x: torch.Tensor) -> torch.Tensor:
        return x * k

    def fn(x: torch.Tensor) -> torch.Tensor:
        return helper(x) + 1

    def rebind(value: int) -> None:
        nonlocal k
        k = value

    return Setup(fn, (x23(),), handles={"rebind": rebind})


# The ``__defaults__``/``__kwdefaults__`` changes are made on ``setup.target``, the undecorated
# function: the object a user still holds after ``f = compile_once(...)(fn)``, and the one
# ``f.__wrapped__`` is (``f.__defaults__`` is a read-only view of it).


def defaults_int() -> Setup:
    def fn(x: torch.Tensor, k: int = 2) -> torch.Tensor:
        return x * k

    return Setup(fn, (x23(),))


def kwdefaults_int() -> Setup:
    def fn(x: torch.Tensor, *, k: int = 2) -> torch.Tensor:
        return x * k

    return Setup(fn, (x23(),))


def defaults_tensor() -> Setup:
    def fn(x: torch.Tensor, w: torch.Tensor = torch.ones(3)) -> torch.Tensor:  # noqa: B008
        return x.sum(-1, keepdim=True) * w / w.shape[0]

    return Setup(fn, (x23(),))


def defaults_list() -> Setup:
    def fn(x: torch.Tensor, scales: list[float] = [1.0, 2.0]) -> torch.Tensor:  # noqa: B006
        for s in scales:
            x = x * s + 1
        return x

    return Setup(fn, (x23(),))


def helper_defaults() -> Setup:
    def helper(x: torch.Tensor, k: int = 2) -> torch.Tensor:
        return x * k

    def fn(x: torch.Tensor) -> torch.Tensor:
        return helper(x) + 1

    return Setup(fn, (x23(),), handles={"helper": helper})


def method_defaults() -> Setup:
    class WithDefault(nn.Module):
        def forward(self, x: torch.Tensor, k: int = 2) -> torch.Tensor:
            return x * k

    return module_setup(WithDefault())


def set_attr(path: str, value: Any, handle: str | None = None) -> Change:
    """``target.<path> = value``, or ``handles[handle].<path> = value``."""

    def action(setup: Setup) -> None:
        obj: Any = setup.target if handle is None else setup.handles[handle]
        *parents, name = path.split(".")
        for parent in parents:
            obj = getattr(obj, parent)
        setattr(obj, name, value)

    return mutate(action)


def rebind_cell(value: Any) -> Change:
    return mutate(lambda setup: setup.handles["rebind"](value))


def set_kwdefault_item(setup: Setup) -> None:
    setup.target.__kwdefaults__["k"] = 3


CLOSURES = [
    Scenario(
        "closure_int_rebound",
        "closure",
        "test_recompiles.py::test_automatic_dynamic_on_closed_ints",
        closure_int,
        rebind_cell(3),
    ),
    Scenario(
        "closure_tensor_other_shape",
        "closure",
        "test_recompiles.py::test_dynamic_shape_parameter_recompile",
        closure_tensor,
        rebind_cell(torch.full((5,), 0.5)),
    ),
    Scenario(
        "closure_tensor_other_dtype",
        "closure",
        "test_recompile_ux.py::test_verbose_tensor_check",
        closure_tensor_dtype,
        rebind_cell(torch.full((3,), 0.5, dtype=torch.float64)),
    ),
    Scenario(
        "closure_module_attribute",
        "closure",
        "test_modules.py::test_guard_on_torch_nn_modules",
        closure_module,
        set_attr("scale", 3.0, handle="mod"),
    ),
    Scenario(
        "closure_module_forward_patched",
        "closure",
        "test_modules.py::test_monkeypatching_forward",
        closure_module,
        mutate(lambda s: setattr(s.handles["mod"], "forward", types.MethodType(minus_hundred, s.handles["mod"]))),
    ),
    Scenario(
        "closure_module_eval",
        "closure",
        "test_recompiles.py::test_simple_module_recompile",
        closure_train_only,
        mutate(lambda s: s.handles["mod"].eval()),
    ),
    Scenario(
        "closure_function_swapped",
        "closure",
        "test_modules.py::test_fnmember",
        closure_function,
        rebind_cell(torch.tanh),
    ),
    Scenario(
        "closure_list_appended",
        "closure",
        "test_recompile_ux.py::test_multiple_guard_fails_report_all",
        closure_list,
        mutate(lambda s: s.handles["scales"].append(3.0)),
    ),
    Scenario(
        "closure_object_attribute",
        "closure",
        "test_modules.py::test_cfgmod",
        closure_object,
        set_attr("scale", 3.0, handle="cfg"),
    ),
    Scenario(
        "closure_of_called_helper_rebound",
        "closure",
        "test_recompiles.py::test_automatic_dynamic_on_closed_ints",
        closure_nested_function,
        rebind_cell(3),
    ),
    Scenario(
        "defaults_reassigned",
        "defaults",
        "test_functions.py::test_func_default_tensor_args",
        defaults_int,
        set_attr("__defaults__", (3,)),
    ),
    Scenario(
        "kwdefaults_reassigned",
        "defaults",
        "test_functions.py::test_func_default_tensor_args",
        kwdefaults_int,
        set_attr("__kwdefaults__", {"k": 3}),
    ),
    Scenario(
        "kwdefaults_item_set",
        "defaults",
        "test_functions.py::test_func_default_tensor_args",
        kwdefaults_int,
        mutate(set_kwdefault_item),
    ),
    Scenario(
        "defaults_tensor_other_shape",
        "defaults",
        "test_functions.py::test_func_default_tensor_args",
        defaults_tensor,
        set_attr("__defaults__", (torch.full((5,), 0.5),)),
    ),
    Scenario(
        "default_list_appended",
        "defaults",
        "test_guard_manager.py::test_length_check_guard",
        defaults_list,
        mutate(lambda s: s.target.__defaults__[0].append(3.0)),
    ),
    Scenario(
        "called_helper_defaults_reassigned",
        "defaults",
        "test_functions.py::test_func_default_tensor_args",
        helper_defaults,
        set_attr("__defaults__", (3,), handle="helper"),
    ),
    Scenario(
        "method_defaults_reassigned",
        "defaults",
        "test_functions.py::test_meth_default_tensor_args",
        method_defaults,
        mutate(lambda s: setattr(s.handles["cls"].forward, "__defaults__", (3,))),
    ),
]


# -- aliasing of inputs ------------------------------------------------------------------------


def plus_twice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b * 2


def identity_branch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * 2 if x is y else x + y


def add_into_first(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    a.add_(b)
    return c + 1


def double_first_in_place(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a.mul_(2)
    return a + b


def double_first_of_list(xs: list[torch.Tensor]) -> torch.Tensor:
    xs[0].mul_(2)
    return xs[0] + xs[1]


ALIAS_G1 = torch.zeros(3)


def add_global_in_place(a: torch.Tensor) -> torch.Tensor:
    a.add_(ALIAS_G1)
    return a * ALIAS_G1


def pair(fn: Callable[..., Any], aliased: bool) -> Callable[[], Setup]:
    def build() -> Setup:
        a, b = torch.randn(3), torch.randn(3)
        return Setup(fn, (a, a) if aliased else (a, b), handles={"a": a})

    return build


def to_distinct(setup: Setup) -> None:
    setup.args = (setup.handles["a"], torch.randn(3))


def to_aliased(setup: Setup) -> None:
    setup.args = (setup.handles["a"], setup.handles["a"])


def three_distinct() -> Setup:
    x, y, z = torch.randn(3), torch.randn(3), torch.randn(3)
    return Setup(add_into_first, (x, y, z), handles={"x": x, "y": y})


def list_aliased() -> Setup:
    a = torch.randn(3)
    return Setup(double_first_of_list, ([a, a],), handles={"a": a})


def global_alias() -> Setup:
    global ALIAS_G1
    ALIAS_G1 = torch.randn(3)
    return Setup(add_global_in_place, (torch.randn(3),))


ALIASING = [
    Scenario(
        "aliased_then_distinct",
        "aliasing",
        "test_guard_manager.py::test_tensor_aliasing_guard",
        pair(plus_twice, aliased=True),
        mutate(to_distinct),
    ),
    Scenario(
        "distinct_then_aliased_identity_branch",
        "aliasing",
        "test_functions.py::test_is_tensor_tensor",
        pair(identity_branch, aliased=False),
        mutate(to_aliased),
    ),
    Scenario(
        "in_place_third_argument_aliases_first",
        "aliasing",
        "test_recompiles.py::test_aliasing_guard_failures",
        three_distinct,
        mutate(lambda s: setattr(s, "args", (s.handles["x"], s.handles["y"], s.handles["x"]))),
    ),
    Scenario(
        "in_place_aliased_then_distinct",
        "aliasing",
        "test_guard_manager.py::test_tensor_aliasing_guard",
        pair(double_first_in_place, aliased=True),
        mutate(to_distinct),
    ),
    Scenario(
        "list_aliased_then_distinct",
        "aliasing",
        "test_guard_manager.py::test_tensor_aliasing_guard",
        list_aliased,
        mutate(lambda s: setattr(s, "args", ([s.handles["a"], torch.randn(3)],))),
    ),
    Scenario(
        "argument_aliases_a_global",
        "aliasing",
        "test_recompiles.py::test_aliasing_guard_failures_with_globals",
        global_alias,
        mutate(lambda s: setattr(s, "args", (ALIAS_G1,))),
        missed="an argument that is a global tensor the code also reads is not in the per-call key (only "
        "aliasing among arguments is); under aot_eager the steady call is a silent wrong answer (issue #25)",
    ),
]

# -- attributes of self ------------------------------------------------------------------------


class ScaledLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.scale = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


class ConstLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.count = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.count):
            x = torch.sigmoid(self.lin(x))
        return x


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.use_offset = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1 if self.use_offset else x * 2


class WithActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act: nn.Module = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x))


class TrainingCheck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(3, 3)
        self.linear2 = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear1(x) if self.training else self.linear2(x))


class FanOutNormalized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w) / self.w.shape[0]


class AccumulateInParamDtype(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(-1, dtype=self.w.dtype)


class BufferDtype(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("ref", torch.randn(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.ref).to(self.ref.dtype)


class OptionalExtra(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "extra"):
            return x + self.extra
        return x


class Temperature(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.temperature = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / getattr(self, "temperature", 1.0)


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * 2


class ModuleDictContains(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mods = nn.ModuleDict({"a": Scale(2.0)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mods["a"](x)
        if "b" in self.mods:
            x = self.mods["b"](x)
        return x


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Cfg:
    def __init__(self) -> None:
        self.val = 0.5
        self.count = 3


class CfgModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cfg = Cfg()
        self.layer = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.cfg.count):
            x = self.layer(x + self.cfg.val)
        return x


def class_attribute_module() -> Setup:
    class ClassScaled(nn.Module):
        scale = 2.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    return module_setup(ClassScaled())


def module_builder(cls: Callable[[], nn.Module]) -> Callable[[], Setup]:
    return lambda: module_setup(cls())


def wrapped(inner: Callable[[], nn.Module]) -> Callable[[], Setup]:
    return lambda: module_setup(Wrapper(inner()))


def replace_param(name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Change:
    def action(setup: Setup) -> None:
        old = getattr(setup.target, name)
        setattr(setup.target, name, nn.Parameter(make(old.detach())))

    return mutate(action)


def patch_forward(path: str) -> Change:
    def action(setup: Setup) -> None:
        obj: Any = setup.target
        for name in filter(None, path.split(".")):
            obj = getattr(obj, name)
        obj.forward = types.MethodType(minus_hundred, obj)

    return mutate(action)


SELF_ATTRIBUTES = [
    Scenario(
        "self_float_attribute",
        "self_attribute",
        "test_modules.py::test_guard_on_torch_nn_modules",
        module_builder(ScaledLinear),
        set_attr("scale", 3.0),
    ),
    Scenario(
        "self_int_attribute_loop_count",
        "self_attribute",
        "test_modules.py::test_constloop",
        module_builder(ConstLoop),
        set_attr("count", 2),
    ),
    Scenario(
        "self_bool_flag",
        "self_attribute",
        "test_modules.py::test_fnmember",
        module_builder(Flagged),
        set_attr("use_offset", False),
    ),
    Scenario(
        "self_submodule_replaced",
        "self_attribute",
        "test_modules.py::test_module_setattr",
        module_builder(WithActivation),
        mutate(lambda s: setattr(s.target, "act", nn.Tanh())),
    ),
    Scenario(
        "self_instance_forward",
        "self_attribute",
        "test_modules.py::test_monkeypatching_forward",
        module_builder(ScaledLinear),
        patch_forward(""),
    ),
    Scenario(
        "submodule_instance_forward",
        "self_attribute",
        "test_modules.py::test_monkeypatching_forward",
        wrapped(Scale),
        patch_forward("inner"),
    ),
    Scenario(
        "self_training_flag",
        "self_attribute",
        "test_modules.py::test_istraining1",
        module_builder(TrainingCheck),
        mutate(lambda s: s.target.eval()),
    ),
    Scenario(
        "submodule_training_flag",
        "self_attribute",
        "test_recompiles.py::test_simple_module_recompile",
        wrapped(TrainOnly),
        mutate(lambda s: s.target.inner.eval()),
    ),
    Scenario(
        "self_parameter_other_shape",
        "self_attribute",
        "test_recompiles.py::test_dynamic_shape_parameter_recompile",
        module_builder(FanOutNormalized),
        replace_param("w", lambda w: torch.randn(5, 3)),
    ),
    Scenario(
        "self_parameter_other_dtype",
        "self_attribute",
        "test_modules.py::test_to",
        module_builder(AccumulateInParamDtype),
        replace_param("w", lambda w: w.double()),
    ),
    Scenario(
        "self_buffer_other_dtype",
        "self_attribute",
        "test_modules.py::test_mark_static_with_freezing",
        module_builder(BufferDtype),
        mutate(lambda s: setattr(s.target, "ref", s.target.ref.double())),
    ),
    Scenario(
        "self_attribute_added",
        "self_attribute",
        "test_guard_manager.py::test_no_hasattr_guard",
        module_builder(OptionalExtra),
        mutate(lambda s: setattr(s.target, "extra", torch.ones(3))),
    ),
    Scenario(
        "self_attribute_deleted",
        "self_attribute",
        "test_guard_manager.py::test_no_hasattr_guard",
        module_builder(Temperature),
        mutate(lambda s: delattr(s.target, "temperature")),
    ),
    Scenario(
        "submodule_layernorm_eps",
        "self_attribute",
        "test_modules.py::test_guard_on_torch_nn_modules",
        module_builder(Normed),
        set_attr("norm.eps", 0.5),
    ),
    Scenario(
        "module_dict_key_added",
        "self_attribute",
        "test_modules.py::test_nn_moduledict_contains",
        module_builder(ModuleDictContains),
        mutate(lambda s: s.target.mods.__setitem__("b", Scale(3.0))),
    ),
    Scenario(
        "submodule_bias_set_to_none",
        "self_attribute",
        "test_modules.py::test_isnonelayer",
        module_builder(Linear),
        mutate(lambda s: setattr(s.target.lin, "bias", None)),
    ),
    Scenario(
        "self_config_object_attribute",
        "self_attribute",
        "test_modules.py::test_cfgmod",
        module_builder(CfgModule),
        mutate(lambda s: setattr(s.target.cfg, "count", 2)),
    ),
    Scenario(
        "self_class_attribute",
        "self_attribute",
        "test_modules.py::test_attr_precedence",
        class_attribute_module,
        mutate(lambda s: setattr(s.handles["cls"], "scale", 3.0)),
    ),
]

# -- modules passed as arguments ---------------------------------------------------------------


def normalized_by_fan_out(x: torch.Tensor, mod: nn.Linear) -> torch.Tensor:
    return mod(x) / mod.weight.shape[0]


def arg_module(make: Callable[[], nn.Module], fn: Callable[..., Any] = call_module) -> Callable[[], Setup]:
    def build() -> Setup:
        mod = make()
        return Setup(fn, (x23(), mod), handles={"mod": mod})

    return build


def on_arg(action: Callable[[Any], object]) -> Change:
    return mutate(lambda s: action(s.handles["mod"]))


def other_module(make: Callable[[], nn.Module]) -> Change:
    return mutate(lambda s: setattr(s, "args", (s.args[0], make())))


def patch_arg_forward(mod: nn.Module) -> None:
    mod.forward = types.MethodType(minus_hundred, mod)  # type: ignore[method-assign]


MODULE_ARGUMENTS = [
    Scenario(
        "arg_module_float_attribute",
        "module_argument",
        "test_modules.py::test_nn_module_setattr",
        arg_module(Scale),
        on_arg(lambda m: setattr(m, "scale", 3.0)),
    ),
    Scenario(
        "arg_module_forward_patched",
        "module_argument",
        "test_modules.py::test_monkeypatching_forward",
        arg_module(Scale),
        on_arg(patch_arg_forward),
    ),
    Scenario(
        "arg_module_other_instance_other_attribute",
        "module_argument",
        "test_modules.py::test_recompile_limit_on_freed_module",
        arg_module(Scale),
        other_module(lambda: Scale(3.0)),
    ),
    Scenario(
        "arg_module_other_instance_other_shape",
        "module_argument",
        "test_recompiles.py::test_dynamic_shape_parameter_recompile",
        arg_module(lambda: nn.Linear(3, 4), normalized_by_fan_out),
        other_module(lambda: nn.Linear(3, 5)),
    ),
    Scenario(
        "arg_module_submodule_replaced",
        "module_argument",
        "test_modules.py::test_module_setattr",
        arg_module(WithActivation),
        on_arg(lambda m: setattr(m, "act", nn.Tanh())),
    ),
    Scenario(
        "arg_module_training_flag",
        "module_argument",
        "test_recompiles.py::test_simple_module_recompile",
        arg_module(TrainOnly),
        on_arg(lambda m: m.eval()),
    ),
    Scenario(
        "arg_module_submodule_training_flag",
        "module_argument",
        "test_recompiles.py::test_simple_module_recompile",
        arg_module(lambda: Wrapper(TrainOnly())),
        on_arg(lambda m: m.inner.eval()),
        steady="documented:a submodule's own attributes are not in the per-call fingerprint (docs/footguns.md)",
    ),
    Scenario(
        "arg_module_other_class",
        "module_argument",
        "test_recompile_ux.py::test_mismatched_type",
        arg_module(nn.ReLU),
        other_module(nn.Tanh),
    ),
    Scenario(
        "arg_module_attribute_added",
        "module_argument",
        "test_guard_manager.py::test_no_hasattr_guard",
        arg_module(OptionalExtra),
        on_arg(lambda m: setattr(m, "extra", torch.ones(3))),
    ),
]

# -- Python values passed as arguments -----------------------------------------------------------


def plus_n(x: torch.Tensor, n: Any) -> torch.Tensor:
    return x + n


def bool_branch(flag: bool, y: torch.Tensor) -> torch.Tensor:
    return y * 2 if flag else y * y


def ones_from_list(xs: list[int]) -> torch.Tensor:
    return torch.ones(len(xs), xs[-1])


def scale_from_dict(x: torch.Tensor, cfg: dict[str, float]) -> torch.Tensor:
    return x * cfg["scale"]


def bias_if_present(x: torch.Tensor, extras: dict[str, torch.Tensor]) -> torch.Tensor:
    return x + extras["bias"] if "bias" in extras else x * 2


def reshape_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return x.reshape(shape) * 2


Affine = collections.namedtuple("Affine", ["scale", "offset"])


def affine(x: torch.Tensor, cfg: Any) -> torch.Tensor:
    return x * cfg.scale + cfg.offset


def scale_by_attribute(x: torch.Tensor, cfg: Any) -> torch.Tensor:
    return x * cfg.scale


@dataclasses.dataclass
class DataConf:
    scale: float


@dataclasses.dataclass(slots=True)
class SlotsConf:
    scale: float


def cast_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) * 2


def apply(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return fn(x) + 1


def scale_and_offset(x: torch.Tensor, **kw: float) -> torch.Tensor:
    return x * kw.get("scale", 1.0) + kw.get("offset", 0.0)


class Node:
    def __init__(self, child: Node | None = None, scale: float = 1.0) -> None:
        self.child = child
        self.scale = scale


def deep_scale(x: torch.Tensor, cfg: Node) -> torch.Tensor:
    node = cfg
    while node.child is not None:
        node = node.child
    return x * node.scale


class ListConf:
    def __init__(self) -> None:
        self.scales = [1.0, 2.0]


def list_attribute(x: torch.Tensor, cfg: ListConf) -> torch.Tensor:
    for s in cfg.scales:
        x = x * s + 1
    return x


class Scaler:
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def make_adder(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def add(x: torch.Tensor) -> torch.Tensor:
        return x + k

    return add


def closure_argument() -> Setup:
    k = 2

    def g(x: torch.Tensor) -> torch.Tensor:
        return x * k

    def rebind(value: int) -> None:
        nonlocal k
        k = value

    return Setup(apply, (x23(), g), handles={"rebind": rebind})


def bound_method_argument() -> Setup:
    obj = Scaler(2.0)
    return Setup(apply, (x23(), obj.scale), handles={"obj": obj})


def class_attribute_argument() -> Setup:
    class ClassConf:
        scale = 2.0

    return Setup(scale_by_attribute, (x23(), ClassConf()), handles={"cls": ClassConf})


def value_setup(fn: Callable[..., Any], *values: Any, **kwargs: Any) -> Callable[[], Setup]:
    """``fn(x, *values, **kwargs)``; each build gets its own deep copy of the values (a change may mutate them)."""
    return lambda: Setup(fn, (x23(), *copy.deepcopy(values)), kwargs=copy.deepcopy(kwargs))


def second_value(value: Any) -> Change:
    """The second call passes ``value`` in place of the first call's second argument."""
    return mutate(lambda s: setattr(s, "args", (s.args[0], value)))


def mutate_second(action: Callable[[Any], object]) -> Change:
    """The second call passes the same object, changed in place."""
    return mutate(lambda s: action(s.args[1]))


def deep_config() -> Node:
    return Node(Node(Node(Node(Node(scale=2.0)))))


def set_deepest(cfg: Node) -> None:
    node = cfg
    while node.child is not None:
        node = node.child
    node.scale = 3.0


PYTHON_VALUES = [
    Scenario(
        "int_argument",
        "python_value",
        "test_recompiles.py::test_no_recursive_compile_after_cache_limit_hit",
        value_setup(plus_n, 2),
        second_value(3),
    ),
    Scenario(
        "bool_argument",
        "python_value",
        "test_recompiles.py::test_recompiles_true_false_flop",
        lambda: Setup(bool_branch, (True, torch.randn(2))),
        mutate(lambda s: setattr(s, "args", (False, s.args[1]))),
    ),
    Scenario(
        "tensor_then_int",
        "python_value",
        "test_recompile_ux.py::test_mismatched_type",
        value_setup(plus_n, torch.ones(3)),
        second_value(1),
    ),
    Scenario(
        "int_list_length",
        "python_value",
        "test_recompile_ux.py::test_multiple_guard_fails_report_all",
        lambda: Setup(ones_from_list, ([4, 5, 6],)),
        set_args([7, 8]),
    ),
    Scenario(
        "dict_value",
        "python_value",
        "test_guard_manager.py::test_dict_version_guard",
        value_setup(scale_from_dict, {"scale": 2.0}),
        mutate_second(lambda d: d.__setitem__("scale", 3.0)),
    ),
    Scenario(
        "dict_keys",
        "python_value",
        "test_modules.py::test_nn_moduledict_contains",
        value_setup(bias_if_present, {"scale": torch.ones(3)}),
        second_value({"bias": torch.ones(3)}),
    ),
    Scenario(
        "tuple_of_ints",
        "python_value",
        "test_guard_manager.py::test_equals_guard",
        value_setup(reshape_to, (3, 2)),
        second_value((6,)),
    ),
    Scenario(
        "namedtuple_field",
        "python_value",
        "test_modules.py::test_lazy_module7",
        value_setup(affine, Affine(2.0, 1.0)),
        second_value(Affine(2.0, 3.0)),
    ),
    Scenario(
        "dataclass_field",
        "python_value",
        "test_functions.py::test_dataclass_factory",
        value_setup(scale_by_attribute, DataConf(2.0)),
        mutate_second(lambda c: setattr(c, "scale", 3.0)),
    ),
    Scenario(
        "slots_dataclass_field",
        "python_value",
        "test_functions.py::test_dataclass_factory",
        value_setup(scale_by_attribute, SlotsConf(2.0)),
        mutate_second(lambda c: setattr(c, "scale", 3.0)),
        steady="documented:__slots__ objects are opaque to the check (docs/footguns.md)",
    ),
    Scenario(
        "argument_class_attribute",
        "python_value",
        "test_modules.py::test_attr_precedence",
        class_attribute_argument,
        mutate(lambda s: setattr(s.handles["cls"], "scale", 3.0)),
        steady="documented:class attributes are not in the per-call fingerprint (docs/footguns.md)",
    ),
    Scenario(
        "nested_config_five_deep",
        "python_value",
        "test_modules.py::test_cfgmod",
        lambda: Setup(deep_scale, (x23(), deep_config())),
        mutate_second(set_deepest),
        steady="documented:objects deeper than MAX_OBJECT_DEPTH are opaque (docs/footguns.md)",
    ),
    Scenario(
        "config_list_attribute_appended",
        "python_value",
        "test_guard_manager.py::test_length_check_guard",
        lambda: Setup(list_attribute, (x23(), ListConf())),
        mutate_second(lambda c: c.scales.append(3.0)),
    ),
    Scenario(
        "dtype_argument",
        "python_value",
        "test_functions.py::test_func_default_torch_args",
        value_setup(cast_to, torch.float32),
        second_value(torch.float64),
    ),
    Scenario(
        "partial_keyword_changed",
        "python_value",
        "test_functions.py::test_partials_recompilation",
        value_setup(apply, functools.partial(torch.mul, other=2.0)),
        second_value(functools.partial(torch.mul, other=3.0)),
    ),
    Scenario(
        "new_closure_function_argument",
        "python_value",
        "test_recompiles.py::test_automatic_dynamic_on_closed_ints",
        lambda: Setup(apply, (x23(), make_adder(2))),
        mutate(lambda s: setattr(s, "args", (s.args[0], make_adder(3)))),
    ),
    Scenario(
        "function_argument_closure_cell_rebound",
        "python_value",
        "test_recompiles.py::test_automatic_dynamic_on_closed_ints",
        closure_argument,
        rebind_cell(3),
    ),
    Scenario(
        "bound_method_argument_attribute",
        "python_value",
        "test_modules.py::test_udo_instance_method_as_hook",
        bound_method_argument,
        set_attr("factor", 3.0, handle="obj"),
    ),
    Scenario(
        "kwargs_keys",
        "python_value",
        "test_recompile_ux.py::test_multiple_guard_fails_report_all",
        value_setup(scale_and_offset, scale=2.0),
        mutate(lambda s: setattr(s, "kwargs", {"offset": 1.0})),
    ),
]


# -- globals the function reads ----------------------------------------------------------------

G_INT = 2
G_W = torch.ones(3)
G_ACT: Callable[[torch.Tensor], torch.Tensor] = torch.relu
G_MOD = Scale(2.0)
G_CFG = Config(2.0)
G_TABLE = {"scale": 2.0}


def read_int(x: torch.Tensor) -> torch.Tensor:
    return x * G_INT


def read_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.sum(-1, keepdim=True) * G_W / G_W.shape[0]


def read_function(x: torch.Tensor) -> torch.Tensor:
    return G_ACT(x) + 1


def read_module(x: torch.Tensor) -> torch.Tensor:
    return G_MOD(x) + 1


def read_config(x: torch.Tensor) -> torch.Tensor:
    return x * G_CFG.scale


def read_table(x: torch.Tensor) -> torch.Tensor:
    return x * G_TABLE["scale"]


def fresh_globals(fn: Callable[..., Any]) -> Callable[[], Setup]:
    """Each mode starts from the same globals (the objects a change mutates are rebuilt)."""

    def build() -> Setup:
        global G_MOD, G_CFG, G_TABLE
        G_MOD, G_CFG, G_TABLE = Scale(2.0), Config(2.0), {"scale": 2.0}
        return Setup(fn, (x23(),))

    return build


GLOBALS = [
    Scenario(
        "global_int",
        "global",
        "test_modules.py::test_globals_change_in_other_file",
        fresh_globals(read_int),
        set_global("G_INT", 3),
    ),
    Scenario(
        "global_tensor_other_shape",
        "global",
        "test_recompiles.py::test_aliasing_guard_failures_with_globals",
        fresh_globals(read_tensor),
        set_global("G_W", torch.full((5,), 0.5)),
    ),
    Scenario(
        "global_function_swapped",
        "global",
        "test_modules.py::test_fnmember",
        fresh_globals(read_function),
        set_global("G_ACT", torch.tanh),
    ),
    Scenario(
        "global_module_attribute",
        "global",
        "test_modules.py::test_guard_on_torch_nn_modules",
        fresh_globals(read_module),
        mutate(lambda s: setattr(G_MOD, "scale", 3.0)),
    ),
    Scenario(
        "global_object_attribute",
        "global",
        "test_modules.py::test_cfgmod",
        fresh_globals(read_config),
        mutate(lambda s: setattr(G_CFG, "scale", 3.0)),
    ),
    Scenario(
        "global_dict_entry",
        "global",
        "test_guard_manager.py::test_dict_version_guard",
        fresh_globals(read_table),
        mutate(lambda s: G_TABLE.__setitem__("scale", 3.0)),
    ),
]


# -- dynamic dims crossing a branch; plain tensor properties -------------------------------------


def size_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if x.size()[0] >= 4 else x * 100


def size_is_two(x: torch.Tensor) -> torch.Tensor:
    return x + 1 if x.shape[0] == 2 else x * 2


def longer_branch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.sum(0) * 2 if x.size(0) > y.size(0) else y.sum(0) - 1


def numel_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if x.numel() > 8 else x - 1


def times_first_dim(x: torch.Tensor) -> torch.Tensor:
    return x * x.shape[0]


def ones_setup(fn: Callable[..., Any], *shapes: tuple[int, ...]) -> Callable[[], Setup]:
    return lambda: Setup(fn, tuple(torch.randn(*shape) for shape in shapes))


def new_shapes(*shapes: tuple[int, ...]) -> Change:
    return mutate(lambda s: setattr(s, "args", tuple(torch.randn(*shape) for shape in shapes)))


def new_args(make: Callable[[Setup], tuple[Any, ...]]) -> Change:
    return mutate(lambda s: setattr(s, "args", make(s)))


def inference_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.randn(*shape)


SHAPES = [
    Scenario(
        "dynamic_size_crosses_branch",
        "dynamic_shape",
        "vllm tests/compile/test_wrapper.py::test_torch_compile_wrapper",
        ones_setup(size_branch, (4,)),
        new_shapes((3,)),
        dynamic={"x": 0},
    ),
    Scenario(
        "dynamic_two_sizes_compared",
        "dynamic_shape",
        "test_recompiles.py::test_automatic_dynamic_reduce_recompiles",
        ones_setup(longer_branch, (4, 3), (3, 3)),
        new_shapes((3, 3), (4, 3)),
        dynamic={"x": 0, "y": 0},
    ),
    Scenario(
        "dynamic_numel_branch",
        "dynamic_shape",
        "test_recompiles.py::test_automatic_dynamic_reduce_recompiles",
        ones_setup(numel_branch, (3, 3)),
        new_shapes((2, 3)),
        dynamic={"x": (0, 1)},
    ),
    Scenario(
        "dynamic_size_one",
        "dynamic_shape",
        "test_recompiles.py::test_automatic_dynamic_shapes_mark_as_unbacked",
        ones_setup(times_first_dim, (4, 2)),
        new_shapes((1, 2)),
        dynamic={"x": 0},
    ),
    Scenario(
        "static_size_branch",
        "tensor",
        "vllm tests/compile/test_wrapper.py::test_fx_graph_fake_backend_tracks_dynamo_recompilation",
        ones_setup(size_is_two, (2,)),
        new_shapes((3,)),
    ),
    Scenario(
        "tensor_size",
        "tensor",
        "test_recompile_ux.py::test_verbose_tensor_check",
        ones_setup(times_first_dim, (3, 4, 5)),
        new_shapes((2, 4, 5)),
    ),
    Scenario(
        "tensor_stride",
        "tensor",
        "test_recompile_ux.py::test_verbose_tensor_check",
        ones_setup(times_first_dim, (3, 4, 5)),
        new_args(lambda s: (s.args[0].clone().as_strided((3, 4, 5), (1, 3, 12)),)),
    ),
    Scenario(
        "tensor_requires_grad",
        "tensor",
        "test_recompile_ux.py::test_verbose_tensor_check",
        ones_setup(times_first_dim, (3, 4)),
        new_args(lambda s: (s.args[0].clone().requires_grad_(True),)),
    ),
    Scenario(
        "inference_tensor",
        "tensor",
        "test_misc.py::test_inference_mode",
        ones_setup(times_first_dim, (3, 4)),
        new_args(lambda s: (inference_tensor((3, 4)),)),
    ),
]


# -- hooks on the compiled module ----------------------------------------------------------------


def times_ten_hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output * 10


def times_ten_pre_hook(module: nn.Module, args: Any) -> tuple[torch.Tensor, ...]:
    return (args[0] * 10,)


def hooked_module() -> Setup:
    setup = module_setup(ScaledLinear())
    setup.handles["hook"] = setup.target.register_forward_hook(times_ten_hook)
    return setup


HOOKS = [
    Scenario(
        "forward_hook_added",
        "hooks",
        "test_modules.py::test_hooks_outer",
        module_builder(ScaledLinear),
        mutate(lambda s: s.target.register_forward_hook(times_ten_hook)),
    ),
    Scenario(
        "forward_pre_hook_added",
        "hooks",
        "test_modules.py::test_hooks_outer",
        module_builder(ScaledLinear),
        mutate(lambda s: s.target.register_forward_pre_hook(times_ten_pre_hook)),
    ),
    Scenario(
        "forward_hook_removed",
        "hooks",
        "test_modules.py::test_hooks_outer",
        hooked_module,
        mutate(lambda s: s.handles["hook"].remove()),
    ),
]


SCENARIOS = [
    *GLOBAL_STATE,
    *CLOSURES,
    *ALIASING,
    *SELF_ATTRIBUTES,
    *MODULE_ARGUMENTS,
    *PYTHON_VALUES,
    *GLOBALS,
    *SHAPES,
    *HOOKS,
]


# -- the tests -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    """Whatever a scenario does, the next test starts from torch's usual global state."""
    grad = torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    dtype = torch.get_default_dtype()
    precision = torch.get_float32_matmul_precision()
    tf32 = allow_tf32()
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_default_dtype(dtype)
        torch.set_default_device(None)
        torch.set_float32_matmul_precision(precision)
        set_allow_tf32(tf32)


def scenario_ids(scenario: Scenario) -> str:
    return scenario.name


def test_defaults_scenarios_change_the_function_compile_once_wraps() -> None:
    """The premise of the defaults rows: the original function is ``__wrapped__`` and the
    compiled function shows its defaults, so changing them there is changing them for both."""
    setup = defaults_int()
    compiled = compile_once(backend="eager")(setup.target)
    assert compiled.__wrapped__ is setup.target
    setup.target.__defaults__ = (3,)
    assert compiled.__defaults__ == (3,)


def test_names_are_unique() -> None:
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_ids)
def test_eager_reference(scenario: Scenario) -> None:
    """The reference is deterministic (fresh objects per mode), and the change shows in it:
    code compiled for the first call would not give it by accident."""
    first = observe(scenario, eager)
    assert same(first, observe(scenario, eager))
    assert not same(first, observe(scenario, eager, changed=False))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_ids)
def test_stock_torch_compile_recompiles(scenario: Scenario) -> None:
    """Dynamo's guards matter here: stock torch.compile compiles again (or raises) on the second call."""
    frames, error, got = stock_frames(scenario)
    if error is None:
        assert frames == 2, f"stock torch.compile compiled {frames} frame(s) over both calls"
        assert same(got, observe(scenario, eager)), "stock torch.compile disagrees with eager"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_ids)
def test_compile_once_unchanged_call_runs_the_compiled_code(scenario: Scenario) -> None:
    """The control: the same second call without the change stays on the first specialization."""
    stats: list[Any] = []
    got = observe(scenario, with_compile_once(scenario, "eager", "raise", stats), changed=False)
    assert stats[0].stats.compiles == 1
    assert same(got, observe(scenario, eager, changed=False))


@pytest.mark.parametrize("on_mismatch", ["raise", "recompile"])
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_ids)
def test_compile_once(scenario: Scenario, backend: str, on_mismatch: str) -> None:
    """GuardMismatchError (under "raise") or eager's answer; never another answer without an error,
    except what docs/footguns.md documents (pinned as wrong, so that a fix shows)."""
    result = outcome(scenario, backend, on_mismatch)
    if scenario.expected.startswith("documented:"):
        assert result.kind == "SILENT WRONG", f"documented as unchecked, but {result}"
        return
    allowed = {"caught", "recompiled", "equal"} if on_mismatch == "raise" else {"recompiled", "equal"}
    assert result.kind in allowed, f"{result.kind}: {result.detail}"


@pytest.mark.parametrize("on_mismatch", ["raise", "recompile"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_ids)
def test_compile_once_steady(scenario: Scenario, on_mismatch: str) -> None:
    """The same promise when the change comes after a call that verified the first one's
    fingerprint: then only the per-call check (key, tensor check, global state, fingerprint)
    stands between the change and the compiled code."""
    result = outcome(scenario, "eager", on_mismatch, steady=True)
    expected = scenario.steady or scenario.expected
    if audit_from_env() and (expected.startswith("documented:") or scenario.missed):
        # Under the audit every change the per-call path misses is a GuardAuditError instead.
        assert result.kind == "audited", f"a miss the audit should have caught, but {result}"
        return
    if expected.startswith("documented:"):
        assert result.kind == "SILENT WRONG", f"documented as unchecked after a verified call, but {result}"
        return
    allowed = {"caught", "recompiled", "equal"} if on_mismatch == "raise" else {"recompiled", "equal"}
    assert result.kind in allowed, f"{result.kind}: {result.detail}"
