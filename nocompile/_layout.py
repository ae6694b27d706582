"""The input check's layout: what ``guards="inputs"`` compares for one argument structure.

At compile time nocompile projects the compiling call's ``ArgumentTree`` (``_arguments``: the
one walk over a call's arguments) onto what the check compares, a ``CheckLayout``: Python
expressions over the decorated function's parameters, each naming one property the compiled
graph was specialized on:

* for each tensor (also inside lists, tuples and dicts): its class, shape (a dynamic dim
  contributes only whether it is 0, 1 or larger: Dynamo specializes 0 and 1), dtype, device,
  ``requires_grad`` and strides (the compiled code may assume them; a dynamic-dims tensor
  contributes ``is_contiguous()`` instead);
* each int, float, bool, str, None, enum, ``torch.dtype``/``torch.device`` value and its class
  (``1``, ``1.0`` and ``True`` hash alike, Dynamo does not treat them alike);
* the length of each list and tuple, and the keys of each dict, on the way down;
* ``training`` of each ``nn.Module`` argument (``self`` for a method);
* for any other object with a ``__dict__`` (a KV cache, a config object): its class, the names
  of its instance attributes, and each attribute by the same rules, up to
  ``MAX_OBJECT_DEPTH`` objects deep;
* ``torch.is_grad_enabled()``;

and the *fingerprint* (``_watch``) of where baked-in values live. ``_selector`` writes the
generated functions from a layout; ``_describe`` turns keys into messages. ``generated_globals``
is what every generated check reads, by the names the expressions here use.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from . import _compat, _version_tree, _watch
from ._arguments import ArgumentTree, Kind, Node, attribute_source, classify, instance_attributes
from ._codegen import LEN, MAP, MIN, SORTED, TUPLE, VARS, closure_globals, nan_canonical

KeyFn = Callable[..., tuple[Any, ...]]

_GRAD_ENABLED = "__nc_grad_enabled"
#: The key property of a dynamic dim's and a dynamic int's bucketed value.
DYNAMIC_SHAPE = "shape (dynamic dims as min(size, 2))"
DYNAMIC_INT = "value (dynamic int as min(value, 2))"
_EPOCH = "__nc_epoch"
_MODES = "__nc_modes"
_FINGERPRINT = "__nc_fp"
#: The same fingerprint, for a dict whose lists and dicts the fingerprint reads on their own (an
#: argument object's): its pinning variant leaves those out (``_watch.pin_walked_dict``).
_FINGERPRINT_WALKED = "__nc_fpw"
#: ``object.__getattribute__``: an object's ``__dict__`` without its class's own ``__getattribute__``
#: (Hugging Face configs define one, in Python, which would make every read cost a Python call).
_OBJECT_DICT = "__nc_object_dict"
#: ``id``, by a name of its own: the fingerprint's identities are pinned (``_watch.Verified``), and
#: the pinning variant of the fingerprint binds this name to what collects the objects instead.
_ID = "__nc_id"

_GLOBALS = "__nc_globals"
#: Prefix of the globals bound to closure cells of plain values (``__nc_cell3``).
_CELL = "__nc_cell"
#: Marks the plain closure cells in the module part: collected into the module dicts' version tree.
_CELL_WATCHED = "__nc_cell_watched"
#: With version trees, marks a function of the module part (its defaults and closure contents
#: by identity) and an object a module holds (its class and dict version): roots of that tree.
_FUNCTION_WATCHED = "__nc_function_watched"
_OBJECT_WATCHED = "__nc_object_watched"
#: The markers of the module part's tree roots, and what ``_watch.module_tree`` watches of each.
#: With version trees, marks a module's ``_modules``: the tree watches it and the item dicts of the
#: containers below it (``_watch.module_tree``).
_MODULES_WATCHED = "__nc_modules_watched"
_TREE_ROOTS = {
    f"{_FINGERPRINT}(": "dict",
    f"{_CELL_WATCHED}(": "cells",
    f"{_FUNCTION_WATCHED}(": "function",
    f"{_OBJECT_WATCHED}(": "object",
    f"{_MODULES_WATCHED}(": "modules",
}
#: The global bound to the tuple of the plain closure cells (``CheckLayout.closure_cells``).
_PLAIN_CELLS = "__nc_plain_cells"


@dataclasses.dataclass(frozen=True)
class KeyElement:
    """One element of the key: which argument (``path``), which property, how to compute it."""

    path: str
    prop: str
    expr: str


@dataclasses.dataclass
class KeyFunction:
    """A generated key function for one argument structure, with its labels and source."""

    fn: KeyFn
    elements: tuple[KeyElement, ...]
    source: str

    def describe(self, key: tuple[Any, ...]) -> list[tuple[str, str, Any]]:
        """``(path, property, value)`` for each element of ``key``."""
        return [(e.path, e.prop, v) for e, v in zip(self.elements, key, strict=True)]


@dataclasses.dataclass(frozen=True)
class TensorArg:
    """A tensor the compiled graph was specialized on, and which of its dims are dynamic."""

    path: str
    expr: str
    tensor: torch.Tensor
    dynamic_dims: tuple[int, ...]

    def sizes(self) -> list[int | None]:
        """Sizes as the tensor check compares them: None for a dynamic dim."""
        return [None if d in self.dynamic_dims else int(s) for d, s in enumerate(self.tensor.shape)]

    def strides(self) -> list[int | None]:
        """Strides as the tensor check compares them: None where a later dim is dynamic.

        In the contiguous layout a dynamic-dims tensor is checked for (see the fast key), the
        stride of dim ``i`` is the product of the sizes after it, so it varies exactly when
        one of those is dynamic.
        """
        stride = self.tensor.stride()
        return [None if any(d > i for d in self.dynamic_dims) else int(stride[i]) for i in range(self.tensor.ndim)]


class _KeyWriter:
    """Projects an ``ArgumentTree`` onto what the check compares.

    ``elements`` is the full description (every property of every argument and closure
    variable), for messages and reports. The per-call path computes ``fast`` (what the C++
    tensor check does not cover, outside argument objects), runs the C++ check on
    ``tensors`` (outside argument objects), and compares the ``fingerprint`` (``_watch``) of
    everything else; ``object_elements`` and ``object_tensors`` (inside argument objects) are
    compared only when the fingerprint is new.
    """

    def __init__(self, tree: ArgumentTree) -> None:
        self.elements: list[KeyElement] = []
        self.fast: list[KeyElement] = []
        self.object_elements: list[KeyElement] = []
        self.tensors: list[TensorArg] = []
        self.object_tensors: list[TensorArg] = []
        self.tensor_covered: set[int] = set()
        """Indices in ``object_elements`` of the properties the object tier's tensor check compares
        itself (class, rank, shape, dtype, device, requires_grad, strides): left out of its key."""
        self.sentinels: list[TensorArg] = []
        """The first parameter of each module the module part watches (``module_prints_of``)."""
        self.module_prints: list[str] = [f"{_EPOCH}.n", f"{_MODES}()", f"{_FINGERPRINT}({_GLOBALS})"]
        self.object_prints: list[str] = []
        self.object_roots: list[str] = []
        """Expressions of the argument objects (not inside another object): a ``_watch.ObjectWatch``'s roots."""
        self.tree_able = True
        """Whether ``object_prints`` holds only what a ``_watch.version_tree`` checks (dict versions
        and list lengths), so the object part can be one C++ check."""
        self.objects_hold_modules = False
        """A module inside an argument object: a change to that object is verified with Dynamo's
        guards, like a change to ``self`` (they see the module replaced, its weights, its attributes)."""
        self.seen: dict[tuple[bool, int], TensorArg] = {}
        """Tensors already checked, by where (inside an argument object or not) and identity."""
        self.unchecked: list[str] = []
        self.keyword_order: int | None = None
        """Where in ``fast`` the ``**kwargs`` names are, in the call's order."""
        self.fast_enabled = True
        self.closure_cells: tuple[int, ...] = ()
        """Closure cells of plain values, checked together (``_PLAIN_CELLS``)."""
        self.global_prints(tree.fn)
        for root in tree.roots:
            self.visit(root, inside=False)
        grouped = []
        for i, root in enumerate(tree.closure_roots):
            if root.path == "__class__":  # the cell super() reads: fixed with the class
                continue
            if _plain_cell(root):
                # Read through a global bound to the cell itself (a decorator's configuration can be
                # a dozen cells): its value, and its type where values of other types compare equal
                # (1, 1.0, True). With version trees the module dicts' tree checks the cell in C++
                # on every call (``_watch.dict_tree``) and the object key compares the value when
                # that tree is new; else the fast key holds them, checked like a scalar argument.
                grouped.append(i)
                self.visit(root, inside=False, fast=False)
                value = KeyElement(root.path, "value", f"{_CELL}{i}.cell_contents")
                kind = KeyElement(root.path, "type", f"{_CELL}{i}.cell_contents.__class__")
                if version_trees():
                    # Type first: comparing object keys stops there, before comparing a value
                    # with, say, a tensor the cell was rebound to.
                    self.object_elements += [kind, value]
                else:
                    self.fast += [value, kind] if isinstance(root.value, (int, float, complex)) else [value]
            else:
                self.visit(root, inside=False)
        self.closure_cells = tuple(grouped)
        if grouped and version_trees():  # the tuple of those cells, one root of the module dicts' tree
            self.module_prints.append(f"{_CELL_WATCHED}({_PLAIN_CELLS})")
        self.add("torch", "grad_enabled", f"{_GRAD_ENABLED}()", inside=False)

    def add(self, path: str, prop: str, expr: str, *, inside: bool, fast: bool = True, covered: bool = False) -> None:
        """One property of the key; ``covered``: one the C++ tensor check compares too."""
        element = KeyElement(path, prop, expr)
        self.elements.append(element)
        if inside:
            if covered and ":=" not in expr:  # an element binding a local stays in every key
                self.tensor_covered.add(len(self.object_elements))
            self.object_elements.append(element)
        elif fast and self.fast_enabled:
            self.fast.append(element)

    def visit(self, node: Node, inside: bool, fast: bool = True) -> None:
        previous, self.fast_enabled = self.fast_enabled, fast and self.fast_enabled
        try:
            self._visit(node, inside)
        finally:
            self.fast_enabled = previous

    def _visit(self, node: Node, inside: bool) -> None:
        path, expr = node.path, node.expr
        if expr is None:  # an attribute whose name Python cannot spell after a dot
            self.unchecked.append(path)
            return
        kind = node.kind
        if kind is Kind.TENSOR:
            self.tensor(node, expr, inside)
        elif kind is Kind.MODULE:
            if path != "self":  # a method's own module is fixed by the state that compiled it
                self.add(path, "type", f"{expr}.__class__", inside=inside)
            self.add(path, "training", f"{expr}.training", inside=inside)
            if inside:
                self.tree_able = False
                self.objects_hold_modules = True
            self.module_prints_of(node.value, path, expr, self.object_prints if inside else self.module_prints)
        elif kind is Kind.SCALAR:
            self.add(path, "type", f"{expr}.__class__", inside=inside)  # 1, 1.0 and True hash alike
            if node.dynamic_int:  # compiled as a SymInt: only 0, 1 or more can matter (shape guards do the rest)
                self.add(path, DYNAMIC_INT, f"{MIN}({expr}, 2)", inside=inside)
            else:
                self.add(path, "value", nan_canonical(expr, node.value), inside=inside)
        elif kind is Kind.CONSTANT:  # functions, builtins, classes by identity; ranges and slices by value
            if not inside:
                self.callable_prints(node.value, expr, self.module_prints)
            self.add(path, "type", f"{expr}.__class__", inside=inside)
            if isinstance(node.value, slice):  # not hashable on every supported Python
                self.add(path, "value", f"({expr}.start, {expr}.stop, {expr}.step)", inside=inside)
            else:
                self.add(path, "value", expr, inside=inside)
        elif kind is Kind.SEQUENCE:
            self.add(path, "type", f"{expr}.__class__", inside=inside)
            self.add(path, "length", f"{LEN}({expr})", inside=inside)
            if inside and isinstance(node.value, list):  # a list can change in place: its items' identities
                self.sequence_prints(node, expr)
            self.children(node, inside)
        elif kind is Kind.MAPPING:
            if node.varkw:
                # Keyword arguments bind alike in any order, but code that iterates them reads them
                # in order: the per-call key takes the names in order, and a call that has them in
                # another order runs a specialization compiled for theirs only where Dynamo's
                # guards hold for it (they guard the order only where the trace iterated them).
                self.add(path, "keys", f"{TUPLE}({SORTED}({expr}))", inside=inside, fast=False)
                if self.fast_enabled and not inside:
                    self.keyword_order = len(self.fast)
                self.add(path, "keyword order", f"{TUPLE}({expr})", inside=inside)
            else:  # its type too: a list of the same length has the same keys, tuple([0, 1])
                self.add(path, "type", f"{expr}.__class__", inside=inside)
                self.add(path, "keys", f"{TUPLE}({expr})", inside=inside)
            if inside:  # a dict can change in place: its version
                self.object_prints.append(f"{_FINGERPRINT_WALKED}({expr})")
            self.children(node, inside)
        elif kind is Kind.OBJECT:
            # An argument object (a KV cache, a config): its class, its instance attributes' names,
            # and each attribute checked like an argument. The compiled code reads the tensors
            # inside it (their shapes were baked in) and its Python values (baked in as
            # constants). Class attributes, properties and ``__slots__`` are not followed. The
            # object is bound to a local where it is first read, so deep paths stay cheap; the
            # fingerprint reads it once per call, the object key only when the fingerprint is new.
            if not inside:
                self.object_roots.append(expr)
            if not _plain_instance_dict(node.value):
                self.tree_able = False
            self.add(path, "type", f"({node.local} := {expr}).__class__", inside=True)
            self.add(path, "attributes", f"{TUPLE}({node.local}.__dict__)", inside=True)
            # Its class too: ``obj.__class__ = Other`` stores into no dict.
            self.object_prints += [f"{_FINGERPRINT_WALKED}({_dict_of(node, expr)})", f"{_ID}({node.local}.__class__)"]
            self.children(node, inside=True)
        else:
            if not inside:
                self.callable_prints(node.value, expr, self.module_prints)
            self.unchecked.append(f"{path} ({node.note})")

    def module_prints_of(self, module: torch.nn.Module, path: str, expr: str, prints: list[str]) -> None:
        """A module's class, its four dicts, the dicts of plain objects it holds (a config), and its
        first parameter: ``model.half()``, ``model.to(device)`` and
        ``model.to(memory_format=torch.channels_last)`` convert every parameter in place
        (``param.data = ...``), which no dict shows. For the module part (``self``, module
        arguments, global modules) that parameter is a *sentinel*: the per-call C++ tensor check
        compares its dtype, device, sizes and strides, and the verification its layout
        (``Specialization.sentinel_states``). Inside an argument object (verified with Dynamo's
        guards, in Python) its dtype, device and strides are fingerprint elements. A change either
        way leads to the verification, which compares every parameter's layout
        (``_watch.tensor_layout``)."""
        prints.append(f"{expr}.__class__")
        # The containers below it: ``del layers[0]``, ``insert`` and ``pop`` edit a container's item
        # dict in place or replace it (``layers._modules = ...``), and fire no registration hook.
        containers = [name for name, sub in module.named_modules() if name and isinstance(sub, _watch.CONTAINERS)]
        in_tree = prints is self.module_prints and version_trees() and containers
        for d in _compat.MODULE_DICTS:
            watched = _MODULES_WATCHED if in_tree and d == "_modules" else _FINGERPRINT
            prints.append(f"{watched}({expr}.{d})")
        if not in_tree:  # each container's item dict, read again on every call (a new dict has a new version)
            for name in containers:
                where = expr + "".join(f"._modules[{part!r}]" for part in name.split("."))
                prints.append(f"{_FINGERPRINT}({where}._modules)")
        first = _compat.first_parameter(module)
        if first is not None:
            sentinel, parameter = first
            if prints is self.module_prints:
                self.sentinels.append(TensorArg(f"{path}{_readable(sentinel)}", f"{expr}{sentinel}", parameter, ()))
            else:
                prints += [f"{expr}{sentinel}.dtype", f"{expr}{sentinel}.device", f"{expr}{sentinel}.stride()"]
        for name, value in instance_attributes(module):  # not nocompile's own state: it changes on every call
            if classify(value) is Kind.OBJECT:
                prints.append(_object_print(value, attribute_source(expr, name), in_tree=prints is self.module_prints))

    def global_prints(self, fn: types.FunctionType) -> None:
        """Objects, modules and dicts the function names as globals: their attributes or entries,
        which a store into the globals dict itself would not show."""
        namespace = fn.__globals__
        for name, value in global_values(fn):
            kind = classify(value)
            where = f"{_GLOBALS}[{name!r}]"
            if isinstance(value, torch.nn.Module):
                self.module_prints_of(value, f"global {name}", where, self.module_prints)
            elif kind is Kind.OBJECT:
                self.module_prints.append(_object_print(value, where, in_tree=True))
            elif kind is Kind.MAPPING or isinstance(value, dict):
                self.module_prints.append(f"{_FINGERPRINT}({where})")
            elif isinstance(value, types.FunctionType) and value.__globals__ is namespace:
                self.callable_prints(value, where, self.module_prints)  # a helper of the same module

    @staticmethod
    def callable_prints(value: Any, expr: str, prints: list[str]) -> None:
        """What a callable the code calls holds besides its identity: a function's code, defaults and
        closure cells, a partial's arguments, a bound method's object (Dynamo inlines them all)."""
        if isinstance(value, types.FunctionType) and version_trees():
            prints.append(f"{_FUNCTION_WATCHED}({expr})")  # ``_watch.module_tree``: the same, in C++
        elif isinstance(value, types.FunctionType):
            prints.append(f"{_ID}({expr}.__code__)")
            prints.append(f"{_ID}({expr}.__defaults__)")
            prints.append(f"{_ID}({expr}.__kwdefaults__)")
            prints.extend(f"{_ID}({expr}.__closure__[{i}].cell_contents)" for i in range(len(value.__closure__ or ())))
        elif isinstance(value, functools.partial):
            prints.append(f"{_ID}({expr}.func)")
            prints.append(f"{_ID}({expr}.args)")
            prints.append(f"{_FINGERPRINT}({expr}.keywords)")
        elif isinstance(value, types.MethodType):
            prints.append(f"{_ID}({expr}.__func__)")
            prints.append(f"{_ID}({expr}.__self__)")
            if isinstance(getattr(value.__self__, "__dict__", None), dict):
                prints.append(_object_print(value.__self__, f"{expr}.__self__", in_tree=True))

    def sequence_prints(self, node: Node, expr: str) -> None:
        """A list inside an argument object (it can change in place): its length, and the identity
        of every item unless every item is an object (each item's own dict fingerprint, unique to
        that dict, tells replaced items apart). The length keeps nested lists apart: ``[[a, b], []]``
        and ``[[a], [b]]`` have the same items in the same order."""
        self.object_prints.append(f"{LEN}({expr})")
        if not (node.children and all(child.kind is Kind.OBJECT and child.expr is not None for child in node.children)):
            self.object_prints.append(f"*{MAP}({_ID}, {expr})")
            self.tree_able = False

    def children(self, node: Node, inside: bool) -> None:
        for child in node.children:
            self.visit(child, inside)

    def tensor(self, node: Node, expr: str, inside: bool) -> None:
        # The tensor check (class, dispatch keys, dtype, device, requires_grad, sizes, strides)
        # runs in C++; the key keeps only what it cannot express: for a dynamic dim, whether the
        # size is 0, 1 or more (Dynamo specializes 0 and 1), and contiguity.
        t, path, dims = node.value, node.path, node.dynamic_dims
        first = self.seen.get((inside, id(t)))
        if first is not None:
            # The same tensor object again (``f(a, a)``): Dynamo made it one graph input, so the
            # call must pass one object there again. The C++ check takes each tensor once.
            self.add(f"{first.path} is {path}", "same tensor", f"({first.expr} is {expr})", inside=inside)
            return
        arg = TensorArg(path, expr, t, dims)
        self.seen[(inside, id(t))] = arg
        (self.object_tensors if inside else self.tensors).append(arg)
        self.add(path, "type", f"{expr}.__class__", inside=inside, fast=False, covered=True)
        if dims:
            self.add(path, "rank", f"{expr}.ndim", inside=inside, fast=False, covered=True)
            shape = ", ".join(
                f"{MIN}({expr}.shape[{d}], 2)" if d in dims else f"{expr}.shape[{d}]" for d in range(t.ndim)
            )
            self.add(path, DYNAMIC_SHAPE, f"({shape},)", inside=inside)
        else:
            self.add(path, "shape", f"{expr}.shape", inside=inside, fast=False, covered=True)
        self.add(path, "dtype", f"{expr}.dtype", inside=inside, fast=False, covered=True)
        self.add(path, "device", f"{expr}.device", inside=inside, fast=False, covered=True)
        self.add(path, "requires_grad", f"{expr}.requires_grad", inside=inside, fast=False, covered=True)
        if dims:
            self.add(path, "contiguous", f"{expr}.is_contiguous()", inside=inside)
        else:
            self.add(path, "stride", f"{expr}.stride()", inside=inside, fast=False, covered=True)


_DICT_STEP = re.compile(r"\._(?:modules|parameters)\[('[^']*'|\"[^\"]*\")\]")


def _readable(suffix: str) -> str:
    """``._modules['0']._parameters['weight']`` as ``.0.weight`` (for messages)."""
    return _DICT_STEP.sub(lambda m: "." + m.group(1)[1:-1], suffix)


def global_names(code: types.CodeType) -> list[str]:
    """Names ``code`` (and the code nested in it) may load as globals."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += global_names(const)
    return names


def global_values(fn: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of each global ``fn``'s code may load, once each, in the order the code
    names them; the value in ``fn.__globals__`` now, None where it has none (a builtin, an
    attribute name, a global not assigned yet)."""
    namespace = fn.__globals__
    for name in dict.fromkeys(global_names(fn.__code__)):
        yield name, namespace.get(name)


def _plain_cell(node: Node) -> bool:
    """A closure cell holding a hashable plain value (a scalar, a function, a class): cheap to compare."""
    if node.kind is Kind.SCALAR:
        return not node.dynamic_int
    return node.kind is Kind.CONSTANT and not isinstance(node.value, slice)


def _object_dict_readable(value: Any) -> bool:
    """Whether ``object.__getattribute__(value, '__dict__')`` is ``value``'s attribute dict: not for a
    ``threading.local``, whose dict is the calling thread's (read through ``vars``)."""
    try:
        return object.__getattribute__(value, "__dict__") is vars(value)
    except (AttributeError, TypeError):
        return False


def _object_print(value: Any, expr: str, in_tree: bool) -> str:
    """The module part's print of an object's attributes (a config a module holds, a global
    object): with version trees, the object itself, whose class and instance dict the tree
    checks in C++ (``_watch.module_tree``); else the fingerprint of its ``__dict__``."""
    if in_tree and version_trees() and _plain_instance_dict(value):
        return f"{_OBJECT_WATCHED}({expr})"
    if not _object_dict_readable(value):
        return f"{_FINGERPRINT}({VARS}({expr}))"
    return f"{_FINGERPRINT}({_OBJECT_DICT}({expr}, '__dict__'))"


def _plain_instance_dict(value: Any) -> bool:
    """Whether ``value.__dict__`` is the instance's own dict (what a version tree reads), not
    something a class makes up (a ``__dict__`` property of a proxy)."""
    for cls in type(value).__mro__:
        if "__dict__" in vars(cls):
            return isinstance(vars(cls)["__dict__"], types.GetSetDescriptorType)
    return False


def _dict_of(node: Node, expr: str) -> str:
    """Source reading an argument object's ``__dict__`` (binding its local for the paths below it):
    an attribute load when its class keeps ``object.__getattribute__``, else a call of that (a class
    with its own ``__getattribute__`` in Python, as Hugging Face configs have, would cost a call)."""
    default: Any = object.__getattribute__
    if type(node.value).__getattribute__ is default:
        return f"({node.local} := {expr}).__dict__"
    if not _object_dict_readable(node.value):
        return f"{VARS}({node.local} := {expr})"
    return f"{_OBJECT_DICT}({node.local} := {expr}, '__dict__')"


@dataclasses.dataclass(frozen=True)
class CheckLayout:
    """What the input check compares for one argument structure: the projection of its tree."""

    fn: types.FunctionType
    elements: tuple[KeyElement, ...]
    """Every property of every argument and closure variable: what messages and reports show (the full key)."""
    fast: tuple[KeyElement, ...]
    """What the per-call key computes: outside argument objects, what the C++ tensor check does not cover."""
    object_elements: tuple[KeyElement, ...]
    """Inside argument objects: compared when the fingerprint is new (the object key)."""
    tier_elements: tuple[KeyElement, ...]
    """``object_elements`` less what the object tier's tensor check compares (its tensors' class,
    shape, dtype...): the object part of the tier's key."""
    tensors: tuple[TensorArg, ...]
    """Tensors outside argument objects: the C++ tensor check compares them on every call."""
    object_tensors: tuple[TensorArg, ...]
    """Tensors inside argument objects: compared when the fingerprint is new."""
    sentinels: tuple[TensorArg, ...]
    """The first parameter of ``self``, of each module argument and of each global module: the
    per-call C++ tensor check compares them with the arguments' tensors (``checked_tensors``)."""
    fingerprint: tuple[str, ...]
    """Expressions of the per-call fingerprint (``_watch``): the module part, then the object part."""
    module_part: int
    """How many leading fingerprint elements watch modules, globals and torch state (a change there
    is verified with Dynamo's guards; the rest, with the object key). All of them when an argument
    object holds a module."""
    unchecked: tuple[str, ...]
    """Paths the check cannot look into."""
    closure_cells: tuple[int, ...] = ()
    """Indices of the closure cells of plain values, which the fast key compares together."""
    object_roots: tuple[str, ...] = ()
    """With a version tree (``_watch.ObjectWatch``): the argument objects' expressions, and the
    fingerprint's object part is the one expression ``object_watch_expr`` of them. Empty: the
    object part is Python (``object_prints``)."""
    module_dicts: tuple[str, ...] = ()
    """With a version tree: the dicts the module part watches (globals, ``self``'s four dicts,
    the dicts of objects modules hold), checked together by one expression ``dict_watch_expr``
    of them in the module part. Empty: one ``dict_fingerprint`` per dict."""
    module_kinds: tuple[str, ...] = ()
    """What the tree watches of each of ``module_dicts`` (``_TREE_ROOTS``' values)."""
    tree_elements: tuple[int, ...] = ()
    """Where in ``fingerprint`` the version-tree elements are (no element before them expands
    with ``*map``, so the same index holds in every call's fingerprint)."""
    module_tree: int | None = None
    """Where in ``fingerprint`` the module dicts' tree element is."""
    first_object: str | None = None
    """The expression of the first argument object (with or without a version tree), or None."""
    keyword_order: int | None = None
    """Where in ``fast`` the ``**kwargs`` names are, in the call's order (None: no ``**kwargs``)."""
    modules: tuple[torch.nn.Module, ...] = ()
    """The modules the call brings outside argument objects (arguments, what their containers hold,
    closure variables): what the registration epoch watches once it is installed (``_watch.EPOCH``)."""

    @classmethod
    def of(cls, tree: ArgumentTree) -> CheckLayout:
        w = _KeyWriter(tree)
        roots = tuple(w.object_roots) if w.tree_able and w.object_roots and version_trees() else ()
        object_part = [object_watch_expr(roots)] if roots else w.object_prints
        module_part, module_dicts, module_kinds, module_tree = _module_dicts_as_tree(w.module_prints)
        trees = (*(() if module_tree is None else (module_tree,)), *((len(module_part),) if roots else ()))
        return cls(
            fn=tree.fn,
            elements=tuple(w.elements),
            fast=tuple(w.fast),
            object_elements=tuple(w.object_elements),
            tier_elements=tuple(e for i, e in enumerate(w.object_elements) if i not in w.tensor_covered),
            tensors=tuple(w.tensors),
            object_tensors=tuple(w.object_tensors),
            sentinels=tuple(w.sentinels),
            fingerprint=(*module_part, *object_part),
            module_part=len(module_part) + (len(object_part) if w.objects_hold_modules else 0),
            unchecked=tuple(w.unchecked),
            closure_cells=w.closure_cells,
            object_roots=roots,
            first_object=w.object_roots[0] if w.object_roots else None,
            module_dicts=module_dicts,
            module_kinds=module_kinds,
            tree_elements=trees,
            module_tree=module_tree,
            keyword_order=w.keyword_order,
            modules=tuple(n.value for n in tree.all_nodes() if n.kind is Kind.MODULE and not n.inside_object),
        )

    @property
    def all_tensors(self) -> tuple[TensorArg, ...]:
        """Every tensor, in the order of the full key."""
        return (*self.tensors, *self.object_tensors)

    @property
    def checked_tensors(self) -> tuple[TensorArg, ...]:
        """What the per-call C++ tensor check compares: the tensors outside argument objects, then the sentinels."""
        return (*self.tensors, *self.sentinels)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(t.path for t in self.all_tensors)


_OBJECT_SLOT = "__nc_watch"
_DICT_SLOT = "__nc_dicts"
DICTS_OPEN = "__nc_dicts_open"
"""The global of a selector's code that an open module part sets (``_watch.ObjectWatch.open``)."""


def same_but_keyword_order(compiled: tuple[Any, ...], given: tuple[Any, ...], position: int) -> bool:
    """Whether two fast keys are equal but for the order of the ``**kwargs`` names at ``position``."""
    if len(compiled) != len(given) or compiled[:position] != given[:position]:
        return False
    names = compiled[position], given[position]
    return sorted(names[0]) == sorted(names[1]) and compiled[position + 1 :] == given[position + 1 :]


def object_slots() -> tuple[str, ...]:
    """The globals of a selector's code that hold its argument objects' version trees, tried in order."""
    return tuple(f"{_OBJECT_SLOT}{i}" for i in range(_watch.OBJECT_WATCH_SLOTS))


def dict_slots() -> tuple[str, ...]:
    """The globals of a selector's code that hold its module dicts' version trees, tried in order."""
    return tuple(f"{_DICT_SLOT}{i}" for i in range(_watch.OBJECT_WATCH_SLOTS))


def _watch_expr(slots: Sequence[str], roots: Sequence[str], local: str, opened: str | None = None) -> str:
    """The first slot's check that passes for ``roots`` (read once into a local, so the check
    tested is the check keyed), or None: one element of the fingerprint. With ``opened``, the
    global an open watch sets (``_watch.ObjectWatch.open``): while set, it is the element, and
    the roots are not even read."""
    values = f"({local}_roots := ({', '.join(roots)},))"
    tried = [
        f"{local} if ({local} := {slot})({values if i == 0 else local + '_roots'})" for i, slot in enumerate(slots)
    ]
    chain = "(" + " else ".join(tried) + " else None)"
    return f"({opened} or {chain})" if opened is not None else chain


def object_watch_expr(roots: Sequence[str]) -> str:
    """The fingerprint's object part with a version tree (``_watch.ObjectWatch``)."""
    return _watch_expr(object_slots(), roots, "__nc_w")


def dict_watch_expr(dicts: Sequence[str]) -> str:
    """The module part's dict versions as one version tree (``_watch.ObjectWatch`` of dicts)."""
    return _watch_expr(dict_slots(), dicts, "__nc_d", DICTS_OPEN)


def version_trees() -> bool:
    """Whether the fingerprint's dict versions are read by version trees here (``_watch.ObjectWatch``)."""
    return _version_tree.VERSION_TREE and _watch.dict_fingerprint is _compat.DICT_VERSION


def _module_dicts_as_tree(prints: list[str]) -> tuple[list[str], tuple[str, ...], tuple[str, ...], int | None]:
    """``(module part, its tree's roots, what the tree watches of each, the tree element's index)``:
    the module part with its dict fingerprints (``__nc_fp(d)``), plain closure cells, functions and
    held objects (``_TREE_ROOTS``) replaced by one version-tree expression over them where that
    works here, else as it is."""
    prefixes = tuple(_TREE_ROOTS)
    watched = [p for p in prints if p.startswith(prefixes)]
    if not watched or not version_trees():
        return prints, (), (), None
    roots = tuple(p[p.index("(") + 1 : -1] for p in watched)
    kinds = tuple(_TREE_ROOTS[p[: p.index("(") + 1]] for p in watched)
    first = prints.index(watched[0])
    rest = [p for p in prints if not p.startswith(prefixes)]
    return [*rest[:first], dict_watch_expr(roots), *rest[first:]], roots, kinds, first


def generated_globals(fn: types.FunctionType, layout: CheckLayout | None = None) -> dict[str, Any]:
    """The globals every generated check reads."""
    cells = fn.__closure__ or ()
    return {
        **{f"{_CELL}{i}": cells[i] for i in (layout.closure_cells if layout is not None else ())},
        _PLAIN_CELLS: tuple(cells[i] for i in (layout.closure_cells if layout is not None else ())),
        _GRAD_ENABLED: torch.is_grad_enabled,
        **closure_globals(fn),
        _EPOCH: _watch.EPOCH,
        _MODES: _compat.torch_function_mode_count,
        _FINGERPRINT: _watch.dict_fingerprint,
        _FINGERPRINT_WALKED: _watch.dict_fingerprint,
        _ID: id,
        _OBJECT_DICT: object.__getattribute__,
        _GLOBALS: fn.__globals__,
    }


def pinning_globals() -> dict[str, Any]:
    """Globals that turn a fingerprint's generated text into its pinning variant: what the
    verified table pins for a key (``_watch.Verified.add``) instead of the fingerprint itself.
    Version trees need no pins (their slots read as empty)."""
    return {
        **dict.fromkeys((*object_slots(), *dict_slots()), _watch.EMPTY_SLOT),
        DICTS_OPEN: None,
        _FINGERPRINT: _watch.pin_dict,
        _FINGERPRINT_WALKED: _watch.pin_walked_dict,
        _ID: _watch.pin_object,
    }
