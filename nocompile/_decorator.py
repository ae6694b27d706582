"""``compile_once``: the decorator, and the descriptor that makes it work on methods.

``compile_once(fn)`` returns a ``CompiledFunction``. Called directly, it is the compiled state
of a plain function. Looked up through an instance (``model.forward``), it is a non-data
descriptor that returns a bound method on that instance's own state:

* ``per_instance=True`` (default): each instance gets a ``CompileState`` of its own, kept in the
  instance's ``__dict__`` under a key private to this descriptor. The state holds no reference
  to the instance, so it never keeps it alive; ``copy``/``deepcopy``/``pickle`` of the instance
  give the copy no state (it compiles its own on first use).
* ``per_instance=False``: every instance shares the ``CompiledFunction``'s own state. The
  captured bytecode reads ``self``'s submodules and parameters by name on each call, so one
  compile serves every instance of the same structure (N identical transformer blocks).

Nothing is ever assigned to the class or to a shared code object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import torch
from torch import nn
from typing_extensions import Self, Unpack

from ._arguments import STATE_ATTRIBUTE_PREFIX
from ._codegen import parameter_names
from ._compat import check_torch_supported
from ._entry import FunctionLike, MethodFunction, StateSurface
from ._explain import ExplainReport, build_report
from ._module_call import CALL_SLOT, MODULE_CALL_AVAILABLE, install_module_call
from ._options import CompileOptions, OptionArguments, unknown_options, validate_options
from ._state import CompileState
from ._view import CompileStats
from ._wrappers import (
    CompiledBoundMethod,
    CompiledModule,
    CompiledPartial,
    compile_bound_method,
    compile_callable,
    compile_module,
)

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
M = TypeVar("M", bound=nn.Module)

log = logging.getLogger("nocompile")

_is_compiling = torch.compiler.is_compiling


class MethodOnInstance(Protocol[P, R_co]):
    """What ``instance.method`` is for a ``compile_once`` method, as a type checker sees it.

    For instances of classes other than ``nn.Module``: on a module, ``module.forward`` is typed
    as a plain ``Callable`` with the method's parameters (a checker accepts nothing else
    overriding ``nn.Module.forward``); ``stats`` and ``reset`` are there at run time all the same.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @property
    def stats(self) -> CompileStats: ...

    def reset(self) -> None: ...

    def explain(self, verbose: bool = False) -> str: ...

    def report(self) -> ExplainReport: ...

    def aot_compile(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...


class CompiledFunction(FunctionLike, StateSurface, Generic[P, R]):
    """A function decorated with ``compile_once``.

    Call it like the original. ``stats`` and ``reset()`` cover this function; for a method with
    ``per_instance=True`` they cover every live instance (``instance.method.stats`` covers one).
    ``__wrapped__`` is the original function. It passes for that function where only functions
    are accepted (``inspect.getfile``, Dynamo's trace rules; see ``FunctionLike``).
    """

    __wrapped__: Callable[P, R]
    __qualname__: str  # set by functools.update_wrapper

    def __init__(self, fn: Callable[P, R], options: CompileOptions) -> None:
        if isinstance(fn, (CompiledFunction, MethodFunction)):
            raise TypeError(
                f"compile_once({fn._stands_for().__qualname__}): it is already compiled with compile_once. Call it as "
                "it is; compiling it twice would nest two states."
            )
        if not isinstance(fn, types.FunctionType):
            raise TypeError(
                f"compile_once decorates a Python function (def or lambda); got {fn!r} of type "
                f"{type(fn).__name__}. Pass a function, an nn.Module instance, or a bound method "
                "(obj.method)."
            )
        unknown = sorted(set(options.dynamic) - set(parameter_names(fn)))
        if unknown:
            raise ValueError(
                f"compile_once(dynamic=...) names {unknown}, which {fn.__qualname__} has no parameter "
                f"for; its parameters are {parameter_names(fn)}."
            )
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._options = options
        # The function's own state: a plain function's, or the one a per_instance=False method shares.
        self._state = CompileState(fn, options)
        self._shared = not options.per_instance
        # Per class of instance: whether this is the forward its module call runs (module-call slot).
        self._forward_of: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
        self._instance_attr = f"{STATE_ATTRIBUTE_PREFIX}{fn.__name__}_{id(self):x}"
        self._instance_states: weakref.WeakSet[CompileState] = weakref.WeakSet()
        self._instance_lock = threading.Lock()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._state.entry(*args, **kwargs)
        return result

    def _stands_for(self) -> types.FunctionType:
        return self._fn

    # For a checker: on a class, the CompiledFunction itself; on an nn.Module instance, a plain
    # callable with the method's parameters minus ``self`` (nn.Module declares ``forward`` as a
    # Callable attribute, and a checker only accepts a callable type overriding it); on any other
    # instance, a callable that also has ``stats`` and ``reset``. At run time all three are the
    # bound method described in the module docstring, with ``stats`` and ``reset``.
    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(
        self: CompiledFunction[Concatenate[M, P2], R], instance: M, owner: type | None = None
    ) -> Callable[P2, R]: ...

    @overload
    def __get__(
        self: CompiledFunction[Concatenate[T, P2], R], instance: T, owner: type | None = None
    ) -> MethodOnInstance[P2, R]: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if _is_compiling():
            # An outer torch.compile is tracing: hand it the original to inline. Dynamo can
            # neither build a MethodType on our entry nor trace the lock that guards creation;
            # a partial, unlike ``function.__get__``, is traceable on torch 2.11 too.
            return functools.partial(self._fn, instance)
        if self._shared:
            if self._calls_as_forward(type(instance)) and CALL_SLOT not in instance.__dict__:
                self._install_module_call(instance, self._state)
            return types.MethodType(self._state.bound, instance)
        # The per-call path (``model(x)`` looks ``forward`` up on every call): one dict read.
        try:
            return types.MethodType(instance.__dict__[self._instance_attr].bound, instance)
        except (KeyError, AttributeError):  # no state yet; a copy's None; no __dict__ at all
            return types.MethodType(self._instance_state(instance).bound, instance)

    def _instance_state(self, instance: object) -> CompileState:
        try:
            namespace = instance.__dict__
        except AttributeError:
            raise TypeError(
                f"compile_once(per_instance=True) on {self.__qualname__} keeps one state per "
                f"instance in the instance's __dict__, and {type(instance).__name__} has none "
                "(__slots__?). Use compile_once(per_instance=False), or give the class a __dict__."
            ) from None
        state = namespace.get(self._instance_attr)
        if state is None:
            state = self._new_instance_state(namespace, instance)
        return state

    def _new_instance_state(self, namespace: dict[str, Any], instance: object) -> CompileState:
        with self._instance_lock:
            # Re-check under the lock: two threads may reach an instance's first call at once.
            # A copied or unpickled instance holds None under the key (see CompileState.__reduce__).
            state = namespace.get(self._instance_attr)
            if state is None:
                state = CompileState(self._fn, self._options)
                # A weak reference, so instance.method.aot_compile(x) knows its self (TypeError: not weakly
                # referenceable, e.g. a class with __slots__ and no __weakref__).
                with contextlib.suppress(TypeError):
                    state.owner = weakref.ref(instance)
                namespace[self._instance_attr] = state
                self._instance_states.add(state)
                if self._calls_as_forward(type(instance)):
                    self._install_module_call(instance, state)
            return state

    def _calls_as_forward(self, cls: type) -> bool:
        """Whether this is the ``forward`` that ``cls``'s instances run when called as modules
        (and the module-call slot exists); computed once per class."""
        known = self._forward_of.get(cls)
        if known is None:
            known = self._forward_of[cls] = (
                MODULE_CALL_AVAILABLE
                and issubclass(cls, nn.Module)
                and inspect.getattr_static(cls, "forward", None) is self
            )
        return known

    def _install_module_call(self, instance: object, state: CompileState) -> None:
        """Let ``instance(...)`` skip ``nn.Module._call_impl`` (see ``_module_call.install_module_call``)."""
        if install_module_call(instance, state):  # type: ignore[arg-type]
            log.debug("%s: module calls of this instance skip Module._call_impl", self.__qualname__)

    def _live_instance_states(self) -> list[CompileState]:
        with self._instance_lock:
            states = list(self._instance_states)
        return sorted(states, key=lambda s: s.serial)  # creation order

    @property
    def stats(self) -> CompileStats:
        """Counters summed over this function's state and every live instance's state."""
        total = self._state.stats
        for state in self._live_instance_states():
            total = total + state.stats
        return total

    def report(self) -> ExplainReport:
        """The report of this function's state and, for a method, of every live instance's state.

        ``Model.forward.report()`` covers every instance that has compiled (and counts those
        that have not); ``model.forward.report()`` covers one instance.
        """
        role = "shared state" if not self._options.per_instance else "state"
        instance_states = self._live_instance_states()
        views = [(role, self._state.view())] + [("instance state", s.view()) for s in instance_states]
        report = build_report(self._fn, self._options, views)
        if instance_states and not self._state.specializations:
            # A per-instance method: the descriptor's own state never compiles; don't count it.
            report = dataclasses.replace(report, uncompiled_states=report.uncompiled_states - 1)
        return report

    def explain(self, verbose: bool = False) -> str:
        """The text of ``report()``: this function's state and, for a method, every live instance's."""
        return self.report().render(verbose=verbose)

    def reset(self) -> None:
        """Forget every compiled state of this function (all instances' too)."""
        self._state.reset()
        for state in self._live_instance_states():
            state.reset()

    def aot_compile(self, *args: Any, **kwargs: Any) -> Any:
        """Compile (or load) a specialization for these example inputs now, without running.

        On the class of a method with ``per_instance=True`` (``Model.forward.aot_compile(model,
        x)``), the instance's own state compiles, as ``model.forward.aot_compile(x)`` would.
        """
        if self._options.per_instance and args and self._is_method_of(args[0]):
            return self.__get__(args[0], type(args[0])).aot_compile(*args[1:], **kwargs)
        return self._state.aot_compile(*args, **kwargs)

    def _is_method_of(self, obj: object) -> bool:
        """Whether ``obj``'s class has this descriptor as a method."""
        return any(vars(klass).get(self._fn.__name__) is self for klass in type(obj).__mro__)

    def __reduce__(self) -> str:
        # Pickled by reference, like a plain function: by its module and qualified name.
        return self.__qualname__

    def __repr__(self) -> str:
        return (
            f"<compile_once function {self.__module__}.{self.__qualname__}: "
            f"{self._options.describe()}; {self._state.status()}>"
        )


# A module is also a Callable, so the first two overloads overlap on purpose: mypy picks the
# first match, and a module gets CompiledModule[M] (the order mypy suggests would lose that).
# The options are typed once, in ``_options.OptionArguments``.
@overload
def compile_once(fn: M, /, **options: Unpack[OptionArguments]) -> CompiledModule[M]: ...  # type: ignore[overload-overlap]


@overload
def compile_once(fn: Callable[P, R], /, **options: Unpack[OptionArguments]) -> CompiledFunction[P, R]: ...


@overload
def compile_once(
    fn: None = None, /, **options: Unpack[OptionArguments]
) -> Callable[[Callable[P, R]], CompiledFunction[P, R]]: ...


def compile_once(fn: Callable[P, R] | nn.Module | None = None, /, **options: Unpack[OptionArguments]) -> Any:
    """Compile a function once with ``torch.compile`` and call Dynamo's bytecode directly after.

    Use it bare (``@compile_once``) or with keywords (``@compile_once(backend="eager")``), on a
    plain function or on ``nn.Module.forward``. For objects whose class you do not edit, call it
    on an ``nn.Module`` instance (``compile_once(model, ...)`` returns a ``CompiledModule`` proxy
    used in place of the model) or on a bound method (``model.forward =
    compile_once(model.forward, ...)`` returns a ``CompiledBoundMethod`` bound weakly to
    ``model``); see ``nocompile._wrappers`` and docs/huggingface.md. (A type checker cannot tell
    a bound method from a function: it types the bound form as ``CompiledFunction`` of the
    method's signature, which has the same call signature, ``stats`` and ``reset()``.) The first call compiles with
    ``torch.compile(fullgraph=True, dynamic=False)``; later calls run the transformed bytecode
    through a function object of this state's own, skipping Dynamo's frame hook and guards.

    Args:
        backend: a ``torch.compile`` backend name or callable.
        options: passed to ``torch.compile(options=...)``.
        mode: a ``torch.compile`` mode; cannot be combined with ``options``.
        guards: ``"none"`` drops every Dynamo guard and checks nothing per call (a call with
            other shapes, dtypes, scalars, grad mode or ``training`` may return a wrong result
            silently). ``"inputs"`` (default) drops Dynamo's guards but checks each call's
            signature cheaply: every tensor's class, shape (dynamic dims excepted), dtype,
            device, requires_grad and strides; every int/float/bool/str/None/enum value; the
            structure of lists, tuples and dicts; ``training`` of module arguments (``self``);
            grad mode; and Dynamo's shape guards on dynamic dims. ``"dynamo"`` keeps Dynamo's
            guards and calls through ``torch.compile``'s own entry point.
        on_mismatch: under ``guards="inputs"``, a call that fails the check raises
            ``GuardMismatchError`` (``"raise"``) or compiles a new specialization
            (``"recompile"``), at most ``max_compiles`` of them.
        max_compiles: bound on specializations with ``on_mismatch="recompile"``.
        dynamic: ``{"x": 0}`` or ``{"x": (0, 1)}``: dims of tensor arguments compiled as dynamic
            sizes, so one compile serves every size there (needs ``guards="inputs"`` or
            ``"dynamo"``). Sizes 0 and 1 get a static specialization of their own. Without it,
            under ``on_mismatch="recompile"``, a call that differs from a specialization only in
            tensor sizes or int values (arguments, or attributes of argument objects) recompiles
            once with those dynamic, as Dynamo's automatic dynamic shapes do; ``dynamic=False``
            keeps one specialization per size instead.
        per_instance: for methods, one compiled state per instance (default) or one shared by
            all instances.
        dispatch: ``"bytecode"`` (default) calls the captured bytecode; ``"dynamo"`` calls through
            ``torch.compile``'s callable (guards still dropped unless ``guards="dynamo"``).
        dump_dir: a directory; each compile writes ``transformed_code.py``, ``fx_graph.py``,
            ``guards.txt`` and ``explain.txt`` into a sub-folder of its own there. None (default)
            uses the ``NOCOMPILE_DUMP_DIR`` environment variable, if set, at compile time.
        cudagraphs: capture each specialization's call into a CUDA graph (after a warm-up on a
            side stream, on the first call after compiling) and replay it: tensor arguments are
            copied into static tensors, parameters, buffers and tensors of argument objects are
            read in place. Inference only (outputs must not require grad); not with
            ``guards="dynamo"`` or ``dispatch="dynamo"``. See ``nocompile._cudagraphs``.
        cudagraph_sizes: with ``cudagraphs=True`` and exactly one dynamic dim, e.g.
            ``dynamic={"x": 0}, cudagraph_sizes=[2, 4, 8]``: one graph per size; a call is padded
            up to the next size (padded rows' outputs sliced away); larger calls run ungraphed.
        cudagraph_outputs: ``"static"`` (default) returns the graph's own output tensors, which
            the next call overwrites (as ``torch.cuda.graph`` does): ``.clone()`` what you keep.
            ``"copy"`` returns fresh copies (one extra copy kernel per output; use it with
            several threads).
        cache_dir: a directory (created with mode 0o700) where each specialization's compiled
            artifact is saved and from which a later process loads it instead of compiling.
            ``None`` (default) uses ``NOCOMPILE_CACHE_DIR`` when that is set. Not with
            ``guards="dynamo"`` or a backend callable. See docs/persistence.md.
        audit: under ``guards="inputs"``, ``True`` makes every call the per-call check lets run also
            evaluate Dynamo's guards (as a new fingerprint's verification does) and raise
            ``GuardAuditError`` naming the failing guard, instead of running the compiled code, when
            they fail: a change the fingerprint does not see. A full guard evaluation per call: for
            tests. ``None`` (default) uses the ``NOCOMPILE_AUDIT`` environment variable (``"1"``
            or ``"0"``), read when a specialization is installed. See docs/guide.md.

    Every option is validated here, when the decorator is applied.
    """
    check_torch_supported()
    unknown_options(options)
    opts = validate_options(**options)

    def decorate(f: Any) -> Any:
        if isinstance(f, nn.Module):
            return compile_module(f, opts)
        if isinstance(f, (CompiledBoundMethod, CompiledModule, CompiledPartial)):
            raise TypeError(
                f"compile_once({f!r}): it is already compiled with compile_once. Call it as it is; "
                "compiling it twice would nest two states."
            )
        if type(f) is functools.partial:
            return CompiledPartial(f, decorate(f.func))
        if type(f) is types.MethodType:  # a bound method, or a classmethod bound to its class
            return compile_bound_method(f, opts)
        if isinstance(f, types.FunctionType):  # compile_once's own objects pass for one: refused there
            return CompiledFunction(f, opts)
        return compile_callable(f, opts)  # an instance with a Python __call__, or a TypeError saying why not

    if fn is None:
        return decorate
    if not callable(fn):
        raise TypeError(
            f"compile_once takes a function, or keyword options only; got {fn!r} as its "
            "positional argument. Write @compile_once or @compile_once(backend=...)."
        )
    return decorate(fn)
