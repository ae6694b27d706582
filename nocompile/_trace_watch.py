"""The trace watch: what Dynamo's guards read outside the call's arguments, checked on every call.

``guards="inputs"`` checks the call's arguments itself (``_layout``, ``_selector``) and keeps a
fingerprint of hand-picked places where baked-in values live (``_watch``). What the trace read
elsewhere — a global of another module (``cfgmod.SCALE``), a helper's globals, a patched builtin,
a nested config (``self.config.text.scale``), a container edited without registration hooks —
is known exactly only to Dynamo: each of its guards has a *source*, a path from a root (the
globals, a local, a closure cell) through attributes and items to a value. Dynamo keeps them as
a tree (its guard manager); evaluating all of it on every call is what we set out to avoid.

``TraceWatch`` follows that tree's paths from the roots that are not arguments (the function's
globals, ``self`` of a method, closure cells) once, with the values they reach, and flattens
them into what one C call (``_native.WatchCheck``) compares per call:

* every dict on a path keeps its version tag (CPython changes it on every store into it). A
  *namespace* (the globals, a module's or an object's ``__dict__``) that changed is then checked
  name by name: each name the trace read must still hold the very object it held (identity
  implies Dynamo's equality and type checks), and the tag is taken anew. So a store under a name
  the trace never read (a loop variable at a script's top level, a counter on ``self``) leaves
  the fast path at once. A plain dict on a path (its contents matter) that changed fails;
* every object on a path keeps its class (``obj.__class__ = Other`` stores into no dict);
* the few reads no dict holds (a class attribute, a property, a slot, an item of a list, a
  closure cell's contents) are compared by identity in Python.

When any of that fails, Dynamo's own guard manager decides (``holds``): the call runs when every
guard passes (an equal value stored again) and the watch is rebuilt, a bounded number of times;
otherwise the call goes to the slow path, which recompiles or raises. Where a path cannot be
followed (an accessor or a value the watch does not know: a set changed in place, a mapping that
is not a dict), the watch is *inexact*: the guard manager runs
on every call, as stock ``torch.compile`` does. Without the C extension the same comparisons run
in Python (``PythonWatchCheck``).
"""

from __future__ import annotations

import ast
import gc
import inspect
import re
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import _native_checks, _watch
from ._arguments import bound_arguments, closure_values

#: How many times a watch is rebuilt after Dynamo's guards passed where it did not; after that, a
#: failing watch is followed by the guard manager on each such call.
MAX_REBUILDS = 16

#: Values compared by identity alone: immutable, so the same object is the same value.
_IMMUTABLE = (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, torch.memory_format)

#: Leaf guards an immutable value passes whenever it is the very object it was (identity implies them).
_IMPLIED_BY_IDENTITY = {"ID_MATCH", "TYPE_MATCH", "EQUALS_MATCH", "NOT_NONE", "OBJECT_ALIASING"}

_MISSING = object()
_IMMUTABLE_TYPE = 1 << 8
"""``Py_TPFLAGS_IMMUTABLETYPE`` (Python 3.10+): a builtin class, whose instances' ``__class__``
Python refuses to assign (``object.__class__``'s setter), modules excepted."""
_OBJECT_CLASS = object.__dict__["__class__"]

#: Types whose equal values are interchangeable (NaN is not equal to itself, so it is not).
_EQUAL_BY_VALUE = frozenset({int, float, complex, bool, str, bytes})


class Unfollowed(Exception):
    """A path of the guard tree the watch cannot follow (the watch is then inexact)."""


class Paths:
    """What ``follow`` found on the guard tree's paths: the flat lists the watch compares."""

    def __init__(self) -> None:
        self.dicts: dict[int, tuple[dict[Any, Any], list[tuple[Any, Any]] | None]] = {}
        """By identity: a dict on a path, and the ``(key, value)`` pairs read in it (None: a plain
        dict, whose every change counts)."""
        self.objects: dict[int, Any] = {}
        """Objects whose class must stay."""
        self.reads: list[tuple[Any, str, Any]] = []
        """``(holder, attribute, value)`` read without a dict (a class attribute, a cell's contents)."""
        self.lists: list[tuple[list[Any], int, list[tuple[int, Any]]]] = []
        """A list on a path: its length and the items read."""

    def namespace_read(self, d: dict[Any, Any], key: Any, value: Any) -> None:
        _, reads = self.dicts.setdefault(id(d), (d, []))
        if reads is not None:
            reads.append((key, value))

    def keep_class(self, value: Any) -> None:
        """Check ``value``'s class on every call, unless Python refuses to change it (the class is
        a builtin, immutable type: a function, a cell, a class of ``type``...; modules excepted)."""
        if not type(value).__flags__ & _IMMUTABLE_TYPE or isinstance(value, types.ModuleType):
            self.objects[id(value)] = value

    def plain(self, d: dict[Any, Any]) -> None:
        self.dicts[id(d)] = (d, None)


class TraceWatch:
    """The trace watch of one specialization (see the module docstring).

    ``holds(args, kwargs)`` is True when the call may run the specialization as far as what its
    trace read outside the arguments is concerned. ``exact`` says whether the watch covers the
    whole tree (else Dynamo's guard manager runs on every call).
    """

    def __init__(self, fn: types.FunctionType, manager: Any, arguments: Mapping[str, Any]) -> None:
        self.function = fn
        self.manager = manager
        self._self_name = _self_parameter(fn, arguments)
        self._self: Any = lambda: None
        """A weak reference to ``self`` (a compiled bound method must not keep its object alive)."""
        self.rebuilds = 0
        self.reason = ""
        """Why the watch is inexact ("" when exact)."""
        self._check: Any = None
        self.predicate: Any = None  # set before the first build
        """Where the whole per-call check is one C call (``_native.WatchCheck`` with this watch's
        ``holds`` as its fallback): called with the call's arguments in place of ``holds``."""
        self._dicts: tuple[tuple[dict[Any, Any], list[tuple[Any, Any]] | None], ...] = ()
        self._self_reads: tuple[tuple[str, Any], ...] = ()
        self._lists: tuple[tuple[list[Any], int, list[tuple[int, Any]]], ...] = ()
        self._build(arguments)

    @property
    def self_name(self) -> str | None:
        """The parameter the watch follows as ``self`` (a module's method), or None."""
        return self._self_name

    @property
    def exact(self) -> bool:
        return self._check is not None

    def _build(self, arguments: Mapping[str, Any]) -> None:
        if self._check is not None:
            self._check.release()
        self._check = None
        this = arguments.get(self._self_name) if self._self_name else None
        if isinstance(this, tuple):  # ``*args``: the module is its first item
            this = this[0]
        try:
            paths = follow(self.function, self.manager, this, self._self_name)
        except Unfollowed as exc:
            self.reason = str(exc)
            return
        self._self = weakref.ref(this) if this is not None else lambda: None
        paths.objects.pop(id(this), None)  # its class is in the per-call key; holding it would keep it alive
        self._dicts = tuple(paths.dicts.values())
        # Reads through ``self`` itself (a class attribute) stay here, through the weak reference
        # (its class is compared on every call anyway); the others are compared by the check.
        self._self_reads = tuple((n, v) for h, n, v in paths.reads if h is this and n != "__class__")
        # Once each (a helper inlined at two places reads its code twice).
        reads = tuple({(id(h), n): (h, n, v) for h, n, v in paths.reads if h is not this}.values())
        self._lists = tuple(paths.lists)
        objects = tuple(paths.objects.values())
        dicts = tuple(d for d, _ in self._dicts)
        native = _native_checks.NATIVE
        if native is not None and hasattr(native.module, "WatchCheck"):
            whole = not self._self_reads and not self._lists and (this is None) == (self._self_name is None)
            owner = weakref.ref(this) if this is not None else None
            names = tuple(None if pairs is None else tuple(pairs) for _, pairs in self._dicts)
            fallback = self._fallback if whole else None
            fresh = native.module.WatchCheck(dicts, objects, reads, owner, fallback, names, _MISSING)
            if whole and self.predicate is not None:
                # The per-call path holds the first predicate: it takes the new checks (and stays
                # released, falling back to ``holds``, when the new ones are not whole).
                self.predicate.take(fresh)
                fresh.release()
                fresh = self.predicate
            elif whole:
                self.predicate = fresh
            self._check = fresh
        else:
            self._check = PythonWatchCheck(dicts, objects, reads)
        self.reason = ""

    def holds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether what the trace read outside the arguments still holds for this call."""
        check = self._check
        this = None if self._self_name is None else args[0] if args else kwargs.get(self._self_name)
        if check is not None and this is self._self():
            changed = check.probe()
            while changed is not None and changed >= 0 and self._same_names(changed):
                check.update(changed)
                changed = check.probe()
            if changed is None and self._others_hold():
                return True
        arguments = bound_arguments(self.function, args, kwargs)
        if not self.manager.check({**arguments, **closure_values(self.function)}):
            return False
        if check is not None and self.rebuilds < MAX_REBUILDS:
            self.rebuilds += 1
            self._build(arguments)
        return True

    def _fallback(self, *args: Any, **kwargs: Any) -> bool:
        return self.holds(args, kwargs)

    def _same_names(self, index: int) -> bool:
        d, reads = self._dicts[index]
        if reads is None:
            return False
        get = d.get
        for key, value in reads:
            now = get(key, _MISSING)
            # An equal immutable value stored again (``settings.scale = 2.0``) is the same value.
            if now is not value and not (type(now) is type(value) and type(value) in _EQUAL_BY_VALUE and now == value):
                return False
        return True

    def _others_hold(self) -> bool:
        for name, value in self._self_reads:
            if getattr(self._self(), name, _MISSING) is not value:
                return False
        for items, length, read in self._lists:
            if len(items) != length or any(items[i] is not value for i, value in read):
                return False
        return True

    def describe(self) -> str:
        if self._check is None:
            return f"inexact ({self.reason}): Dynamo's guards run on every call"
        return (
            f"exact: {len(self._dicts)} dicts and {len(self._self_reads) + len(self._lists)} other reads on the paths "
            "Dynamo's guards read outside the arguments"
        )


def _self_parameter(fn: types.FunctionType, arguments: Mapping[str, Any]) -> str | None:
    """The parameter that holds the module whose method this is: the first named one, or a
    wrapper's ``*args`` whose first item is the module (``model.forward`` of a Hugging Face model
    is a ``deprecate_kwarg`` wrapper ``(*args, **kwargs)``). The module is the call's first
    positional argument either way."""
    code = fn.__code__
    names = code.co_varnames[: code.co_argcount]
    if names:
        return names[0] if isinstance(arguments.get(names[0]), torch.nn.Module) else None
    if code.co_flags & inspect.CO_VARARGS:
        star = code.co_varnames[code.co_argcount + code.co_kwonlyargcount]
        packed = arguments.get(star)
        if isinstance(packed, tuple) and packed and isinstance(packed[0], torch.nn.Module):
            return star
    return None


class PythonWatchCheck:
    """``_native.WatchCheck`` in Python, where the C extension is not built or does not apply
    (the same comparisons: dicts, classes, then reads by identity): each dict's fingerprint as the
    watch takes it (``_watch.dict_fingerprint``: its version tag, or where this Python has none,
    3.13 and later, its keys and the identities of its values)."""

    def __init__(
        self, dicts: tuple[dict[Any, Any], ...], objects: tuple[Any, ...], reads: tuple[tuple[Any, str, Any], ...]
    ) -> None:
        self._reads = reads
        self._version = _watch.dict_fingerprint
        self._dicts = dicts
        self._versions = [self._version(d) for d in dicts]
        self._objects = [(obj, type(obj)) for obj in objects]
        self._released = False

    def probe(self) -> int | None:
        if self._released:
            return -1
        version = self._version
        for k, (d, seen) in enumerate(zip(self._dicts, self._versions, strict=True)):
            if version(d) != seen:
                return k
        for obj, kind in self._objects:
            if type(obj) is not kind:
                return -1
        for holder, name, value in self._reads:
            if getattr(holder, name, _MISSING) is not value:
                return -1
        return None

    def update(self, index: int) -> None:
        self._versions[index] = self._version(self._dicts[index])

    def release(self) -> None:
        self._released = True


# -- following the guard tree --------------------------------------------------------------------

_FRAME_LOCAL = re.compile(r"key='([^']*)'")


def follow(fn: types.FunctionType, manager: Any, this: Any, self_name: str | None) -> Paths:
    """The paths of ``manager``'s guard tree from the globals, ``self`` and the closure cells,
    with the values they reach now. Raises ``Unfollowed``."""
    paths = Paths()
    root = manager.root
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))
    for accessor, child in zip(root.get_accessors(), root.get_child_managers(), strict=True):
        kind = type(accessor).__name__
        if kind == "GlobalsGuardAccessor":
            _follow(paths, fn.__globals__, child, "G", namespace=True)
        elif kind == "FrameLocalsGuardAccessor":
            match = _FRAME_LOCAL.search(accessor.repr())
            name = match.group(1) if match else None
            if name is not None and name == self_name and isinstance(this, torch.nn.Module):
                _follow_self(paths, this, child, name)
            elif name is not None and name in cells:
                try:
                    value = cells[name].cell_contents
                except ValueError as exc:
                    raise Unfollowed(f"the closure cell {name!r} is empty") from exc
                paths.reads.append((cells[name], "cell_contents", value))
                _follow(paths, value, child, name)
            # Any other local is an argument: the input check's part.
        else:
            raise Unfollowed(f"a root the watch does not follow ({kind})")
    return paths


def _follow_self(paths: Paths, this: Any, manager: Any, name: str) -> None:
    """``self``'s subtree; where ``self`` is the first item of a wrapper's ``*args``, only that
    item's (the other items are arguments: the input check's part)."""
    item_kinds = ("TupleGetItemGuardAccessor", "GetItemGuardAccessor")
    if issubclass(manager.get_type_of_guarded_value(), tuple):
        for accessor, child in zip(manager.get_accessors(), manager.get_child_managers(), strict=True):
            if type(accessor).__name__ in item_kinds and _index(accessor) == 0:
                _follow(paths, this, child, f"{name}[0]")
        return
    _follow(paths, this, manager, name)


def _index(accessor: Any) -> Any:
    """The key or index an item accessor reads, from its printed form ``Kind(<repr>)``, or None."""
    printed = accessor.repr()
    inner = printed[printed.find("(") + 1 : -1] if printed.endswith(")") else ""
    try:
        return ast.literal_eval(inner)
    except (ValueError, SyntaxError):
        return None


def _follow(paths: Paths, value: Any, manager: Any, source: str, namespace: bool = False) -> None:
    """Record ``value`` (what ``manager`` guards) as its leaves need, then follow its children."""
    _record(paths, value, manager.get_leaf_guards(), source, namespace)
    if type(manager).__name__ == "DictGuardManager":
        _dict_entries(paths, value, manager, source)
    for accessor, child in zip(manager.get_accessors(), manager.get_child_managers(), strict=True):
        _child(paths, value, accessor, child, source)


_NO_HASATTR = re.compile(r"hasattr\(.*, '([^']+)'\)")


def _record(paths: Paths, value: Any, leaf_guards: list[Any], source: str, namespace: bool) -> None:
    """What makes the leaves on ``value``'s node hold while the holder's read of it holds (the
    holder records that read: ``value`` is the very object it was)."""
    leaves = {type(leaf).__name__ for leaf in leaf_guards}
    if isinstance(value, torch.Tensor):
        return  # a parameter's or buffer's layout: the sentinel and the verification's part
    if isinstance(value, dict):
        if not namespace or leaves - _IMPLIED_BY_IDENTITY:
            paths.plain(value)  # its contents matter (or what it lacks: DICT_CONTAINS)
        return
    if isinstance(value, (*_IMMUTABLE, types.FunctionType, types.CodeType)):
        return  # reached by identity from its holder; a function's parts are children of its node
    if isinstance(value, (tuple, frozenset)):
        by_content = "EQUALS_MATCH" in leaves and not _deeply_immutable(value)
        if leaves - _IMPLIED_BY_IDENTITY - {"LENGTH_CHECK"} or by_content:
            raise Unfollowed(f"{source}: a {type(value).__name__} compared by content ({', '.join(sorted(leaves))})")
        return
    if isinstance(value, list):
        if leaves - {"ID_MATCH", "TYPE_MATCH", "NOT_NONE", "OBJECT_ALIASING"}:  # LENGTH_CHECK, EQUALS_MATCH
            paths.lists.append((value, len(value), list(enumerate(value))))
        return  # otherwise its length and items are recorded by whoever reads them (``_child``)
    for leaf in leaf_guards:
        kind = type(leaf).__name__
        if kind == "NO_HASATTR":
            match = _NO_HASATTR.search(" ".join(leaf.verbose_code_parts()))
            attributes = _generic_dict(value)
            if match is None or attributes is None or _class_has(type(value), match.group(1)):
                raise Unfollowed(f"{source}: a missing attribute the watch cannot name")
            paths.namespace_read(attributes, match.group(1), _MISSING)
        elif kind not in ("ID_MATCH", "TYPE_MATCH", "NOT_NONE", "OBJECT_ALIASING"):
            raise Unfollowed(f"{source}: a {type(value).__name__} guarded by {kind}")
    paths.keep_class(value)


def _deeply_immutable(value: Any) -> bool:
    """Whether the same object is always an equal value: immutable, and so is everything in it."""
    if isinstance(value, (tuple, frozenset)):
        return all(_deeply_immutable(item) for item in value)
    return isinstance(value, (*_IMMUTABLE, types.FunctionType, types.CodeType, type))


def _class_has(kind: type, name: str) -> bool:
    return any(name in klass.__dict__ for klass in kind.__mro__)


def _dict_entries(paths: Paths, value: Any, manager: Any, source: str) -> None:
    if not isinstance(value, dict):
        raise Unfollowed(f"{source}: a {type(value).__name__} guarded as a dict")
    paths.plain(value)
    keys = list(value)
    for index, (key_manager, value_manager) in manager.get_key_value_managers().items():
        if index >= len(keys):
            raise Unfollowed(f"{source}: fewer entries than the guards read")
        if key_manager is not None and key_manager.get_accessors():
            raise Unfollowed(f"{source}: a guarded dict key with parts of its own")
        if value_manager is not None:
            key = keys[index]
            _follow(paths, value[key], value_manager, f"{source}[{key!r}]")


def _child(paths: Paths, value: Any, accessor: Any, manager: Any, source: str) -> None:
    kind = type(accessor).__name__
    if kind == "DictGetItemGuardAccessor":
        if not isinstance(value, dict):
            raise Unfollowed(f"{source}: an item of a {type(value).__name__}")
        key = _dict_key(value, accessor.repr(), source)
        item = value[key]
        paths.namespace_read(value, key, item)
        _follow(paths, item, manager, f"{source}[{key!r}]")
    elif kind in _NAMESPACE_ACCESSORS:
        attributes = _NAMESPACE_ACCESSORS[kind](value)
        if attributes is None:
            raise Unfollowed(f"{source}.__dict__: not a plain instance or class dict")
        paths.dicts.setdefault(id(attributes), (attributes, []))
        _follow(paths, attributes, manager, f"{source}.__dict__", namespace=True)
    elif kind == "GetAttrGuardAccessor":
        _attribute(paths, value, accessor.get_attr_name(), manager, source)
    elif kind in _ATTRIBUTE_ACCESSORS:
        name = _ATTRIBUTE_ACCESSORS[kind]
        item = getattr(value, name)
        paths.reads.append((value, name, item))
        _follow(paths, item, manager, f"{source}.{name}")
    elif kind in ("TupleGetItemGuardAccessor", "ListGetItemGuardAccessor"):
        index = _index(accessor)
        expected = tuple if kind.startswith("Tuple") else list
        if not isinstance(index, int) or type(value) is not expected:
            raise Unfollowed(f"{source}: {accessor.repr()} of a {type(value).__name__}")
        item = value[index]
        if isinstance(value, list):
            paths.lists.append((value, len(value), [(index, item)]))
        _follow(paths, item, manager, f"{source}[{index}]")
    elif kind == "TypeGuardAccessor":
        paths.keep_class(value)  # its class stays (checked per call) ...
        _follow(paths, type(value), manager, f"type({source})")  # ... and what the trace read of it
    elif kind == "TypeMROGuardAccessor":
        paths.reads.append((value, "__mro__", value.__mro__))
        _follow(paths, value.__mro__, manager, f"{source}.__mro__")
    elif kind == "GetItemGuardAccessor":
        index = _index(accessor)
        if isinstance(value, tuple) and isinstance(index, int) and -len(value) <= index < len(value):
            _follow(paths, value[index], manager, f"{source}[{index}]")
        elif isinstance(value, dict) and index is not None and index in value:
            paths.namespace_read(value, index, value[index])
            _follow(paths, value[index], manager, f"{source}[{index!r}]")
        else:
            raise Unfollowed(f"{source}: {accessor.repr()} of a {type(value).__name__}")
    else:
        raise Unfollowed(f"{source}: {kind}")


def _attribute(paths: Paths, value: Any, name: str, manager: Any, source: str) -> None:
    """``value.name``: through the dict it lives in where that is known (the instance's
    ``__dict__``, a module's ``_modules``/``_parameters``/``_buffers``, a class's dict), else read
    as it is on every call."""
    where = f"{source}.{name}"
    attributes = _class_dict(value) if isinstance(value, type) else _plain_instance_dict(value)
    plain = isinstance(value, type) or not _data_descriptor(type(value), name)
    try:
        item = getattr(value, name)
    except Exception as exc:
        raise Unfollowed(f"{where}: {type(exc).__name__} reading it") from exc
    if attributes is not None and name in attributes and plain:
        paths.namespace_read(attributes, name, attributes[name])
    elif attributes is not None and (part := _module_part(value, name)) is not None:
        # ``nn.Module.__getattr__``: a submodule, parameter or buffer, read from its dict
        paths.namespace_read(attributes, name, _MISSING)  # set on the instance later: it would shadow
        paths.namespace_read(part, name, item)
    elif attributes is None and (generic := _custom_lookup(value)) is not None:
        # A class's own ``__getattribute__`` (Hugging Face's config maps names): the value is taken
        # as a function of the instance's dict and its classes, whose every change counts.
        paths.plain(generic)
        for klass in type(value).__mro__:
            class_dict = _class_dict(klass)
            if class_dict is not None:
                paths.plain(class_dict)
    else:
        if attributes is not None and name not in attributes:
            paths.namespace_read(attributes, name, _MISSING)  # set on the instance later: it would shadow
        if name == "__class__" and _plain_class_attribute(type(value)):
            paths.keep_class(value)  # the same as the class check, which costs no getattr
        else:
            paths.reads.append((value, name, item))
    _follow(paths, item, manager, where)


def _plain_class_attribute(kind: type) -> bool:
    """Whether ``obj.__class__`` is ``type(obj)`` for instances of ``kind``: object's descriptor, read
    by object's or type's ``__getattribute__``."""
    reader: Any = kind.__getattribute__
    return inspect.getattr_static(kind, "__class__", None) is _OBJECT_CLASS and reader in (
        object.__getattribute__,
        type.__getattribute__,
    )


def _module_part(module: Any, name: str) -> dict[str, Any] | None:
    """The one of a module's ``_modules``, ``_parameters``, ``_buffers`` that holds ``name``."""
    if not isinstance(module, torch.nn.Module):
        return None
    for part in ("_parameters", "_buffers", "_modules"):
        held = module.__dict__.get(part)
        if type(held) is dict and name in held:
            return held
    return None


def _custom_lookup(value: Any) -> dict[str, Any] | None:
    """The generic ``__dict__`` of an instance whose class defines ``__getattribute__`` in Python, or None."""
    lookup = type(value).__getattribute__
    return _generic_dict(value) if isinstance(lookup, types.FunctionType) else None


#: Accessors that read one fixed attribute.
_ATTRIBUTE_ACCESSORS = {
    "CodeGuardAccessor": "__code__",
    "ClosureGuardAccessor": "__closure__",
    "FuncDefaultsGuardAccessor": "__defaults__",
    "FuncKwDefaultsGuardAccessor": "__kwdefaults__",
}


def _dict_key(d: dict[Any, Any], accessor_repr: str, source: str) -> Any:
    """The key of ``d`` an accessor reads, from its printed form ``DictGetItemGuardAccessor(<repr>)``."""
    printed = accessor_repr[accessor_repr.find("(") + 1 : -1] if accessor_repr.endswith(")") else None
    found = [key for key in d if repr(key) == printed]
    if len(found) != 1:
        raise Unfollowed(f"{source}: which key {accessor_repr} reads")
    return found[0]


#: ``__getattribute__`` of classes whose attributes live in their ``__dict__``.
_PLAIN_LOOKUPS: tuple[Any, ...] = (object.__getattribute__, types.ModuleType.__getattribute__)


def _class_dict(value: Any) -> dict[str, Any] | None:
    """The dict behind a class's ``__dict__`` mappingproxy (a store into the class changes its
    version tag), or None."""
    if not isinstance(value, type):
        return None
    found = [d for d in gc.get_referents(value.__dict__) if type(d) is dict]
    return found[0] if len(found) == 1 else None


def _generic_dict(value: Any) -> dict[str, Any] | None:
    """``value.__dict__`` read as Dynamo's generic-dict accessor reads it (past the class's
    ``__getattribute__``), or None."""
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return None
    return attributes if type(attributes) is dict else None


#: Accessors that read a namespace: an instance's dict (past the class's ``__getattribute__``) or a
#: class's dict (behind its mappingproxy).
_NAMESPACE_ACCESSORS: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "GetGenericDictGuardAccessor": _generic_dict,
    "TypeDictGuardAccessor": _class_dict,
}


def _plain_instance_dict(value: Any) -> dict[str, Any] | None:
    """``value.__dict__`` where reading an attribute reads it there (no custom ``__getattribute__``,
    no per-thread dict), else None."""
    lookup: Any = type(value).__getattribute__
    if lookup not in _PLAIN_LOOKUPS and not isinstance(value, torch.nn.Module):
        return None
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return None
    return attributes if type(attributes) is dict else None


def _data_descriptor(kind: type, name: str) -> bool:
    for klass in kind.__mro__:
        if name in klass.__dict__:
            attribute = klass.__dict__[name]
            return hasattr(type(attribute), "__set__") or hasattr(type(attribute), "__delete__")
    return False
