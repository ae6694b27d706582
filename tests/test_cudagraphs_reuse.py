"""Graph sets reused by address (issue #30), against the CPU stand-in for the CUDA calls.

A call with a new argument object (a new KV cache) replays the graphs captured for an old one
only when every tensor the graphs read sits at the same address with the same sizes, strides,
dtype and device: then the replay reads the new object's memory. The stand-in's graphs re-run
the captured call on the captured objects, so a replay that read an old object's memory would
return the old object's values: each test compares with the new object's result. A freed
cache whose blocks the allocator hands to the next one is modelled by a new object whose
tensors are views of exactly the old memory (the CPU allocator promises no reuse); the real
allocator's reuse is tested on the GPU (tests/test_cudagraphs.py, tests/test_hf_cudagraphs.py).
"""

from __future__ import annotations

import gc
import timeit
import weakref
from typing import Any

import pytest
import torch
from fake_cuda import FakeCuda

from nocompile import GuardMismatchError, _cudagraphs, compile_once


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    cuda = FakeCuda()
    monkeypatch.setattr(_cudagraphs, "CUDA", cuda)
    return cuda


class Layer:
    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys = k
        self.values = v


class Cache:
    """Shaped like a Hugging Face StaticCache: a list of layer objects holding tensors."""

    def __init__(self, length: int = 4, layers: int = 2, *, like: Cache | None = None) -> None:
        if like is not None:  # the same memory, new tensor objects: a freed cache's blocks reused
            self.layers = [
                Layer(layer.keys.view(layer.keys.shape), layer.values.view(-1).view(length)) for layer in like.layers
            ]
        else:
            self.layers = [Layer(torch.randn(length), torch.randn(length)) for _ in range(layers)]


def step(x: torch.Tensor, cache: Cache) -> torch.Tensor:
    out = x
    for layer in cache.layers:
        out = out * layer.keys + layer.values
    return out


def reference(x: torch.Tensor, cache: Cache) -> torch.Tensor:
    return step(x, cache).clone()


def _graphed(f: Any) -> _cudagraphs.GraphedCall:
    (spec,) = f.specializations
    assert isinstance(spec.call, _cudagraphs.GraphedCall)
    return spec.call


@pytest.mark.parametrize("guards", ["inputs", "none"])
@torch.no_grad()
def test_a_new_cache_while_the_old_one_lives_with_other_values_is_captured_anew(fake: FakeCuda, guards: str) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards=guards)(step)  # type: ignore[call-overload]
    old, new = Cache(), Cache()
    x = torch.randn(4)
    for _ in range(3):
        torch.testing.assert_close(f(x, old), reference(x, old))
    call = _graphed(f)
    assert (call.captures, call.rebinds) == (1, 0)
    torch.testing.assert_close(f(x, new).clone(), reference(x, new))  # not the old cache's values
    assert (call.captures, call.rebinds) == (2, 0)
    torch.testing.assert_close(f(x, new), reference(x, new))  # replays its own set
    torch.testing.assert_close(f(x, old), reference(x, old))  # the old object's set is kept
    assert call.captures == 2


@pytest.mark.parametrize("guards", ["inputs", "none"])
@torch.no_grad()
def test_a_new_cache_in_the_old_caches_memory_replays_its_graphs(fake: FakeCuda, guards: str) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards=guards)(step)  # type: ignore[call-overload]
    old = Cache()
    x = torch.randn(4)
    f(x, old)
    f(x, old)  # captured
    call = _graphed(f)
    new = Cache(like=old)
    del old  # (the stand-in's graph still holds it; a real graph holds nothing)
    for layer in new.layers:  # new values, written into the reused memory
        layer.keys.copy_(torch.randn(4))
        layer.values.fill_(0.5)
    torch.testing.assert_close(f(x, new), reference(x, new))
    assert (call.captures, call.rebinds) == (1, 1)
    torch.testing.assert_close(f(x * 2, new), reference(x * 2, new))  # by identity from now on
    assert (call.captures, call.rebinds) == (1, 1)


@torch.no_grad()
def test_the_same_memory_with_another_layout_or_dtype_is_captured_anew(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(lambda x, cache: x + cache.layers[0].keys.sum())
    base = torch.randn(8)
    old = Cache(layers=1)
    old.layers[0].keys = base[:4]
    x = torch.randn(2)
    f(x, old)
    f(x, old)
    call = _graphed(f)
    same = Cache(layers=1)
    same.layers[0] = Layer(base[:4].view(4), old.layers[0].values)
    shifted = Cache(layers=1)
    shifted.layers[0] = Layer(base[1:5], old.layers[0].values)  # another address
    strided = Cache(layers=1)
    strided.layers[0] = Layer(base[::2], old.layers[0].values)  # the same address, other strides
    retyped = Cache(layers=1)
    retyped.layers[0] = Layer(base[:4].view(torch.int32).view(torch.float32), old.layers[0].values)
    assert f.specializations[0].call.address_key(x, same) == call.address_key(x, old)
    for other in (shifted, strided):
        assert call.address_key(x, other) != call.address_key(x, old)
        torch.testing.assert_close(f(x, other).clone(), x + other.layers[0].keys.sum())
    torch.testing.assert_close(f(x, same).clone(), x + base[:4].sum())
    assert (call.captures, call.rebinds) == (3, 1)
    assert call.address_key(x, retyped) == call.address_key(x, old)  # a view back to float32: same memory, same layout


@torch.no_grad()
def test_a_cache_of_another_length_gets_its_own_specialization_or_capture(fake: FakeCuda) -> None:
    x = torch.randn(4)
    checked = compile_once(backend="eager", cudagraphs=True)(lambda x, cache: x.sum() + cache.layers[0].keys)
    checked(x, Cache(4))
    checked(x, Cache(4))
    with pytest.raises(GuardMismatchError):  # guards="inputs": another shape is another signature
        checked(x, Cache(6))
    recompiled = compile_once(backend="eager", cudagraphs=True, on_mismatch="recompile", dynamic=False)(
        lambda x, cache: x.sum() + cache.layers[0].keys
    )
    short, long = Cache(4), Cache(6)
    for _ in range(3):
        torch.testing.assert_close(recompiled(x, short).clone(), x.sum() + short.layers[0].keys)
        torch.testing.assert_close(recompiled(x, long).clone(), x.sum() + long.layers[0].keys)
    assert [s.call.captures for s in recompiled.specializations] == [1, 1]
    unchecked = compile_once(backend="eager", cudagraphs=True, guards="none")(
        lambda x, cache: x.sum() + cache.layers[0].keys
    )
    unchecked(x, short)
    unchecked(x, short)
    call = _graphed(unchecked)
    assert call.address_key(x, long) != call.address_key(x, short)  # sizes differ: never the same set
    torch.testing.assert_close(unchecked(x, long).clone(), x.sum() + long.layers[0].keys)
    assert (call.captures, call.rebinds) == (2, 0)


class _NoReplayCuda(FakeCuda):
    """Like a real capture, the graph holds no Python objects (and replays nothing)."""

    def capture(self, pool: Any, stream: Any, fn: Any) -> tuple[Any, Any]:
        out = fn()

        class Graph:
            def replay(self) -> None:
                pass

        return Graph(), out


@torch.no_grad()
def test_outputs_do_not_keep_a_cache_alive_and_its_memory_goes_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True)(lambda x, cache: (x * cache.layers[0].keys, cache))
    x = torch.randn(4)
    first = Cache()
    f(x, first)
    f(x, first)  # captured
    out = f(x, first)  # replayed: the output holds the cache it was given
    assert out[1] is first
    gone = weakref.ref(first)
    keys = weakref.ref(first.layers[0].keys)
    address = first.layers[0].keys.data_ptr()
    del first, out
    second = Cache()
    values = second.layers[0].keys.clone()
    assert f(x, second)[1] is second  # another object's call: the outputs let the first go
    gc.collect()
    assert gone() is None and keys() is None  # the object and its tensor objects are gone ...
    assert second.layers[0].keys.data_ptr() == address  # ... their memory is the second's now
    assert torch.equal(second.layers[0].keys, values)  # holding the second's values
    call = _graphed(f)
    assert (call.captures, call.rebinds, call.adoptions) == (1, 0, 1)


@torch.no_grad()
def test_sets_whose_objects_died_are_evicted_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(lambda x, cache: x * cache.layers[0].keys)
    x = torch.randn(4)
    f(x, Cache())
    for _ in range(3 * _cudagraphs.MAX_OBJECT_SETS):
        f(x, Cache())  # each dies after its call: never an error, at most MAX_OBJECT_SETS sets kept
    call = _graphed(f)
    assert len(call._sets) <= _cudagraphs.MAX_OBJECT_SETS
    assert call.captures + call.rebinds + call.adoptions == 3 * _cudagraphs.MAX_OBJECT_SETS
    assert call.captures == 1  # every later cache adopts the memory of the one before


@torch.no_grad()
def test_a_dead_caches_memory_is_not_adopted_while_a_tensor_or_view_of_it_is_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(step)
    x = torch.randn(4)
    for hold in ("tensor", "view"):
        old = Cache()
        f(x, old)
        f(x, old)
        before = _graphed(f).captures
        kept = old.layers[1].values if hold == "tensor" else old.layers[1].values[1:]
        snapshot = kept.clone()
        del old
        new = Cache()
        new_address = new.layers[1].values.data_ptr()
        f(x, new)
        call = _graphed(f)
        assert call.captures == before + 1, hold  # captured anew: the old memory is still someone's
        assert new.layers[1].values.data_ptr() == new_address
        assert torch.equal(kept, snapshot)  # and it was not written
        del kept, new


@torch.no_grad()
def test_only_the_most_recently_dead_objects_memory_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(step)
    x = torch.randn(4)
    a, b = Cache(), Cache()
    f(x, a)
    f(x, a)
    f(x, b)
    a_keys, b_keys = weakref.ref(a.layers[0].keys), weakref.ref(b.layers[0].keys)
    b_address = b.layers[0].keys.data_ptr()
    del a
    gc.collect()
    assert a_keys() is not None  # the spare: kept for the next new cache
    del b
    gc.collect()
    assert a_keys() is None and b_keys() is not None  # only the last dead cache's memory is kept
    c = Cache()
    f(x, c)
    assert c.layers[0].keys.data_ptr() == b_address
    assert _graphed(f).adoptions == 1


@torch.no_grad()
def test_objects_returned_in_tuples_and_dicts_are_the_current_calls(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(
        lambda x, cache: (x + cache.layers[0].keys, {"cache": cache, "both": [cache, x * 2]})
    )
    x = torch.randn(4)
    old = Cache()
    f(x, old)
    f(x, old)
    new = Cache(like=old)
    out = f(x, new)
    assert out[1]["cache"] is new and out[1]["both"][0] is new
    assert _graphed(f).rebinds == 1
    assert f(x, old)[1]["cache"] is old


@pytest.mark.parametrize("layers", [8, 16])
def test_the_address_key_costs_microseconds_per_new_object(fake: FakeCuda, layers: int) -> None:
    """The check a call with a new object pays (a cache's 2 tensors per layer); reported, loosely bounded."""
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(step)
    cache = Cache(layers=layers)
    x = torch.randn(4)
    with torch.no_grad():
        f(x, cache)
        f(x, cache)
    call = _graphed(f)
    objects = call._extract(x, cache)[0]
    number = 200
    us = min(timeit.repeat(lambda: call._address(objects), number=number, repeat=3)) / number * 1e6
    print(f"address key, {layers} layers ({2 * layers} tensors): {us:.1f} us")
    assert us < 2000  # a shared CI machine: only a gross regression fails


def _specs_graphed(f: Any) -> list[_cudagraphs.GraphedCall]:
    calls = [spec.call for spec in f.specializations]
    assert all(isinstance(call, _cudagraphs.GraphedCall) for call in calls)
    return calls


@torch.no_grad()
def test_a_prefill_adopts_and_the_decode_step_replays_at_the_adopted_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two specializations share each cache (a prefill, then decode steps), as in generate()."""
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, on_mismatch="recompile", dynamic=False)(step)
    prefill, decode = torch.randn(4), torch.randn(1)

    def generate(cache: Cache) -> None:
        f(prefill, cache)
        for _ in range(3):
            f(decode, cache)

    first = Cache()
    generate(first)
    generate(first)  # both specializations captured on the first cache
    address = first.layers[0].keys.data_ptr()
    del first
    second = Cache()
    values = second.layers[0].values.clone()
    generate(second)
    p, d = _specs_graphed(f)
    assert (p.captures, p.rebinds, p.adoptions) == (1, 0, 1)  # the prefill adopted the first cache's memory
    assert (d.captures, d.rebinds, d.adoptions) == (1, 1, 0)  # the decode step found it at its addresses
    assert second.layers[0].keys.data_ptr() == address and torch.equal(second.layers[0].values, values)


@torch.no_grad()
def test_memory_is_never_moved_under_a_graph_that_reads_the_object_where_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, on_mismatch="recompile", dynamic=False)(step)
    prefill, decode = torch.randn(4), torch.randn(1)
    first = Cache()
    for x in (prefill, prefill, decode, decode):
        f(x, first)
    second = Cache()
    f(prefill, second)  # the first cache still alive: the prefill captures on the second's own memory
    address = second.layers[0].keys.data_ptr()
    del first, x
    f(decode, second)  # the decode set's cache died, but a prefill graph reads the second cache in place
    p, d = _specs_graphed(f)
    assert second.layers[0].keys.data_ptr() == address  # so its memory stayed where that graph reads it
    assert (p.captures, d.captures, p.adoptions + d.adoptions) == (2, 2, 0)


@torch.no_grad()
def test_a_new_cache_with_a_view_of_its_memory_is_not_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(step)
    x = torch.randn(4)
    old = Cache()
    f(x, old)
    f(x, old)
    del old
    new = Cache()
    window = new.layers[0].keys[1:]  # the user's view of the new cache's memory
    address = new.layers[0].keys.data_ptr()
    f(x, new)
    call = _graphed(f)
    assert (call.captures, call.adoptions) == (2, 0)  # a capture on its own memory instead
    assert new.layers[0].keys.data_ptr() == address
    new.layers[0].keys.fill_(7.0)
    assert torch.equal(window, torch.full((3,), 7.0))  # the view still sees the cache's tensor


@torch.no_grad()
def test_a_reset_state_frees_its_graphs_without_waiting_for_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoReplayCuda())
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(step)
    x, cache = torch.randn(4), Cache()
    f(x, cache)
    f(x, cache)
    call = weakref.ref(_graphed(f))
    gc.disable()
    try:
        f.reset()
        assert call() is None  # no reference cycle through the death callbacks
    finally:
        gc.enable()
