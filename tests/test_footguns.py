"""Every sharp edge of each guard policy, pinned. docs/footguns.md lists the same cases.

Under guards="none" the silently-wrong cases are shown as silent: these tests assert the WRONG
answer on purpose, so that a change in behaviour is noticed. Under guards="inputs" each is an
error, except what its per-call fingerprint does not see (``nocompile._watch``: a plain attribute
of a submodule, a class attribute of an argument object), pinned as such.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nocompile import GuardMismatchError, compile_once

OFFSET = 1.0


def read_global(x: torch.Tensor) -> torch.Tensor:
    return x + OFFSET


def times_k(x: torch.Tensor, k: int) -> torch.Tensor:
    return x * k


class Dropper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if self.training else x


def first_row_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sum(0)


# -- guards="none": silent ------------------------------------------------------------------


def test_none_other_shape_runs_the_old_graph_silently_or_crashes() -> None:
    f = compile_once(backend="eager", guards="none")(first_row_sum)
    f(torch.ones(2, 3))
    out = f(torch.ones(4, 3))  # eager backend: the ops adapt; inductor kernels would not
    torch.testing.assert_close(out, torch.full((3,), 4.0))


def test_none_python_scalar_is_baked_in_silently() -> None:
    f = compile_once(backend="eager", guards="none")(times_k)
    x = torch.ones(2)
    f(x, 2)
    torch.testing.assert_close(f(x, 5), x * 2)  # WRONG on purpose: 5 ignored


def test_none_training_flag_is_baked_in_silently() -> None:
    module = Dropper().eval()
    f = compile_once(backend="eager", guards="none")(Dropper.forward).__get__(module)
    x = torch.ones(2)
    f(x)
    module.train()
    torch.testing.assert_close(f(x), x)  # WRONG on purpose: eval branch although training


def test_none_grad_mode_is_baked_in_silently() -> None:
    f = compile_once(backend="aot_eager", guards="none")(lambda x: x * 2)
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        f(w)
    out = f(w)  # grad enabled now, but the graph was compiled without autograd
    assert not out.requires_grad  # WRONG on purpose: no graph to backpropagate through


def test_none_inference_tensor_runs_the_old_graph() -> None:
    f = compile_once(backend="eager", guards="none")(first_row_sum)
    f(torch.ones(2, 3))
    with torch.inference_mode():
        x = torch.ones(2, 3)
    torch.testing.assert_close(f(x), torch.full((3,), 2.0))  # no check: it just runs


def test_none_autocast_after_compiling_is_silently_ignored_by_inductor() -> None:
    f = compile_once(backend="inductor", guards="none")(lambda x, w: (x @ w).relu() + 1)
    x, w = torch.randn(3, 4), torch.randn(4, 4)
    f(x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = (x @ w).relu() + 1
        out = f(x, w)
    assert eager.dtype == torch.bfloat16
    assert out.dtype == torch.float32  # WRONG on purpose: the kernels ignore autocast


def test_none_changed_global_is_not_seen() -> None:
    global OFFSET
    f = compile_once(backend="eager", guards="none")(read_global)
    x = torch.zeros(1)
    f(x)
    OFFSET = 10.0
    try:
        torch.testing.assert_close(f(x), torch.ones(1))  # WRONG on purpose: old global baked in
    finally:
        OFFSET = 1.0


# -- guards="inputs": an error, or documented as unchecked ---------------------------------


def test_inputs_other_shape_raises() -> None:
    f = compile_once(backend="eager")(first_row_sum)
    f(torch.ones(2, 3))
    with pytest.raises(GuardMismatchError):
        f(torch.ones(4, 3))


def test_inputs_python_scalar_raises() -> None:
    f = compile_once(backend="eager")(times_k)
    f(torch.ones(2), 2)
    with pytest.raises(GuardMismatchError, match="k: value"):
        f(torch.ones(2), 5)


def test_inputs_training_flag_raises() -> None:
    module = Dropper().eval()
    f = compile_once(backend="eager")(Dropper.forward).__get__(module)
    f(torch.ones(2))
    module.train()
    with pytest.raises(GuardMismatchError, match="self: training"):
        f(torch.ones(2))


def test_inputs_grad_mode_raises() -> None:
    f = compile_once(backend="aot_eager")(lambda x: x * 2)
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        f(w)
    with pytest.raises(GuardMismatchError, match="grad_enabled"):
        f(w)


def test_inputs_changed_global_is_caught() -> None:
    """The function's globals are watched: a global changed after compiling is a mismatch, also
    after calls that verified the first value."""
    global OFFSET
    f = compile_once(backend="eager")(read_global)
    x = torch.zeros(1)
    f(x)
    f(x)  # verified: the fast path from here on
    OFFSET = 10.0
    try:
        with pytest.raises(GuardMismatchError, match=r"G\['OFFSET'\] == 1.0"):
            f(x)
    finally:
        OFFSET = 1.0
    torch.testing.assert_close(f(x), torch.ones(1))


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Dropper()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_inputs_submodule_training_flag_set_alone_is_caught() -> None:
    """``model.inner.train()`` alone, after a verified call, leaves self's own dicts as they were;
    the trace watch sees it (the trace read ``inner.training``). Once a documented miss."""
    module = Outer().eval()
    f = compile_once(backend="eager")(Outer.forward).__get__(module)
    f(torch.ones(2))
    f(torch.ones(2))  # verified
    module.inner.train()  # self.training unchanged, self.__dict__ untouched
    with pytest.raises(GuardMismatchError, match="training"):
        f(torch.ones(2))


def test_inputs_submodule_change_is_caught_when_anything_watched_changes_with_it() -> None:
    """A change the fingerprint does not see is still caught when the next call's fingerprint is
    new for another reason (here: the first call after compiling is always verified)."""
    module = Outer().eval()
    f = compile_once(backend="eager")(Outer.forward).__get__(module)
    f(torch.ones(2))
    module.inner.train()
    with pytest.raises(GuardMismatchError, match=r"_modules\['inner'\]\.training == False"):
        f(torch.ones(2))


@pytest.mark.unaudited(reason="a class attribute of an argument object is not in the fingerprint (docs/footguns.md)")
def test_inputs_class_attributes_of_argument_objects_are_unchecked() -> None:
    # Instance attributes of an argument object are watched (tests/test_object_arguments.py);
    # class attributes, properties and __slots__ are not, once a call verified them.
    class Config:
        scale = 2.0

    cfg = Config()
    f = compile_once(backend="eager")(lambda x, c: x * c.scale)
    f(torch.ones(1), cfg)
    f(torch.ones(1), cfg)  # verified
    Config.scale = 3.0
    torch.testing.assert_close(f(torch.ones(1), cfg), torch.full((1,), 2.0))  # WRONG on purpose


class WithInner(nn.Module):
    def __init__(self, guards: str) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.forward = compile_once(backend="eager", guards=guards)(self.forward)  # type: ignore[method-assign]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("guards", ["none", "inputs"])
def test_a_hook_added_to_a_submodule_after_compiling_does_not_run(guards: str) -> None:
    """The submodule's forward was inlined into the graph; Dynamo's hook guards were dropped."""
    module, x = WithInner(guards), torch.ones(1, 2)
    module(x)
    seen: list[int] = []
    module.inner.register_forward_hook(lambda *_: seen.append(1))
    module(x)
    assert seen == []  # WRONG on purpose: eager would run the hook


def test_a_hook_on_the_compiled_module_itself_runs() -> None:
    """Module.__call__ runs the compiled module's own hooks around the compiled forward."""
    module, x = WithInner("none"), torch.ones(1, 2)
    module(x)
    seen: list[int] = []
    module.register_forward_hook(lambda *_: seen.append(1))
    module(x)
    assert seen == [1]


def test_stock_torch_compile_and_dynamo_policy_miss_it_too() -> None:
    """torch._dynamo.config.skip_nnmodule_hook_guards is True by default: no guard, no recompile."""
    x = torch.ones(1, 2)
    module = WithInner("dynamo")
    plain = nn.Sequential(nn.Linear(2, 2))
    stock = torch.compile(plain, backend="eager")
    module(x)
    stock(x)
    seen: list[int] = []
    module.inner.register_forward_hook(lambda *_: seen.append(1))
    plain[0].register_forward_hook(lambda *_: seen.append(2))
    module(x)
    stock(x)
    assert seen == []


def test_dynamo_policy_sees_everything_dynamo_guards() -> None:
    global OFFSET
    f = compile_once(backend="eager", guards="dynamo")(read_global)
    x = torch.zeros(1)
    f(x)
    OFFSET = 10.0
    try:
        torch.testing.assert_close(f(x), torch.full((1,), 10.0))
    finally:
        OFFSET = 1.0
