"""Generated code never crashes on user names (issue #25, item 4).

The input check of ``guards="inputs"`` is Python source generated from the call's arguments:
parameter names, attribute names, dict keys. Names that are keywords, that are not identifiers or
that shadow a builtin the generated code calls are read through reserved globals (``__nc_b_len``),
``getattr`` or constants bound to the generated code, never written into it as code.
"""

from __future__ import annotations

import builtins
import enum
import keyword
import threading
import types
from typing import Any

import pytest
import torch
from torch import nn

from nocompile import GuardMismatchError, NoCompileError, compile_once
from nocompile._arguments import Kind, walk
from nocompile._layout import CheckLayout
from nocompile._selector import build_shape_check, key_function, selector

#: Every builtin a parameter could be named (``True`` and the like are keywords), and soft keywords.
BUILTIN_NAMES = sorted(n for n in dir(builtins) if not keyword.iskeyword(n) and n != "__debug__")
SOFT_KEYWORDS = ["match", "case", "type", "_"]


def _function_with_parameter(name: str) -> types.FunctionType:
    """``def f(x, chunks, options, <name>=2, **extra)``: a parameter named ``name`` next to
    arguments whose check calls builtins (a list's length, a dict's keys, keyword names)."""
    namespace: dict[str, Any] = {}
    exec(f"def f(x, chunks, options, {name}=2, **extra):\n    return x\n", namespace)
    fn: types.FunctionType = namespace["f"]
    return fn


def _generated_keys(fn: types.FunctionType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every generated key function of this call's structure, evaluated on the call."""
    layout = CheckLayout.of(walk(fn, args, kwargs))
    check = selector(layout)
    return [
        key_function(layout).fn(*args, **kwargs),
        check.fast(*args, **kwargs),
        check.verified_key(*args, **kwargs),
        check.object_key(*args, **kwargs),
        check.verification(*args, **kwargs).fingerprint,
    ]


@pytest.mark.parametrize("name", [*BUILTIN_NAMES, *SOFT_KEYWORDS])
def test_a_parameter_named_like_any_builtin_does_not_shadow_the_generated_code(name: str) -> None:
    fn = _function_with_parameter(name)
    args = (torch.ones(2), [torch.ones(2), torch.ones(2)], {"a": 1.0, 2: "b"})
    kwargs: dict[str, Any] = {name: 3, "k": 1.5}
    first = _generated_keys(fn, args, kwargs)
    again = _generated_keys(fn, args, {name: 3, "k": 1.5})
    assert first[:2] == again[:2]  # the full key and the fast key, as for any other name
    layout = CheckLayout.of(walk(fn, args, kwargs))
    longer = (args[0], [*args[1], torch.ones(2)], args[2])
    assert key_function(layout).fn(*longer, **kwargs) != first[0]  # ``len(chunks)`` read, not the parameter


@pytest.mark.parametrize("name", ["min", "len", "type", "tuple", "sorted", "frozenset", "map", "getattr", "bool", "id"])
def test_a_builtin_named_parameter_compiles_and_recompiles(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(
        f"def f(x, chunks, {name}=2.0):\n    return torch.stack(chunks).sum(0) * x * {name}\n",
        {"torch": torch},
        namespace,
    )
    f = compile_once(backend="eager", on_mismatch="recompile")(namespace["f"])
    x = torch.ones(3)
    assert torch.equal(f(x, [x, x], **{name: 2.0}), x * 4)
    assert torch.equal(f(x, [x, x, x], **{name: 2.0}), x * 6)  # another length: a recompile, no TypeError
    assert torch.equal(f(torch.ones(4), [torch.ones(4)], **{name: 3.0}), torch.ones(4) * 3)
    assert f.stats.compiles == 3


def test_parameters_named_torch_and_min_with_dynamic_shape_guards() -> None:
    def f(x: torch.Tensor, torch: Any = None, min: int = 0) -> Any:
        if x.shape[0] > 4:
            return x * 2
        return x * 3

    g = compile_once(backend="eager", dynamic={"x": 0})(f)
    assert g(torch_ones(6)).sum() == 12
    assert g(torch_ones(8)).sum() == 16
    with pytest.raises(GuardMismatchError):
        g(torch_ones(3))
    check = build_shape_check(f, ["5 <= L['x'].size()[0]", "max(L['x'].size()[0], 1) >= 2"])
    assert check is not None and check(torch_ones(6), torch=1, min=7) is True


def torch_ones(n: int) -> torch.Tensor:
    return torch.ones(n)


def test_parameters_with_the_reserved_prefixes_are_refused_clearly() -> None:
    namespace: dict[str, Any] = {}
    exec("def f(x, __nc_fn=1, _nc_o1=2):\n    return x\n", namespace)
    with pytest.raises(NoCompileError, match="'__nc_fn', '_nc_o1' begin with a prefix that nocompile reserves"):
        compile_once(backend="eager")(namespace["f"])


# -- attribute names ----------------------------------------------------------------------------

ODD_ATTRIBUTES = [*keyword.kwlist, "rope-theta", "not an identifier", "1st", "__dunder", "é-ü"]


@pytest.mark.parametrize("name", ODD_ATTRIBUTES)
def test_an_attribute_python_cannot_spell_is_read_and_checked(name: str) -> None:
    def scaled(x: torch.Tensor, cfg: Any) -> torch.Tensor:
        return x * cfg.scale

    cfg = types.SimpleNamespace(scale=2.0)
    setattr(cfg, name, 0.5)
    keys = _generated_keys(scaled, (torch.ones(2), cfg), {})
    (node,) = [n for n in walk(scaled, (torch.ones(2), cfg), {}).nodes() if n.path == f"cfg.{name}"]
    assert node.expr is not None and node.kind is Kind.SCALAR
    setattr(cfg, name, 0.75)
    assert _generated_keys(scaled, (torch.ones(2), cfg), {})[3] != keys[3]  # the object key holds it


def test_attribute_named_lambda_and_with_a_hyphen_end_to_end() -> None:
    def read(x: torch.Tensor, cfg: Any) -> torch.Tensor:
        return x * cfg.scale * getattr(cfg, "rope-theta")

    f = compile_once(backend="eager", on_mismatch="recompile")(read)
    cfg = types.SimpleNamespace(**{"scale": 1.0, "lambda": 0.5, "rope-theta": 2.0, "class": 1})
    x = torch.ones(2)
    assert torch.equal(f(x, cfg), x * 2)
    assert torch.equal(f(x, cfg), x * 2)
    setattr(cfg, "rope-theta", 3.0)
    assert torch.equal(f(x, cfg), x * 3)
    cfg.scale = 2.0
    assert torch.equal(f(x, cfg), x * 6)
    assert f.stats.compiles == 3


def test_a_module_holding_configs_under_names_python_cannot_spell() -> None:
    # Dynamo itself cannot read ``getattr(self, "lambda")`` (its guard is ``tmp0.lambda``): the
    # forward reads another config; the check watches every config the module holds.
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = types.SimpleNamespace(scale=2.0)
            setattr(self, "lambda", types.SimpleNamespace(weight=0.5))
            setattr(self, "rope-theta", types.SimpleNamespace(base=1.0))

        @compile_once(backend="eager")
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.cfg.scale

    model = Model()
    x = torch.ones(2)
    assert torch.equal(model(x), x * 2)
    assert torch.equal(model(x), x * 2)
    model.cfg.scale = 3.0
    with pytest.raises(GuardMismatchError):
        model(x)


# -- dict keys ----------------------------------------------------------------------------------


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


ODD_KEYS: list[Any] = [
    Phase.DECODE,
    Level.HIGH,  # an int whose repr is no literal
    (1, "a"),
    (Phase.PREFILL, 2),
    frozenset({1, 2}),
    1.5,
    float("inf"),
    torch.float16,
    b"bytes",
    *keyword.kwlist,
    "not an identifier",
    "'quoted\"",
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=repr)
def test_a_dict_keyed_by_any_value_key_is_checked(key: Any) -> None:
    def gain(x: torch.Tensor, gains: dict[Any, float]) -> torch.Tensor:
        return x * gains[key]

    f = compile_once(backend="eager")(gain)
    gains = {"other": 1.0, key: 2.0}
    x = torch.ones(2)
    assert torch.equal(f(x, gains), x * 2)
    assert torch.equal(f(x, dict(gains)), x * 2)
    gains[key] = 3.0
    with pytest.raises(GuardMismatchError):
        f(x, gains)
    assert f.stats.compiles == 1


def test_an_enum_keyed_dict_inside_an_argument_object_and_as_kwargs_values() -> None:
    def gain(x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return x * ctx.gains[Phase.DECODE] * ctx.gains[(Phase.PREFILL, 1)]

    f = compile_once(backend="eager", on_mismatch="recompile")(gain)
    ctx = types.SimpleNamespace(gains={Phase.DECODE: 2.0, (Phase.PREFILL, 1): 1.0})
    x = torch.ones(2)
    assert torch.equal(f(x, ctx), x * 2)
    assert torch.equal(f(x, ctx), x * 2)
    ctx.gains[(Phase.PREFILL, 1)] = 5.0
    assert torch.equal(f(x, ctx), x * 10)


def test_keyword_names_that_are_python_keywords() -> None:
    def total(x: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        return x + named["lambda"] * 2 + named["class"]

    f = compile_once(backend="eager")(total)
    x = torch.ones(2)
    assert torch.equal(f(x, **{"lambda": x, "class": x, "not an identifier": x}), x * 4)
    assert torch.equal(f(x, **{"lambda": x, "class": x, "not an identifier": x}), x * 4)
    assert f.stats.compiles == 1


# -- NaN, threading.local, kwargs order, container edits -----------------------------------------


def test_a_fresh_nan_each_call_is_the_same_argument() -> None:
    def fill(x: torch.Tensor, value: float) -> torch.Tensor:
        return torch.where(x > 0, x, torch.full_like(x, value))

    f = compile_once(backend="eager")(fill)
    x = torch.tensor([1.0, -1.0])
    for _ in range(5):
        assert torch.isnan(f(x, float("nan"))[1])
    assert f.stats.compiles == 1
    with pytest.raises(GuardMismatchError):
        f(x, 0.0)


def test_nan_after_a_number_recompiles_once() -> None:
    def fill(x: torch.Tensor, value: float) -> torch.Tensor:
        return x + value

    f = compile_once(backend="eager", on_mismatch="recompile")(fill)
    x = torch.ones(2)
    f(x, 1.0)
    for _ in range(3):
        assert torch.isnan(f(x, float("nan"))).all()
    assert f.stats.compiles == 2


CONTEXT = threading.local()


def _read_context(x: torch.Tensor) -> torch.Tensor:
    return x * CONTEXT.scale


def test_a_thread_local_global_is_watched() -> None:
    CONTEXT.scale = 2.0
    f = compile_once(backend="eager", on_mismatch="recompile")(_read_context)
    x = torch.ones(2)
    assert torch.equal(f(x), x * 2)
    assert torch.equal(f(x), x * 2)
    assert f.stats.compiles == 1
    CONTEXT.scale = 3.0
    assert torch.equal(f(x), x * 3)
    result: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: (setattr(CONTEXT, "scale", 5.0), result.append(f(x))))
    thread.start()
    thread.join()
    assert torch.equal(result[0], x * 5)  # the other thread's own value
    assert torch.equal(f(x), x * 3)


def test_a_thread_local_argument_object() -> None:
    def read(x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return x * ctx.scale

    f = compile_once(backend="eager")(read)
    ctx = threading.local()
    ctx.scale = 2.0
    x = torch.ones(2)
    assert torch.equal(f(x, ctx), x * 2)
    assert torch.equal(f(x, ctx), x * 2)
    ctx.scale = 3.0
    with pytest.raises(GuardMismatchError):
        f(x, ctx)


def test_kwargs_in_another_order_where_the_function_iterates_them() -> None:
    def fold(x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        for value in kwargs.values():
            x = x * 2 + value
        return x

    f = compile_once(backend="eager")(fold)
    x, a, b = torch.ones(2), torch.full((2,), 3.0), torch.full((2,), 5.0)
    f(x, a=a, b=b)
    f(x, a=a, b=b)
    with pytest.raises(GuardMismatchError, match="keyword order"):
        f(x, b=b, a=a)
    g = compile_once(backend="eager", on_mismatch="recompile")(fold)
    assert torch.equal(g(x, a=a, b=b), fold(x, a=a, b=b))
    assert torch.equal(g(x, b=b, a=a), fold(x, b=b, a=a))
    assert torch.equal(g(x, a=a, b=b), fold(x, a=a, b=b))
    assert g.stats.compiles == 2


def test_kwargs_in_another_order_where_the_function_reads_them_by_name() -> None:
    def read(x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return x * kwargs["a"] + kwargs["b"]

    f = compile_once(backend="eager")(read)
    x, a, b = torch.ones(2), torch.full((2,), 3.0), torch.full((2,), 5.0)
    f(x, a=a, b=b)
    for _ in range(3):
        assert torch.equal(f(x, b=b, a=a), x * 3 + 5)  # Dynamo's guards hold: the same specialization
    assert f.stats.compiles == 1


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Module()
        self.inner.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        self.heads = nn.ModuleDict({"main": nn.Linear(4, 4), "aux": nn.Linear(4, 4)})
        self.tail = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    @compile_once(backend="eager", on_mismatch="recompile")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.inner.layers:
            x = layer(x)
        for head in self.heads.values():
            x = head(x)
        return self.tail(x)


def _eager(model: Stack, x: torch.Tensor) -> torch.Tensor:
    return type(model).forward.__wrapped__(model, x)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.inner.layers.__delitem__(0),
        lambda m: m.inner.layers.insert(0, nn.Linear(4, 4)),
        lambda m: m.inner.layers.pop(1),
        lambda m: m.inner.layers.__setitem__(1, nn.Linear(4, 4)),
        lambda m: m.heads.pop("aux"),
        lambda m: m.tail.__delitem__(-1),
        lambda m: m.tail.append(nn.Linear(4, 4)),
    ],
    ids=["del layers[0]", "insert", "pop", "setitem", "ModuleDict.pop", "del seq[-1]", "Sequential.append"],
)
def test_container_edits_are_seen(edit: Any) -> None:
    torch.manual_seed(0)
    model = Stack()
    x = torch.randn(1, 4)
    with torch.no_grad():
        model(x)
        model(x)
        edit(model)
        assert torch.allclose(model(x), _eager(model, x))
        assert torch.allclose(model(x), _eager(model, x))
