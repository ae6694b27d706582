"""One walk over a call's arguments: bind them once, classify every value once, into a tree.

Everything nocompile derives from a call's arguments is a projection of the ``ArgumentTree``
built here, so the rules for what a value *is* live in one table (``RULES``) with one depth
limit (``MAX_OBJECT_DEPTH``):

* the input check of ``guards="inputs"`` — its key, its generated selector and the tensors its
  C++ check compares (``_layout``);
* the CUDA-graph layout (which tensors are copied into static inputs, which objects a graph set
  is captured for), the rebuilt call on static tensors, and the snapshot that finds a compiled
  call rebinding its arguments' attributes (``_cudagraphs``);
* the artifact key of ``cache_dir`` and the signature text of ``explain()`` (``_artifacts``,
  ``_record``);
* which dims to mark dynamic for a compile.

The tree holds the call's values (for the compile that walks it); the generated per-call code
holds only expressions, paths and kinds. Each node has a *path* (readable: ``cache.layers[0].keys``)
and, where Python can spell it, an *expression* over the function's parameters that reaches the
value again on a later call. An object's attributes are reached through a local bound once per
generated function (``(_nc_o3 := cache.layers[0]).__class__``), so deep paths stay cheap.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import keyword
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ._codegen import (
    EMPTY_CELL,
    GETATTR,
    closure_variables,
    code_signature,
    key_source,
    literal_key,
    varkw_name,
)
from ._codegen import closure_values as closure_values  # re-exported: _state imports it from here

#: How many objects deep the walk follows attributes (a cache object -> its list of layers -> a
#: layer is depth 2); deeper objects are opaque. Also bounds a reference cycle.
MAX_OBJECT_DEPTH = 4
#: How many nodes one walk makes before it stops following objects (a huge object graph).
MAX_NODES = 20_000
#: How the attribute holding an instance's nocompile state is named (``instance.__dict__``): never
#: watched or walked as the instance's data.
STATE_ATTRIBUTE_PREFIX = "_nocompile_state_"


class Kind(str, enum.Enum):
    """What a value is, as far as nocompile is concerned (the first matching rule of ``RULES``)."""

    TENSOR = "tensor"
    """A ``torch.Tensor``: a graph input whose metadata the compiled code assumes."""
    MODULE = "module"
    """An ``nn.Module``: checked by class and ``training``; its attributes are Dynamo's to guard."""
    SCALAR = "scalar"
    """int, float, bool, complex, str, None, an enum member, a dtype, device, memory format or layout:
    baked in by value."""
    CONSTANT = "constant"
    """A function, builtin, class, ``range`` or ``slice``: Dynamo specializes on which one."""
    SEQUENCE = "sequence"
    """A list or tuple (namedtuples and ``torch.Size`` included): its type, length and items."""
    MAPPING = "mapping"
    """A dict whose keys generated code can name (str, int, enum members, tuples of such: ``bindable_key``):
    its keys, in order, and its values."""
    OBJECT = "object"
    """Any other object with an instance ``__dict__``: its class, attribute names and attributes."""
    OPAQUE = "opaque"
    """Anything else (or an object too deep): nocompile does not look inside."""


SCALAR_TYPES: tuple[type, ...] = (
    int,
    float,
    bool,
    complex,
    str,
    type(None),
    enum.Enum,
    torch.dtype,
    torch.device,
    torch.memory_format,
    torch.layout,
)
CONSTANT_TYPES: tuple[type, ...] = (types.FunctionType, types.BuiltinFunctionType, type, range, slice)
#: Objects that have a ``__dict__`` but are code or namespaces, not data: never followed.
NOT_FOLLOWED: tuple[type, ...] = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    functools.partial,
)


def bindable_key(key: Any) -> bool:
    """Whether generated code can name the dict key ``key``: a literal (``_codegen.literal_key``),
    or a value compared by value, bound as a constant of the generated code (``key_source``): an
    enum member, a float (not NaN: found only by identity), a dtype, a tuple or frozenset of such."""
    if literal_key(key):
        return True
    if isinstance(key, float):
        return key == key
    if isinstance(key, (tuple, frozenset)):
        return all(bindable_key(k) for k in key)
    return isinstance(key, (int, str, bytes, complex, enum.Enum, torch.dtype, torch.device))


def _plain_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(bindable_key(k) for k in value)


def _has_instance_dict(value: Any) -> bool:
    return isinstance(getattr(value, "__dict__", None), dict) and not isinstance(value, NOT_FOLLOWED)


#: The classification rules, first match wins. A value no rule claims is ``OPAQUE``.
RULES: tuple[tuple[Callable[[Any], bool], Kind], ...] = (
    (lambda v: isinstance(v, torch.Tensor), Kind.TENSOR),
    (lambda v: isinstance(v, torch.nn.Module), Kind.MODULE),
    (lambda v: isinstance(v, SCALAR_TYPES), Kind.SCALAR),
    (lambda v: isinstance(v, CONSTANT_TYPES), Kind.CONSTANT),
    (lambda v: isinstance(v, (list, tuple)), Kind.SEQUENCE),
    (_plain_mapping, Kind.MAPPING),
    (_has_instance_dict, Kind.OBJECT),
)


def classify(value: Any) -> Kind:
    """The kind of ``value`` by ``RULES`` (depth limits aside)."""
    for matches, kind in RULES:
        if matches(value):
            return kind
    return Kind.OPAQUE


@dataclasses.dataclass(eq=False)
class Node:
    """One value of the call, where it sits, and what it contains."""

    kind: Kind
    path: str
    """Readable location: ``x``, ``cache.layers[0].keys``, ``kwargs['mask']``."""
    expr: str | None
    """Python expression reaching the value from the function's parameters (and object locals);
    None where Python cannot spell it (an attribute whose name is not an identifier)."""
    value: Any
    depth: int
    """Objects (and modules) followed above this node."""
    parameter: str | None = None
    """The parameter name when the node is a whole parameter (not an item or attribute of one)."""
    children: list[Node] = dataclasses.field(default_factory=list)
    local: str | None = None
    """OBJECT and MODULE nodes: the local name its children's expressions read it through (the
    input check binds it with ``:=`` where it first reads the object)."""
    dynamic_dims: tuple[int, ...] = ()
    """TENSOR nodes: the dims compiled as dynamic sizes (``dynamic=`` on a parameter, or automatic)."""
    dynamic_int: bool = False
    """SCALAR int nodes compiled as a dynamic int (automatic dynamic): its value is not baked in."""
    varkw: bool = False
    """The ``**kwargs`` parameter itself (its keys are compared sorted)."""
    note: str = ""
    """OPAQUE nodes: why nocompile does not look inside."""
    inside_object: bool = False
    """Reached through an object's or module's attribute (read in place by the compiled code)."""
    closure: bool = False
    """A closure variable of the function (or inside one), not an argument of the call."""

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(eq=False)
class ArgumentTree:
    """The bound call, walked: one root node per parameter (``**kwargs`` as a mapping)."""

    fn: types.FunctionType
    roots: list[Node]
    closure_roots: list[Node] = dataclasses.field(default_factory=list)
    """The function's closure variables, one node per free variable (``_codegen.CLOSURE_CELLS[i].cell_contents``):
    values the compiled code reads like arguments, though no call passes them."""

    @property
    def arguments(self) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied, as the walk bound them."""
        return {root.path: root.value for root in self.roots}

    def nodes(self) -> Iterator[Node]:
        """The call's arguments, parents first (closure variables not included)."""
        for root in self.roots:
            yield from root.walk()

    def all_nodes(self) -> Iterator[Node]:
        """The arguments, then the closure variables."""
        yield from self.nodes()
        for root in self.closure_roots:
            yield from root.walk()

    def of_kind(self, *kinds: Kind) -> list[Node]:
        return [n for n in self.nodes() if n.kind in kinds]

    def tensors(self) -> list[Node]:
        """Every tensor the call holds, arguments' objects' attributes included, in walk order."""
        return self.of_kind(Kind.TENSOR)

    def argument_tensors(self) -> list[Node]:
        """Tensors passed as arguments or inside argument containers, not inside objects."""
        return [n for n in self.tensors() if not n.inside_object]

    def argument_objects(self) -> list[Node]:
        """Objects passed as arguments or inside argument containers (modules, objects, opaque
        values): what a CUDA graph reads in place and keys its graph sets on. Constants
        (functions, classes, ranges, slices) hold no state the compiled code reads."""
        held = (Kind.MODULE, Kind.OBJECT, Kind.OPAQUE)
        return [n for n in self.nodes() if n.kind in held and not n.inside_object]

    def unchecked(self) -> list[str]:
        """Paths nocompile cannot look into, with the reason (for warnings and reports)."""
        return [f"{n.path} ({n.note})" for n in self.nodes() if n.kind is Kind.OPAQUE]


class ObjectWalk:
    """The limits and rules of every walk into a call's objects, in one place.

    Two walks go into argument objects: the ``ArgumentTree`` (``walk``, by ``_Walker``) and the
    version trees of ``_watch`` (``version_tree``), which follow the dicts and lists the tree's
    object part fingerprints. Both classify values by ``RULES`` (``classify``), follow an
    object's attributes only where ``follows`` says so, and read those attributes through
    ``instance_attributes``. Each walk counts its own nodes (``count``): the tree every value,
    a version tree each value it follows into.
    """

    def __init__(self) -> None:
        self.count = 0
        """Nodes this walk has made so far (each walk counts one where it visits a value)."""

    def follows(self, depth: int) -> bool:
        """Whether to follow the attributes of an object ``depth`` objects deep: not at
        ``MAX_OBJECT_DEPTH`` (which also bounds a reference cycle), nor once this walk has made
        ``MAX_NODES`` nodes (a huge object graph). An object not followed is opaque to the walk."""
        return depth < MAX_OBJECT_DEPTH and self.count < MAX_NODES


def instance_attributes(value: Any) -> list[tuple[str, Any]]:
    """``value``'s instance attributes as every walk follows them: the items of its ``__dict__``
    as they are now, without nocompile's own state (``STATE_ATTRIBUTE_PREFIX``), which is not the
    instance's data."""
    return [(name, item) for name, item in vars(value).items() if not name.startswith(STATE_ATTRIBUTE_PREFIX)]


class _Walker(ObjectWalk):
    def __init__(
        self,
        dynamic: Mapping[str, tuple[int, ...]],
        follow_modules: bool,
        dynamic_paths: Mapping[str, tuple[int, ...]],
        dynamic_ints: frozenset[str],
    ) -> None:
        super().__init__()
        self.dynamic = dynamic
        self.dynamic_paths = dynamic_paths
        self.dynamic_ints = dynamic_ints
        self.follow_modules = follow_modules
        self.locals = 0

    def node(
        self,
        value: Any,
        path: str,
        expr: str | None,
        depth: int,
        parameter: str | None,
        inside: bool,
        closure: bool = False,
    ) -> Node:
        self.count += 1
        kind = classify(value)
        node = Node(kind, path, expr, value, depth, parameter=parameter, inside_object=inside, closure=closure)
        if kind is Kind.TENSOR:
            dims = set(self.dynamic.get(parameter, ())) if parameter is not None else set()
            dims.update(self.dynamic_paths.get(path, ()))
            node.dynamic_dims = tuple(sorted(d for d in dims if d < value.ndim))
        elif kind is Kind.SCALAR:
            node.dynamic_int = path in self.dynamic_ints and type(value) is int
        elif kind is Kind.SEQUENCE:
            for i, item in enumerate(value):
                node.children.append(
                    self.node(item, f"{path}[{i}]", _sub(expr, f"[{i}]"), depth, None, inside, closure)
                )
        elif kind is Kind.MAPPING:
            for k, item in value.items():
                node.children.append(
                    self.node(item, f"{path}[{k!r}]", _sub(expr, f"[{key_source(k)}]"), depth, None, inside, closure)
                )
        elif kind is Kind.OBJECT or (kind is Kind.MODULE and self.follow_modules):
            if not self.follows(depth):
                if kind is Kind.OBJECT:
                    node.kind = Kind.OPAQUE
                    node.note = f"{type(value).__name__}; deeper than {MAX_OBJECT_DEPTH} objects or too large"
                return node
            self.attributes(node)
        elif kind is Kind.OPAQUE:
            node.note = type(value).__name__
        return node

    def attributes(self, node: Node) -> None:
        self.locals += 1
        node.local = f"_nc_o{self.locals}" if node.expr is not None else None
        for name, item in instance_attributes(node.value):
            expr = None if node.local is None else attribute_source(node.local, name)
            node.children.append(self.node(item, f"{node.path}.{name}", expr, node.depth + 1, None, True, node.closure))


def attribute_source(expr: str, name: str) -> str:
    """Source reading attribute ``name`` of ``expr``: ``expr.name``, or through ``getattr`` where
    ``name`` cannot follow a dot (``lambda``, ``rope-theta``, a dunder name)."""
    if name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__"):
        return f"{expr}.{name}"
    return f"{GETATTR}({expr}, {name!r})"


def _sub(expr: str | None, suffix: str) -> str | None:
    return None if expr is None else expr + suffix


def bound_arguments(fn: types.FunctionType, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults applied; TypeError if they do not bind."""
    bound = code_signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def walk(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]] | None = None,
    *,
    follow_modules: bool = False,
    dynamic_paths: Mapping[str, tuple[int, ...]] | None = None,
    dynamic_ints: frozenset[str] = frozenset(),
    bound: Mapping[str, Any] | None = None,
) -> ArgumentTree:
    """Bind the call to ``fn``'s parameters (TypeError if it does not bind) and walk it.

    ``follow_modules`` also walks modules' attributes (parameters, buffers, submodules, plain
    attributes), which only the CUDA-graph snapshot wants. ``dynamic`` names dims of parameters;
    ``dynamic_paths`` and ``dynamic_ints`` name dims and ints anywhere, by path (automatic dynamic).
    ``bound``: the call's arguments as an earlier walk bound them (``ArgumentTree.arguments``),
    walked again without binding the call again.
    """
    walker = _Walker(dynamic or {}, follow_modules, dynamic_paths or {}, dynamic_ints)
    varkw = varkw_name(fn)
    roots = []
    for name, value in (bound if bound is not None else bound_arguments(fn, args, kwargs)).items():
        if name == varkw:
            root = Node(Kind.MAPPING, name, name, value, 0, parameter=name, varkw=True)
            for k in sorted(value):
                child = walker.node(value[k], f"{name}[{k!r}]", f"{name}[{key_source(k)}]", 0, None, False)
                root.children.append(child)
            roots.append(root)
        else:
            roots.append(walker.node(value, name, name, 0, name, False))
    closure_roots = []
    for name, expr, value in closure_variables(fn):
        if value is EMPTY_CELL:  # assigned later, or never
            closure_roots.append(Node(Kind.OPAQUE, name, expr, None, 0, note="empty closure cell", closure=True))
            continue
        closure_roots.append(walker.node(value, name, expr, 0, None, False, closure=True))
    return ArgumentTree(fn, roots, closure_roots)


# -- projections that are not the input check's ---------------------------------------------


def dynamic_marks(
    tree: ArgumentTree, dynamic: Mapping[str, tuple[int, ...]]
) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """Which dims of which tensors to mark dynamic for this compile; ValueError on a bad spec.

    Dims of size 0 or 1 are left static: Dynamo specializes those sizes anyway (marking them
    raises a constraint violation), and the key buckets sizes as 0, 1 and "2 or more", so such
    a call gets a static specialization of its own.
    """
    by_name = {root.parameter: root for root in tree.roots}
    marks = []
    for name, dims in dynamic.items():
        root = by_name.get(name)
        value = root.value if root is not None else None
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"compile_once(dynamic={{{name!r}: ...}}) on {tree.fn.__qualname__}: argument {name!r} is "
                f"{type(value).__name__}, not a tensor; only a tensor argument's dims can be dynamic."
            )
        bad = [d for d in dims if d >= value.ndim]
        if bad:
            raise ValueError(
                f"compile_once(dynamic={{{name!r}: {dims if len(dims) > 1 else dims[0]!r}}}) on "
                f"{tree.fn.__qualname__}: {name!r} has {value.ndim} dim(s) (shape {tuple(value.shape)}), so "
                f"dim {bad[0]} does not exist. Use dims 0..{value.ndim - 1}."
            )
        sized = tuple(d for d in dims if value.shape[d] >= 2)
        if sized:
            marks.append((value, sized))
    return marks


def identity_snapshot(tree: ArgumentTree) -> dict[str, Any]:
    """What the call's arguments *are*, path by path: tensors and objects by identity, scalars
    and constants by value, containers by type, length and keys.

    Compared between the walk before a compiled call and the walk after it, it shows every
    rebinding the call made (a cache allocating and storing its tensors, a counter attribute
    bumped); in-place tensor updates leave it unchanged.
    """
    state: dict[str, Any] = {}
    for node in tree.nodes():
        value = node.value
        if node.kind is Kind.TENSOR:
            state[node.path] = ("tensor", id(value))
        elif node.kind in (Kind.SCALAR, Kind.CONSTANT):
            state[node.path] = ("value", type(value), value if not isinstance(value, slice) else repr(value))
        elif node.kind is Kind.SEQUENCE:
            state[node.path] = (type(value), len(value))
        elif node.kind is Kind.MAPPING:
            state[node.path] = (type(value), tuple(map(repr, value)))
        else:  # objects and modules by identity; their attributes are nodes of their own
            state[node.path] = (node.kind.value, id(value))
    return state


def rebuilt_sequence(like: Any, items: list[Any]) -> Any:
    """A sequence of ``like``'s type holding ``items``: ``items`` itself for a list (of any list
    type), a namedtuple from its fields, any other tuple type from the items.

    How containers are rebuilt, for the call (``rebuild``) and for a CUDA graph's outputs
    (``_cudagraph_outputs``).
    """
    if isinstance(like, list):
        return items
    return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)


def rebuild(tree: ArgumentTree, replacements: Sequence[torch.Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` of the call with its argument tensors (``argument_tensors`` order)
    replaced by ``replacements``; containers rebuilt as their own types, objects passed as they are."""
    queue = iter(replacements)

    def build(node: Node) -> Any:
        if node.kind is Kind.TENSOR and not node.inside_object:
            return next(queue)
        if node.kind is Kind.SEQUENCE:
            return rebuilt_sequence(node.value, [build(child) for child in node.children])
        if node.kind is Kind.MAPPING and not node.varkw:
            return {k: build(child) for k, child in zip(node.value, node.children, strict=True)}
        return node.value

    bound = code_signature(tree.fn).bind_partial()
    for root in tree.roots:
        if root.varkw:
            bound.arguments[root.path] = {
                k: build(child) for k, child in zip(sorted(root.value), root.children, strict=True)
            }
        else:
            bound.arguments[root.path] = build(root)
    return tuple(bound.args), dict(bound.kwargs)
