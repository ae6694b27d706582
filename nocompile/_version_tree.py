"""Version trees: Dynamo's C++ guard manager used as one check of dict versions over objects.

``_watch.ObjectWatch`` keeps each verified state of the module dicts, and of the argument objects
with every dict and list below them, as one ``VersionTree``: a tree of guard-manager nodes whose
leaves compare dict version tags, list lengths, classes and identities, checked in one C++ call
per call. nocompile's own C checks (``_native_checks``) can stand in for a whole subtree as one
leaf. The private torch names this needs (the root guard manager, the node kind, the leaf
methods' signature across releases, the dict version function) are in ``_compat``.
"""

from __future__ import annotations

import weakref
from typing import Any

from . import _compat, _native_checks
from ._compat import add_guard_leaf


class VersionTree:
    """Dynamo's C++ guard manager, used as a tree of dict-version checks over argument objects.

    ``check(values)`` (C++, no Python frame per object) is True while every dict registered with
    ``dict_version`` has the version tag it had then and every list its length; reading a missing
    key or index fails the check. ``root`` is the tuple of values ``check`` is called with; the
    other methods return the node (a guard manager) of an item below ``node``.
    """

    def __init__(self) -> None:
        self.root, self._kind = _compat.guard_tree_root()
        self.check = self.root.check
        self._held: list[Any] = []
        """What ``identity`` checks name, kept alive with the tree."""
        self._native: list[Any] = []
        """The C checks of ``native``: released when the tree is dropped (see there)."""
        weakref.finalize(self, _native_checks.release, self._native)

    def tuple_item(self, node: Any, index: int, value: Any, source: str) -> Any:
        return node.tuple_getitem_manager(index, source, value, self._kind)

    def list_item(self, node: Any, index: int, value: Any, source: str) -> Any:
        return node.list_getitem_manager(index, source, value, self._kind)

    def dict_item(self, node: Any, key: Any, value: Any, source: str) -> Any:
        return node.dict_getitem_manager(key, source, value, self._kind)

    def instance_dict(self, node: Any, value: Any, source: str) -> Any:
        """The node of ``value.__dict__`` (read without the class's ``__getattribute__``)."""
        return node.get_generic_dict_manager(source, value.__dict__, self._kind)

    def attribute(self, node: Any, name: str, value: Any, source: str) -> Any:
        """The node of ``getattr(value at node, name)``."""
        return node.getattr_manager(name, source, value, self._kind)

    def identity(self, node: Any, value: Any, source: str) -> None:
        """The value at ``node`` is ``value`` itself (held by the tree, so its address stays its own)."""
        self._held.append(value)
        add_guard_leaf(
            node.add_id_match_guard, id(value), [f"{source} is {type(value).__qualname__} at {id(value):#x}"]
        )

    def dict_version(self, node: Any, d: dict[Any, Any], source: str) -> None:
        add_guard_leaf(node.add_dict_version_guard, d, [f"dict_version({source})"])

    def length(self, node: Any, n: int, source: str) -> None:
        add_guard_leaf(node.add_length_check_guard, n, [f"len({source}) == {n}"])

    def type_is(self, node: Any, value: Any, source: str) -> None:
        """The value at ``node`` has the class ``value`` has now (compared by identity; the class
        is held alive by ``value``, which the caller verified)."""
        add_guard_leaf(node.add_type_match_guard, id(type(value)), [f"type({source}) is {type(value).__qualname__}"])

    def native(self, node: Any, native: _native_checks.NativeCheck, description: str) -> None:
        """The value at ``node`` passes ``native.check``, one of nocompile's C checks
        (``_native_checks.NATIVE``): a leaf doing in one call what other methods do with a node per value.

        The C check compares by address and holds nothing; the tree holds what it compares
        (``_held``, which the garbage collector sees: the guard manager holds its leaves from C++,
        where it cannot). The guard manager, and so the check, can outlive the tree (a verified
        key holds the tree's ``check`` method, up to ``MAX_VERIFIED`` keys), so the tree releases
        its checks when it is dropped, before what it holds goes: a released check is false, and
        no key naming a dropped tree is reachable anyway."""
        self._held.append(native.held)
        self._native.append(native.check)
        add_guard_leaf(node.add_lambda_guard, native.check, [description])

    def cell_value(self, node: Any, cell: Any, source: str) -> None:
        """The closure cell at ``node`` holds a value equal to, and of the type of, what it holds
        now (an empty cell fails). The check holds a reference to the value."""
        value = cell.cell_contents
        contents = node.getattr_manager("cell_contents", f"{source}.cell_contents", value, self._kind)
        add_guard_leaf(contents.add_type_match_guard, id(type(value)), [f"type({source}.cell_contents)"])
        add_guard_leaf(contents.add_equals_match_guard, value, [f"{source}.cell_contents == {value!r}"])


def _version_tree_supported() -> bool:
    """Whether ``VersionTree`` works here and sees what the watch needs it to see (an attribute
    stored on an object in a list held by an argument object, even of an equal value). Needs dict
    version tags that follow instance attributes (``_compat.DICT_VERSION``); anything unexpected says no."""
    if _compat.DICT_VERSION is None:
        return False

    class Probe:
        pass

    try:
        item: Any = Probe()
        holder: Any = Probe()
        item.a = 1
        holder.items = [item]
        holder.table = {"k": 1}
        tree = VersionTree()
        node = tree.instance_dict(tree.tuple_item(tree.root, 0, holder, "h"), holder, "h.__dict__")
        tree.dict_version(node, holder.__dict__, "h.__dict__")
        items = tree.dict_item(node, "items", holder.items, "h.items")
        tree.length(items, 1, "h.items")
        item_dict = tree.instance_dict(tree.list_item(items, 0, item, "h.items[0]"), item, "h.items[0].__dict__")
        tree.dict_version(item_dict, item.__dict__, "h.items[0].__dict__")
        tree.dict_version(tree.dict_item(node, "table", holder.table, "h.table"), holder.table, "h.table")
        cell = (lambda: item).__closure__[0]  # type: ignore[index]
        tree.cell_value(tree.tuple_item(tree.root, 1, cell, "c"), cell, "c")
        defaults = tuple(range(1, 2))  # built at run time: not the code's constant (1,)

        def helper(a: int = 1) -> int:
            return a

        helper.__defaults__ = defaults
        node = tree.tuple_item(tree.root, 2, helper, "f")
        tree.identity(tree.attribute(node, "__defaults__", defaults, "f.__defaults__"), defaults, "f.__defaults__")
        roots = (holder, cell, helper)
        seen = [tree.check(roots)]
        item.a = 2
        seen.append(tree.check(roots))
        item.a = 1
        seen.append(tree.check(roots))  # the same value again is still a store
        helper.__defaults__ = tuple(range(1, 2))  # equal, not the same
        rebound = VersionTree()
        node = rebound.tuple_item(rebound.root, 0, helper, "f")
        rebound.identity(rebound.attribute(node, "__defaults__", defaults, "d"), defaults, "d")
        return (
            seen == [True, False, False]
            and not rebound.check((helper,))
            and not tree.check((Probe(), cell, helper))
            and not tree.check(())
        )
    except Exception:
        return False


#: Whether the watch may check argument objects with a ``VersionTree`` (else with Python code).
VERSION_TREE = _version_tree_supported()
