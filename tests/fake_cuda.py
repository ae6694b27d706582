"""A CPU stand-in for the CUDA calls of ``nocompile._cudagraphs``, to test its logic without a GPU.

``FakeCuda.capture`` runs the function once and returns a graph whose ``replay`` runs it
again and writes the results into the captured output tensors, so the stand-in has the
semantics that matter: replays read the static inputs and whatever the captured argument
objects hold, and overwrite the same output tensors each time. One difference: a real capture
records kernels without running them, this one runs the function once (so in-place state
updates at capture time are tested on the GPU only, in ``tests/test_cudagraphs.py``), and it
reads attributes anew on each replay (so a *replaced* parameter is tested on the GPU only).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch


class FakeStream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.waited_on: list[FakeStream] = []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited_on.append(other)

    def __repr__(self) -> str:
        return f"<FakeStream {self.name}>"


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _leaves(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _leaves(item)]
    return []


class FakeGraph:
    def __init__(self, fn: Callable[[], Any], out: Any) -> None:
        self.fn = fn
        self.out = out
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        with torch.inference_mode():  # a replay writes memory: no autograd rules apply
            for dst, src in zip(_leaves(self.out), _leaves(self.fn()), strict=False):
                dst.copy_(src)


class FakeCuda:
    device_type = "cpu"

    def __init__(self) -> None:
        self.default = FakeStream("default")
        self.local = threading.local()
        self.graphs: list[FakeGraph] = []
        self.pools: list[object] = []

    def is_available(self) -> bool:
        return True

    def current_stream(self, device: torch.device) -> FakeStream:
        return getattr(self.local, "stream", self.default)

    def current_stream_id(self, index: int) -> int:
        return id(self.current_stream(torch.device("cpu")))

    def new_stream(self, device: torch.device) -> FakeStream:
        return FakeStream("side")

    @contextlib.contextmanager
    def stream(self, stream: FakeStream) -> Iterator[None]:
        before = getattr(self.local, "stream", None)
        self.local.stream = stream
        try:
            yield
        finally:
            if before is None:
                del self.local.stream
            else:
                self.local.stream = before

    def pool_handle(self) -> object:
        handle = object()
        self.pools.append(handle)
        return handle

    def default_device(self) -> torch.device:
        return torch.device("cpu")

    def capture(self, pool: Any, stream: Any, fn: Callable[[], Any]) -> tuple[FakeGraph, Any]:
        out = fn()
        graph = FakeGraph(fn, out)
        self.graphs.append(graph)
        return graph, out
