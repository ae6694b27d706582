"""The watch of ``guards="inputs"`` (``nocompile._watch``): the per-call fingerprint, and what it
costs and catches once a call has been verified (the steady state of a serving loop).

Every mutation test first makes two calls — the compile, then the call that verifies the
fingerprint — so the change meets the per-call check alone, as it would in a long-running
process. Tests that count slow-path calls pin that nothing is re-verified while nothing changed.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from nocompile import GuardMismatchError, _compat, _inputs, _native_checks, _version_tree, _watch, compile_once
from nocompile._layout import version_trees


def count_slow_calls(compiled: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every call that leaves the per-call path (``__nc_slow`` of each selector)."""
    state = getattr(compiled, "_state", None) or compiled.state
    seen: list[int] = []
    for table in state.inputs.tables:
        namespace = table.selector.call.__globals__
        original = namespace["__nc_slow"]

        def counting(args: Any, kwargs: Any, original: Callable[..., Any] = original) -> Any:
            seen.append(1)
            return original(args, kwargs)

        monkeypatch.setitem(namespace, "__nc_slow", counting)
    return seen


# -- argument objects (a KV cache and its layers) ----------------------------------------------


class Layer:
    def __init__(self, length: int = 4) -> None:
        self.keys = torch.zeros(length, 2)
        self.length = length
        self.ready = True


class Cache:
    def __init__(self, layers: int = 3) -> None:
        self.layers = [Layer() for _ in range(layers)]
        self.step = 0


def read_cache(x: torch.Tensor, cache: Cache) -> torch.Tensor:
    total = x
    for layer in cache.layers:
        layer.keys.add_(1)  # in place: a static cache's update
        total = total + layer.keys.sum() * layer.length * (2 if getattr(layer, "ready", False) else 1) + cache.step
    return total


def eager_cache(x: torch.Tensor, cache: Cache) -> torch.Tensor:
    return read_cache(x, cache)


MUTATIONS: dict[str, Callable[[Cache], None]] = {
    "an int attribute of a layer": lambda c: setattr(c.layers[1], "length", 7),
    "a bool attribute of a layer": lambda c: setattr(c.layers[2], "ready", False),
    "an int attribute of the cache": lambda c: setattr(c, "step", 3),
    "a tensor replaced by one of another shape": lambda c: setattr(c.layers[0], "keys", torch.zeros(6, 2)),
    "a tensor replaced by one of another dtype": lambda c: setattr(c.layers[0], "keys", torch.zeros(4, 2).double()),
    "an attribute added": lambda c: setattr(c.layers[1], "extra", 1),
    "an attribute removed": lambda c: delattr(c.layers[1], "ready"),
    "a layer replaced by an equal-looking new one": lambda c: c.layers.__setitem__(1, _equal_looking(c.layers[1])),
    "a layer appended": lambda c: c.layers.append(Layer()),
}


def _equal_looking(layer: Layer) -> Layer:
    new = Layer(layer.length)
    new.keys = torch.zeros(6, 2)  # same attributes, same names; a tensor of another shape
    return new


@pytest.fixture(params=["version tree", "version tree without C", "python"])
def object_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every way of watching argument objects: one C++ version tree (where this Python and torch
    support it), with nocompile's C checks as its leaves for lists' items, closure cells and helpers
    (``_native_checks.NATIVE``) or, as without the C extension, with guard-manager nodes value by value;
    and the Python fingerprint (Python 3.13, objects holding modules or tensor lists)."""
    tree = request.param.startswith("version tree")
    if tree and not _version_tree.VERSION_TREE:
        pytest.skip("no version tree here (dict version tags do not follow instance attributes)")
    if request.param == "version tree" and _native_checks.NATIVE is None:
        pytest.skip("nocompile's C extension is not built here")
    monkeypatch.setattr(_version_tree, "VERSION_TREE", tree)
    if request.param == "version tree without C":
        monkeypatch.setattr(_native_checks, "NATIVE", None)
    return str(request.param)


def uses_version_tree(compiled: Any) -> bool:
    state = getattr(compiled, "_state", None) or compiled.state
    return all("__nc_watch0" in table.selector.source for table in state.inputs.tables)


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_change_to_an_argument_object_after_verified_calls_is_caught(mutation: str, object_watch: str) -> None:
    f = compile_once(backend="eager")(read_cache)
    cache, x = Cache(), torch.zeros(1)
    f(x, cache)
    f(x, cache)  # verified: the fast path from here on
    f(x, cache)
    assert uses_version_tree(f) == object_watch.startswith("version tree")
    MUTATIONS[mutation](cache)
    try:
        with pytest.raises(GuardMismatchError):
            f(x, cache)
    except AssertionError:
        raise
    except Exception as exc:  # pragma: no cover - a clearer failure than an unrelated error
        pytest.fail(f"{mutation}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_change_to_an_argument_object_recompiles_and_matches_eager(mutation: str, object_watch: str) -> None:
    f = compile_once(backend="eager", on_mismatch="recompile")(read_cache)
    compiled_cache, eager_cache_ = Cache(), Cache()
    x = torch.zeros(1)
    for _ in range(2):
        torch.testing.assert_close(f(x, compiled_cache), eager_cache(x, eager_cache_))
    MUTATIONS[mutation](compiled_cache)
    MUTATIONS[mutation](eager_cache_)
    for _ in range(2):
        torch.testing.assert_close(f(x, compiled_cache), eager_cache(x, eager_cache_))
    assert f.stats.compiles == 2


def test_nothing_is_reverified_while_the_argument_object_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, object_watch: str
) -> None:
    """In-place tensor updates (a static cache's writes) change no dict: every call stays fast."""
    f = compile_once(backend="eager")(read_cache)
    cache, x = Cache(layers=8), torch.zeros(1)
    f(x, cache)
    f(x, cache)
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(10):
        f(x, cache)
    assert slow == []


@pytest.mark.unaudited(reason="counts the verification's guard evaluations; the audit adds one to every call")
def test_a_changed_module_state_is_verified_with_dynamos_guards_once(
    monkeypatch: pytest.MonkeyPatch, object_watch: str
) -> None:
    """The module part (here the dict version tree of ``self``'s dicts) names the state Dynamo's
    guards were run for: a new state runs them once, the same state again never. With a trace
    watch on every candidate the module part is open (``_inputs._open_module_part``): a store the
    code never read runs no guards at all; with the trace watch off, once."""
    model, x = Scaled(), torch.randn(2, 4)
    state = model.forward.state
    runs: list[int] = []
    original = state.inputs.baked_in_failure

    def counting(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(state.inputs, "baked_in_failure", counting)
    with torch.no_grad():
        model(x)
        model(x)
        before = len(runs)
        model.note = "a plain attribute the code never reads"
        model(x)
        model(x)
        # The trace watch: the code never read it (without version trees, Python 3.13's module
        # part is in the key itself and not opened: one verification there).
        assert len(runs) == before + (object_watch == "python")
        model.forward.reset()
        monkeypatch.setattr(_inputs, "TraceWatch", lambda *args: None)
        model(x)
        model(x)
        before = len(runs)
        model.note = "another value"
        model(x)
        model(x)
        assert len(runs) == before + 1
        expected = x
        for _ in range(model.repeats):
            expected = model.act(model.linear(expected)) * model.scale
        torch.testing.assert_close(model(x), expected + model.config.shift)


def test_a_new_argument_object_is_verified_once(monkeypatch: pytest.MonkeyPatch, object_watch: str) -> None:
    """A new cache per generate(): one verification on its first call, then the fast path."""
    f = compile_once(backend="eager")(read_cache)
    x = torch.zeros(1)
    f(x, Cache())
    f(x, Cache())
    slow = count_slow_calls(f, monkeypatch)
    fresh = Cache()
    for _ in range(5):
        f(x, fresh)
    assert slow == [1]
    assert f.stats.compiles == 1


def test_calls_alternating_between_caches_stay_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, object_watch: str
) -> None:
    """Several generate() streams interleaved in one process: each cache is verified once, then
    every call is fast, up to ``OBJECT_WATCH_SLOTS`` caches at a time."""
    f = compile_once(backend="eager")(read_cache)
    x = torch.zeros(1)
    caches = [Cache() for _ in range(_watch.OBJECT_WATCH_SLOTS)]
    f(x, caches[0])
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(3):
        for cache in caches:
            f(x, cache)
    assert len(slow) == len(caches)  # the first round verifies each cache once


def test_without_version_tags_alternating_caches_stay_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where dict version tags do not follow instance attributes (Python 3.13) the fingerprint
    holds the identities of a dict's values, and a key pins them: this module's globals hold
    dicts and lists, which cannot be weakly referenced and are pinned strongly by every key. Pins
    shared by every key keep nothing more alive, so they do not count against
    ``MAX_STRONGLY_PINNED``: eight caches in turn stay verified (on Python 3.13 only four did)."""
    monkeypatch.setattr(_watch, "dict_fingerprint", _watch._contents)
    monkeypatch.setattr(_version_tree, "VERSION_TREE", False)
    f = compile_once(backend="eager")(read_cache)
    x = torch.zeros(1)
    caches = [Cache() for _ in range(_watch.OBJECT_WATCH_SLOTS)]
    assert _watch.OBJECT_WATCH_SLOTS > _watch.MAX_STRONGLY_PINNED
    f(x, caches[0])
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(3):
        for cache in caches:
            f(x, cache)
    assert len(slow) == len(caches)


def test_more_caches_than_slots_stay_correct(object_watch: str) -> None:
    """Past ``OBJECT_WATCH_SLOTS`` caches in turn, the oldest tree is forgotten and its cache is
    verified again: slower, never wrong (a change to any of them is still caught)."""
    f = compile_once(backend="eager")(read_cache)
    x = torch.zeros(1)
    caches = [Cache() for _ in range(_watch.OBJECT_WATCH_SLOTS + 3)]
    eager_caches = [Cache() for _ in caches]
    for _ in range(2):
        for cache, eager in zip(caches, eager_caches, strict=True):
            torch.testing.assert_close(f(x, cache), eager_cache(x, eager))
    caches[0].layers[2].length = 9
    with pytest.raises(GuardMismatchError, match="length"):
        f(x, caches[0])
    caches[-1].step = 5
    with pytest.raises(GuardMismatchError, match="step"):
        f(x, caches[-1])


class _Tables:
    def __init__(self) -> None:
        self.scales = {"a": 1.0, "b": 2.0}
        self.inner = _Inner()


class _Inner:
    def __init__(self) -> None:
        self.factor = 3
        self.deeper = _Innermost()


class _Innermost:
    def __init__(self) -> None:
        self.offset = 1


def _use_tables(x: torch.Tensor, tables: _Tables) -> torch.Tensor:
    return x * tables.scales["a"] * tables.inner.factor + tables.inner.deeper.offset


@pytest.mark.parametrize(
    "mutation",
    [
        "a dict entry replaced",
        "a dict entry added",
        "a nested object's int",
        "an object three deep",
        "a subobject replaced",
    ],
)
def test_changes_below_an_argument_object_are_caught(mutation: str, object_watch: str) -> None:
    f = compile_once(backend="eager", on_mismatch="recompile")(_use_tables)
    tables, x = _Tables(), torch.ones(2)
    for _ in range(3):
        torch.testing.assert_close(f(x, tables), _use_tables(x, tables))
    assert uses_version_tree(f) == object_watch.startswith("version tree")
    if mutation == "a dict entry replaced":
        tables.scales["a"] = 5.0
    elif mutation == "a dict entry added":
        tables.scales["c"] = 1.0
    elif mutation == "a nested object's int":
        tables.inner.factor = 4
    elif mutation == "an object three deep":
        tables.inner.deeper.offset = 7
    else:
        tables.inner = _Inner()
        tables.inner.factor = 6
    torch.testing.assert_close(f(x, tables), _use_tables(x, tables))
    assert f.stats.compiles == 2


def test_an_object_holding_a_module_is_watched_in_python() -> None:
    """A module inside an argument object keeps the Python fingerprint (its dicts and parameters
    are watched like ``self``'s); the version tree covers plain objects only."""

    class Holder:
        def __init__(self) -> None:
            self.proj = nn.Linear(2, 2)

    def use(x: torch.Tensor, holder: Holder) -> torch.Tensor:
        return holder.proj(x)

    f = compile_once(backend="eager")(use)
    holder, x = Holder(), torch.ones(1, 2)
    f(x, holder)
    f(x, holder)
    assert not uses_version_tree(f)
    holder.proj = nn.Linear(2, 3)
    with pytest.raises(GuardMismatchError):
        f(x, holder)


# -- self: attributes baked into the compiled code ---------------------------------------------


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.scale = 2.0
        self.repeats = 2
        self.config = type("Config", (), {})()
        self.config.shift = 1.0

    @compile_once(backend="eager")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = self.act(self.linear(x)) * self.scale
        return x + self.config.shift


SELF_CHANGES: dict[str, Callable[[Scaled], None]] = {
    "a float attribute": lambda m: setattr(m, "scale", 3.0),
    "an int attribute": lambda m: setattr(m, "repeats", 3),
    "a submodule replaced": lambda m: setattr(m, "act", nn.Tanh()),
    "an attribute of its config object": lambda m: setattr(m.config, "shift", 2.0),
    "a parameter replaced by one of another shape": lambda m: setattr(m.linear, "bias", nn.Parameter(torch.zeros(1))),
    "a parameter replaced by one of another dtype": lambda m: setattr(
        m.linear, "weight", nn.Parameter(m.linear.weight.detach().double())
    ),
    "a parameter replaced on another device": lambda m: setattr(
        m.linear, "weight", nn.Parameter(torch.empty(4, 4, device="meta"))
    ),
    "the whole model converted in place (.double())": lambda m: m.double(),
    "an attribute deleted": lambda m: delattr(m, "repeats"),
}


@pytest.mark.parametrize("change", list(SELF_CHANGES))
def test_a_change_to_self_after_verified_calls_is_caught(change: str, object_watch: str) -> None:
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        model(x)
        model(x)
        model(x)
        table = model.forward.state.inputs.tables[0]
        assert ("__nc_dicts0" in table.selector.source) == object_watch.startswith("version tree")
        SELF_CHANGES[change](model)
        with pytest.raises((GuardMismatchError, AttributeError)) as caught:
            model(x)
    if change == "an attribute deleted":  # eager raises AttributeError too; the check must not run stale code
        assert caught.type in (GuardMismatchError, AttributeError)
    else:
        assert caught.type is GuardMismatchError, caught.value


def test_a_model_converted_in_place_is_caught_even_where_dynamos_guards_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """On torch 2.11 Dynamo's guards pass after ``model.double()`` (the parameters are the same
    objects); the H200 run found the old code running. nocompile compares every parameter's
    layout itself when the fingerprint is new, so this holds whatever Dynamo's guards say."""
    monkeypatch.setattr(_compat, "guard_failure", lambda manager, f_locals: None)
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        model.double()
        with pytest.raises(GuardMismatchError, match=r"self\.linear\.weight: compiled for .*float32.*now .*float64"):
            model(x)


def test_the_first_parameter_resized_through_data_is_caught_on_every_call(object_watch: str) -> None:
    """The first parameter of ``self`` is in the per-call C++ tensor check (sizes, strides, dtype,
    device): ``weight.data = other`` stores into no dict, and a new shape with the old strides
    went unseen when the fingerprint held its dtype, device and strides."""
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        model.linear.weight.data = torch.randn(4, 4)[:, :2]  # strides (4, 1) as before, another shape
        with pytest.raises(GuardMismatchError, match=r"self\.linear\.weight"):
            model(x)


@pytest.mark.unaudited(
    reason="freezing a parameter is accepted by design (docs/footguns.md); Dynamo's requires_grad guard, "
    "which the audit evaluates, is not"
)
def test_freezing_the_first_parameter_keeps_the_fast_path(monkeypatch: pytest.MonkeyPatch, object_watch: str) -> None:
    """Fine-tuning freezes the embeddings: ``requires_grad`` of the first parameter is in the
    per-call tensor check, but the code was compiled for the parameters' layout, not for it. One
    verification, no recompile, and the per-call path again from the next call on."""
    model, x = Scaled(), torch.randn(2, 4)
    with torch.no_grad():
        expected = model(x)
        model(x)
        model(x)
        slow = count_slow_calls(model.forward, monkeypatch)
        model.linear.weight.requires_grad_(False)
        for _ in range(3):
            torch.testing.assert_close(model(x), expected)
    assert len(slow) <= 1
    assert model.forward.stats.compiles == 1


class _TwoLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_unfreezing_the_first_parameter_is_a_change(object_watch: str) -> None:
    """Compiled with the first parameter frozen, the graph computes no gradient for it: unfrozen
    for fine-tuning, the old code would leave its ``.grad`` empty without a word (found by review
    against the first version of the frozen-sentinel rule). It recompiles (or raises)."""
    model, x = _TwoLinears(), torch.randn(2, 4)
    model.a.weight.requires_grad_(False)
    f = compile_once(backend="aot_eager", on_mismatch="recompile")(_TwoLinears.forward).__get__(model)
    f(x)
    f(x)
    model.a.weight.requires_grad_(True)
    f(x).sum().backward()
    assert model.a.weight.grad is not None
    assert f.stats.compiles == 2


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    @compile_once(backend="eager")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_model_converted_to_channels_last_in_place_is_caught() -> None:
    """``model.to(memory_format=torch.channels_last)`` keeps every dtype and device and changes
    only strides, in place: inductor's kernels (compiled without size and stride asserts under
    ``guards="inputs"``) would read the weights in the wrong order."""
    model, x = _Conv(), torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        model.to(memory_format=torch.channels_last)
        with pytest.raises(GuardMismatchError):
            model(x)


def test_a_converted_model_recompiles_under_on_mismatch_recompile() -> None:
    model, x = _Conv(), torch.randn(1, 3, 8, 8)
    f = compile_once(backend="eager", on_mismatch="recompile")(_Conv.forward.__wrapped__).__get__(model)
    with torch.no_grad():
        f(x)
        f(x)
        model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(f(x), model.conv(x))
    assert f.stats.compiles == 2


def test_a_submodule_hook_only_registration_does_not_reverify(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations on modules outside the watched tree (a temporary ModuleList, as Hugging Face
    models make by slicing their layers on every forward) do not touch the fingerprint."""

    class Sliced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:2]:  # a new ModuleList each call: registrations
                x = layer(x)
            return x

    model, x = Sliced(), torch.randn(1, 4)
    with torch.no_grad():
        model(x)
        model(x)
        slow = count_slow_calls(model.forward, monkeypatch)
        for _ in range(5):
            torch.testing.assert_close(model(x), model.layers[1](model.layers[0](x)))
            nn.ModuleList([nn.Linear(2, 2)])  # a registration elsewhere in the process
    assert slow == []


def test_the_registration_hooks_are_installed_once_and_kept() -> None:
    """Installed by the first watching state, never twice, and kept when states go: Dynamo's guards
    of any compile that traced them name them, and removing one mid-compile breaks that compile."""
    model = Scaled()
    model(torch.randn(1, 4))
    assert _watch.EPOCH.installed
    ours = [h for h in module_hooks._global_module_registration_hooks.values() if h == _watch.EPOCH.bump]
    assert len(ours) == 1
    other = Scaled()
    other(torch.randn(1, 4))
    _watch.EPOCH.install()  # again: nothing more
    assert [h for h in module_hooks._global_module_registration_hooks.values() if h == _watch.EPOCH.bump] == ours
    del model, other
    gc.collect()  # every watching state of this test (and maybe of earlier ones) is gone
    assert _watch.EPOCH.installed
    assert [h for h in module_hooks._global_module_registration_hooks.values() if h == _watch.EPOCH.bump] == ours


def test_a_compile_while_a_watching_state_dies_does_not_break() -> None:
    """A state collected in the middle of another compile (a model rebuilt in a loop) leaves the
    hooks alone, so the compile's guards on them can be built."""

    class Sliced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:2]:
                x = layer(x)
            return x

    x = torch.randn(1, 4)
    for guards in ("inputs", "none", "inputs", "none"):
        model = Sliced()
        model.forward = compile_once(model.forward, backend="eager", guards=guards)  # type: ignore[method-assign]
        with torch.no_grad():
            model(x)
        gc.collect()


# -- the fingerprint without dict version tags (Python 3.13) -----------------------------------


def test_the_fingerprint_without_version_tags_sees_every_store(monkeypatch: pytest.MonkeyPatch) -> None:
    d: dict[str, Any] = {"a": 1, "t": torch.zeros(2)}
    before = _watch._contents(d)
    assert _watch._contents(d) == before
    d["t"].add_(1)  # in place: the same object
    assert _watch._contents(d) == before
    for change in (
        lambda: d.__setitem__("a", 2),
        lambda: d.__setitem__("b", 1),
        lambda: d.__setitem__("t", torch.zeros(2)),
    ):
        change()
        assert _watch._contents(d) != before
        before = _watch._contents(d)


def test_calls_bind_the_current_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are read at the call, as Python does, under every policy."""

    def scaled(x: torch.Tensor, k: int = 2, *, shift: float = 0.0) -> torch.Tensor:
        return x * k + shift

    for guards in ("none", "inputs", "dynamo"):
        f = compile_once(backend="eager", guards=guards, on_mismatch="recompile")(scaled)
        x = torch.ones(2)
        torch.testing.assert_close(f(x), x * 2)
        scaled.__defaults__ = (3,)
        scaled.__kwdefaults__ = {"shift": 1.0}
        if guards == "none":  # the value is baked in: nothing checks it (documented)
            torch.testing.assert_close(f(x), x * 2)
        else:
            torch.testing.assert_close(f(x), x * 3 + 1)
        torch.testing.assert_close(f(x, 2, shift=0.0), x * 2)
        scaled.__defaults__, scaled.__kwdefaults__ = (2,), {"shift": 0.0}


def iter_layers(n: int) -> Iterator[Layer]:
    return (Layer() for _ in range(n))


# -- parameters replaced, under every policy (inductor's size asserts) ---------------------------


def _project(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.linear(x).relu()


def _projection_class(guards: str, backend: str, on_mismatch: str = "recompile") -> type[nn.Module]:
    return type(
        f"Projection_{guards}_{backend}",
        (nn.Module,),
        {
            "__init__": lambda self: (nn.Module.__init__(self), setattr(self, "linear", nn.Linear(4, 4)))[0],
            "forward": compile_once(backend=backend, guards=guards, on_mismatch=on_mismatch)(_project),
        },
    )


REPLACEMENTS: dict[str, Callable[[nn.Linear], nn.Parameter]] = {
    "another shape": lambda lin: nn.Parameter(torch.randn(4, 6)),
    "another dtype": lambda lin: nn.Parameter(lin.weight.detach().double()),
}
# Another device (a meta weight) is caught under "raise" in SELF_CHANGES; compiled for, it is
# a Dynamo error where eager mixes devices, so it has no row here.


@pytest.mark.parametrize("replacement", list(REPLACEMENTS))
@pytest.mark.parametrize("guards", ["inputs", "dynamo"])
def test_a_replaced_parameter_never_runs_the_old_code(guards: str, replacement: str) -> None:
    """inputs: the registration is seen, Dynamo's guards re-verify, the call recompiles (or
    raises with on_mismatch="raise"); dynamo: Dynamo recompiles. Either way eager's answer, or
    eager's own error (a weight of another shape does not fit the input)."""
    model, x = _projection_class(guards, "eager")(), torch.randn(2, 4)
    with torch.no_grad():
        model(x)
        model(x)
        model.linear.weight = REPLACEMENTS[replacement](model.linear)
        try:
            expected = _project(model, x)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                model(x)
            return
        got = model(x)
    assert got.dtype == expected.dtype and got.device == expected.device and got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    assert model.forward.stats.compiles == 2


def test_inputs_turns_inductors_size_asserts_off_and_catches_a_replaced_parameter_itself() -> None:
    """The one inductor compile of this file: under guards="inputs" the generated code asserts
    no input sizes (the check covers them), and a parameter replaced with one of another shape
    is a GuardMismatchError from nocompile naming the parameter, not an AssertionError from
    inductor's generated code."""
    from nocompile import _compiler
    from nocompile._options import CompileOptions

    assert _compiler._implied_options(CompileOptions(guards="inputs")) == {"size_asserts": False}
    assert _compiler._implied_options(CompileOptions(guards="none")) == {}
    model, x = _projection_class("inputs", "inductor", on_mismatch="raise")(), torch.randn(2, 4)
    with torch.no_grad():
        model(x)
        model(x)
        model.linear.bias = nn.Parameter(torch.zeros(1))  # another shape that still broadcasts
        with pytest.raises(GuardMismatchError, match=r"self\.linear\.bias: compiled for shape \(4,\)"):
            model(x)


class _Holder:
    """A plain argument object."""


def test_an_identity_in_the_fingerprint_is_not_fooled_by_a_reused_address() -> None:
    """Items of a list inside an argument object are fingerprinted by identity. An identity is only
    evidence while its object lives: the verified table pins each one (a weak reference that
    forgets the key when the object dies), so a tensor created at a freed tensor's address (CPython
    reuses freed memory at once) is verified afresh instead of passing for it."""

    @compile_once(backend="eager")
    def f(holder: _Holder) -> torch.Tensor:
        return holder.items[0] * 2

    holder = _Holder()
    for _ in range(20):
        holder.items = [torch.ones(3)]  # type: ignore[attr-defined]
        f(holder)
        f(holder)  # verified: the fast path from here on
        verified = id(holder.items[0])
        holder.items[0] = None  # the verified tensor is freed ...
        holder.items[0] = torch.ones(5)  # ... and this one is usually created at its address
        if id(holder.items[0]) == verified:
            break  # without pins the key would now be unchanged; with them the freed tensor's went
    with pytest.raises(GuardMismatchError, match=r"holder\.items\[0\]"):
        f(holder)


def _rebinder(first: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[Any], None]]:
    """A helper reading ``state`` from its closure, and a setter rebinding that cell."""
    state = first

    def act(t: torch.Tensor) -> torch.Tensor:
        return t * (state.v if isinstance(state, _Holder) else state[0])

    def rebind(value: Any) -> None:
        nonlocal state
        state = value

    return act, rebind


def _holder(v: float) -> _Holder:
    holder = _Holder()
    holder.v = v  # type: ignore[attr-defined]
    return holder


@pytest.mark.parametrize("kind", ["object", "list", "tuple"])
def test_a_closure_cell_rebound_at_a_reused_address_is_not_taken_for_the_old_value(kind: str) -> None:
    """A callable argument's closure cell is fingerprinted by the identity of what it holds (the
    review of the pins found these): an object (weakly pinned), a list or a tuple (no weak
    references: held strongly). Each new value is created right after the old one is freed, at
    its address where CPython can; the verified key, and the module part verified with Dynamo's
    guards, must not survive the old value."""
    make = {"object": _holder, "list": lambda v: [v], "tuple": lambda v: (v,)}[kind]
    act, rebind = _rebinder(make(2.0))
    f = compile_once(backend="eager", on_mismatch="recompile")(lambda x, fn: fn(x))
    x = torch.ones(2)
    for v in (3.0, 4.0, 5.0, 6.0):
        f(x, act)
        f(x, act)
        rebind(None)
        rebind(make(v))
        torch.testing.assert_close(f(x, act), x * v)


def test_a_list_attribute_rebound_without_version_tags_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.13's fingerprint of ``self``'s dict holds the identities of its values; a list
    there is not read item by item, so its identity is pinned (strongly: lists have no weak
    references)."""
    monkeypatch.setattr(_watch, "dict_fingerprint", _watch._contents)

    class Listed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scales = [2.0]

        @compile_once(backend="eager", on_mismatch="recompile")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scales[0]

    model, x = Listed(), torch.ones(2)
    for v in (3.0, 4.0, 5.0):
        model(x)
        model(x)
        model.scales = None  # type: ignore[assignment]
        model.scales = [v]
        torch.testing.assert_close(model(x), x * v)


def test_strong_pins_are_bounded() -> None:
    """Tuples cannot be weakly referenced, so a verified key holds them strongly; rebinding a
    closure's tuple of tensors on every call keeps at most ``MAX_STRONGLY_PINNED`` of them alive.
    With version trees the module part's tree identifies the function's closure contents and
    holds them instead: at most one per slot (``OBJECT_WATCH_SLOTS``)."""
    act, rebind = _rebinder((torch.zeros(100),))
    f = compile_once(backend="eager")(lambda x, fn: fn(x))
    x = torch.ones(100)
    alive = []
    for _ in range(20):
        f(x, act)
        state = act.__closure__[0].cell_contents  # type: ignore[index]
        alive.append(weakref.ref(state[0]))
        rebind((torch.zeros(100),))
    gc.collect()
    bound = _watch.OBJECT_WATCH_SLOTS if version_trees() else _watch.MAX_STRONGLY_PINNED
    assert 1 <= sum(r() is not None for r in alive) <= bound


def test_an_unused_lazy_module_does_not_stop_the_compile() -> None:
    class WithLazy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aux = nn.LazyLinear(4)  # another head's, not run here: its parameter stays lazy
            self.linear = nn.Linear(4, 4)

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    model, x = WithLazy(), torch.ones(2, 4)
    torch.testing.assert_close(model(x), model.linear(x))
    torch.testing.assert_close(model(x), model.linear(x))
    assert model.forward.stats.compiles == 1


_GLOBAL_LINEAR = nn.Linear(3, 3)


def test_a_global_module_converted_in_place_is_caught_even_where_dynamos_guards_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_compat, "guard_failure", lambda manager, f_locals: None)

    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return _GLOBAL_LINEAR(x)

    x = torch.ones(2, 3)
    f(x)
    f(x)
    _GLOBAL_LINEAR.double()
    try:
        with pytest.raises(GuardMismatchError, match=r"global _GLOBAL_LINEAR\.weight: compiled for .*float32"):
            f(x)
    finally:
        _GLOBAL_LINEAR.float()


def test_an_item_moved_between_nested_lists_in_place_is_seen() -> None:
    """The items of ``[[a, b], [c]]`` and ``[[a], [b, c]]`` have the same identities in the same
    order: each list's length is in the fingerprint too (found in review)."""

    @compile_once(backend="eager")
    def f(holder: _Holder) -> torch.Tensor:
        return holder.items[0][-1] + holder.items[1][0]

    a, b, c = torch.zeros(2), torch.ones(2), torch.full((2,), 5.0)
    holder = _Holder()
    holder.items = [[a, b], [c]]  # type: ignore[attr-defined]
    f(holder)
    f(holder)
    holder.items[1].insert(0, holder.items[0].pop())  # type: ignore[attr-defined]
    with pytest.raises(GuardMismatchError):
        f(holder)


def test_a_pinned_object_that_dies_takes_its_verified_keys_with_it() -> None:
    @compile_once(backend="eager")
    def f(holder: _Holder) -> torch.Tensor:
        return holder.items[0] + 1

    holder = _Holder()
    holder.items = [torch.ones(3)]  # type: ignore[attr-defined]
    f(holder)
    f(holder)  # served by the object tier (its layout was verified at compile time)
    f(holder)  # back again: verified once, so that its key serves it on the fast path
    verified = f.state.inputs.tables[0].selector.verified
    assert len(verified.table) == 1 and len(verified.pins) == 1
    holder.items[0] = torch.ones(3)  # the verified tensor dies: its key goes
    assert verified.table == {} and verified.pins == {}
    assert torch.equal(f(holder), torch.full((3,), 2.0))  # the object tier, same specialization
    assert torch.equal(f(holder), torch.full((3,), 2.0))  # the tier's 4th serving: verified again
    assert f.stats.compiles == 1 and len(verified.table) == 1


def test_without_version_tags_a_replaced_value_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where dicts have no usable version tag (Python 3.13), a dict's fingerprint is its keys and its
    values' identities, and the verified key pins those values (strongly for small immutable
    values, which cannot be weakly referenced), so a value freed and replaced by a new one at its
    address cannot pass for it. Here on any Python, with the contents fingerprint forced."""
    monkeypatch.setattr(_watch, "dict_fingerprint", _watch._contents)

    @compile_once(backend="eager")
    def f(holder: _Holder, x: torch.Tensor) -> torch.Tensor:
        return x * holder.scale

    holder, x = _Holder(), torch.ones(2)
    holder.scale = float(2)  # type: ignore[attr-defined]
    f(holder, x)
    f(holder, x)
    holder.scale = None  # type: ignore[attr-defined]
    holder.scale = float(3)  # type: ignore[attr-defined]
    with pytest.raises(GuardMismatchError, match="scale"):
        f(holder, x)


def test_the_dict_version_probe_matches_instance_attributes() -> None:
    """``_compat.DICT_VERSION`` is used only where setting and deleting an instance attribute changes
    the version of the instance's ``__dict__`` (not so on Python 3.13, where values live inline)."""
    if _compat.DICT_VERSION is None:
        assert _watch.dict_fingerprint is _watch._contents
        return
    holder = _Holder()
    holder.a = 1  # type: ignore[attr-defined]
    versions = [_compat.DICT_VERSION(holder.__dict__)]
    holder.a = 2  # type: ignore[attr-defined]
    versions.append(_compat.DICT_VERSION(holder.__dict__))
    del holder.a  # type: ignore[attr-defined]
    versions.append(_compat.DICT_VERSION(holder.__dict__))
    assert len(set(versions)) == 3


class _ListScaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scales = [1.0, 2.0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scales[0]


@pytest.mark.parametrize("guards", ["inputs", "dynamo"])
def test_a_list_held_by_self_changed_in_place_is_seen(guards: str) -> None:
    """``self.scales[0] = 5.0`` after verified calls: ``guards="dynamo"`` evaluates Dynamo's guard
    on the item; ``guards="inputs"``'s trace watch compares the item the trace read (once a
    documented miss)."""
    model, x = _ListScaled(), torch.ones(2)
    model.forward = compile_once(model.forward, backend="eager", guards=guards, on_mismatch="recompile")  # type: ignore[method-assign]
    model(x)
    model(x)
    model.scales[0] = 5.0
    assert torch.equal(model(x), torch.full((2,), 5.0))


# -- plain closure cells (a decorator's configuration) ------------------------------------------


def _configured(scale: Any, name: Any, flag: Any, helper: Any, cache_dir: Any = None) -> Any:
    """A function closing over plain values, as a decorator's wrapper closes over its arguments."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = helper(x) * scale
        return y + 1 if flag and name == "plus" else y

    return compile_once(backend="eager", cache_dir=cache_dir)(fn) if cache_dir is not None else fn


CELL_REBINDS: dict[str, tuple[str, Any]] = {
    "an int to another int": ("scale", 3),
    "an int to an equal float": ("scale", 2.0),
    "an int to an equal bool": ("scale", True),
    "a str to another": ("name", "minus"),
    "a bool to another": ("flag", False),
    "a function to another": ("helper", torch.neg),
}


def _cell(fn: Any, name: str) -> Any:
    original = fn.__wrapped__ if hasattr(fn, "__wrapped__") else fn
    return original.__closure__[original.__code__.co_freevars.index(name)]


@pytest.mark.parametrize("rebind", list(CELL_REBINDS))
def test_a_plain_closure_cell_rebound_after_verified_calls_is_caught(rebind: str, object_watch: str) -> None:
    plain = _configured(2, "plus", True, torch.abs)
    f = compile_once(backend="eager")(plain)
    x = torch.randn(3)
    for _ in range(3):
        torch.testing.assert_close(f(x), plain(x))
    assert ("__nc_cell_watched" not in f.state.inputs.tables[0].selector.source) and (
        ("__nc_dicts0" in f.state.inputs.tables[0].selector.source) == object_watch.startswith("version tree")
    )
    name, value = CELL_REBINDS[rebind]
    _cell(plain, name).cell_contents = value
    with pytest.raises(GuardMismatchError):
        f(x)


def test_a_plain_closure_cell_set_to_an_equal_value_stays_valid(
    monkeypatch: pytest.MonkeyPatch, object_watch: str
) -> None:
    """An equal string built anew: same value, same type, so the same specialization (verified again
    once where a version tree vouched for the old object)."""
    plain = _configured(2, "plus", True, torch.abs)
    f = compile_once(backend="eager")(plain)
    x = torch.randn(3)
    f(x)
    f(x)
    _cell(plain, "name").cell_contents = "".join(["pl", "us"])
    torch.testing.assert_close(f(x), plain(x))
    slow = count_slow_calls(f, monkeypatch)
    for _ in range(3):
        torch.testing.assert_close(f(x), plain(x))
    assert slow == [] and f.stats.compiles == 1


def test_a_plain_closure_cell_rebound_is_caught_for_a_specialization_loaded_from_disk(
    tmp_path: Any, object_watch: str
) -> None:
    """Loaded from ``cache_dir``, a specialization has no Dynamo guard manager: the object key's
    cell values are what catches a rebound cell."""
    first = _configured(2, "plus", True, torch.abs, cache_dir=tmp_path)
    x = torch.randn(3)
    first(x)
    loaded = _configured(2, "plus", True, torch.abs, cache_dir=tmp_path)
    loaded(x)
    loaded(x)
    assert loaded.stats.loads == 1 and loaded.stats.compiles == 0
    _cell(loaded, "scale").cell_contents = 5
    with pytest.raises(GuardMismatchError):
        loaded(x)


# -- version trees: what a review found (each failed before its fix) ----------------------------


class _Stepped:
    def __init__(self) -> None:
        self.step = 1
        self.t = torch.zeros(2)


def _times_step(x: torch.Tensor, cache: Any) -> torch.Tensor:
    return x * cache.step


def test_a_tree_is_never_made_for_a_state_that_failed_verification() -> None:
    """A call with None where the cache was: it fails (another structure), and no version tree may
    come of it (a tree over None checks nothing, and would vouch for whatever comes next)."""
    f = compile_once(backend="eager")(_times_step)
    cache, x = _Stepped(), torch.ones(2)
    f(x, cache)
    f(x, cache)
    with pytest.raises(GuardMismatchError):
        f(x, None)
    cache.t = torch.zeros(2)  # a store: the next call is verified again
    torch.testing.assert_close(f(x, cache), x)
    cache.step = 5
    with pytest.raises(GuardMismatchError):
        f(x, cache)


class _Scaled:
    def __init__(self) -> None:
        self.scale = 1


class _Layers:
    def __init__(self) -> None:
        self.layers = [_Scaled(), _Scaled()]


def _times_layers(x: torch.Tensor, cache: _Layers) -> torch.Tensor:
    for layer in cache.layers:
        x = x * layer.scale
    return x


def test_a_list_item_emptied_then_refilled_is_still_watched() -> None:
    f = compile_once(backend="eager")(_times_layers)
    cache, x = _Layers(), torch.ones(1)
    f(x, cache)
    f(x, cache)
    cache.layers[1] = None  # type: ignore[call-overload]
    with pytest.raises(GuardMismatchError):
        f(x, cache)
    cache.layers[1] = _Scaled()
    torch.testing.assert_close(f(x, cache), x)
    cache.layers[1].scale = 5
    with pytest.raises(GuardMismatchError):
        f(x, cache)


@pytest.mark.parametrize("part", ["argument objects", "module dicts"])
def test_a_store_while_a_tree_is_made_records_nothing(part: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread stores into a watched dict between the tree being made and the key being
    read: the key holds None there, is not recorded, and a later change is still caught."""
    from nocompile import _selector

    name = "remember_objects" if part == "argument objects" else "remember_modules"
    original = getattr(_selector.Selector, name)
    cache, x = _Stepped(), torch.ones(2)
    namespace: dict[str, Any] = {}

    def racing(self: Any, args: Any, kwargs: Any) -> None:
        original(self, args, kwargs)
        if part == "argument objects":
            cache.t = torch.zeros(2)
        else:
            namespace["counter"] = namespace.get("counter", 0) + 1

    def use(x: torch.Tensor, cache: Any) -> torch.Tensor:
        return x * cache.step * SCALE

    f = compile_once(backend="eager")(use)
    f(x, cache)
    f(x, cache)
    cache.t = torch.zeros(2)  # the next call is verified again
    if part == "module dicts":
        namespace = use.__globals__
    monkeypatch.setattr(_selector.Selector, name, racing)
    torch.testing.assert_close(f(x, cache), x * SCALE)
    monkeypatch.setattr(_selector.Selector, name, original)
    if part == "argument objects":
        cache.step = 5
    else:
        monkeypatch.setitem(use.__globals__, "SCALE", 3.0)
    with pytest.raises(GuardMismatchError):
        f(x, cache)
    use.__globals__.pop("counter", None)


SCALE = 2.0


def test_an_object_whose_dict_is_a_property_stays_on_the_python_fingerprint() -> None:
    """A proxy whose ``__dict__`` is a property has no instance dict for a version tree to read."""

    class DictProperty:
        __slots__ = ("_d",)

        def __init__(self) -> None:
            object.__setattr__(self, "_d", {"a": 1})

        @property  # type: ignore[override]
        def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
            return self._d  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> Any:
            try:
                return self._d[name]
            except KeyError:
                raise AttributeError(name) from None

    def use(x: torch.Tensor, o: Any) -> torch.Tensor:
        return x * o.a

    f = compile_once(backend="eager")(use)
    o, x = DictProperty(), torch.ones(1)
    for _ in range(3):
        torch.testing.assert_close(f(x, o), x)
    assert not uses_version_tree(f)


class _Other(_Stepped):
    pass


def test_an_argument_objects_class_changed_in_place_is_caught(object_watch: str) -> None:
    """``obj.__class__ = Other`` stores into no dict; the object's class is watched too."""
    f = compile_once(backend="eager")(_times_step)
    cache, x = _Stepped(), torch.ones(2)
    f(x, cache)
    f(x, cache)
    assert uses_version_tree(f) == object_watch.startswith("version tree")
    cache.__class__ = _Other
    with pytest.raises(GuardMismatchError, match="_Other"):
        f(x, cache)


def test_a_list_passed_where_a_dict_was_compiled_is_a_new_signature() -> None:
    """``{0: a, 1: b}`` and ``[a, b]`` have the same keys and items; the type tells them apart."""

    def first_two(x: torch.Tensor, table: Any) -> torch.Tensor:
        return x * table[0] + table[1]

    f = compile_once(backend="eager")(first_two)
    x = torch.ones(2)
    f(x, {0: 2, 1: 3})
    with pytest.raises(GuardMismatchError, match="list"):
        f(x, [2, 3])


def _swapped_helper(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def _other_body(x: torch.Tensor) -> torch.Tensor:
    return x + 2


def test_a_helpers_code_swapped_after_verified_calls_is_caught(object_watch: str) -> None:
    """``helper.__code__ = other.__code__`` (what engines do to ``forward`` around a call) stores
    into no dict; the module part watches a called helper's code, defaults and closure contents
    by identity (in the version tree, or in Python)."""
    f = compile_once(backend="eager", on_mismatch="recompile")(lambda x: _swapped_helper(x))
    x = torch.zeros(2)
    original = _swapped_helper.__code__
    try:
        for _ in range(3):
            torch.testing.assert_close(f(x), x + 1)
        _swapped_helper.__code__ = _other_body.__code__
        torch.testing.assert_close(f(x), x + 2)
    finally:
        _swapped_helper.__code__ = original
    assert f.stats.compiles == 2
