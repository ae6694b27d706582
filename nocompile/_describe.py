"""Keys as text: what a specialization was compiled for, and how a call differs from it."""

from __future__ import annotations

from typing import Any

from ._layout import KeyFunction


def format_value(prop: str, value: Any) -> str:
    if prop == "shape":
        return str(tuple(value))
    if prop == "type" and isinstance(value, type):
        return value.__name__
    return repr(value)


def describe_key(key_fn: KeyFunction, key: tuple[Any, ...]) -> str:
    """The key as ``path: prop=value, ...`` text, one group per argument."""
    groups: dict[str, list[str]] = {}
    for path, prop, value in key_fn.describe(key):
        if prop == "stride":
            continue  # noise in a summary; differences still name it
        groups.setdefault(path, []).append(f"{prop}={format_value(prop, value)}")
    return "; ".join(f"{path}: {', '.join(props)}" for path, props in groups.items())


def describe_difference(
    compiled_fn: KeyFunction, compiled: tuple[Any, ...], given_fn: KeyFunction, given: tuple[Any, ...]
) -> list[str]:
    """One line per property that differs between a compiled key and a call's key.

    The two keys may come from different structures (a list where a tensor was): properties
    are matched by argument path and name, and a path present on one side only is reported.
    """
    old = {(path, prop): value for path, prop, value in compiled_fn.describe(compiled)}
    new = {(path, prop): value for path, prop, value in given_fn.describe(given)}
    lines = []
    for (path, prop), value in old.items():
        if (path, prop) not in new:
            if not any(p == path for p, _ in new):
                lines.append(f"{path}: missing from this call")
            continue
        if new[(path, prop)] != value:
            lines.append(
                f"{path}: {prop} compiled for {format_value(prop, value)}, got {format_value(prop, new[(path, prop)])}"
            )
    for path, _prop in new:
        if not any(p == path for p, _ in old):
            lines.append(f"{path}: not in the compiled signature (new argument or element)")
            break
    return list(dict.fromkeys(lines))
