"""nocompile's C extension (``nocompile/_native.c``): leaves of a version tree that replace a
guard-manager node per value.

``ItemsCheck`` replaces, for every object in a list (a KV cache's layers), the nodes that checked
the item's class and its ``__dict__``'s version tag; ``CellsCheck`` the nodes of each plain
closure cell (an equal value of the same type); ``FunctionCheck`` those of a helper's code,
defaults and closure contents (by identity). These tests pin that each sees every change those
nodes saw, that version trees built with and without them agree on any structure and any change
(hypothesis), and that bad construction is refused with a message.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nocompile import _compat, _native_checks, _version_tree, _watch

needs_native = pytest.mark.skipif(
    _native_checks.NATIVE is None, reason="nocompile's C extension is not built, or does not apply here"
)


def native() -> _native_checks.NativeChecks:
    assert _native_checks.NATIVE is not None
    return _native_checks.NATIVE


class Layer:
    def __init__(self, length: int = 4) -> None:
        self.keys = torch.zeros(length, 2)
        self.length = length


class OtherLayer(Layer):
    pass


def _equal_looking(layer: Layer) -> Layer:
    return Layer(layer.length)


def test_the_c_extension_is_built_where_ci_expects_it() -> None:
    """``.ci/setup`` and ``.ci/wheel-check`` set ``NOCOMPILE_EXPECT_NATIVE``: there the extension
    must have been built (it is optional, so a failed build would otherwise pass unnoticed)."""
    if not os.environ.get("NOCOMPILE_EXPECT_NATIVE"):
        pytest.skip("NOCOMPILE_EXPECT_NATIVE is not set")
    assert _compat.DICT_VERSION is not None, "this Python has no dict version tags: the extension does not apply"
    assert _native_checks.NATIVE is not None, "nocompile._native was not built (see the install's build log)"


CHANGES: dict[str, Callable[[list[Layer]], None]] = {
    "an attribute stored": lambda layers: setattr(layers[1], "length", 7),
    "an attribute stored with an equal value": lambda layers: setattr(layers[1], "keys", layers[1].keys.clone()),
    "an attribute added": lambda layers: setattr(layers[2], "extra", 1),
    "an attribute removed": lambda layers: delattr(layers[0], "length"),
    "a tensor attribute replaced": lambda layers: setattr(layers[0], "keys", torch.zeros(6, 2)),
    "an item replaced by an equal-looking one": lambda layers: layers.__setitem__(1, _equal_looking(layers[1])),
    "an item's class changed in place": lambda layers: setattr(layers[2], "__class__", OtherLayer),
    "an item appended": lambda layers: layers.append(Layer()),
    "an item removed": lambda layers: layers.pop(),
    "a store through vars()": lambda layers: vars(layers[1]).__setitem__("length", 9),
}


@needs_native
@pytest.mark.parametrize("change", list(CHANGES))
def test_items_check_sees_every_change_the_item_nodes_saw(change: str) -> None:
    layers = [Layer() for _ in range(3)]
    made = native().items(layers, (0, 1, 2))
    check = made.check
    assert check(layers) and check(layers)
    CHANGES[change](layers)
    assert not check(layers)


@needs_native
def test_items_check_ignores_what_it_does_not_watch() -> None:
    """In-place tensor updates (a static cache's ``index_copy_``) store into no dict; an item at an
    index left out of the check (deeper than the walk goes) is not compared."""
    layers = [Layer() for _ in range(3)]
    made = native().items(layers, (0, 2))
    check = made.check
    assert check.count == 2
    layers[0].keys.add_(1)
    layers[1].length = 8
    layers[1] = _equal_looking(layers[0])
    assert check(layers)


@needs_native
def test_items_check_of_a_tuple_and_of_the_other_kind_of_sequence() -> None:
    layers = tuple(Layer() for _ in range(2))
    made = native().items(layers, (0, 1))
    check = made.check
    assert check(layers)
    assert not check(list(layers))  # the items are the same, the sequence's kind is not
    assert not check(layers[:1])
    layers[1].length = 5
    assert not check(layers)
    as_list = list(layers)
    assert not native().items(as_list, (0, 1)).check(tuple(as_list))


@needs_native
def test_items_check_of_an_object_without_a_dict_at_call_time_is_false() -> None:
    """An item replaced by one with no instance ``__dict__`` (a tuple) fails on its class first;
    a class whose instances lost their dict cannot be built; either way no error escapes."""
    layers: list[Any] = [Layer(), Layer()]
    made = native().items(layers, (0, 1))
    check = made.check
    layers[0] = (1, 2)
    assert check(layers) is False


@needs_native
@pytest.mark.parametrize(
    ("sequence", "indices", "error", "match"),
    [
        ({"a": 1}, (), TypeError, "list or a tuple, not dict"),
        ([Layer()], (1,), ValueError, "index 1 out of order or out of range"),
        ([Layer(), Layer()], (1, 0), ValueError, "index 0 out of order"),
        ([Layer()], (-1,), ValueError, "out of range"),
        ([(1, 2)], (0,), AttributeError, "__dict__"),
        ([Layer()], [0], TypeError, "tuple"),
    ],
)
def test_items_check_refuses_bad_construction(sequence: Any, indices: Any, error: type, match: str) -> None:
    classes = (Layer,) * len(indices)
    with pytest.raises(error, match=match):
        native().module.ItemsCheck(sequence, indices, classes)


@needs_native
def test_items_check_is_called_with_exactly_the_sequence() -> None:
    layers = [Layer()]
    made = native().items(layers, (0,))
    check: Any = made.check
    with pytest.raises(TypeError, match="takes the one sequence"):
        check()
    with pytest.raises(TypeError, match="takes the one sequence"):
        check(layers, layers)
    with pytest.raises(TypeError, match="takes the one sequence"):
        check(sequence=layers)


@needs_native
def test_items_check_is_not_fooled_by_dynamo_watching_the_dicts() -> None:
    """On Python 3.12 Dynamo's own dict-version guard watches each dict it guards (a dict watcher),
    which sets bits in the dict's version tag without a store: the C loop compares the bits that
    count stores (found on the H200's Python 3.12). On 3.10 and 3.11 nothing watches dicts."""
    layers = [Layer() for _ in range(2)]
    made = native().items(layers, (0, 1))
    check = made.check
    plain = _watch.version_tree((Holder(),))  # any tree: build a guard-manager DICT_VERSION on each layer
    for layer in layers:
        node = plain.instance_dict(plain.tuple_item(plain.root, 1, layer, "l"), layer, "l.__dict__")
        plain.dict_version(node, vars(layer), "l.__dict__")
    assert check(layers)
    layers[1].length = 3
    assert not check(layers)


@needs_native
@pytest.mark.parametrize("kind", ["items", "cells", "function"])
def test_a_check_holds_nothing_and_is_false_once_released(kind: str) -> None:
    """What a check compares is held by the caller (a version tree's ``_held``), never by the C
    object, which the guard manager holds where the garbage collector cannot see it."""
    held = Layer()
    alive = weakref.ref(held)
    value: Any
    if kind == "items":
        value = [held]
        made = native().items(value, (0,))
    elif kind == "cells":
        value = _cells(held)
        made = native().cells(value)
    else:
        value = _function_holding(held)
        made = native().function(value)
    check: Any = made.check
    assert check(value)
    check.release()
    check.release()  # twice is fine
    assert check(value) is False
    if kind == "items":
        assert made.held == (Layer,)
        return
    del held, made
    if kind == "cells":
        value[0].cell_contents = None
    else:
        value.__closure__[0].cell_contents = None
    gc.collect()
    assert alive() is None  # the check is alive, and held nothing
    assert check(value) is False


def _function_holding(obj: Any) -> Callable[[], Any]:
    def fn() -> Any:
        return obj

    return fn


@needs_native
def test_a_dropped_tree_releases_what_its_checks_hold() -> None:
    """A verified key keeps its tree's guard manager (``tree.check``) alive, up to 256 keys; the
    tree's C checks must not keep a helper's closure contents (tensors) alive with it."""
    contents = Layer()
    alive = weakref.ref(contents)
    fn = _function_holding(contents)
    tree = _watch.module_tree(("function",), (fn,))
    kept_by_a_key = tree.check
    assert kept_by_a_key((fn,))
    del tree, contents
    fn.__closure__[0].cell_contents = None  # type: ignore[index]
    gc.collect()
    assert alive() is None
    assert not kept_by_a_key((fn,))


@needs_native
def test_a_version_tree_over_a_cache_makes_one_leaf_for_its_layers() -> None:
    """What the C loop is for: an 80-layer cache's tree has no node per layer."""
    cache = Holder()
    cache.layers = [Layer() for _ in range(80)]
    tree = _watch.version_tree((cache,))
    layers_node = tree.root.get_child_managers()[0].get_child_managers()[0].get_child_managers()[0]
    assert layers_node.get_child_managers() == []
    assert [type(g).__name__ for g in layers_node.get_leaf_guards()] == ["LAMBDA_GUARD"]
    assert tree.check((cache,))
    cache.layers[79].length = 3
    assert not tree.check((cache,))


# -- closure cells and helper functions (the module part's tree) ------------------------------


def _cells(*values: Any) -> tuple[Any, ...]:
    """A closure cell holding each value."""

    def cell_of(value: Any) -> Any:
        return (lambda: value).__closure__[0]  # type: ignore[index]

    return tuple(cell_of(v) for v in values)


@needs_native
def test_cells_check_accepts_equal_values_of_the_same_type_and_nothing_else() -> None:
    cells = _cells(1.5, "cache", None, (1, 2))
    made = native().cells(cells)
    check = made.check
    assert check(cells)
    assert made.held == (1.5, "cache", None, (1, 2))
    cells[0].cell_contents = float("1.5")  # equal, same type, another object
    cells[3].cell_contents = (1, 2)
    assert check(cells)
    for k, other in [(0, 2.5), (0, 3), (1, "past_key_values"), (2, False), (3, [1, 2])]:
        before = cells[k].cell_contents
        cells[k].cell_contents = other
        assert not check(cells), (k, other)
        cells[k].cell_contents = before
    assert check(cells)
    del cells[1].cell_contents  # emptied
    assert not check(cells)
    assert not check(cells[:2]) and not check([*cells]) and not check((1, 2, 3, 4))


@needs_native
def test_cells_check_treats_an_error_in_eq_as_a_change() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    first = Weird()
    cells = _cells(first)
    made = native().cells(cells)
    check = made.check
    assert check(cells)  # the very same object: no comparison
    cells[0].cell_contents = Weird()
    assert check(cells) is False


@needs_native
def test_function_check_compares_by_identity() -> None:
    offset = 1.0

    def helper(x: Any, scale: float = 2.0, *, bias: float = 0.0) -> Any:
        return x * scale + bias + offset

    def other(x: Any, scale: float = 2.0, *, bias: float = 0.0) -> Any:
        return x * scale - bias - offset

    made = native().function(helper)

    check = made.check
    assert check(helper)
    changes: list[tuple[str, Any]] = [
        ("__code__", other.__code__),
        ("__defaults__", (float("2.0"),)),  # equal, not the same tuple (a literal would be the constant)
        ("__defaults__", None),
        ("__kwdefaults__", {"bias": 0.0}),  # equal, another dict
    ]
    for name, value in changes:
        before = getattr(helper, name)
        setattr(helper, name, value)
        assert not check(helper), name
        setattr(helper, name, before)
        assert check(helper), name
    helper.__closure__[0].cell_contents = float("1.0")  # type: ignore[index]  # equal, another object
    assert not check(helper)
    assert not check(other) and not check(len)


@needs_native
def test_function_check_of_a_function_without_closure_or_defaults() -> None:
    def plain(x: Any) -> Any:
        return x

    made = native().function(plain)

    check = made.check
    assert check(plain)
    plain.__defaults__ = (1,)
    assert not check(plain)


@needs_native
@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda n: n.module.CellsCheck([1]), TypeError, "tuple"),
        (lambda n: n.module.FunctionCheck(len, None, None, ()), TypeError, "code"),
        (lambda n: n.module.FunctionCheck((lambda: 0).__code__, None, None, [1]), TypeError, "tuple"),
        (lambda n: n.module.ItemsCheck([Layer()], (0,), ()), ValueError, "1 indices but 0 classes"),
    ],
)
def test_cells_and_function_checks_refuse_bad_construction(
    build: Callable[[_native_checks.NativeChecks], Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        build(native())


@needs_native
def test_empty_cells_are_refused_when_built() -> None:
    def make() -> Callable[[], Any]:
        late: Any  # a local of make() never assigned: inner's cell for it stays empty

        def inner() -> Any:
            return late  # noqa: F821 - bound by make(), never assigned

        return inner

    inner = make()
    cell = inner.__closure__[0]  # type: ignore[index]
    with pytest.raises(ValueError, match="empty"):
        native().cells((cell,))
    with pytest.raises(ValueError, match="empty"):
        native().function(inner)


# -- a tree made with the C loop agrees with one made item by item, on any structure ----------


class Holder:
    """An object of the generated structures (attributes set by the strategy)."""


def _structure(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nested objects, lists of objects (the only lists a version tree takes), tuples and dicts."""

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        objects = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3).map(_holder)
        return st.one_of(
            objects,
            st.lists(objects, max_size=4),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2),
        )

    return st.recursive(leaves, extend, max_leaves=24)


def _holder(attributes: dict[str, Any]) -> Holder:
    holder = Holder()
    vars(holder).update(attributes)
    return holder


def _places(value: Any, found: list[Any], depth: int = 0) -> None:
    """Every object, list and dict reachable from ``value`` (deeper than the walk goes too)."""
    if depth > 12:
        return
    if isinstance(value, Holder):
        found.append(value)
        for item in vars(value).values():
            _places(item, found, depth + 1)
    elif isinstance(value, (list, tuple)):
        if isinstance(value, list):
            found.append(value)
        for item in value:
            _places(item, found, depth + 1)
    elif isinstance(value, dict):
        found.append(value)
        for item in value.values():
            _places(item, found, depth + 1)


def _change(place: Any, how: int) -> None:
    if isinstance(place, Holder):
        if how == 0:
            place.a = 99
        elif how == 1:
            vars(place).pop(next(iter(vars(place)), "a"), None)
        elif how == 2:
            place.__class__ = _OtherHolder
        # how == 3: read, not changed
    elif isinstance(place, list):
        if how == 0:
            place.append(Holder())
        elif how == 1 and place:
            place[0] = _holder(dict(vars(place[0])))
        elif how == 2 and place:
            place.pop()
    elif isinstance(place, dict):
        place["x" if how % 2 else "y"] = how


class _OtherHolder(Holder):
    pass


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    root=_structure(st.one_of(st.integers(-2, 2), st.booleans(), st.none())).map(
        lambda v: _holder({"root": v}),
    ),
    data=st.data(),
)
def test_a_tree_with_the_c_loop_agrees_with_one_item_by_item(root: Holder, data: st.DataObject) -> None:
    def build(checks: _native_checks.NativeChecks | None) -> _version_tree.VersionTree:
        saved = _native_checks.NATIVE
        _native_checks.NATIVE = checks
        try:
            return _watch.version_tree((root,))
        finally:
            _native_checks.NATIVE = saved

    with_c, item_by_item = build(native()), build(None)
    assert with_c.check((root,)) and item_by_item.check((root,))
    places: list[Any] = []
    _places(root, places)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        place = places[data.draw(st.integers(0, len(places) - 1), label="where")]
        _change(place, data.draw(st.integers(0, 3), label="how"))
        assert with_c.check((root,)) == item_by_item.check((root,))


_CELL_VALUES = [0, 1, 1.0, True, False, None, "a", "b", (1, 2), (1, 2.0), 2.5]


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.sampled_from(_CELL_VALUES), min_size=1, max_size=6),
    defaults=st.sampled_from([None, (1,), (1, "a")]),
    changes=st.lists(
        st.tuples(st.sampled_from(["cell", "empty", "defaults", "code", "free"]), st.integers(0, 20)),
        max_size=3,
    ),
)
def test_a_module_tree_with_the_c_checks_agrees_with_one_node_by_node(
    values: list[Any], defaults: tuple[Any, ...] | None, changes: list[tuple[str, int]]
) -> None:
    """The module part's roots that the C checks take over: a tuple of plain closure cells and a
    helper function (its free variable's cell too)."""
    cells = _cells(*[type(v)(v) if isinstance(v, (int, float, str)) else v for v in values])
    free = 1

    def helper(x: Any = 0) -> Any:
        return x + free

    def other(x: Any = 0) -> Any:
        return x - free

    helper.__defaults__ = defaults
    kinds, roots = ("cells", "function"), (cells, helper)

    def build(checks: _native_checks.NativeChecks | None) -> _version_tree.VersionTree:
        saved = _native_checks.NATIVE
        _native_checks.NATIVE = checks
        try:
            return _watch.module_tree(kinds, roots)
        finally:
            _native_checks.NATIVE = saved

    with_c, node_by_node = build(native()), build(None)
    assert with_c.check(roots) and node_by_node.check(roots)
    for what, n in changes:
        if what == "cell":
            cells[n % len(cells)].cell_contents = _CELL_VALUES[n % len(_CELL_VALUES)]
        elif what == "empty":
            del cells[n % len(cells)].cell_contents
        elif what == "defaults":
            helper.__defaults__ = [None, (1,), (int("1"),), (1, "a")][n % 4]
        elif what == "code":
            helper.__code__ = [helper.__code__, other.__code__][n % 2]
        else:
            free = [1, 2, int("1")][n % 3]
        assert with_c.check(roots) == node_by_node.check(roots), (what, n)


@needs_native
def test_a_cells_check_released_and_dropped_during_eq_is_false() -> None:
    """``==`` on a cell's value runs Python code, which may drop the version tree (another thread
    rotating its slots): the check holds what it compares for the call (found in review, where
    it crashed), and is false once released."""

    class Text(str):
        def __eq__(self, other: object) -> bool:
            holder.pop().check.release()  # the tree's release, and its held values gone
            gc.collect()
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    cells = _cells(Text("x"), Text("y"))
    holder = [native().cells(cells)]
    check = holder[0].check
    for cell in cells:
        cell.cell_contents = Text(cell.cell_contents)  # equal, another object: == runs
    assert check(cells) is False
    assert holder == []


@needs_native
@pytest.mark.parametrize("kind", ["function", "cells", "items"])
def test_a_tree_in_a_cycle_through_what_it_checks_is_collected(kind: str) -> None:
    """A model's state holds its trees, and a tree's checks what they compare: a helper closing
    over the model (or a class attribute naming it) makes a cycle, which the garbage collector
    must see through (found in review: a C check owning the closure contents was invisible to it,
    held by the guard manager from C++)."""
    holder = Holder()
    alive = weakref.ref(holder)
    if kind == "function":
        helper = _function_holding(holder)
        tree = _watch.module_tree(("function",), (helper,))
        roots: tuple[Any, ...] = (helper,)
    elif kind == "cells":
        cells = _cells(holder)
        tree = _watch.module_tree(("cells",), (cells,))
        roots = (cells,)
    else:
        layer_class = type("Cyclic", (), {"holder": holder})  # a class attribute naming it
        root = Holder()
        root.layers = [layer_class()]
        tree = _watch.version_tree((root,))
        roots = (root,)
    assert tree.check(roots)
    holder.trees = {tree.check: tree}  # as model -> state -> selector -> ObjectWatch._trees
    del holder, tree, roots
    if kind == "function":
        del helper
    elif kind == "cells":
        del cells
    else:
        del root, layer_class
    gc.collect()
    assert alive() is None


@needs_native
def test_watch_check_probes_dicts_names_classes_and_reads() -> None:
    """``WatchCheck``: a changed dict is reported by index unless every name read in it still
    holds (then its tag is taken anew); a changed class or read is -1; as a predicate it checks
    its owner and falls back with the call's arguments."""
    module = native().module
    missing = object()

    class Holder:
        pass

    holder, namespace, plain = Holder(), {"a": 1.5, "b": "x"}, {"k": 1}
    cell = (lambda: holder).__closure__[0]  # type: ignore[index]
    names = ((("a", 1.5), ("c", missing)), None)
    check = module.WatchCheck(
        (namespace, plain), (holder,), ((cell, "cell_contents", holder),), None, None, names, missing
    )
    assert check.probe() is None
    namespace["unread"] = 1  # a name the trace never read
    namespace["a"] = 1.0 + 0.5  # an equal float, another object
    assert check.probe() is None
    namespace["c"] = 0  # a name read as missing now exists
    assert check.probe() == 0
    del namespace["c"]
    assert check.probe() is None
    plain["k"] = 2  # a plain dict: every change counts
    assert check.probe() == 1
    check.update(1)
    assert check.probe() is None
    holder.__class__ = type("Other", (Holder,), {})
    assert check.probe() == -1
    holder.__class__ = Holder
    fresh = module.WatchCheck((), (), ())
    check.take(fresh)  # the per-call path keeps ``check``, now with no checks at all
    plain["k"] = 3  # only ``fresh`` (which took the old checks) sees it
    assert check.probe() is None and fresh.probe() == 1
    fresh.release()
    assert fresh.probe() == -1
    with pytest.raises(TypeError, match="not a predicate"):
        check(1)
    with pytest.raises(TypeError, match="reads must be"):
        module.WatchCheck((), (), ((1, 2),))


@needs_native
def test_watch_check_reads_fields_directly_and_sees_them_change() -> None:
    """A class's ``__name__`` (a class of ``type``: its name field) and a bound method's
    ``__func__`` are read without getattr; renaming the class or rebinding is still a change.
    A metaclass's class keeps getattr (a metaclass may define ``__name__``)."""
    module = native().module

    class Plain:
        def method(self) -> int:
            return 1

    class Meta(type):
        pass

    class Other(metaclass=Meta):
        pass

    bound = Plain().method
    reads = (
        (Plain, "__name__", Plain.__name__),
        (bound, "__func__", Plain.method),
        (Other, "__name__", Other.__name__),
    )
    check = module.WatchCheck((), (), reads)
    assert check.probe() is None
    Plain.__name__ = "Renamed"
    assert check.probe() == -1
    Plain.__name__ = reads[0][2]
    assert check.probe() is None
    Other.__name__ = "Renamed"
    assert check.probe() == -1
    Other.__name__ = reads[2][2]
    assert check.probe() is None
    fresh_bound = Plain().method
    assert module.WatchCheck((), (), ((fresh_bound, "__func__", Plain.method),)).probe() is None
    assert module.WatchCheck((), (), ((fresh_bound, "__func__", Meta.mro),)).probe() == -1


@needs_native
def test_watch_check_as_a_predicate_checks_its_owner_and_falls_back() -> None:
    module = native().module

    class Owner:
        pass

    owner, other, seen = Owner(), Owner(), []

    def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "fallback"

    state = {"v": 1}
    check = module.WatchCheck((state,), (), (), weakref.ref(owner), fallback)
    assert check(owner, 2, key=3) is True and seen == []
    assert check(other, 2) == "fallback" and seen == [((other, 2), {})]
    state["v"] = 2
    assert check(owner, key=3) == "fallback" and seen[-1] == ((owner,), {"key": 3})
