"""cudagraphs=True without a GPU: option validation, the no-CUDA error, compile-time refusals,
and the replay logic of ``GraphedCall`` against a CPU stand-in for the CUDA calls.

The stand-in (``tests/fake_cuda.py``) replays by re-running the captured call on the static
inputs and writing into the captured outputs, so these tests pin down what nocompile does
around a graph: which tensors are copied, what is read in place, padding and slicing, output
semantics, argument-object identity, stream ordering. ``tests/test_cudagraphs.py`` runs the
same behaviours on a real GPU.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

import pytest
import torch
from fake_cuda import FakeCuda, FakeStream
from torch import nn

from nocompile import GuardMismatchError, NoCompileError, _cudagraph_setup, _cudagraphs, compile_once
from nocompile._arguments import walk

# -- options, validated at decoration time ------------------------------------------------------


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cudagraphs": 1}, TypeError, r"cudagraphs=\.\.\.\) takes True or False"),
        ({"cudagraphs": True, "cudagraph_outputs": "clone"}, ValueError, r"cudagraph_outputs='clone'"),
        ({"cudagraphs": True, "cudagraph_outputs": 3}, TypeError, r"cudagraph_outputs=\.\.\.\) takes one of"),
        ({"cudagraph_sizes": [2, 4]}, ValueError, r"only applies to CUDA graphs; add cudagraphs=True"),
        ({"cudagraph_outputs": "copy"}, ValueError, r"only applies to CUDA graphs"),
        ({"cudagraphs": True, "guards": "dynamo"}, ValueError, r"guards='dynamo'.*never be evaluated"),
        ({"cudagraphs": True, "dispatch": "dynamo"}, ValueError, r"dispatch='dynamo'"),
        (
            {"cudagraphs": True, "backend": "inductor", "mode": "reduce-overhead"},
            ValueError,
            r"capture CUDA graphs twice",
        ),
        ({"cudagraphs": True, "options": {"triton.cudagraphs": True}}, ValueError, r"capture CUDA graphs twice"),
        ({"cudagraphs": True, "dynamic": {"x": 0}}, ValueError, r"fixed shapes.*cudagraph_sizes="),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": "2,4"}, TypeError, r"list of ints"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": [2.0, 4]}, TypeError, r"list of ints"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": [4, 2]}, ValueError, r"increasing order"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": [2, 2]}, ValueError, r"without repeats"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": [0, 2]}, ValueError, r"positive ints"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": []}, ValueError, r"positive ints"),
        ({"cudagraphs": True, "cudagraph_sizes": [2, 4]}, ValueError, r"needs exactly one, e\.g\. dynamic="),
        ({"cudagraphs": True, "dynamic": {"x": (0, 1)}, "cudagraph_sizes": [2, 4]}, ValueError, r"needs exactly one"),
        ({"cudagraphs": True, "dynamic": {"x": 0}, "cudagraph_sizes": [1, 2]}, ValueError, r"on_mismatch='recompile'"),
    ],
)
def test_bad_cudagraph_options_fail_at_decoration(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        compile_once(**{"backend": "eager", **kwargs})(_identity)


def test_good_cudagraph_options_are_recorded() -> None:
    f = compile_once(
        backend="eager",
        cudagraphs=True,
        dynamic={"x": 0},
        cudagraph_sizes=[1, 2, 4],
        on_mismatch="recompile",
        cudagraph_outputs="copy",
    )(_identity)
    opts = f._options
    assert (opts.cudagraphs, opts.cudagraph_sizes, opts.cudagraph_outputs) == (True, (1, 2, 4), "copy")
    assert "cudagraphs=True, cudagraph_outputs='copy'" in repr(f)
    assert "cudagraph_sizes=[1, 2, 4]" in repr(f)
    plain = compile_once(backend="eager")(_identity)._options
    assert (plain.cudagraphs, plain.cudagraph_sizes, plain.cudagraph_outputs) == (False, None, "static")


# -- errors on the first call -------------------------------------------------------------------


class _NoCuda(_cudagraphs.CudaOps):
    def is_available(self) -> bool:
        return False


def test_no_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoCuda())
    f = compile_once(backend="eager", cudagraphs=True)(_identity)
    with pytest.raises(NoCompileError, match=r"torch\.cuda\.is_available\(\) is False.*cudagraphs=False"):
        f(torch.ones(2))
    assert f.stats.specializations == 0  # nothing kept: the next call says the same


class _Cuda(_cudagraphs.CudaOps):
    """CUDA "available", with the real device type: CPU tensors are refused."""

    def is_available(self) -> bool:
        return True


def test_cpu_tensor_argument_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cudagraphs, "CUDA", _Cuda())
    f = compile_once(backend="eager", cudagraphs=True)(lambda x, y: x + y)
    with pytest.raises(NoCompileError, match=r"tensor argument x is on cpu.*move it to the GPU"):
        f(torch.ones(2), torch.ones(2))


class _ReassignsBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros(()))

    @compile_once(backend="eager", cudagraphs=True)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps = self.steps + 1
        return x * self.steps


def test_buffer_reassignment_is_refused_with_the_source() -> None:
    # Checked at the compiling call, before anything needs CUDA: the buffer was rebound.
    with torch.no_grad(), pytest.raises(NoCompileError) as info:
        _ReassignsBuffer()(torch.ones(2))
    text = str(info.value)
    assert "changed its arguments' Python state (self._buffers['steps'])" in text
    assert "_buffers" in text  # the decompiled transformed code shows the culprit
    assert "self.buf.copy_(...)" in text


class _Holder:
    pass


def test_attribute_assignment_on_an_argument_is_refused() -> None:
    @compile_once(backend="eager", cudagraphs=True)
    def f(holder: _Holder, x: torch.Tensor) -> torch.Tensor:
        holder.last = x * 2
        return x + 1

    # Found by comparing the argument before and after the compiling call; the message shows
    # Dynamo's transformed code with the store (object_setattr_ignore_descriptor on torch 2.13).
    with pytest.raises(NoCompileError, match=r"(?s)changed its arguments' Python state \(holder\.last\).*holder"):
        f(_Holder(), torch.ones(2))


def test_lazily_allocated_state_of_an_argument_object_is_refused_at_the_first_call() -> None:
    class Cache:
        def __init__(self) -> None:
            self.keys: torch.Tensor | None = None
            self.filled = 0

    @compile_once(backend="eager", cudagraphs=True)
    def step(x: torch.Tensor, cache: Cache) -> torch.Tensor:
        if cache.keys is None:
            cache.keys = torch.zeros_like(x)
        cache.keys.add_(x)
        return cache.keys * 1

    with pytest.raises(NoCompileError, match=r"(?s)\(cache\.keys\).*early_initialization"):
        step(torch.ones(2), Cache())
    assert step.stats.compiles == 0  # nothing kept


_COUNTER: Any = None


def test_side_effects_and_decompiled_fall_back_to_dis() -> None:
    def pure(x: Any) -> Any:
        return x + 1

    def stores(x: Any) -> None:
        global _COUNTER
        _COUNTER = x

    assert _cudagraph_setup.side_effects(pure.__code__) == []
    assert _cudagraph_setup.side_effects(stores.__code__) == ["executes STORE_GLOBAL"]
    listing = _cudagraph_setup.decompiled(stores.__code__)
    assert "STORE_GLOBAL" in listing or "_COUNTER = x" in listing


# -- replay logic, against the CPU stand-in -----------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    cuda = FakeCuda()
    monkeypatch.setattr(_cudagraphs, "CUDA", cuda)
    return cuda


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    @compile_once(backend="eager", cudagraphs=True)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) + 1


def _graphed(state_fn: Any, index: int = 0) -> _cudagraphs.GraphedCall:
    call = state_fn.specializations[index].call
    assert isinstance(call, _cudagraphs.GraphedCall)
    return call


@torch.no_grad()
def test_replays_equal_eager_and_static_outputs_are_overwritten(fake: FakeCuda) -> None:
    net = Net()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    first = net(a)  # compiles (runs through torch.compile)
    second = net(a)  # runs on the static inputs (the warm-up), then captures
    third = net(a)  # replays
    fourth = net(b)  # replays
    graphed = _graphed(net.forward.__func__.state)
    assert graphed.captures == 1 and len(fake.graphs) == 1
    for out in (first, second):
        torch.testing.assert_close(out, torch.relu(net.linear(a)) + 1)
    assert fourth is third  # static outputs: the same tensor, overwritten by the later call
    torch.testing.assert_close(third, torch.relu(net.linear(b)) + 1)
    assert fake.graphs[0].replays == 2


@torch.no_grad()
def test_copy_outputs_are_fresh() -> None:
    cuda = FakeCuda()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_cudagraphs, "CUDA", cuda)
        f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs="copy")(lambda x: (x * 2, {"y": x + 1}))
        a, b = torch.ones(3), torch.full((3,), 5.0)
        f(a)
        f(a)
        out_a = f(a)
        out_b = f(b)
    assert out_a[0] is not out_b[0]
    torch.testing.assert_close(out_a[0], a * 2)
    torch.testing.assert_close(out_b[1]["y"], b + 1)


@torch.no_grad()
def test_parameters_are_read_in_place(fake: FakeCuda) -> None:
    net = Net()
    x = torch.randn(2, 4)
    net(x)
    net(x)
    net.linear.weight.mul_(-1)
    net.linear.bias.add_(3)
    torch.testing.assert_close(net(x), torch.relu(net.linear(x)) + 1)


@torch.no_grad()
def test_padding_to_sizes_equals_eager(fake: FakeCuda) -> None:
    @compile_once(
        backend="eager", cudagraphs=True, dynamic={"x": 0}, cudagraph_sizes=[1, 2, 4, 8], on_mismatch="recompile"
    )
    def f(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ w, (x * x).sum(-1)

    w = torch.randn(4, 3)
    for n in [3, 5, 2, 8, 1, 1, 9, 6, 7, 3, 12]:
        x = torch.randn(n, 4)
        y, s = f(x, w)
        assert y.shape == (n, 3) and s.shape == (n,)
        torch.testing.assert_close(y, x @ w)
        torch.testing.assert_close(s, (x * x).sum(-1))
    dynamic_spec, size_one = (_graphed(f, 0), _graphed(f, 1))
    assert dynamic_spec.captures == 3  # 8, 4, 2 (size 1 is its own specialization)
    assert size_one.captures == 1
    assert dynamic_spec.fallbacks == 2  # 9 and 12 ran without a graph
    # Captured largest first, all into the state's one pool.
    assert len(fake.pools) == 1


@torch.no_grad()
def test_padding_respects_dynamos_shape_guards(fake: FakeCuda) -> None:
    @compile_once(backend="eager", cudagraphs=True, dynamic={"x": 0}, cudagraph_sizes=[2, 4, 8])
    def f(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 5:
            return x * 100
        return x * 2

    for n in [3, 4, 5, 2]:
        x = torch.randn(n, 2)
        torch.testing.assert_close(f(x), x * 2)
    graphed = _graphed(f)
    assert graphed.captures == 2  # 4 and 2; 8 would break the guard x.size(0) <= 5: not captured
    assert graphed.fallbacks == 1  # n=5 would pad to 8: runs without a graph


@torch.no_grad()
def test_output_without_the_padded_dim_is_refused(fake: FakeCuda) -> None:
    @compile_once(backend="eager", cudagraphs=True, dynamic={"x": 0}, cudagraph_sizes=[2, 4])
    def total(x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)

    total(torch.ones(3, 2))
    with pytest.raises(NoCompileError, match=r"does not keep the padded dim 0"):
        total(torch.ones(3, 2))


@torch.no_grad()
def test_non_tensor_output_is_refused(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True)(lambda x: (x + 1, x.shape[0]))
    f(torch.ones(2))
    with pytest.raises(NoCompileError, match=r"returns a int.*return tensors only"):
        f(torch.ones(2))


class _Holder:
    def __init__(self) -> None:
        self.state = torch.zeros(2)


@dataclasses.dataclass
class _Output(collections.OrderedDict):  # type: ignore[type-arg]
    """Shaped like transformers' ModelOutput: a dataclass that is also a dict of its fields."""

    logits: torch.Tensor | None = None
    cache: Any = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) is not None:
                self[field.name] = getattr(self, field.name)


@pytest.mark.parametrize("outputs", ["static", "copy"])
def test_argument_object_in_a_dataclass_dict_output_is_returned_as_is(fake: FakeCuda, outputs: str) -> None:
    """A model returning its logits with the cache it was given (a Hugging Face forward): the cache
    is an argument object, returned as is; the output keeps its type in both output modes."""

    def step(x: torch.Tensor, holder: _Holder) -> _Output:
        return _Output(logits=x * 2 + holder.state, cache=holder)

    f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs=outputs)(step)  # type: ignore[call-overload]
    holder = _Holder()
    for i in range(1, 4):
        x = torch.full((2,), float(i))
        out = f(x, holder)
        assert type(out) is _Output and out.cache is holder and out["cache"] is holder
        torch.testing.assert_close(out.logits, x * 2)
        torch.testing.assert_close(out["logits"], out.logits)
    assert _graphed(f).captures == 1


def test_a_foreign_object_in_the_output_is_refused(fake: FakeCuda) -> None:
    other = _Holder()
    f = compile_once(backend="eager", cudagraphs=True)(lambda x, h: (x + 1, other))
    f(torch.ones(2), _Holder())
    with pytest.raises(NoCompileError, match=r"returns a _Holder"):
        f(torch.ones(2), _Holder())


def test_output_requiring_grad_is_refused(fake: FakeCuda) -> None:
    net = Net()
    net(torch.ones(1, 4))
    with pytest.raises(NoCompileError, match=r"requires grad.*torch\.no_grad\(\)"):
        net(torch.ones(1, 4))


@torch.no_grad()
def test_mutating_a_tensor_argument_is_refused(fake: FakeCuda) -> None:
    @compile_once(backend="eager", cudagraphs=True)
    def bump(x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2

    bump(torch.ones(2))
    with pytest.raises(NoCompileError, match=r"mutates its tensor argument\(s\) \['x'\] in place"):
        bump(torch.ones(2))


class Cache:
    """A non-tensor argument object whose tensors the graph reads in place."""

    def __init__(self, width: int = 4) -> None:
        self.k = torch.randn(width)


@torch.no_grad()
def test_argument_objects_are_read_in_place_and_a_new_object_recaptures(fake: FakeCuda) -> None:
    @compile_once(backend="eager", cudagraphs=True, guards="none")
    def step(cache: Cache, x: torch.Tensor) -> torch.Tensor:
        return x * cache.k

    first, second = Cache(), Cache()
    x = torch.randn(4)
    step(first, x)
    step(first, x)
    torch.testing.assert_close(step(first, x), x * first.k)
    first.k.mul_(3)  # in place: seen
    torch.testing.assert_close(step(first, x), x * first.k)
    graphed = _graphed(step)
    assert graphed.captures == 1
    torch.testing.assert_close(step(second, x).clone(), x * second.k)  # another object: captured anew
    assert graphed.captures == 2
    torch.testing.assert_close(step(first, x), x * first.k)  # the first object's graphs are kept
    assert graphed.captures == 2


@torch.no_grad()
def test_too_many_argument_objects_raise(fake: FakeCuda) -> None:
    @compile_once(backend="eager", cudagraphs=True, guards="none")
    def step(cache: Cache, x: torch.Tensor) -> torch.Tensor:
        return x * cache.k

    caches = [Cache() for _ in range(_cudagraphs.MAX_OBJECT_SETS + 1)]
    x = torch.randn(4)
    step(caches[0], x)
    for cache in caches[:-1]:
        step(cache, x)
    with pytest.raises(GuardMismatchError, match=r"8 different sets of argument objects \[cache \(Cache\)\]"):
        step(caches[-1], x)


class SharedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @compile_once(backend="eager", cudagraphs=True, per_instance=False)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@torch.no_grad()
def test_shared_state_captures_per_instance(fake: FakeCuda) -> None:
    a, b = SharedNet(), SharedNet()
    x = torch.randn(1, 4)
    for _ in range(2):
        torch.testing.assert_close(a(x).clone(), a.linear(x))
        torch.testing.assert_close(b(x).clone(), b.linear(x))
    assert _graphed(SharedNet.forward).captures == 2  # `self` differs: one graph set each


@torch.no_grad()
def test_guards_none_structure_change_is_a_clear_error(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, guards="none")(lambda xs: xs[0] + xs[1])
    f([torch.ones(2), torch.ones(2)])
    f([torch.ones(2), torch.ones(2)])
    with pytest.raises(NoCompileError, match=r"do not have the structure the graph was captured for"):
        f([torch.ones(2)])


@torch.no_grad()
def test_a_call_on_another_stream_waits_for_the_last_replay(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs="copy")(lambda x: x * 2)
    x = torch.ones(2)
    f(x)
    f(x)
    other = FakeStream("other")
    done = []

    def on_other_stream() -> None:
        with torch.no_grad(), fake.stream(other):  # grad mode is per thread
            done.append(f(x))

    thread = threading.Thread(target=on_other_stream)
    thread.start()
    thread.join()
    assert other.waited_on == [fake.default]
    f(x)
    assert fake.default.waited_on[-1] is other  # (before it: the capture's side stream)
    torch.testing.assert_close(done[0], x * 2)


@torch.no_grad()
def test_reset_drops_graphs_and_recaptures(fake: FakeCuda) -> None:
    net = Net()
    x = torch.randn(2, 4)
    net(x)
    net(x)
    net.forward.reset()
    net(x)
    net(x)
    assert _graphed(net.forward.__func__.state).captures == 1
    assert len(fake.graphs) == 2 and len(fake.pools) == 2


def test_layout_and_substitute_follow_the_same_order() -> None:
    def fn(a: Any, b: Any, *rest: Any, c: Any = None, **extra: Any) -> None:
        return None

    obj = Cache()
    args = (torch.ones(1), [torch.ones(2), 3, obj], torch.ones(3))
    kwargs = {"c": {"k": torch.ones(4)}, "z": torch.ones(5)}
    layout = _cudagraph_setup.Layout.of(walk(fn, args, kwargs))  # type: ignore[arg-type]
    assert layout.tensor_paths == ("a", "b[0]", "rest[0]", "c['k']", "extra['z']")
    assert layout.object_paths == ("b[2]",)
    extract = _cudagraph_setup.build_extractor(fn, layout)  # type: ignore[arg-type]
    objects, tensors = extract(*args, **kwargs)
    assert objects == (obj,) and [t.numel() for t in tensors] == [1, 2, 3, 4, 5]
    new = [torch.zeros(t.numel()) for t in tensors]
    new_args, new_kwargs = _cudagraph_setup.substitute(fn, args, kwargs, new)  # type: ignore[arg-type]
    assert new_args[0] is new[0] and new_args[1][0] is new[1] and new_args[1][2] is obj and new_args[2] is new[2]
    assert new_kwargs["c"]["k"] is new[3] and new_kwargs["z"] is new[4]


def test_inference_mode_calls_share_the_graph(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, cudagraph_outputs="copy")(lambda x: x.exp())
    with torch.inference_mode():
        x = torch.randn(3)
        f(x)
        f(x)
        y = torch.randn(3)
        torch.testing.assert_close(f(y), y.exp())
        torch.testing.assert_close(f(x), x.exp())
    assert _graphed(f).captures == 1
    # A normal tensor has other dispatch keys than the inference tensors compiled for: the input
    # check refuses it (as Dynamo would recompile) rather than replaying.
    with torch.no_grad(), pytest.raises(GuardMismatchError, match="dispatch key set mismatch"):
        f(torch.randn(3))


def test_broadcast_view_argument_is_refused(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True)(lambda x: x * 2)
    with pytest.raises(NoCompileError, match=r"tensor argument x is a broadcast view.*x\.contiguous\(\)"):
        f(torch.ones(1, 4).expand(3, 4))


@torch.no_grad()
def test_non_contiguous_padded_argument_is_refused(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True, dynamic={"x": 0}, cudagraph_sizes=[2, 4])(lambda x: x * 2)
    with pytest.raises(NoCompileError, match=r"padded argument 'x' is not contiguous"):
        f(torch.ones(4, 3).t())


@torch.no_grad()
def test_strided_argument_keeps_its_layout(fake: FakeCuda) -> None:
    f = compile_once(backend="eager", cudagraphs=True)(lambda x: x * 2)
    base = torch.randn(4, 6)
    for _ in range(3):
        x = base[:, ::2]  # non-contiguous, non-overlapping: copied into a static tensor of the same strides
        torch.testing.assert_close(f(x), x * 2)
        base = torch.randn(4, 6)
    assert _graphed(f)._statics[0].stride() == (6, 2)


def test_local_containers_are_not_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dynamo keeps the original names in co_names; only what the transformed code loads counts.
    monkeypatch.setattr(_cudagraphs, "CUDA", _NoCuda())

    @compile_once(backend="eager", cudagraphs=True)
    def stacked(xs: list[torch.Tensor], extra: dict[str, torch.Tensor]) -> torch.Tensor:
        ys = [x * 2 for x in xs]
        ys.append(extra["k"])
        table: dict[str, torch.Tensor] = {}
        table.update(extra)
        return torch.stack(ys).sum(0) + table["k"]

    with pytest.raises(NoCompileError, match=r"is_available\(\) is False"):  # got past the side-effect check
        stacked([torch.ones(2)], {"k": torch.ones(2)})


def test_mutating_an_argument_list_is_a_side_effect() -> None:
    @compile_once(backend="eager", cudagraphs=True)
    def grow(xs: list[torch.Tensor]) -> torch.Tensor:
        xs.append(xs[0] * 2)
        return xs[0]

    with pytest.raises(NoCompileError, match=r"changed its arguments' Python state \(xs, xs\[1\]\)"):
        grow([torch.ones(2)])


def test_cudagraphs_with_cache_dir_is_refused_and_the_env_variable_ignored(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"cache_dir=.*cudagraphs=True.*Drop one"):
        compile_once(cudagraphs=True, cache_dir=str(tmp_path))
    from nocompile import _artifacts
    from nocompile._options import CompileOptions

    monkeypatch.setenv("NOCOMPILE_CACHE_DIR", str(tmp_path))
    assert _artifacts.cache_dir_for(CompileOptions(cudagraphs=True)) is None
    assert _artifacts.cache_dir_for(CompileOptions()) == str(tmp_path)


def test_a_specialization_made_dynamic_runs_without_graphs(fake: FakeCuda) -> None:
    """A graph has fixed shapes: the specialization automatic dynamic makes for a second size runs
    the compiled code ungraphed (every size right), while the first, static one keeps its graph.
    cudagraph_sizes=[...] with dynamic={...} is the way to graph several sizes (padding)."""
    f = compile_once(backend="eager", cudagraphs=True, on_mismatch="recompile")(_double)
    for n in (2, 2, 3, 5, 2, 7):
        x = torch.arange(float(n))
        torch.testing.assert_close(f(x).clone(), x * 2)
    static, dynamic = f.specializations
    assert isinstance(static.call, _cudagraphs.GraphedCall) and static.call.captures == 1
    assert dynamic.dynamic is not None and not isinstance(dynamic.call, _cudagraphs.GraphedCall)


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2
