"""Concurrent first calls compile exactly once; concurrent fast-path calls stay correct."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from models import Block, SharedBlock, eager_block
from nocompile import compile_once

THREADS = 8


def _run_together(work: Callable[[int], object], n: int = THREADS) -> list[object]:
    """Start ``n`` threads that call ``work(i)`` at the same moment."""
    barrier = threading.Barrier(n)

    def start(i: int) -> object:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(start, range(n)))


def test_concurrent_first_calls_compile_exactly_once() -> None:
    @compile_once(backend="eager", guards="none")
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 3

    inputs = [torch.randn(4) for _ in range(THREADS)]
    results = _run_together(lambda i: f(inputs[i]))
    assert f.stats.compiles == 1
    for x, out in zip(inputs, results, strict=True):
        torch.testing.assert_close(out, torch.tanh(x) * 3)


def test_concurrent_first_calls_on_one_instance_compile_once() -> None:
    block = Block()
    x = torch.randn(2, 8)
    results = _run_together(lambda i: block(x))
    assert block.forward.stats.compiles == 1
    for out in results:
        torch.testing.assert_close(out, eager_block(block, x))


def test_concurrent_fast_path_calls_same_and_different_instances() -> None:
    blocks = [Block() for _ in range(3)]
    shared = [SharedBlock() for _ in range(3)]
    xs = [torch.randn(2, 8) for _ in range(THREADS)]
    for b in [*blocks, *shared]:
        b(xs[0])  # compile first; the threads then race on the fast path only

    def work(i: int) -> None:
        for step in range(50):
            module = (blocks + shared)[(i + step) % 6]
            x = xs[(i * step) % THREADS]
            torch.testing.assert_close(module(x), eager_block(module, x))

    _run_together(work)
    assert all(b.forward.stats.compiles == 1 for b in blocks)
    assert SharedBlock.forward.stats.compiles >= 1
