"""``python -m nocompile explain module:function [--example module:make_inputs]``.

The target is ``module:function`` or ``module:Class.method``. A target decorated with
``compile_once`` keeps its own options; an undecorated one is wrapped with
``compile_once(backend=--backend, guards=--guards)`` for the occasion.

Without ``--example`` nothing is compiled and the report says so (and, for a decorated method,
covers whatever instances exist: none in a fresh process). With ``--example``, the factory is
called with no arguments; it returns the call's positional arguments as a tuple (one value that
is not a tuple is one argument; a dict is keyword arguments). For ``Class.method`` the first
element is the instance when it is one of ``Class``; otherwise ``Class()`` is built. The target
is called once with those arguments and the report of that state is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import types
from typing import Any

from ._dump import DUMP_ENV


class ExplainCommandError(Exception):
    """A bad target or factory: printed as ``error: ...`` with exit status 2."""


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "explain",
        help="print the explain() report of a function or method, compiled on an example input",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="module:function or module:Class.method")
    p.add_argument("--example", metavar="MODULE:FACTORY", help="a function returning the example call's arguments")
    p.add_argument("--backend", default="inductor", help="backend for an undecorated target (default inductor)")
    p.add_argument(
        "--guards",
        default="inputs",
        choices=("none", "inputs", "dynamo"),
        help="guard policy for an undecorated target (default inputs)",
    )
    p.add_argument("--no-grad", action="store_true", help="run the example call under torch.no_grad()")
    p.add_argument("--verbose", action="store_true", help="list every guard and print the FX graph")
    p.add_argument("--dump-dir", help=f"also dump the compile's files here (sets {DUMP_ENV})")


def resolve(spec: str) -> tuple[Any, type | None]:
    """``module:a.b`` to the object, and the class it was found on (None for a module-level object)."""
    module_name, sep, path = spec.partition(":")
    if not sep or not module_name or not path:
        raise ExplainCommandError(
            f"{spec!r} is not module:function or module:Class.method (e.g. mypkg.models:Net.forward)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExplainCommandError(f"cannot import module {module_name!r} from {spec!r}: {exc}") from exc
    owner: Any = None
    for part in path.split("."):
        owner = obj
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExplainCommandError(
                f"{spec!r}: {getattr(owner, '__name__', owner)!r} has no attribute {part!r}"
            ) from None
    return obj, owner if isinstance(owner, type) else None


def _example_arguments(factory_spec: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    factory, _ = resolve(factory_spec)
    if not callable(factory):
        raise ExplainCommandError(f"--example {factory_spec!r} is {type(factory).__name__}, not a callable factory")
    value = factory()
    if isinstance(value, dict):
        return (), value
    if isinstance(value, tuple):
        return value, {}
    return (value,), {}


def run(args: argparse.Namespace) -> int:
    from ._decorator import CompiledFunction, compile_once
    from ._errors import NoCompileError

    if args.dump_dir:
        os.environ[DUMP_ENV] = args.dump_dir
    try:
        target, owner = resolve(args.target)
        if isinstance(target, CompiledFunction):
            compiled: CompiledFunction[..., Any] = target
        elif isinstance(target, types.FunctionType):
            try:
                compiled = compile_once(backend=args.backend, guards=args.guards)(target)
            except (TypeError, ValueError) as exc:
                raise ExplainCommandError(str(exc)) from exc
        else:
            raise ExplainCommandError(f"{args.target!r} is {type(target).__name__}, not a function or method")
        if args.example is None:
            sys.stdout.write(compiled.explain(verbose=args.verbose))
            return 0
        call_args, call_kwargs = _example_arguments(args.example)
    except ExplainCommandError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2

    import torch

    if owner is not None:
        if call_args and isinstance(call_args[0], owner):
            instance, call_args = call_args[0], call_args[1:]
        else:
            instance = owner()
        callee: Any = compiled.__get__(instance, owner)
    else:
        callee = compiled
    grad = torch.no_grad() if args.no_grad else contextlib.nullcontext()
    try:
        with grad:
            callee(*call_args, **call_kwargs)
    except NoCompileError as exc:  # could not compile, or refused the call: the message says why
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(callee.explain(verbose=args.verbose))
    return 0
