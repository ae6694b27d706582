"""compile_once on nn.Module.forward: per-instance and shared states, weights, copies, lifetime."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest
import torch
from torch import nn

from models import Block, SharedBlock, eager_block
from nocompile import CompileStats, compile_once


def test_two_instances_compile_separately_and_match_eager() -> None:
    a, b = Block(), Block()
    x = torch.randn(2, 8)
    for _ in range(3):
        torch.testing.assert_close(a(x), eager_block(a, x))
        torch.testing.assert_close(b(x), eager_block(b, x))
    assert a.forward.stats.compiles == 1 and a.forward.stats.calls == 3
    assert b.forward.stats.compiles == 1
    assert not torch.allclose(a(x), b(x))  # different weights, different results: no state mix-up


def test_class_level_stats_sum_the_instances() -> None:
    class Local(nn.Module):
        @compile_once(backend="eager", guards="none")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    a, b = Local(), Local()
    a(torch.ones(1))
    b(torch.ones(1))
    b(torch.ones(1))
    assert Local.forward.stats == CompileStats(
        calls=3,
        compiles=2,
        compile_seconds=a.forward.stats.compile_seconds + b.forward.stats.compile_seconds,
        specializations=2,
    )
    Local.forward.reset()
    assert a.forward.stats == CompileStats() and b.forward.stats == CompileStats()


def test_per_instance_false_compiles_once_for_all_instances() -> None:
    blocks = [SharedBlock() for _ in range(3)]
    SharedBlock.forward.reset()
    x = torch.randn(4, 8)
    for block in blocks:
        torch.testing.assert_close(block(x), eager_block(block, x))
    assert SharedBlock.forward.stats.compiles == 1
    assert SharedBlock.forward.stats.calls == 3


def test_in_place_parameter_updates_are_seen() -> None:
    block = Block()
    x = torch.randn(2, 8)
    block(x)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.5)
    loss = eager_block(block, x).square().sum()
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(block(x), eager_block(block, x))

    other = Block()
    block.load_state_dict(other.state_dict())
    torch.testing.assert_close(block(x), eager_block(other, x))

    with torch.no_grad():
        block.linear.weight.zero_()
    torch.testing.assert_close(block(x), eager_block(block, x))
    assert block.forward.stats.compiles == 1


def test_replaced_parameter_object_is_seen() -> None:
    block = Block()
    x = torch.randn(2, 8)
    block(x)
    block.linear.bias = nn.Parameter(torch.full((8,), 3.0))
    torch.testing.assert_close(block(x), eager_block(block, x))


def test_training_step_gradients_match_eager() -> None:
    block, twin = Block(), Block()
    twin.load_state_dict(block.state_dict())
    x = torch.randn(3, 8)
    for _ in range(2):
        block(x).sum().backward()
        eager_block(twin, x).sum().backward()
    for p, q in zip(block.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_class_forward_code_is_never_changed() -> None:
    descriptor = Block.__dict__["forward"]
    code_before = descriptor.__wrapped__.__code__
    block = Block()
    block(torch.randn(1, 8))
    block(torch.randn(1, 8))
    assert Block.__dict__["forward"] is descriptor
    assert descriptor.__wrapped__.__code__ is code_before


def test_instance_is_garbage_collected() -> None:
    block = Block()
    block(torch.randn(1, 8))
    block(torch.randn(1, 8))
    ref = weakref.ref(block)
    del block
    gc.collect()
    assert ref() is None


def test_shared_state_does_not_keep_instances_alive() -> None:
    block = SharedBlock()
    block(torch.randn(1, 8))
    ref = weakref.ref(block)
    del block
    gc.collect()
    assert ref() is None


def test_deepcopy_gets_its_own_state() -> None:
    block = Block()
    x = torch.randn(2, 8)
    block(x)
    clone = copy.deepcopy(block)
    assert clone.forward.stats == CompileStats()  # starts uncompiled
    torch.testing.assert_close(clone(x), block(x))
    assert clone.forward.stats.compiles == 1
    with torch.no_grad():
        clone.linear.weight.add_(1.0)
    torch.testing.assert_close(clone(x), eager_block(clone, x))
    torch.testing.assert_close(block(x), eager_block(block, x))  # original unaffected


def test_pickle_round_trip() -> None:
    block = Block()
    x = torch.randn(2, 8)
    expected = block(x)
    restored = pickle.loads(pickle.dumps(block))
    assert restored.forward.stats == CompileStats()
    torch.testing.assert_close(restored(x), expected)
    assert restored.forward.stats.compiles == 1


def test_shallow_copy_shares_the_state_like_it_shares_the_parameters() -> None:
    block = Block()
    x = torch.randn(1, 8)
    block(x)
    twin = copy.copy(block)  # shares __dict__ values: the same _parameters, the same state
    torch.testing.assert_close(twin(x), eager_block(block, x))
    assert twin.forward.stats.compiles == 1 and twin.forward.stats.calls == 2


def test_bound_method_looks_like_the_original() -> None:
    block = Block()
    assert block.forward.__name__ == "forward"
    assert block.forward.__wrapped__ is Block.__dict__["forward"].__wrapped__
    assert "Block.forward" in repr(block.forward)


def test_slots_class_with_per_instance_gets_clear_error() -> None:
    class Slotted:
        __slots__ = ("k",)

        def __init__(self) -> None:
            self.k = 2

        @compile_once(backend="eager")
        def scale(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(TypeError, match=r"per_instance=False"):
        Slotted().scale(torch.ones(1))


def test_plain_class_method_with_per_instance_false() -> None:
    class Scaler:
        __slots__ = ()

        @compile_once(backend="eager", guards="none", per_instance=False)
        def scale(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    torch.testing.assert_close(Scaler().scale(torch.ones(2)), torch.full((2,), 2.0))


def test_module_inside_outer_torch_compile_is_inlined() -> None:
    block = Block()
    outer = nn.Sequential(block, nn.ReLU())
    compiled = torch.compile(outer, backend="eager", fullgraph=True)
    x = torch.randn(2, 8)
    torch.testing.assert_close(compiled(x), torch.relu(eager_block(block, x)))
    assert block.forward.stats.compiles == 0


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_override_calling_super_forward_compiles_with_class_cell() -> None:
    class Child(_Base):
        @compile_once(backend="eager", guards="none")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2  # zero-arg super(): a __class__ closure cell

    child = Child()
    x = torch.randn(1, 4)
    expected = child.linear(x) * 2
    torch.testing.assert_close(child(x), expected)
    torch.testing.assert_close(child(x), expected)
    assert Child.forward.stats.compiles == 1


def test_super_call_into_a_decorated_base_traces_the_base_original() -> None:
    """Dynamo traces super().forward into a base whose forward is itself decorated: the base's
    compile_once state passes for its original function (inspect and Dynamo see its code), so
    the child's graph inlines the base's undecorated forward."""

    class DecoratedBase(_Base):
        @compile_once(backend="eager", guards="none")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    class Child(DecoratedBase):
        @compile_once(backend="eager", guards="none")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    child, x = Child(), torch.randn(1, 4)
    for _ in range(2):
        torch.testing.assert_close(child(x), child.linear(x) * 2)
    assert child.forward.stats.compiles == 1
    assert DecoratedBase.forward.stats.compiles == 0  # inlined into the child's graph, never run on its own
