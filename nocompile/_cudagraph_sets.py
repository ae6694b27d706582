"""Graph sets: the graphs one specialization captured for one set of argument objects.

A CUDA graph reads the tensors of its call's argument objects (a KV cache's) at the addresses
it captured. A ``GraphSet`` remembers those objects (weakly where they allow it), their
``AddressKey`` and the tensors the graphs read (``kept``), and tells whether a later call's
objects may replay them: the same objects, objects whose tensors sit at the same addresses
(``reusable``), or new objects that may *adopt* a dead object's memory (``adoptable``,
``adopt``). ``Plan`` is what one size's replay does with its output. ``_cudagraphs.GraphedCall``
chooses among the sets; this module holds no CUDA calls.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import _compat
from ._cudagraph_address import AddressKey
from ._cudagraph_outputs import Slot, put

if TYPE_CHECKING:
    from ._cudagraphs import GraphPool


@dataclasses.dataclass
class Plan:
    """What a call of one size does: copy into ``dsts``, replay ``graph``, return ``output``.

    ``slots`` are where ``output`` holds the call's argument objects (a model returning the
    cache it was given); ``held`` the objects written there, compared by identity each call and
    rewritten when another call's objects arrive.
    """

    dsts: tuple[torch.Tensor, ...]
    graph: Any
    output: Any
    slots: tuple[Slot, ...] = ()
    held: list[Any] = dataclasses.field(default_factory=list)

    def fill(self, objects: tuple[Any, ...]) -> None:
        """Write this call's objects into the output where they differ from the last call's."""
        held = self.held
        for j, (path, index) in enumerate(self.slots):
            obj = objects[index]
            if held[j] is not obj:
                self.output = put(self.output, path, obj)
                held[j] = obj

    def release(self) -> None:
        """Stop holding the objects last written into the output (they read None there)."""
        if any(h is not None for h in self.held):
            self.fill(tuple(None for _ in range(1 + max(index for _, index in self.slots))))


@dataclasses.dataclass
class GraphSet:
    """The graphs captured for one set of argument objects: one per size (one in all without sizes).

    ``key`` is the ``AddressKey`` of the objects at capture: a later call whose objects' tensors
    sit at the same addresses replays these graphs (``rebind``). ``kept`` holds, per object,
    the tensors the graphs read in place, so that one replaced by reassignment is never freed
    under a graph. When a plain object (a KV cache) dies, its tensors stay kept: the memory the
    graphs read, which a new object of the same layout *adopts* (``adopt``) instead of capturing
    again. A ``GraphedCall`` keeps that memory for its most recently dead set only (``_spare``).
    """

    refs: tuple[Callable[[], Any], ...]
    graphs: dict[int, tuple[Any, Any, tuple[Slot, ...]]]
    key: tuple[Any, ...] = ()
    plans: dict[int, Plan] = dataclasses.field(default_factory=dict)
    kept: list[tuple[torch.Tensor, ...]] = dataclasses.field(default_factory=list)

    def matches(self, objects: tuple[Any, ...]) -> bool:
        return all(ref() is obj for ref, obj in zip(self.refs, objects, strict=False))

    def alive(self) -> bool:
        return all(ref() is not None for ref in self.refs)

    def matchable(self) -> bool:
        """False once an object matched by identity (a key of None) has died: no call can match."""
        return all(k is not None or ref() is not None for k, ref in zip(self.key, self.refs, strict=True))

    def reusable(self, objects: tuple[Any, ...], key: tuple[Any, ...]) -> bool:
        """Whether these graphs read exactly ``objects``' memory: identity where the key is None,
        the same addresses and layouts elsewhere."""
        for ref, obj, mine, theirs in zip(self.refs, objects, self.key, key, strict=True):
            if mine is None:
                if ref() is not obj:
                    return False
            elif mine != theirs:
                return False
        return True

    def adoptable(
        self,
        objects: tuple[Any, ...],
        key: tuple[Any, ...],
        key_tensors: tuple[tuple[torch.Tensor, ...], ...],
        pool: GraphPool,
    ) -> list[int]:
        """Where ``objects`` may adopt the memory these graphs read: the positions of dead plain
        objects whose tensors had exactly the layouts ``objects``' have (sizes, strides, dtypes,
        devices), whose memory only graph sets of this state hold, and whose new object no graph set
        has seen (its graphs read it where it is) and no view shares (a view would stay on the old
        memory); the other positions must be reusable as they are. Empty: not adoptable."""
        positions = []
        for i, (ref, obj, mine, theirs) in enumerate(zip(self.refs, objects, self.key, key, strict=True)):
            if mine is None:
                if ref() is not obj:
                    return []
            elif mine != theirs:
                if ref() is not None or not self.kept[i] or not same_layouts(mine, theirs) or pool.known(obj):
                    return []
                if not _compat.storage_unshared(key_tensors[i]):
                    return []  # a view of the new object's memory would not follow it there
                held = self.kept[i]
                if not _compat.sole_owner(held, [pool.holders(t) for t in held]):
                    return []  # someone still holds a tensor of the dead object, or a view of its memory
                positions.append(i)
        return positions

    def adopt(self, positions: list[int], key_tensors: tuple[tuple[torch.Tensor, ...], ...]) -> None:
        """Give the current objects' tensors at ``positions`` the memory the graphs read: their
        values are copied there and each tensor is set to it (``Tensor.set_``: same object, same
        sizes and strides, new storage). The replay then reads exactly the current objects' memory,
        and their own memory is freed."""
        with torch.no_grad():
            for i in positions:
                for held, new in zip(self.kept[i], key_tensors[i], strict=True):
                    held.copy_(new)
                    new.set_(held.untyped_storage(), held.storage_offset(), held.size(), held.stride())

    def release_dead(self) -> None:
        """Let the memory of dead objects go (another set is the spare now)."""
        for i, ref in enumerate(self.refs):
            if self.key and self.key[i] is not None and ref() is None:
                self.kept[i] = ()

    def bind(
        self,
        objects: tuple[Any, ...],
        key_tensors: tuple[tuple[torch.Tensor, ...], ...],
        address: AddressKey,
        on_death: Callable[[GraphSet], None],
    ) -> None:
        """Remember ``objects`` (weakly where possible) and hold their tensors; ``on_death(self)``
        when a plain object among them dies. ``on_death`` is a bound method, held weakly like this
        set: the callbacks make no cycle, so a dropped state frees its graphs at once."""
        self.kept = [key_tensors[i] if address.addressable[i] else tensors_of((obj,)) for i, obj in enumerate(objects)]
        me, notify = weakref.ref(self), weakref.WeakMethod(on_death)

        def died(ref: Any) -> None:
            graphs, callback = me(), notify()
            if graphs is not None and callback is not None:
                callback(graphs)

        self.refs = tuple(
            weak_or_strong(obj, died if address.addressable[i] else None) for i, obj in enumerate(objects)
        )


def same_layouts(mine: tuple[Any, ...], theirs: tuple[Any, ...]) -> bool:
    """Whether two address keys of one object describe tensors of the same sizes, strides, dtypes
    and devices at the same paths, wherever they sit."""
    if len(mine) != len(theirs):
        return False
    return all(
        (a is None and b is None) or (a is not None and b is not None and a[1:] == b[1:])
        for a, b in zip(mine, theirs, strict=True)
    )


def tensors_of(objects: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    """Parameters and buffers of module objects, tensor attributes of other objects.

    A graph reads them at their captured addresses. If one is later replaced (``m.weight =
    nn.Parameter(...)``), holding the old tensor keeps the graph reading valid (if stale)
    memory instead of memory the allocator has handed to someone else.
    """
    kept: list[torch.Tensor] = []
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            kept.extend(obj.parameters())
            kept.extend(obj.buffers())
        else:
            namespace = getattr(obj, "__dict__", None) or {}
            kept.extend(v for v in namespace.values() if isinstance(v, torch.Tensor))
    return tuple(kept)


def strong(obj: Any) -> Callable[[], Any]:
    return lambda: obj


def weak_or_strong(obj: Any, callback: Callable[[Any], None] | None = None) -> Callable[[], Any]:
    try:
        return weakref.ref(obj, callback)
    except TypeError:  # no weak references to this type: hold it, so its id cannot be reused
        return strong(obj)
