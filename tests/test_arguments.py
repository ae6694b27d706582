"""The one walk over a call's arguments (``nocompile._arguments``) and what is derived from it.

Pins the classification of every kind of value (``RULES``), the paths and expressions of the
tree, the depth limit, and the projections that other modules use (argument tensors and objects
for CUDA graphs, the rebuilt call, the identity snapshot, the dims marked dynamic).
"""

from __future__ import annotations

import collections
import enum
import functools
import math
import types
from typing import Any

import pytest
import torch
from torch import nn

from nocompile._arguments import MAX_OBJECT_DEPTH, Kind, classify, identity_snapshot, rebuild, walk
from nocompile._codegen import GETATTR, bound_names


class Color(enum.Enum):
    RED = 1


class Plain:
    def __init__(self) -> None:
        self.n = 1


class Slotted:
    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


Pair = collections.namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (torch.zeros(2), Kind.TENSOR),
        (nn.Parameter(torch.zeros(2)), Kind.TENSOR),
        (nn.Linear(2, 2), Kind.MODULE),
        (1, Kind.SCALAR),
        (1.5, Kind.SCALAR),
        (True, Kind.SCALAR),
        (1j, Kind.SCALAR),
        ("s", Kind.SCALAR),
        (None, Kind.SCALAR),
        (Color.RED, Kind.SCALAR),
        (torch.float16, Kind.SCALAR),
        (torch.device("cpu"), Kind.SCALAR),
        (len, Kind.CONSTANT),
        (math.sin, Kind.CONSTANT),
        (lambda x: x, Kind.CONSTANT),
        (Plain, Kind.CONSTANT),
        (range(3), Kind.CONSTANT),
        (slice(0, 2), Kind.CONSTANT),
        ([1, 2], Kind.SEQUENCE),
        ((1, 2), Kind.SEQUENCE),
        (Pair(1, 2), Kind.SEQUENCE),
        (torch.Size([2, 3]), Kind.SEQUENCE),
        ({"a": 1, 2: 3}, Kind.MAPPING),
        ({(1, 2): 3}, Kind.MAPPING),  # keys bound as constants of the generated code (#25)
        ({Color.RED: 1, frozenset({1}): 2, 1.5: 3}, Kind.MAPPING),
        ({object(): 1}, Kind.OPAQUE),  # compared by identity: not a key the check can name
        ({float("nan"): 1}, Kind.OPAQUE),  # found only by identity
        (Plain(), Kind.OBJECT),
        (Slotted(), Kind.OPAQUE),
        (functools.partial(len), Kind.OPAQUE),
        (types.SimpleNamespace(a=1), Kind.OBJECT),
        ({1, 2}, Kind.OPAQUE),
        (b"bytes", Kind.OPAQUE),
    ],
    ids=repr,
)
def test_every_kind_of_value_is_classified(value: Any, kind: Kind) -> None:
    assert classify(value) is kind


def test_paths_and_expressions_reach_every_value_again() -> None:
    def fn(x: Any, items: Any, *rest: Any, obj: Any = None, **extra: Any) -> None:
        return None

    obj = Plain()
    obj.inner = Plain()  # type: ignore[attr-defined]
    args = (torch.ones(1), [torch.ones(2), {"k": 3}], torch.ones(3))
    kwargs = {"obj": obj, "z": 1.0, "a": "s"}
    tree = walk(fn, args, kwargs)
    found = {n.path: n for n in tree.nodes()}
    assert list(found) == [
        "x", "items", "items[0]", "items[1]", "items[1]['k']", "rest", "rest[0]",
        "obj", "obj.n", "obj.inner", "obj.inner.n", "extra", "extra['a']", "extra['z']",
    ]  # fmt: skip
    assert found["extra"].varkw and [c.path for c in found["extra"].children] == ["extra['a']", "extra['z']"]
    namespace = {root.path: root.value for root in tree.roots}  # the bound parameters
    for node in tree.nodes():
        if node.local is not None:
            namespace[node.local] = node.value
        if node.expr is not None:
            assert eval(node.expr, {}, namespace) is node.value, node.path
    assert found["obj.inner.n"].inside_object and not found["items[0]"].inside_object
    assert found["x"].parameter == "x" and found["items[0]"].parameter is None


def test_attributes_python_cannot_spell_are_read_through_getattr() -> None:
    obj = Plain()
    for name in ("not an identifier", "lambda", "rope-theta", "__dunder"):
        setattr(obj, name, 2)
    tree = walk(lambda o: o, (obj,), {})
    for name in ("not an identifier", "lambda", "rope-theta", "__dunder"):
        (odd,) = [n for n in tree.nodes() if n.path == f"o.{name}"]
        assert odd.kind is Kind.SCALAR and odd.expr == f"{GETATTR}(_nc_o1, {name!r})"
        assert eval(odd.expr, bound_names(odd.expr), {"_nc_o1": obj}) == 2


def test_depth_is_bounded_and_a_cycle_terminates() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    tree = walk(lambda node: node, (Node(),), {})
    deepest = max(tree.nodes(), key=lambda n: n.path.count(".me"))
    assert deepest.path == "node" + ".me" * MAX_OBJECT_DEPTH
    assert deepest.kind is Kind.OPAQUE and "deeper than" in deepest.note
    assert tree.unchecked() == [f"{deepest.path} ({deepest.note})"]


def test_modules_are_followed_only_when_asked() -> None:
    module = nn.Linear(2, 2)
    shallow = walk(lambda m: m, (module,), {})
    assert [n.path for n in shallow.nodes()] == ["m"]
    deep = walk(lambda m: m, (module,), {}, follow_modules=True)
    paths = {n.path for n in deep.nodes()}
    assert "m._parameters['weight']" in paths and "m.in_features" in paths


def test_argument_tensors_objects_and_rebuild_keep_one_order() -> None:
    def fn(a: Any, b: Any, *rest: Any, c: Any = None, **extra: Any) -> None:
        return None

    obj, module = Plain(), nn.ReLU()
    args = (torch.ones(1), [torch.ones(2), 3, obj, Pair(torch.ones(6), module)], torch.ones(3))
    kwargs = {"c": {"k": torch.ones(4)}, "z": torch.ones(5), "f": torch.relu}
    tree = walk(fn, args, kwargs)
    tensors = tree.argument_tensors()
    assert [n.path for n in tensors] == ["a", "b[0]", "b[3][0]", "rest[0]", "c['k']", "extra['z']"]
    assert [n.path for n in tree.argument_objects()] == ["b[2]", "b[3][1]"]
    new = [torch.zeros(n.value.numel()) for n in tensors]
    new_args, new_kwargs = rebuild(tree, new)
    assert new_args[0] is new[0] and new_args[1][0] is new[1] and new_args[1][2] is obj
    assert isinstance(new_args[1][3], Pair) and new_args[1][3].a is new[2] and new_args[1][3].b is module
    assert new_args[2] is new[3] and new_kwargs["c"]["k"] is new[4] and new_kwargs["z"] is new[5]
    assert new_kwargs["f"] is torch.relu


def test_identity_snapshot_sees_rebinding_not_in_place_updates() -> None:
    class Cache:
        def __init__(self) -> None:
            self.keys = torch.zeros(2)
            self.filled = 0

    cache = Cache()
    before = identity_snapshot(walk(lambda c: c, (cache,), {}))
    cache.keys.add_(1)
    assert identity_snapshot(walk(lambda c: c, (cache,), {})) == before
    cache.filled = 1
    cache.keys = torch.zeros(2)
    after = identity_snapshot(walk(lambda c: c, (cache,), {}))
    assert {p for p in before if before[p] != after.get(p)} == {"c.keys", "c.filled"}


def test_a_module_attribute_rebound_shows_in_the_snapshot_when_modules_are_followed() -> None:
    module = nn.Module()
    module.register_buffer("buf", torch.zeros(2))
    before = identity_snapshot(walk(lambda m: m, (module,), {}, follow_modules=True))
    module.buf = torch.ones(2)
    after = identity_snapshot(walk(lambda m: m, (module,), {}, follow_modules=True))
    assert [p for p in before if before[p] != after[p]] == ["m._buffers['buf']"]
