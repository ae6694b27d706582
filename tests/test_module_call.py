"""The module-call slot: ``module(x)`` enters the compiled forward without ``Module._call_impl``.

Pins that every case ``_call_impl`` handles beyond ``self.forward(*args)`` (hooks of the module
and of the process, an instance-level ``forward``, a JIT trace) still goes through it, and that
the slot never changes what a call computes, who owns it, or how long the module lives.
"""

from __future__ import annotations

import copy
import functools
import gc
import inspect
import pickle
import re
import weakref
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_module

from models import Block, SharedBlock, eager_block
from nocompile import compile_once
from nocompile._module_call import CALL_SLOT, GLOBAL_HOOK_NAMES, MODULE_HOOK_ATTRS


def _has_slot(module: nn.Module) -> bool:
    slot = module.__dict__.get(CALL_SLOT)
    return isinstance(slot, functools.partial) and slot.func.__module__ == "nocompile._module_call"


@pytest.fixture
def block() -> Block:
    block = Block()
    block(torch.randn(2, 8))  # compiles, and installs the slot
    return block


def test_hook_names_are_the_ones_call_impl_checks() -> None:
    """If a torch release adds a hook kind to _call_impl's shortcut, this fails instead of skipping it."""
    source = inspect.getsource(nn.Module._call_impl)
    condition = re.search(r"if not \((.*?)\):", source, re.S)
    assert condition is not None, "Module._call_impl no longer starts with its no-hooks shortcut"
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", condition.group(1))) - {"or"}
    assert names == {f"self.{a}" for a in MODULE_HOOK_ATTRS} | set(GLOBAL_HOOK_NAMES)
    assert "_get_tracing_state()" in source.split("if not (")[0]


def test_the_first_call_installs_the_slot_and_calls_match_eager(block: Block) -> None:
    assert _has_slot(block)
    x = torch.randn(2, 8)
    torch.testing.assert_close(block(x), eager_block(block, x))
    assert block.forward.stats.calls == 2 and block.forward.stats.compiles == 1


def _register(kind: str, block: Block, seen: list[str]) -> Any:
    def hook(*args: Any) -> None:
        seen.append(kind)

    registrations = {
        "forward_pre": lambda: block.register_forward_pre_hook(hook),
        "forward": lambda: block.register_forward_hook(hook),
        "backward_pre": lambda: block.register_full_backward_pre_hook(hook),
        "backward": lambda: block.register_full_backward_hook(hook),
        "global_forward_pre": lambda: module_module.register_module_forward_pre_hook(hook),
        "global_forward": lambda: module_module.register_module_forward_hook(hook),
        "global_backward_pre": lambda: module_module.register_module_full_backward_pre_hook(hook),
        "global_backward": lambda: module_module.register_module_full_backward_hook(hook),
    }
    return registrations[kind]()


@pytest.mark.parametrize(
    "kind",
    [
        "forward_pre",
        "forward",
        "backward_pre",
        "backward",
        "global_forward_pre",
        "global_forward",
        "global_backward_pre",
        "global_backward",
    ],
)
def test_each_kind_of_hook_added_later_still_runs(block: Block, kind: str) -> None:
    x = torch.randn(2, 8, requires_grad=True)
    seen: list[str] = []
    handle = _register(kind, block, seen)
    try:
        out = block(x)
        out.sum().backward()
    finally:
        handle.remove()
    assert kind in seen
    torch.testing.assert_close(out, eager_block(block, x))
    seen.clear()
    block(x).sum().backward()
    assert seen == []  # removed: back on the slot
    assert block.forward.stats.compiles == 1


def test_an_instance_level_forward_wins(block: Block) -> None:
    block.forward = lambda x: x * 3  # type: ignore[method-assign]  # as accelerate's hooks do
    x = torch.randn(2, 8)
    torch.testing.assert_close(block(x), x * 3)
    del block.forward
    torch.testing.assert_close(block(x), eager_block(block, x))


def test_a_subclass_with_its_own_forward_gets_no_slot() -> None:
    class Child(Block):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    child, x = Child(), torch.randn(2, 8)
    torch.testing.assert_close(child(x), eager_block(child, x) * 2)
    torch.testing.assert_close(child(x), eager_block(child, x) * 2)
    assert not _has_slot(child)


def test_a_decorated_method_other_than_forward_gets_no_slot() -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - 1

        @compile_once(backend="eager")
        def step(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    net, x = Net(), torch.randn(3)
    torch.testing.assert_close(net.step(x), x + 1)
    torch.testing.assert_close(net(x), x - 1)
    assert not _has_slot(net)


def test_module_compile_is_never_overwritten_and_may_replace_the_slot() -> None:
    before = Block()
    before.compile(backend="eager")
    x = torch.randn(2, 8)
    torch.testing.assert_close(before(x), eager_block(before, x))
    assert not _has_slot(before) and before.__dict__[CALL_SLOT] is not None

    after = Block()
    after(x)
    after.compile(backend="eager")
    assert not _has_slot(after)
    torch.testing.assert_close(after(x), eager_block(after, x))


def test_shared_state_installs_the_slot_on_every_instance() -> None:
    blocks = [SharedBlock() for _ in range(2)]
    x = torch.randn(2, 8)
    for b in blocks:
        torch.testing.assert_close(b(x), eager_block(b, x))
        torch.testing.assert_close(b(x), eager_block(b, x))
    assert all(_has_slot(b) for b in blocks)


def test_copies_and_pickles_never_carry_the_slot(block: Block) -> None:
    x = torch.randn(2, 8)
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert CALL_SLOT not in clone.__dict__  # Module.__getstate__ drops it
        torch.testing.assert_close(clone(x), eager_block(clone, x))
        assert clone.forward.stats.compiles == 1  # its own compile
        with torch.no_grad():
            clone.linear.weight.zero_()  # the copy's weights, not the original's
        torch.testing.assert_close(clone(x), eager_block(clone, x))
    assert block.forward.stats.calls == 1


def test_the_slot_holds_no_reference_to_its_module() -> None:
    """Freed by reference counting alone: no cycle through the slot."""
    block = Block()
    block(torch.randn(1, 8))
    assert _has_slot(block)
    ref = weakref.ref(block)
    gc.disable()
    try:
        del block
        assert ref() is None
    finally:
        gc.enable()


def test_an_outer_torch_compile_traces_through_the_slot(block: Block) -> None:
    outer = torch.compile(nn.Sequential(block, nn.ReLU()), backend="eager", fullgraph=True)
    x = torch.randn(2, 8)
    for _ in range(3):
        torch.testing.assert_close(outer(x), torch.relu(eager_block(block, x)))
    assert block.forward.stats.compiles == 1  # inlined into the outer graph, not run compiled


def test_a_jit_trace_in_progress_goes_through_call_impl(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    import nocompile._module_call

    calls: list[int] = []
    call_impl = nn.Module._call_impl

    def recording(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return call_impl(self, *args, **kwargs)

    monkeypatch.setattr(Block, "_call_impl", recording)
    x = torch.randn(2, 8)
    block(x)
    assert calls == []  # the slot
    monkeypatch.setattr(nocompile._module_call, "_tracing_state", lambda: object())
    torch.testing.assert_close(block(x), eager_block(block, x))
    assert calls == [1]
