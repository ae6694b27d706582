"""The outputs of a CUDA-graphed call: mapping over their tensors, and the argument objects in them.

A graph's outputs are a tree of tensors in tuples, lists and dicts (or None; or one of the call's
argument objects, such as the KV cache a model returns with its logits). ``map_outputs`` applies a
function to each tensor with the containers rebuilt as their own types (the copy of
``cudagraph_outputs="copy"``, the narrowing of padded rows, the output checks at capture);
``find_slots`` and ``put`` find and rewrite the places that hold argument objects, so that a
graph's stored output holds the current call's objects, never an earlier call's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._arguments import rebuilt_sequence


def _keep_any(value: Any) -> bool:
    return True


def map_outputs(value: Any, fn: Callable[[torch.Tensor], Any], keep: Callable[[Any], bool] = _keep_any) -> Any:
    """``value`` with ``fn`` applied to each tensor, containers rebuilt as their own types.

    Other leaves are returned as they are when ``keep(leaf)`` (the argument objects of the call,
    such as a KV cache a model returns with its logits); otherwise ``TypeError`` names the type.
    A dataclass that is a dict (transformers' ``ModelOutput``) is rebuilt with
    ``dataclasses.replace``, so its attributes and keys both hold the mapped values.
    """
    if isinstance(value, torch.Tensor):
        return fn(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [map_outputs(item, fn, keep) for item in value]
        if isinstance(value, list):
            return items
        # Plain tuples without a call: with cudagraph_outputs="copy" this runs on every replay.
        return tuple(items) if type(value) is tuple else rebuilt_sequence(value, items)
    if isinstance(value, dict):
        mapped = {k: map_outputs(item, fn, keep) for k, item in value.items()}
        if type(value) is dict:
            return mapped
        if dataclasses.is_dataclass(value) and all(isinstance(k, str) for k in mapped):
            return dataclasses.replace(value, **mapped)
        return type(value)(mapped)
    if keep(value):
        return value
    raise TypeError(type(value).__name__)


def clone(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` (what ``cudagraph_outputs="copy"`` maps over a replay's outputs)."""
    return t.clone()


Slot = tuple[tuple[Any, ...], int]
"""Where an argument object sits in an output: the keys from the root, and its index among the call's objects."""


def find_slots(value: Any, ids: Mapping[int, int], path: tuple[Any, ...] = ()) -> list[Slot]:
    """The places in an output (walked like ``map_outputs``) that hold one of the call's objects."""
    if isinstance(value, torch.Tensor) or value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for i, item in enumerate(value) for s in find_slots(item, ids, (*path, i))]
    if isinstance(value, dict):
        return [s for k, item in value.items() for s in find_slots(item, ids, (*path, k))]
    index = ids.get(id(value))
    return [(path, index)] if index is not None else []


def put(value: Any, path: tuple[Any, ...], obj: Any) -> Any:
    """``value`` with ``obj`` at ``path``: lists and dicts written in place, tuples rebuilt.

    A dataclass that is a dict (transformers' ``ModelOutput``) gets both the item and the
    attribute, as its own constructor sets them.
    """
    if not path:
        return obj
    key, rest = path[0], path[1:]
    if isinstance(value, tuple):
        items = list(value)
        items[key] = put(items[key], rest, obj)
        return rebuilt_sequence(value, items)
    child = put(value[key], rest, obj)
    if value[key] is not child:
        value[key] = child
    if isinstance(value, dict) and type(value) is not dict and isinstance(key, str):
        current = getattr(value, key, _MISSING)
        if current is not _MISSING and current is not child:
            object.__setattr__(value, key, child)
    return value


_MISSING = object()
