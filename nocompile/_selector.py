"""The generated per-call check of ``guards="inputs"``: the ``Selector`` of one argument structure.

``selector(layout, slow)`` writes, from a ``CheckLayout`` (``_layout``), the functions that
compute a call's keys and the per-call path itself (``Selector.call``): one frame with the
decorated function's parameters that computes the verified key, looks it up and runs the
first candidate whose checks pass, or hands the call to ``slow``. ``key_function`` writes the
full key (every property, for messages and reports). Generated code, rather than a generic
tree walk, because it is the per-call path: one tensor costs a handful of attribute reads and
a tuple.

Dynamic dims leave *shape guards*, Python expressions over the call's locals such as
``4 <= L['x'].size()[0]``, that dropping Dynamo's guards would throw away. ``ShapeCheck``
compiles them into a function with the same parameters, evaluated after the key matched.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import keyword
import math
import re
import threading
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from . import _watch
from ._arguments import walk
from ._codegen import (
    BOOL,
    UNSET,
    builtin,
    call_list,
    closure_globals,
    closure_variables,
    define_like,
    live_defaults,
    parameter_list,
    pass_on,
    tuple_source,
)
from ._layout import (
    DICTS_OPEN,
    CheckLayout,
    KeyFn,
    KeyFunction,
    dict_slots,
    generated_globals,
    object_slots,
    pinning_globals,
    same_but_keyword_order,
)


def key_function(layout: CheckLayout) -> KeyFunction:
    """Generate the full key function of this structure (for messages and reports).

    The full key describes every property of every argument. The per-call path uses a
    ``Selector`` instead.
    """
    fn = layout.fn
    body = ",\n        ".join(e.expr for e in layout.elements)
    source = f"def key({parameter_list(fn)}):\n    return (\n        {body},\n    )\n"
    key_fn = define_like(fn, source, generated_globals(fn, layout))["key"]
    return KeyFunction(key_fn, layout.elements, source)


class Candidate(NamedTuple):
    """One specialization a selector may pick. The per-call path unpacks it as a tuple (no
    attribute reads); Python code reads it by name."""

    global_state_ok: Callable[[], bool]
    """Dynamo's check of torch's global state as the specialization was compiled under."""
    tensors_ok: Callable[..., bool]
    """The C++ tensor check of the tensors outside argument objects and of the sentinels."""
    shape_ok: Callable[..., bool] | None
    """Dynamo's shape guards on dynamic dims, or None."""
    call: Callable[..., Any]
    """What the call runs."""
    spec: Any
    """The specialization (``_view.Specialization``) it belongs to."""


class Verification(NamedTuple):
    """What the slow path reads of a call to verify it, computed by one generated function."""

    fingerprint: tuple[Any, ...]
    object_key: tuple[Any, ...]
    tensors: tuple[torch.Tensor, ...]
    """Every tensor, in the order of the full key (``CheckLayout.all_tensors``)."""
    argument_tensors: tuple[torch.Tensor, ...]
    """What the per-call tensor check compares (``CheckLayout.checked_tensors``): the last
    ``Selector.sentinel_count`` are the modules' first parameters."""


@dataclasses.dataclass
class Selector:
    """The per-call check of ``guards="inputs"`` for one argument structure.

    ``call(*args, **kwargs)`` is the per-call path itself, one generated frame with the decorated
    function's parameters. It computes one tuple, the *fast key* (scalar values and types,
    container structure, ``training``, grad mode, which tensors are the same object) followed by
    the *fingerprint* (``_watch``), and looks it up in ``verified``: the candidates verified for
    exactly this key, whose argument objects, module attributes, globals and closures were found
    to be what they were compiled for. It calls the first whose global-state check, C++ tensor
    check and shape guards pass. Anything else — a new fingerprint, a miss, a call of another
    structure — goes to ``slow(args, kwargs)``, which verifies, compiles or raises. A hit that was
    not first moves to the front.

    ``table`` holds every candidate by fast key alone, for the slow path. ``fast`` and
    ``verified_key`` are the per-call keys alone; ``verification`` computes, in one evaluation,
    everything else the slow path compares (fingerprint, object key, tensors).
    """

    call: Callable[..., Any]
    dispatch: Callable[..., Any]
    """``call`` without the state's entry prologue: the target of the state's direct entry, which
    ran the prologue (a bound method taken before the first compile enters there)."""
    fast: KeyFn
    verified_key: KeyFn
    verification: Callable[..., Verification]
    """Everything the slow path compares of a call, in one evaluation."""
    pins: KeyFn
    """The fingerprint's pinning variant (``_watch.pinned_objects`` of it: what ``verify`` pins)."""
    object_key: KeyFn
    sentinel_count: int
    paths: tuple[str, ...]
    module_part: int
    source: str
    table: dict[tuple[Any, ...], tuple[Candidate, ...]]
    verified: _watch.Verified
    lock: threading.Lock
    """Taken by ``add``, ``verify`` and the generated code's reordering, so none loses another's candidate."""
    module_watch: tuple[_watch.ObjectWatch, Callable[..., tuple[Any, ...]]] | None = None
    """The module dicts' version trees (``CheckLayout.module_dicts``) and the function of the call
    that gives their roots."""
    object_watch: tuple[_watch.ObjectWatch, Callable[..., tuple[Any, ...]]] | None = None
    """The argument objects' version trees (``CheckLayout.object_roots``), likewise."""
    tree_positions: tuple[int, ...] = ()
    """Where in ``verified_key`` the version trees' elements are (None there: no tree vouched)."""
    module_tree_position: int | None = None
    """Where in ``fingerprint`` the module dicts' tree element is."""
    object_tier: Callable[..., tuple[tuple[Any, ...], tuple[torch.Tensor, ...]]] | None = None
    """The *object tier* (see ``by_object``): a call's key there and the tensors its check
    compares; None where the argument objects hold modules or there are none."""
    by_object: dict[tuple[Any, ...], tuple[Candidate, ...]] = dataclasses.field(default_factory=dict)
    """The object tier's candidates: a call whose fingerprint no verified key has, with argument
    objects of a verified layout under verified module state, runs without the slow path."""
    keyword_order: int | None = None
    """Where in the fast key the ``**kwargs`` names are, in the call's order (``CheckLayout.keyword_order``)."""
    module_roots: tuple[str, ...] = ()
    """The expressions of the module dicts' version trees' roots (``CheckLayout.module_dicts``)."""

    def remember_modules(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Make sure a version tree identifies the module dicts' state as it is now. Safe before
        verification: that tree checks every position (a dict's version, a cell's value), so it
        identifies the state entirely; only keys recorded after verification rely on it."""
        if self.module_watch is not None:
            watch, roots = self.module_watch
            watch.remember(roots(*args, **kwargs))

    def remember_objects(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Vouch for the argument objects as they are now. Only after they were verified: the tree
        checks the dicts and lists the verified layout has, not what another layout would need."""
        if self.object_watch is not None:
            watch, roots = self.object_watch
            watch.remember(roots(*args, **kwargs))

    def vouched(self, key: tuple[Any, ...]) -> bool:
        """Whether every version-tree element of a ``verified_key`` names a tree (a state that
        changed while its tree was made gives None there, and such a key must not be recorded)."""
        return all(key[i] is not None for i in self.tree_positions)

    def module_part_vouched(self, fingerprint: tuple[Any, ...]) -> bool:
        """The same for the module part of a ``fingerprint``."""
        return self.module_tree_position is None or fingerprint[self.module_tree_position] is not None

    def add(self, key: tuple[Any, ...], candidate: Candidate) -> None:
        """Make ``candidate`` the first one under the fast key ``key``."""
        with self.lock:
            self.table[key] = (candidate, *self.table.get(key, ()))

    def verify(self, key: tuple[Any, ...], candidate: Candidate, pins: list[Any]) -> None:
        """Make ``candidate`` the first one the per-call path tries for ``key`` (a ``verified_key``),
        pinning ``pins`` (the objects whose ``id()`` is in the key) for as long as the key is kept."""
        with self.lock:
            others = tuple(c for c in self.verified.get(key, ()) if c is not candidate)
            self.verified.add(key, (candidate, *others), pins)

    def verify_objects(self, key: tuple[Any, ...], candidate: Candidate) -> None:
        """Make ``candidate`` what the object tier runs for ``key`` (at most ``MAX_OBJECT_TIER``
        keys, the oldest forgotten first)."""
        with self.lock:
            others = tuple(c for c in self.by_object.pop(key, ()) if c.spec is not candidate.spec)
            while len(self.by_object) >= MAX_OBJECT_TIER:
                del self.by_object[next(iter(self.by_object))]
            self.by_object[key] = (candidate, *others)

    def invalidate(self) -> None:
        """Forget every candidate and every verified key (the state's ``reset``).

        Each call through ``call`` then misses and goes to the slow path, also through an entry
        that someone still holds (``held = model.forward`` before the reset). The version trees go
        too: they hold what their identity checks name, and no key names them any more.
        """
        with self.lock:
            self.table.clear()
            self.verified.clear()
            self.by_object.clear()
            for watch in (self.module_watch, self.object_watch):
                if watch is not None:
                    watch[0].forget()

    def candidates(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Candidate, ...]:
        """The candidates under this call's fast key (empty for a call of another structure); with
        none, those compiled for its ``**kwargs`` in another order (each runs it only where
        Dynamo's guards hold: ``InputGuard._verified_target``)."""
        try:
            key = self.fast(*args, **kwargs)
            found = self.table.get(key, ())
        except Exception:
            return ()
        if found or self.keyword_order is None:
            return found
        return tuple(
            candidate
            for compiled, candidates in list(self.table.items())
            if same_but_keyword_order(compiled, key, self.keyword_order)
            for candidate in candidates
        )


#: Object-tier keys kept per argument structure (fresh argument objects of a few layouts).
MAX_OBJECT_TIER = 64


class TierMemory:
    """Which argument objects the object tier served, so that one that comes back is verified once.

    The tier suits an object made fresh for each call. An object kept for many calls (a new cache
    for a whole ``generate()``) is better served by the fast path, once the slow path has verified
    it and a version tree vouches for it: the second time the tier serves it, ``promote`` says so
    (the call goes to the slow path). An object that keeps changing (an int advancing: no tree can
    vouch for it) comes back to the tier, and is sent to the slow path again only the 4th, 16th,
    64th... time. A heuristic: a race only sends a call to the slow path, which verifies it.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._seen: dict[int, tuple[weakref.ref[Any], int]] = {}

    def promote(self, obj: Any) -> bool:
        entry = self._seen.get(id(obj))
        if entry is not None and entry[0]() is obj:
            served = entry[1] + 1
            self._seen[id(obj)] = (entry[0], served)
            # The 2nd time, then the 4th, 16th, 64th...: a sliding-window cache changes on every call
            # of a generate() and each of these costs a verification.
            return served == 2 or (served & (served - 1) == 0 and served.bit_length() % 2 == 1)
        try:
            ref = weakref.ref(obj)
        except TypeError:  # no weak references: it stays in the tier
            return False
        if len(self._seen) >= self._size:
            self._seen = {k: v for k, v in self._seen.items() if v[0]() is not None}
            while len(self._seen) >= self._size:
                del self._seen[next(iter(self._seen))]
        self._seen[id(obj)] = (ref, 1)
        return False


def _unreachable_slow(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    raise RuntimeError("nocompile: a selector built without a slow path was called")


def build_selector(
    fn: types.FunctionType,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    dynamic: Mapping[str, tuple[int, ...]],
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _unreachable_slow,
) -> Selector:
    """The selector of this call's structure, walked afresh (for tests and one-off checks)."""
    return selector(CheckLayout.of(walk(fn, args, kwargs, dynamic)), slow)


def selector(
    layout: CheckLayout,
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _unreachable_slow,
    entry_prologue: tuple[str, Mapping[str, Any]] = ("", {}),
) -> Selector:
    """Generate the selector of this structure; ``slow(args, kwargs)`` serves misses.

    ``entry_prologue`` is source (and the globals it reads) that ``call`` runs first: with the
    state's prologue (``_entry.prologue``), ``call`` is the state's entry itself. ``call`` binds
    the function's current defaults (``_codegen.live_defaults``), as Python would.
    """
    fn = layout.fn
    table: dict[tuple[Any, ...], tuple[Candidate, ...]] = {}
    by_object: dict[tuple[Any, ...], tuple[Candidate, ...]] = {}
    verified = _watch.Verified()
    lock = threading.Lock()

    def promote(key: tuple[Any, ...], target: Callable[..., Any]) -> None:
        with lock:  # rare (a hit that was not first); never loses a candidate added meanwhile
            candidates = verified.get(key, ())
            verified.add(key, tuple(sorted(candidates, key=lambda candidate: candidate.call is not target)))

    namespace = {
        **entry_prologue[1],
        **generated_globals(fn, layout),
        "__nc_fn": fn,
        "__nc_unset": UNSET,
        "__nc_verified": verified.get,
        "__nc_promote": promote,
        "__nc_slow": slow,
        "__nc_verification": Verification,
        "__nc_by_object": by_object,
        "__nc_tier_memory": TierMemory(),
        "__nc_tier_first": [False],
    }
    module_watch = (
        _watch.ObjectWatch(
            namespace, dict_slots(), functools.partial(_watch.module_tree, layout.module_kinds), DICTS_OPEN
        )
        if layout.module_dicts
        else None
    )
    object_watch = _watch.ObjectWatch(namespace, object_slots(), _watch.version_tree) if layout.object_roots else None
    pin_namespace = {**generated_globals(fn, layout), **pinning_globals()}
    params, call = parameter_list(fn), call_list(fn)
    fast = tuple_source([e.expr for e in layout.fast])
    fingerprint = tuple_source(list(layout.fingerprint))
    verified_key = tuple_source([*(e.expr for e in layout.fast), *layout.fingerprint])
    object_key = tuple_source([e.expr for e in layout.object_elements])
    arg_tensors = ", ".join(t.expr for t in layout.checked_tensors)
    rebuilt_args, rebuilt_kwargs = pass_on(fn)
    live_params, resolve = live_defaults(fn)
    # The object tier: argument objects compared by layout (the object key) where the module part
    # of the fingerprint stands alone (objects that hold modules are watched by identity).
    tiered = bool(layout.object_elements) and layout.module_part < len(layout.fingerprint)
    tier_key = tuple_source(
        [
            *(e.expr for e in layout.fast),
            *layout.fingerprint[: layout.module_part],
            *(e.expr for e in layout.tier_elements),
        ]
    )
    tier_tensors = tuple_source([t.expr for t in (*layout.checked_tensors, *layout.object_tensors)])
    # The object tier serves a call no verified key matched: an argument object made fresh each
    # call, or one that keeps changing. Once it served a call it is tried first (the verified key,
    # computed in vain for such objects, is skipped) until it serves none; a hint, so a race costs
    # time, never a wrong call. ``by_object`` answers False where an object it served came back
    # (``TierMemory``): the slow path verifies it, and the fast path serves it from then on.
    miss = (
        f"        __nc_hit = __nc_by_object_call({call})\n"
        "        if not __nc_hit:\n"
        f"            return __nc_slow({rebuilt_args}, {rebuilt_kwargs})\n"
        "        __nc_tier_first[0] = True\n"
        f"        return __nc_hit({call})\n"
        if tiered
        else f"        return __nc_slow({rebuilt_args}, {rebuilt_kwargs})\n"
    )
    tier_first = (
        "    if __nc_tier_first[0]:\n"
        f"        __nc_hit = __nc_by_object_call({call})\n"
        "        if __nc_hit:\n"
        f"            return __nc_hit({call})\n"
        "        __nc_tier_first[0] = False\n"
        "        if __nc_hit is False:\n"
        f"            return __nc_slow({rebuilt_args}, {rebuilt_kwargs})\n"
        if tiered
        else ""
    )
    body = (
        f"{tier_first}"
        "    try:\n"
        f"        __nc_key = {verified_key}\n"
        "        __nc_candidates = __nc_verified(__nc_key)\n"
        "        __nc_hit = None\n"
        "        if __nc_candidates is not None:\n"
        "            for __nc_gs, __nc_check, __nc_shape_ok, __nc_target, __nc_spec in __nc_candidates:\n"
        f"                if __nc_gs() and __nc_check({arg_tensors}) and (\n"
        f"                    __nc_shape_ok is None or __nc_shape_ok({call})\n"
        "                ):\n"
        "                    __nc_hit = __nc_target\n"
        "                    break\n"
        "    except Exception:\n"
        "        __nc_hit = None\n"
        "    if __nc_hit is None:\n"
        f"{miss}"
        "    if __nc_hit is not __nc_candidates[0][3]:\n"
        "        __nc_promote(__nc_key, __nc_hit)\n"
        f"    return __nc_hit({call})\n"
    )
    source = (
        f"def fast({params}):\n    return {fast}\n\n"
        f"def verified_key({params}):\n    return {verified_key}\n\n"
        f"def object_key({params}):\n    return {object_key}\n\n"
        # The object key first: it binds the locals (``_nc_oN``) that paths into argument objects go through.
        f"def verification({params}):\n    __nc_okey = {object_key}\n"
        f"    return __nc_verification({fingerprint}, __nc_okey, "
        f"{tuple_source([t.expr for t in layout.all_tensors])}, "
        f"{tuple_source([t.expr for t in layout.checked_tensors])})\n\n"
        # The per-call path: the check inside try (a call of another structure raises there),
        # the chosen callable outside it (its own exceptions are the user's).
        f"def call({live_params}):\n{resolve}{entry_prologue[0]}{body}\n"
        # The same without the prologue: what an entry that ran it already calls (a bound method
        # taken before the first compile holds the state's direct entry).
        f"def dispatch({params}):\n{body}"
    )
    # An object the tier served last time, back again (a new cache kept for a whole generate()):
    # the slow path verifies it once, so that its version tree vouches for it on the fast path.
    promote_reused = (
        f"                    if __nc_tier_memory.promote({layout.first_object}):\n"
        "                        return False\n"
        if layout.first_object is not None
        else ""
    )
    if tiered:
        # The object tier: never raises (a call of another structure goes on to the slow path; an
        # object without weak references stays in the tier); False: verify this one (above).
        source += (
            f"def by_object({params}):\n"
            "    try:\n"
            f"        __nc_ocands = __nc_by_object.get({tier_key})\n"
            "        if __nc_ocands is not None:\n"
            "            for __nc_gs, __nc_check, __nc_shape_ok, __nc_target, __nc_spec in __nc_ocands:\n"
            f"                if __nc_gs() and __nc_check(*{tier_tensors}) and (\n"
            f"                    __nc_shape_ok is None or __nc_shape_ok({call})\n"
            "                ):\n"
            f"{promote_reused}"
            "                    return __nc_target\n"
            "    except Exception:\n"
            "        pass\n"
            "    return None\n\n"
            f"def object_tier({params}):\n    return {tier_key}, {tier_tensors}\n\n"
        )
    if layout.object_roots:
        source += f"def object_roots({params}):\n    return {tuple_source(list(layout.object_roots))}\n\n"
    if layout.module_dicts:
        source += f"def module_dicts({params}):\n    return {tuple_source(list(layout.module_dicts))}\n\n"
    defined = define_like(fn, source, namespace, named_like=("call",), own_defaults=("call",))
    if tiered:
        namespace["__nc_by_object_call"] = defined["by_object"]
    # The fingerprint again, with its identities and its dicts' values collected instead: what the
    # verified table pins for a key (``_watch.Verified.add``).
    pins = define_like(
        fn,
        f"def pins({params}):\n    return {fingerprint}\n",
        pin_namespace,
    )["pins"]
    return Selector(
        call=defined["call"],
        dispatch=defined["dispatch"],
        fast=defined["fast"],
        verification=defined["verification"],
        pins=pins,
        verified_key=defined["verified_key"],
        object_key=defined["object_key"],
        sentinel_count=len(layout.sentinels),
        paths=layout.paths,
        module_part=layout.module_part,
        source=source,
        table=table,
        verified=verified,
        lock=lock,
        module_watch=(module_watch, defined["module_dicts"]) if module_watch is not None else None,
        object_watch=(object_watch, defined["object_roots"]) if object_watch is not None else None,
        tree_positions=tuple(len(layout.fast) + i for i in layout.tree_elements),
        module_tree_position=layout.module_tree,
        object_tier=defined["object_tier"] if tiered else None,
        by_object=by_object,
        keyword_order=layout.keyword_order,
        module_roots=layout.module_dicts,
    )


_LOCAL = re.compile(r"L\['([A-Za-z_][A-Za-z0-9_]*)'\]")


@dataclasses.dataclass
class ShapeCheck:
    """Dynamo's symbolic shape guards for one specialization, as one Python function."""

    expressions: tuple[str, ...]
    fn: Callable[..., bool]

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return self.fn(*args, **kwargs)


#: A name in an expression of Dynamo's that no dot and no quote precede: a global, a builtin or ``L``.
_BARE_NAME = re.compile(r"(?<![.\w'\"])([A-Za-z_]\w*)")


def _reserved_global(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in ("torch", "math"):
        return f"__nc_{name}"
    if name != "L" and not keyword.iskeyword(name) and hasattr(builtins, name):
        return builtin(name)
    return name


def build_shape_check(fn: types.FunctionType, expressions: Sequence[str]) -> ShapeCheck | None:
    """A function of the decorated function's parameters that is True when every guard holds."""
    if not expressions:
        return None
    # Globals and builtins first, by reserved names (a parameter may be named ``min`` or ``torch``),
    # then the frame's locals (``L['x']``) by their own names.
    rewritten = [_LOCAL.sub(r"\1", _BARE_NAME.sub(_reserved_global, e)) for e in expressions]
    body = " and ".join(f"({e})" for e in rewritten)
    # Closure variables the guards read (``L['w']`` for a captured tensor) are locals of the frame.
    used = set(_LOCAL.findall(" ".join(expressions)))
    cells = "".join(f"    {name} = {expr}\n" for name, expr, _ in closure_variables(fn) if name in used)
    source = f"def shape_ok({parameter_list(fn)}):\n{cells}    return {BOOL}({body})\n"
    namespace = {"__nc_torch": torch, "__nc_math": math, **closure_globals(fn)}
    check = define_like(fn, source, namespace)["shape_ok"]
    return ShapeCheck(tuple(expressions), check)
