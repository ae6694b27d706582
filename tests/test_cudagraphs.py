"""cudagraphs=True on a real GPU. Skipped without CUDA; run by ``scripts/gpu_check.sh``.

Each test is small: tiny models, backend "eager" (Dynamo's path, ATen kernels, capturable)
unless a test is about inductor.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from torch import nn

from nocompile import GuardMismatchError, NoCompileError, compile_once
from nocompile._cudagraphs import GraphedCall

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = [torch.float32, torch.bfloat16]


def _graphed(state: Any, index: int = 0) -> GraphedCall:
    call = state.specializations[index].call
    assert isinstance(call, GraphedCall), call
    return call


def _mlp(width: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.LayerNorm(width)).to(
        "cuda", dtype
    )


class Wrapped(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def _graphed_model(body: nn.Module, **options: Any) -> nn.Module:
    cls = type("Graphed", (Wrapped,), {"forward": compile_once(**options)(Wrapped.forward)})
    return cls(body)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["eager", "inductor"])
@torch.no_grad()
def test_results_equal_eager(backend: str, dtype: torch.dtype) -> None:
    body = _mlp(32, dtype)
    model = _graphed_model(body, backend=backend, cudagraphs=True)
    reference = Wrapped(body)
    tol = {} if backend == "eager" else {"atol": 2e-2, "rtol": 2e-2}
    for i in range(5):
        x = torch.randn(3, 32, device="cuda", dtype=dtype)
        out = model(x)
        assert out.dtype == dtype and out.device.type == "cuda"
        torch.testing.assert_close(out, reference(x), **tol)
        if i == 0:
            first = out
    assert first is not out  # the compiling call returned its own tensor; replays return the static one
    assert _graphed(model.forward.__func__.state).captures == 1


@torch.no_grad()
def test_inplace_parameter_update_is_seen() -> None:
    body = _mlp(16, torch.float32)
    model = _graphed_model(body, backend="eager", cudagraphs=True)
    x = torch.randn(2, 16, device="cuda")
    model(x)
    model(x)
    body[0].weight.mul_(0.5)
    body[2].bias.add_(1.0)
    torch.testing.assert_close(model(x), Wrapped(body)(x))


@torch.no_grad()
def test_replaced_parameter_is_not_seen_until_reset() -> None:
    # Sharp edge: the graph reads the captured tensors. load_state_dict copies in place (seen);
    # assigning a new Parameter does not reach the graph until reset().
    body = _mlp(16, torch.float32)
    model = _graphed_model(body, backend="eager", cudagraphs=True)
    x = torch.randn(2, 16, device="cuda")
    model(x)
    model(x)
    other = _mlp(16, torch.float32)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1)
    body.load_state_dict(other.state_dict())
    torch.testing.assert_close(model(x), Wrapped(body)(x))
    stale = Wrapped(body)(x)
    body[3].weight = nn.Parameter(torch.randn(16, device="cuda"))
    torch.cuda.empty_cache()  # the old weight is held by the graph's set, never freed under it
    torch.testing.assert_close(model(x), stale)  # the graph still reads the old weight
    model.forward.reset()
    model(x)
    torch.testing.assert_close(model(x), Wrapped(body)(x))


@torch.no_grad()
def test_static_outputs_are_overwritten_by_the_next_call() -> None:
    f = compile_once(backend="eager", cudagraphs=True)(lambda x: x * 2 + 1)
    a = torch.ones(4, device="cuda")
    b = torch.full((4,), 3.0, device="cuda")
    f(a)  # compiles
    f(a)  # runs once more on the static inputs, then captures
    out_a = f(a)  # replays
    kept = out_a.clone()
    out_b = f(b)
    assert out_b is out_a
    torch.testing.assert_close(out_a, b * 2 + 1)  # the old result now holds the new values
    torch.testing.assert_close(kept, a * 2 + 1)


@torch.no_grad()
def test_copy_outputs_are_independent() -> None:
    f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs="copy")(lambda x: (x * 2, x + 1))
    a = torch.ones(4, device="cuda")
    b = torch.full((4,), 3.0, device="cuda")
    f(a)
    f(a)
    out_a = f(a)
    out_b = f(b)
    assert out_a[0] is not out_b[0]
    torch.testing.assert_close(out_a[0], a * 2)
    torch.testing.assert_close(out_b[1], b + 1)


class ReassignsBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    @compile_once(backend="eager", cudagraphs=True)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total = self.total + x
        return self.total * 2


class UpdatesBufferInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    @compile_once(backend="eager", cudagraphs=True)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total.add_(x)
        return self.total * 2


@torch.no_grad()
def test_buffer_reassignment_is_refused_and_inplace_update_works() -> None:
    with pytest.raises(NoCompileError, match=r"(?s)Python state \(self\._buffers\['total'\]\).*_buffers"):
        ReassignsBuffer().cuda()(torch.ones(4, device="cuda"))
    model = UpdatesBufferInPlace().cuda()
    x = torch.ones(4, device="cuda")
    for step in range(1, 5):
        torch.testing.assert_close(model(x), torch.full((4,), 2.0 * step, device="cuda"))


@torch.no_grad()
def test_sizes_pad_and_slice_equal_eager() -> None:
    body = _mlp(16, torch.float32)

    @compile_once(
        backend="eager", cudagraphs=True, dynamic={"x": 0}, cudagraph_sizes=[1, 2, 4, 8], on_mismatch="recompile"
    )
    def f(x: torch.Tensor) -> torch.Tensor:
        return body(x)

    for n in [3, 1, 5, 8, 2, 7, 1, 11, 4, 6]:
        x = torch.randn(n, 16, device="cuda")
        out = f(x)
        assert out.shape == (n, 16)
        torch.testing.assert_close(out, body(x))
    padded, size_one = _graphed(f, 0), _graphed(f, 1)
    assert padded.captures == 3 and size_one.captures == 1  # 8, 4, 2; and 1 on its own
    assert padded.fallbacks == 1  # 11 > 8 ran without a graph


@torch.no_grad()
def test_two_states_in_one_process() -> None:
    body_a, body_b = _mlp(16, torch.float32), _mlp(8, torch.float32)
    model_a = _graphed_model(body_a, backend="eager", cudagraphs=True)
    model_b = _graphed_model(body_b, backend="eager", cudagraphs=True)
    for _ in range(4):
        xa = torch.randn(2, 16, device="cuda")
        xb = torch.randn(5, 8, device="cuda")
        out_a, out_b = model_a(xa), model_b(xb)
        torch.testing.assert_close(out_a, Wrapped(body_a)(xa))
        torch.testing.assert_close(out_b, Wrapped(body_b)(xb))
    assert model_a.forward.__func__.state._graph_pool is not model_b.forward.__func__.state._graph_pool


@torch.no_grad()
def test_four_threads_each_on_its_own_stream() -> None:
    body = _mlp(32, torch.float32)
    model = _graphed_model(body, backend="eager", cudagraphs=True, cudagraph_outputs="copy")
    model(torch.randn(2, 32, device="cuda"))  # compile here; capture happens in whichever thread comes first
    inputs = [[torch.randn(2, 32, device="cuda") for _ in range(25)] for _ in range(4)]
    torch.cuda.synchronize()
    results: list[list[torch.Tensor]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            stream = torch.cuda.Stream()
            with torch.no_grad(), torch.cuda.stream(stream):
                barrier.wait()
                for x in inputs[i]:
                    results[i].append(model(x))
            stream.synchronize()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    torch.cuda.synchronize()
    reference = Wrapped(body)
    for xs, outs in zip(inputs, results, strict=True):
        assert len(outs) == len(xs)
        for x, out in zip(xs, outs, strict=True):
            torch.testing.assert_close(out, reference(x))
    assert _graphed(model.forward.__func__.state).captures == 1


@pytest.mark.parametrize("guards", ["none", "inputs"])
@torch.no_grad()
def test_guard_policies(guards: str) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards=guards)(lambda x, y: torch.tanh(x) @ y)
    y = torch.randn(8, 4, device="cuda")
    for _ in range(3):
        x = torch.randn(2, 8, device="cuda")
        torch.testing.assert_close(f(x, y), torch.tanh(x) @ y)
    if guards == "inputs":
        with pytest.raises(GuardMismatchError, match=r"x: shape compiled for \(2, 8\), got \(3, 8\)"):
            f(torch.randn(3, 8, device="cuda"), y)


@torch.no_grad()
def test_recompile_captures_a_new_graph() -> None:
    # dynamic=False: one static specialization per shape, each with its graph (automatic dynamic
    # would compile the second shape dynamic, and that specialization runs ungraphed).
    f = compile_once(backend="eager", cudagraphs=True, on_mismatch="recompile", dynamic=False)(
        lambda x: x.softmax(-1) * 3
    )
    for shape in [(2, 8), (3, 8), (2, 8), (3, 8), (4, 8)]:
        x = torch.randn(shape, device="cuda")
        torch.testing.assert_close(f(x), x.softmax(-1) * 3)
    assert f.stats.specializations == 3
    assert [_graphed(f, i).captures for i in range(3)] == [1, 1, 0]  # (4, 8) was called once: compiled, not captured


class KVCache:
    def __init__(self, width: int) -> None:
        self.k = torch.randn(width, device="cuda")


@torch.no_grad()
def test_argument_objects_read_in_place_new_object_recaptures() -> None:
    @compile_once(backend="eager", cudagraphs=True)
    def step(cache: KVCache, x: torch.Tensor) -> torch.Tensor:
        return x * cache.k

    first, second = KVCache(8), KVCache(8)
    x = torch.randn(8, device="cuda")
    step(first, x)
    step(first, x)
    first.k.mul_(2)
    torch.testing.assert_close(step(first, x), x * first.k)
    torch.testing.assert_close(step(second, x).clone(), x * second.k)
    torch.testing.assert_close(step(first, x), x * first.k)
    assert _graphed(step).captures == 2


@torch.no_grad()
def test_a_new_object_adopts_a_dead_objects_memory_and_reads_its_own_values() -> None:
    @compile_once(backend="eager", cudagraphs=True)
    def step(cache: KVCache, x: torch.Tensor) -> torch.Tensor:
        return x * cache.k

    x = torch.randn(8, device="cuda")
    first = KVCache(8)
    step(first, x)
    step(first, x)
    address = first.k.data_ptr()
    alive = KVCache(8)  # the old object still alive: other memory, other values, a new capture
    torch.testing.assert_close(step(alive, x).clone(), x * alive.k)
    assert (_graphed(step).captures, _graphed(step).rebinds) == (2, 0)
    del first  # its graph set keeps its memory for the next new object
    second = KVCache(8)
    expected = x * second.k
    torch.testing.assert_close(step(second, x).clone(), expected)
    graphed = _graphed(step)
    assert (graphed.captures, graphed.rebinds, graphed.adoptions) == (2, 0, 1)
    assert second.k.data_ptr() == address  # it adopted the memory the first graphs read
    second.k.mul_(3)  # and replays read it there
    torch.testing.assert_close(step(second, x), x * second.k)
    longer = KVCache(16)  # another length: another specialization under guards="inputs"
    with pytest.raises(GuardMismatchError):
        step(longer, torch.randn(16, device="cuda"))


@torch.no_grad()
def test_cpu_tensor_argument_is_refused() -> None:
    f = compile_once(backend="eager", cudagraphs=True)(lambda x, y: x + y.sum())
    with pytest.raises(NoCompileError, match=r"tensor argument y is on cpu"):
        f(torch.ones(2, device="cuda"), torch.ones(2))


@torch.no_grad()
def test_mutating_an_input_is_refused() -> None:
    def bump(x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2

    f = compile_once(backend="eager", cudagraphs=True)(bump)
    f(torch.ones(2, device="cuda"))
    with pytest.raises(NoCompileError, match=r"mutates its tensor argument"):
        f(torch.ones(2, device="cuda"))


@torch.no_grad()
def test_inference_mode_tensors_get_their_own_specialization() -> None:
    """Inference tensors have other dispatch keys: the input check sends them to a specialization
    (and graph) of their own instead of replaying the no_grad one."""
    f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs="copy", on_mismatch="recompile")(
        lambda x: x.exp()
    )
    x = torch.randn(4, device="cuda")
    f(x)
    f(x)
    with torch.inference_mode():
        y = torch.randn(4, device="cuda")
        torch.testing.assert_close(f(y), y.exp())
        torch.testing.assert_close(f(y), y.exp())
    torch.testing.assert_close(f(x), x.exp())
    assert f.stats.compiles == 2
