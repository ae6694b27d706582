"""The watch: cheap evidence, on every call, that nothing a specialization was verified against changed.

Dynamo's guards protect values the compiled code baked in — attributes of ``self`` and of its
submodules, closure cells, globals, argument objects, torch's global state. Evaluating them all
on every call costs far more than the rest of the call's overhead on a real model (docs/index.md,
"What it costs per call"). ``guards="inputs"`` instead keeps a
*fingerprint* of where those values live and checks that per call, then runs the expensive
verification (Dynamo's own guard manager, the full key of argument objects) only when the
fingerprint is one it has not verified before. The fingerprint of a call is a tuple of:

* the registration epoch: a counter that ``torch.nn``'s public registration hooks bump whenever a
  module, parameter or buffer is registered anywhere in the process (``m.weight = Parameter(...)``,
  ``m.act = nn.Tanh()``, ``register_buffer``);
* how many torch-function modes are on the stack (``torch.set_default_device`` pushes one);
* a *dict fingerprint* of each dict the compiled code reads values through: the function's
  globals, ``self``'s and each module argument's ``__dict__``, ``_parameters``, ``_buffers`` and
  ``_modules``, and every argument object's ``__dict__`` (a KV cache and its layers), plus the
  length of each list inside argument objects.

With CPython's per-dict version tag (Python 3.10 to 3.12, through ``_compat.DICT_VERSION``) a
dict's fingerprint is one int that every store into the dict changes and that no other dict
shares, so an equal tuple means the very same dicts, unchanged. There the dict versions are not
read one by one in Python but by *version trees* (``ObjectWatch``): each verified state of the
module dicts, and of the argument objects with every dict and list below them, is one C++ check
(Dynamo's guard manager used for dict versions only), and the fingerprint holds the check that
passed. A KV cache of many layers then costs one C++ call, not one Python-level read a layer.
Where the tag is missing or does not follow instance attributes (Python 3.13, whose instances
keep attribute values inline) the fingerprint is the dict's keys and the identities of its values.

An identity (``id()``) is evidence only while its object lives: CPython creates the next object at
a freed one's address at once. So each verified key *pins* the objects whose identities it holds
(``Verified.add``): a weak reference that forgets the key when the object dies; a strong one for
small scalars, and for objects without weak references (a tuple, a list held by a closure or by
``self``) in at most ``MAX_STRONGLY_PINNED`` keys. The lists and dicts of an argument object are
not pinned (keeping them would keep whole KV caches alive): their items and entries are
fingerprinted on their own (``pin_walked_dict``).

What the fingerprint does not see (a plain attribute of a *submodule* set after compiling, a
tensor's shape changed in place through ``.data``) is listed in docs/footguns.md with what
watching it would cost.
"""

from __future__ import annotations

import operator
import threading
import types
import weakref
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from typing import Any

import torch
from torch.nn.modules import module as module_hooks

from . import _compat, _native_checks, _version_tree
from ._arguments import Kind, ObjectWalk, classify, instance_attributes

#: Verified fingerprints kept per argument structure; the oldest is forgotten beyond this.
MAX_VERIFIED = 256

_is_compiling = torch.compiler.is_compiling


class RegistrationEpoch:
    """A counter bumped whenever a module, parameter or buffer is registered on a watched module.

    The three hooks are torch's public global registration hooks, installed when the first state
    starts watching and then kept for the life of the process: they are traced by every
    ``torch.compile`` of a forward that registers a module (a sliced ``nn.ModuleList``), whose
    guards then name them, and a hook removed while such a compile builds its guards breaks it
    (``KeyError`` inside Dynamo). Kept, they cost nothing but a set lookup per registration. Only
    registrations on modules in a watched tree count (``watch``: every module of ``self`` and of
    module arguments when a specialization is installed, and whatever is registered on them
    later): Hugging Face models slice their ``nn.ModuleList`` of layers on every forward, which
    registers the layers on a new, temporary list each time. Inside a ``torch.compile`` trace the
    hook does nothing, so no compiled code ever replays it.
    """

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._watched: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    def watch(self, module: torch.nn.Module) -> None:
        """Count registrations on ``module`` and on every module below it from now on."""
        self._watched.update(module.modules())

    def bump(self, module: Any, name: str, value: Any) -> None:
        if _is_compiling() or module not in self._watched:
            return
        self.n += 1
        if isinstance(value, torch.nn.Module):  # a new submodule: registrations below it count too
            self.watch(value)

    def install(self) -> None:
        """Install the three hooks, once per process; they stay (see the class docstring)."""
        with self._lock:
            if not self._handles:
                self._handles = [
                    module_hooks.register_module_module_registration_hook(self.bump),
                    module_hooks.register_module_parameter_registration_hook(self.bump),
                    module_hooks.register_module_buffer_registration_hook(self.bump),
                ]

    @property
    def installed(self) -> bool:
        return bool(self._handles)


EPOCH = RegistrationEpoch()


def _contents(d: dict[str, Any]) -> tuple[Hashable, ...]:
    """A dict's fingerprint without version tags: its keys and the identities of its values. Of a
    copy (made in C, no Python code runs): a collection during the walk could run a callback that
    stores into the dict (``RuntimeError: dictionary changed size during iteration``, seen on 3.13)."""
    copied = d.copy()
    return (*copied, *map(id, copied.values()))


#: ``dict -> hashable`` that changes whenever something is stored into the dict.
dict_fingerprint: Callable[[dict[str, Any]], Hashable] = _compat.DICT_VERSION or _contents


class Pinned(tuple):  # type: ignore[type-arg]
    """Objects whose ``id()`` is part of a fingerprint: what ``Verified`` must pin for that key."""


def pin_dict(d: dict[str, Any]) -> Pinned:
    """The pinning variant of ``dict_fingerprint``: a version tag needs nothing pinned; identities of
    the values (no version tags) need the values."""
    return Pinned() if dict_fingerprint is not _contents else Pinned(d.values())


def pin_walked_dict(d: dict[str, Any]) -> Pinned:
    """``pin_dict`` for the dict of an argument object, whose lists and dicts the fingerprint
    reads on their own (a list's items, a dict's fingerprint): their identities need no pin, and
    pinning them would keep a whole KV cache alive."""
    if dict_fingerprint is not _contents:
        return Pinned()
    return Pinned(v for v in d.values() if type(v) not in _WALKED)


def pin_object(obj: Any) -> Pinned:
    """The pinning variant of ``id``."""
    return Pinned((obj,))


def pinned_objects(pins: tuple[Any, ...]) -> list[Any]:
    """The objects a fingerprint's pinning variant collected, in order."""
    return [obj for element in pins if isinstance(element, Pinned) for obj in element]


#: Kept by a strong reference, with no limit: small, and holding nothing else alive.
_SMALL = (int, float, complex, bool, str, bytes, type(None))
#: Containers inside argument objects whose contents the fingerprint reads separately.
_WALKED = (list, dict)
#: Keys whose pins hold a container (a tuple, a list) strongly: at most this many per table, the
#: oldest forgotten first, so that rebinding a closure's list on every call cannot keep old lists
#: (and the tensors in them) alive without bound.
MAX_STRONGLY_PINNED = 4


class Verified:
    """What the per-call path may run for each key it has verified (fast key + fingerprint).

    ``get(key)`` (per call, no lock) gives the candidates verified for that key, or None. ``add``
    (slow path) records them; beyond ``MAX_VERIFIED`` keys the oldest goes. Also used as a set of
    verified keys (``Specialization.verified_modules``): ``key in verified``.
    """

    def __init__(self) -> None:
        self.table: dict[Hashable, tuple[Any, ...]] = {}
        self.get = self.table.get
        self.pins: dict[Hashable, list[Any]] = {}
        self._strong: dict[Hashable, None] = {}
        """Keys that hold an object strongly that no other key holds (what the bound counts)."""
        self._held: dict[int, list[Any]] = {}
        """``id -> [object, number of keys]`` of the objects held strongly, shared between keys: a
        module's globals dict pinned by every key holds one object, however many keys there are."""
        # Reentrant: a pinned object can die (and its callback run) inside ``add`` itself.
        self._lock = threading.RLock()

    def __contains__(self, key: Hashable) -> bool:
        return key in self.table

    def add(self, key: Hashable, candidates: tuple[Any, ...], pins: list[Any] | None = None) -> None:
        """Record ``candidates`` for ``key``; ``pins``: the objects whose ``id()`` is in the key.

        An identity in a key is only evidence while its object lives: once it is freed, another
        object can be created at its address and bring the same ``id()`` (CPython reuses freed
        memory at once). So each pinned object is held by a weak reference whose callback forgets
        the key when the object dies, or, where it cannot be weakly referenced (a tuple, a list),
        by a strong one, for at most ``MAX_STRONGLY_PINNED`` keys. ``pins=None`` reorders a key
        that is still there and does nothing for one that was forgotten meanwhile.
        """
        with self._lock:
            if pins is None and key not in self.table:
                return
            self.table.pop(key, None)  # re-inserted last: the newest is the last to be forgotten
            self.table[key] = candidates
            if pins is not None:
                self._release(self.pins.pop(key, []))
                held, strong = self._hold(key, pins)
                self.pins[key] = held
                self._strong.pop(key, None)
                if strong:
                    self._strong[key] = None
            while len(self._strong) > MAX_STRONGLY_PINNED:
                self._forget(next(iter(self._strong)))
            while len(self.table) > MAX_VERIFIED:
                self._forget(next(iter(self.table)))

    def _hold(self, key: Hashable, objects: list[Any]) -> tuple[list[Any], bool]:
        if not objects:
            return [], False
        forget = weakref.WeakMethod(self._forget)

        def died(_ref: Any) -> None:
            method = forget()
            if method is not None:
                method(key)

        held: list[Any] = []
        strong = False
        for obj in objects:
            if type(obj) in _SMALL:
                held.append(obj)
                continue
            try:
                held.append(weakref.ref(obj, died))
            except TypeError:  # not weakly referenceable: keep it alive instead
                held.append(_Strong(obj))
                shared = self._held.get(id(obj))
                if shared is not None and shared[0] is obj:
                    shared[1] += 1  # held for another key already: nothing more is kept alive
                else:
                    self._held[id(obj)] = [obj, 1]
                    strong = True
        return held, strong

    def _release(self, held: list[Any]) -> None:
        for pin in held:
            if isinstance(pin, _Strong):
                shared = self._held.get(id(pin.obj))
                if shared is not None and shared[0] is pin.obj:
                    shared[1] -= 1
                    if shared[1] == 0:
                        del self._held[id(pin.obj)]

    def _forget(self, key: Hashable) -> None:
        """A pinned object died (its ``id()`` may come back on another object), or the key is
        the oldest of too many: the key goes."""
        with self._lock:
            self.table.pop(key, None)
            self._release(self.pins.pop(key, []))
            self._strong.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.table.clear()
            self.pins.clear()
            self._strong.clear()
            self._held.clear()


class _Strong:
    """A pin held by a strong reference (the object cannot be weakly referenced)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def tensor_layout(module: torch.nn.Module) -> tuple[Any, ...]:
    """``(name, shape, stride, dtype, device)`` of each parameter and buffer of ``module``.

    What compiled kernels assume of the weights. ``model.half()``, ``.to(device)`` and
    ``.to(memory_format=...)`` change it in place (``param.data = ...``): the module dicts do not
    change, only the sentinel (the first parameter, in the per-call tensor check: ``_layout``)
    does, and Dynamo's guards do not catch it on every supported torch. Read once per new
    fingerprint, never per call.
    """
    return tuple((name, *layout(t)) for name, t in module_tensors(module))


def module_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of each parameter, then each buffer, of ``module`` and its submodules."""
    for tensors in (module.named_parameters(), module.named_buffers()):
        for name, t in tensors:
            if t is not None:
                yield name, t


def layout(t: torch.Tensor) -> tuple[Any, ...]:
    """``(shape, stride, dtype, device)`` of a parameter or buffer: what compiled kernels assume of
    it (``tensor_layout``, the sentinels, the artifact key's ``_artifacts.module_digest``)."""
    if torch.nn.parameter.is_lazy(t):  # a lazy module not run yet: no shape to compare
        return ("uninitialized", None, t.dtype, t.device)
    try:
        shape: Any = tuple(t.shape)
    except (RuntimeError, NotImplementedError, ValueError):  # nested tensors: no single shape
        shape = None
    try:
        stride: Any = tuple(t.stride())
    except (RuntimeError, NotImplementedError, ValueError):  # sparse, nested: no strides
        stride = None
    return (shape, stride, t.dtype, t.device)


def sentinel_state(t: torch.Tensor) -> tuple[Any, ...]:
    """What the per-call tensor check compares of a module's first parameter (a *sentinel*, see
    ``_layout``): its layout, class, dispatch keys and ``requires_grad``."""
    return (*layout(t), type(t), _compat.dispatch_keys(t), t.requires_grad)


def sentinel_holds(compiled: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
    """Whether a sentinel is still what the code was compiled for: everything the same, except that
    a parameter compiled as trainable may have been frozen since (``requires_grad_(False)``: the
    graph computes a gradient nobody asks for). Unfrozen is a change: the graph was built without
    a gradient for it, and a backward pass would leave its ``.grad`` empty."""
    return compiled[:-1] == now[:-1] and (compiled[-1] or not now[-1])


def layout_change(where: str, compiled: tuple[Any, ...], now: tuple[Any, ...]) -> str | None:
    """The first difference between two :func:`tensor_layout` results of the module at ``where``
    (``self``, ``global model``), as text naming the tensor, or None."""
    if len(compiled) != len(now):
        return f"{where}'s parameters and buffers: compiled with {len(compiled)}, now {len(now)}"
    for old, new in zip(compiled, now, strict=True):
        if old != new:
            name, shape, stride, dtype, device = new
            old_name, old_shape, old_stride, old_dtype, old_device = old
            if name != old_name:
                return f"{where}'s parameters and buffers: compiled with {old_name!r} where now {name!r}"
            return (
                f"{where}.{name}: compiled for shape {old_shape} stride {old_stride} {old_dtype} on {old_device}, "
                f"now shape {shape} stride {stride} {dtype} on {device}"
            )
    return None


# -- argument objects as one C++ check (``_version_tree.VersionTree``) ------------------------

#: How many versions of the argument objects a selector remembers at once (one per cache that
#: calls alternate between); the oldest goes first.
OBJECT_WATCH_SLOTS = 8
#: An empty slot: ``operator.not_`` of the (non-empty) tuple of argument objects is False.
EMPTY_SLOT: Callable[[Any], bool] = operator.not_
#: The module part's only slot while every candidate of its selector has a trace watch
#: (``ObjectWatch.open``): ``operator.truth`` of the (non-empty) tuple of roots is True.
OPEN_SLOT: Callable[[Any], bool] = operator.truth


class ObjectWatch:
    """The argument objects' part of the fingerprint, checked in C++ rather than per object in Python.

    A KV cache of 80 layers is 80 objects, each with a dict that a store into it changes. The
    Python fingerprint reads each dict's version tag: a Python-level call per object on every
    call. Here each verified state of the argument objects becomes one ``VersionTree``: the
    version tag of every object's ``__dict__`` (and of every dict, and the length of every list)
    below the arguments, recorded when the state was verified, checked in one C++ call. The
    generated per-call code tries the slots in order (``slot_names``: globals of the selector's
    code, rebound here) and puts the check that passed into the key: a verified key names the
    very tree that vouches for its objects, so a key can only be found while its objects are in
    the state that was verified. No tree passing gives None, a key never verified.

    Version tags are unique to a dict and a store (CPython counts them process-wide), so a tree
    needs no pins: another object, even at a freed one's address, has another dict.
    """

    def __init__(
        self,
        namespace: MutableMapping[str, Any],
        slot_names: tuple[str, ...],
        build: Callable[[tuple[Any, ...]], _version_tree.VersionTree],
        opened: str | None = None,
    ) -> None:
        self._namespace = namespace
        self._slots = slot_names
        self._build = build
        self._opened = opened
        """The global the generated expression reads first (``_layout._watch_expr``): ``OPEN_SLOT``
        while open (the slots are not tried, nor the roots read), else None."""
        if opened is not None:
            namespace[opened] = None
        self._lock = threading.Lock()
        self._trees: dict[Any, _version_tree.VersionTree] = {}
        """The tree of each check in the slots, by check: it holds what its identity checks name."""
        for name in slot_names:
            namespace[name] = EMPTY_SLOT

    def remember(self, roots: tuple[Any, ...]) -> None:
        """Make a tree identify ``roots`` as they are now: it goes first, unless a tree in the
        slots already passes for them (its verified keys stay reachable). Keys that name it are
        recorded only by the caller, once the state is verified."""
        if any(self._namespace[name](roots) for name in self._slots):
            return
        tree = self._build(roots)
        check = tree.check
        with self._lock:
            kept = [self._namespace[name] for name in self._slots]
            kept = [c for c in kept if c is not EMPTY_SLOT][: len(self._slots) - 1]
            ordered = [check, *kept]
            ordered += [EMPTY_SLOT] * (len(self._slots) - len(ordered))
            # One store per slot: a concurrent call reads each slot once (``:=``) and uses the
            # check it read for both the test and the key, so a half-rotated table only misses.
            for name, slot in zip(self._slots, ordered, strict=True):
                self._namespace[name] = slot
            self._trees = {c: self._trees.get(c, tree) for c in ordered if c is not EMPTY_SLOT}
        # A store while the tree was built (another thread) leaves a tree that never passes: the
        # key then holds None there, and the caller records nothing (``Selector.vouched``).

    def open(self) -> None:
        """Vouch for every state of the roots from now on (``OPEN_SLOT`` alone in the slots), until
        ``forget``: for the module part of a selector whose every candidate has a trace watch
        (``_trace_watch``), which checks exactly what the compiled code read there on each call.
        A store into the globals or into ``self`` then leaves the verified keys as they are."""
        with self._lock:
            for i, name in enumerate(self._slots):
                self._namespace[name] = OPEN_SLOT if i == 0 else EMPTY_SLOT
            if self._opened is not None:
                self._namespace[self._opened] = OPEN_SLOT
            self._trees = {}

    @property
    def is_open(self) -> bool:
        return bool(self._slots) and self._namespace[self._slots[0]] is OPEN_SLOT

    def forget(self) -> None:
        """Empty the slots and drop every tree: no state is identified until ``remember`` again."""
        with self._lock:
            if self._opened is not None:
                self._namespace[self._opened] = None
            for name in self._slots:
                self._namespace[name] = EMPTY_SLOT
            self._trees = {}


def module_tree(kinds: tuple[str, ...], roots: tuple[Any, ...]) -> _version_tree.VersionTree:
    """A C++ check of the module part of the fingerprint, true while each of ``roots`` is as it
    is now, by its kind (``_layout``'s tree markers):

    * ``"dict"`` (globals, a module's four dicts, a partial's keywords): the dict's version tag;
    * ``"cells"`` (the tuple of plain closure cells): each cell's value, equal and of the same type;
    * ``"object"`` (a config a module holds, a global object): its class and its ``__dict__``'s version;
    * ``"function"`` (a helper the code calls, a decorator's wrapped function): its code, defaults,
      keyword defaults and each closure cell's contents, by identity (the tree holds them, so no
      other object can take their addresses while it lives). Dynamo inlines all of them.
    """
    tree = _version_tree.VersionTree()
    for i, (value, kind) in enumerate(zip(roots, kinds, strict=True)):
        source = f"roots[{i}]"
        node = tree.tuple_item(tree.root, i, value, source)
        if kind == "cells" and _native_checks.NATIVE is not None:
            description = f"{source}: {len(value)} cells, each an equal value of the same type"
            tree.native(node, _native_checks.NATIVE.cells(value), description)
        elif kind == "cells":
            for j, cell in enumerate(value):
                tree.cell_value(tree.tuple_item(node, j, cell, f"{source}[{j}]"), cell, f"{source}[{j}]")
        elif kind == "dict":
            tree.dict_version(node, value, source)
        elif kind == "object":
            tree.type_is(node, value, source)
            tree.dict_version(tree.instance_dict(node, value, f"{source}.__dict__"), vars(value), f"{source}.__dict__")
        elif kind == "function":
            _watch_function(tree, node, value, source)
        elif kind == "modules":
            tree.dict_version(node, value, source)
            _watch_containers(tree, node, value, source, _holding_containers(value))
        else:
            raise ValueError(f"{source}: unknown kind of module-part root {kind!r}")
    return tree


#: Modules whose items are edited in place (``del``, ``insert``, ``pop``): their item dicts are watched.
CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential)


def _holding_containers(modules: dict[str, Any]) -> set[int]:
    """The ids of the modules below ``modules`` (a ``_modules`` dict) that are containers or hold one."""
    held: set[int] = set()
    seen: set[int] = set()

    def visit(module: torch.nn.Module) -> bool:
        if id(module) in seen:
            return id(module) in held
        seen.add(id(module))
        holds = isinstance(module, CONTAINERS)
        for child in module._modules.values():
            if child is not None and visit(child):
                holds = True
        if holds:
            held.add(id(module))
        return holds

    for top in modules.values():
        if top is not None:
            visit(top)
    return held


def _watch_containers(
    tree: _version_tree.VersionTree, node: Any, modules: dict[str, Any], source: str, held: set[int]
) -> None:
    """Below the node of a ``_modules`` dict: the item dict of each container, reached through the
    modules that hold one (``del layers[0]`` edits or replaces it, and fires no hook)."""
    for name, sub in modules.items():
        if sub is None or id(sub) not in held:
            continue
        where = f"{source}[{name!r}]._modules"
        inner = tree.attribute(tree.dict_item(node, name, sub, f"{source}[{name!r}]"), "_modules", sub._modules, where)
        if isinstance(sub, CONTAINERS):
            tree.dict_version(inner, sub._modules, where)
        _watch_containers(tree, inner, sub._modules, where, held - {id(sub)})


def _watch_function(tree: _version_tree.VersionTree, node: Any, fn: types.FunctionType, source: str) -> None:
    if _native_checks.NATIVE is not None:
        description = f"{source}: the same code, defaults and closure contents"
        tree.native(node, _native_checks.NATIVE.function(fn), description)  # an empty cell raises, as below
        return
    for name in ("__code__", "__defaults__", "__kwdefaults__"):
        value = getattr(fn, name)
        tree.identity(tree.attribute(node, name, value, f"{source}.{name}"), value, f"{source}.{name}")
    cells = fn.__closure__ or ()
    if cells:
        closure = tree.attribute(node, "__closure__", cells, f"{source}.__closure__")
        for i, cell in enumerate(cells):
            where = f"{source}.__closure__[{i}].cell_contents"
            contents = cell.cell_contents  # an empty cell raises: no tree (the verification compiles)
            tree.identity(
                tree.attribute(tree.tuple_item(closure, i, cell, where), "cell_contents", contents, where),
                contents,
                where,
            )


def version_tree(roots: tuple[Any, ...]) -> _version_tree.VersionTree:
    """A C++ check, true while ``roots``' objects are as they are now: the version tag of each
    object's ``__dict__`` and of each dict, the length of each list, below each root, followed by
    the walk's rules and limits (``_arguments.ObjectWalk``: objects up to ``MAX_OBJECT_DEPTH`` deep)."""
    tree = _version_tree.VersionTree()
    walk = ObjectWalk()
    for i, value in enumerate(roots):
        source = f"arguments[{i}]"
        _must_be_object(value, source)
        _watch_value(tree, tree.tuple_item(tree.root, i, value, source), value, source, 0, walk)
    return tree


def _must_be_object(value: Any, source: str) -> None:
    """A root, or an item of a list, is an object in every layout that has a version tree (a list
    of anything else is fingerprinted in Python). Anything else here would be a position the tree
    does not check: refuse to build it."""
    if classify(value) is not Kind.OBJECT:
        raise TypeError(f"{source}: {type(value).__name__} where a version tree expects an object")


def _watch_value(tree: Any, node: Any, value: Any, source: str, depth: int, walk: ObjectWalk) -> None:
    walk.count += 1
    kind = classify(value)
    if kind is Kind.OBJECT:
        if not walk.follows(depth):
            return  # opaque to the walk as well
        tree.type_is(node, value, source)  # ``obj.__class__ = Other`` stores into no dict
        attributes = tree.instance_dict(node, value, f"{source}.__dict__")
        tree.dict_version(attributes, vars(value), f"{source}.__dict__")
        _watch_attributes(tree, lambda: attributes, value, source, depth, walk)
    elif kind is Kind.SEQUENCE:
        _watch_items(tree, node, value, source, depth, walk)
    elif kind is Kind.MAPPING:
        tree.dict_version(node, value, source)
        for key, item in value.items():
            if classify(item) in _FOLLOWED:
                where = f"{source}[{key!r}]"
                _watch_value(tree, tree.dict_item(node, key, item, where), item, where, depth, walk)
    elif kind is Kind.MODULE:
        raise TypeError(f"{source}: a module inside an argument object is watched in Python, not by a VersionTree")


def _watch_attributes(
    tree: Any, attributes: Callable[[], Any], value: Any, source: str, depth: int, walk: ObjectWalk
) -> None:
    """What ``value``'s attributes hold, below the node of its ``__dict__`` (``attributes()``,
    made only where an attribute is followed: a KV cache layer of tensors and ints needs none)."""
    node = None
    for name, item in instance_attributes(value):
        if classify(item) not in _FOLLOWED:
            continue
        node = attributes() if node is None else node
        where = f"{source}.{name}"
        _watch_value(tree, tree.dict_item(node, name, item, where), item, where, depth + 1, walk)


def _watch_items(
    tree: Any, node: Any, value: list[Any] | tuple[Any, ...], source: str, depth: int, walk: ObjectWalk
) -> None:
    """A list's length and its items (every one an object, ``_must_be_object``), a tuple's items.

    With the C extension (``_native_checks.NATIVE``), the length and every object item's class and
    ``__dict__`` version are one leaf on the sequence's node (``ItemsCheck``), a loop of a few
    nanoseconds an item: a node of the tree is made for an item only where something its
    attributes hold is followed. Without it, each item is its own nodes (``_watch_value``)."""
    is_list = isinstance(value, list)
    native = _native_checks.NATIVE
    natively = native is not None
    if is_list and not natively:
        tree.length(node, len(value), source)
    item_node = tree.list_item if is_list else tree.tuple_item
    checked: list[int] = []
    for i, item in enumerate(value):
        where = f"{source}[{i}]"
        if is_list:  # mutable in place: every item must be checked
            _must_be_object(item, where)
        kind = classify(item)
        if kind not in _FOLLOWED:
            continue
        if not (natively and kind is Kind.OBJECT):
            _watch_value(tree, item_node(node, i, item, where), item, where, depth, walk)
            continue
        walk.count += 1  # the node ``_watch_value`` would count for it
        if not walk.follows(depth):
            continue  # opaque to the walk as well
        checked.append(i)

        def attributes(i: int = i, item: Any = item, where: str = where) -> Any:
            return tree.instance_dict(item_node(node, i, item, where), item, f"{where}.__dict__")

        _watch_attributes(tree, attributes, item, where, depth, walk)
    if native is not None and (is_list or checked):
        description = f"{source}: length {len(value)}, class and dict version of items {_ranges(checked)}"
        tree.native(node, native.items(value, tuple(checked)), description)


def _ranges(indices: list[int]) -> str:
    """``0-79`` for ``[0, 1, ..., 79]``, ``0, 2-5`` for ``[0, 2, 3, 4, 5]``: indices for a description."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"


#: What a version tree follows into: everything else is seen by its holder's dict version.
_FOLLOWED = (Kind.OBJECT, Kind.SEQUENCE, Kind.MAPPING, Kind.MODULE)
