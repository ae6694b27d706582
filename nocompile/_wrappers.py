"""``compile_once`` on objects you do not own: a module instance, or one object's bound method.

Both forms reuse ``CompileState`` exactly as a decorated method does: the state compiles the
class's *unbound* function and the object is passed as its first argument on every call, so the
state never holds the object and the class is never touched.

* ``compile_once(model.forward, ...)`` returns a ``CompiledBoundMethod``: a callable bound to
  ``model`` through a weak reference. Assigned back (``model.forward = compile_once(model.forward)``)
  it becomes an instance attribute, which ``nn.Module.__call__`` finds as ``self.forward``, so
  ``model(x)``, hooks, and the model's own methods (``generate`` calling ``self(...)`` or
  ``self.forward(...)``) all run the compiled code. Holding ``model`` weakly means that
  assignment makes no reference cycle: the model dies when the user drops it.
* ``compile_once(model, ...)`` returns a ``CompiledModule``: a thin proxy used in place of the
  module. Calls run the compiled ``forward``; attribute reads, writes and method calls reach the
  original (not a copy), and methods that return the module itself (``.to()``, ``.eval()``,
  ``.train()``, ``.float()``, ...) return the proxy instead, so ``w = w.to(device)`` keeps it.

The proxy is deliberately *not* an instance of the module's class (``isinstance(w, Llama)`` is
False) and not an ``nn.Module``: making it one would mean either subclassing the user's class per
instance or a second module object sharing the first one's state, and both leave two objects that
each look like "the" model. Code that needs the real module uses ``w.module``; code that needs
``isinstance`` to hold, or hooks to run, or the model's own methods to call the compiled code,
uses the bound-method form, which leaves the module itself in place.
"""

from __future__ import annotations

import functools
import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from torch import nn

from ._codegen import parameter_names
from ._entry import FunctionLike, MethodFunction, StateSurface
from ._errors import NoCompileError
from ._options import CompileOptions
from ._state import CompileState

M = TypeVar("M", bound=nn.Module)


def _unbound_function(method: types.MethodType, what: str) -> types.FunctionType:
    """The plain function behind a bound method, or a TypeError saying why it cannot be compiled."""
    func = method.__func__
    if isinstance(func, MethodFunction):
        raise TypeError(
            f"compile_once({what}): {func.state.function.__qualname__} is already compiled with compile_once "
            "(its class decorates it). Call it as it is; compiling it twice would nest two states."
        )
    if not isinstance(func, types.FunctionType):
        raise TypeError(
            f"compile_once({what}) needs a method defined in Python (def); {what} is bound to "
            f"{func!r} of type {type(func).__name__}."
        )
    return func


def check_object_options(fn: types.FunctionType, options: CompileOptions, skip_first: bool) -> None:
    """``dynamic=`` must name parameters of ``fn`` (not ``self``), and ``per_instance=False``
    (a state shared by a class's instances) has no meaning for one object: ValueError at wrap time."""
    if not options.per_instance:
        raise ValueError(
            f"compile_once(per_instance=False) on one object's {fn.__name__}: the object gets a "
            "compiled state of its own either way. To share one compile among all instances of a "
            "class, decorate the class's method instead: @compile_once(per_instance=False)."
        )
    names = parameter_names(fn)[1:] if skip_first else parameter_names(fn)
    unknown = sorted(set(options.dynamic) - set(names))
    if unknown:
        raise ValueError(
            f"compile_once(dynamic=...) names {unknown}, which {fn.__qualname__} has no parameter "
            f"for; its parameters are {names}. Arguments that only reach **kwargs cannot be dynamic."
        )


class CompiledBoundMethod(FunctionLike, StateSurface):
    """``compile_once(obj.method)``: the compiled method, bound to ``obj`` by a weak reference.

    ``__func__`` is the original (unbound) function, ``__self__`` the object (while it lives).
    ``inspect.signature`` sees the original bound method's signature, which matters to callers
    that inspect it (transformers' ``generate`` decides what to pass to ``forward`` by it), and
    ``inspect.getfile`` its file (see ``FunctionLike``: it passes for a bound method).
    """

    _passes_as = types.MethodType

    def __init__(self, method: types.MethodType, options: CompileOptions, *, strong: bool = False) -> None:
        owner = method.__self__
        owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        what = f"{owner_name}.{method.__func__.__name__}"
        func = _unbound_function(method, what)
        check_object_options(func, options, skip_first=True)
        if strong:  # a callable instance or a class: nothing refers back to this object
            self._ref: Callable[[], Any] = functools.partial(_same, owner)
        else:
            try:
                self._ref = weakref.ref(owner)
            except TypeError:
                raise TypeError(
                    f"compile_once({what}): {type(owner).__name__} objects do not support weak "
                    "references (__slots__ without __weakref__?), and the compiled method must not keep "
                    "its object alive. Add '__weakref__' to the class's __slots__, or decorate the method."
                ) from None
        self._state = CompileState(func, options)
        self._state.owner = self._ref  # aot_compile passes the object first
        self.__func__ = func
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__doc__ = func.__doc__
        self.__module__ = func.__module__
        self.__signature__ = inspect.signature(method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._ref()
        if obj is None:
            raise NoCompileError(
                f"compile_once({self.__qualname__}): the object this method was bound to has been "
                "garbage collected; the compiled method holds it only weakly. Keep the object alive "
                "while you call its method."
            )
        return self._state.entry(obj, *args, **kwargs)

    @property
    def __self__(self) -> Any:
        return self._ref()

    def _stands_for(self) -> types.FunctionType:
        return self.__func__

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a compile_once bound method ({self.__qualname__}) cannot be pickled or copied: it holds "
            "compiled code bound to this process. Delete the instance attribute "
            "(del obj.forward) before copying, and compile the copy's method afresh."
        )

    def __repr__(self) -> str:
        obj = self._ref()
        target = f"{type(obj).__name__} object at {id(obj):#x}" if obj is not None else "a dead object"
        return f"<compile_once bound method {self.__qualname__} of {target}; {self._state.status()}>"


def _same(obj: Any) -> Any:
    return obj


def compile_bound_method(method: types.MethodType, options: CompileOptions) -> CompiledBoundMethod:
    """``compile_once(obj.method)``: bound weakly to an instance, strongly to a class (a classmethod)."""
    return CompiledBoundMethod(method, options, strong=isinstance(method.__self__, type))


def compile_callable(obj: object, options: CompileOptions) -> CompiledBoundMethod:
    """``compile_once(obj)`` for an instance of a class with a Python ``__call__``: its bound
    ``__call__``, holding ``obj`` (only the returned object refers to it), which is watched as a
    module's ``self`` is: the first argument of every call."""
    call = inspect.getattr_static(type(obj), "__call__", None)
    if not isinstance(call, types.FunctionType):
        raise TypeError(
            f"compile_once({obj!r}): a {type(obj).__name__} is not a Python function, and its "
            f"__call__ is {call!r}, not Python code that torch.compile could trace. Wrap the call in "
            "a function of your own (compile_once(lambda x: obj(x))), or pass a function, an "
            "nn.Module instance, a bound method or a functools.partial."
        )
    return CompiledBoundMethod(types.MethodType(call, obj), options, strong=True)


class CompiledPartial(StateSurface):
    """``compile_once(functools.partial(f, *args, **keywords))``: ``f`` compiled, the partial's
    arguments passed on every call.

    The partial's positional arguments and keywords are read on each call and go through the
    input check like the call's own: a tensor by its shape, dtype and device, a scalar by its
    value. ``f`` may be anything ``compile_once`` takes (a function, a bound method, a module).
    """

    def __init__(self, partial: functools.partial[Any], compiled: Any) -> None:
        self._partial = partial
        self._compiled = compiled
        self._state = compiled._state
        self.__wrapped__ = partial
        self.__signature__ = inspect.signature(partial)

    @property
    def func(self) -> Any:
        """The compiled ``partial.func``."""
        return self._compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        partial = self._partial
        return self._compiled(*partial.args, *args, **{**partial.keywords, **kwargs})

    def aot_compile(self, *args: Any, **kwargs: Any) -> Any:
        partial = self._partial
        return self._compiled.aot_compile(*partial.args, *args, **{**partial.keywords, **kwargs})

    def __reduce__(self) -> Any:
        raise TypeError(
            "a compile_once partial cannot be pickled or copied: it holds compiled code bound to this "
            "process. Pickle the functools.partial itself and compile the copy afresh."
        )

    def __repr__(self) -> str:
        return f"<compile_once {self._partial!r}: {self._state.status()}>"


class CompiledModule(StateSurface, Generic[M]):
    """``compile_once(module)``: a proxy that calls the module's compiled ``forward``.

    Everything but calling (and ``forward``, the compiled one) goes to the original module
    (``module`` is that module): attribute reads and writes, ``state_dict``, ``parameters``,
    ``.to()``/``.eval()``/``.train()``.
    Calls run the compiled ``forward`` directly: the module's forward hooks do not run (use
    ``module.forward = compile_once(module.forward)`` where they must). Methods of the module
    that call ``self(...)`` or ``self.forward(...)`` (such as transformers' ``generate``) run on
    the original module and therefore eagerly; again, use the bound-method form for those.
    """

    def __init__(self, module: M, options: CompileOptions) -> None:
        forward = getattr(module, "forward", None)
        name = type(module).__name__
        if isinstance(forward, CompiledBoundMethod):
            raise TypeError(
                f"compile_once({name} instance): its forward is already a compile_once bound method. "
                "Call the module itself; compiling it twice would nest two states."
            )
        if not isinstance(forward, types.MethodType) or forward.__self__ is not module:
            raise TypeError(
                f"compile_once({name} instance) compiles the module's forward method, but "
                f"{name}.forward is {forward!r}. Compile that callable itself instead."
            )
        func = _unbound_function(forward, f"{name} instance")
        check_object_options(func, options, skip_first=True)
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_state", CompileState(func, options))
        self._state.owner = weakref.ref(module)  # aot_compile passes the module first

    @property
    def module(self) -> M:
        """The original module (the very object passed to ``compile_once``)."""
        return self._module  # type: ignore[no-any-return]

    @property
    def __wrapped__(self) -> M:
        return self._module  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._state.entry(self._module, *args, **kwargs)

    @property
    def forward(self) -> Any:
        """The compiled forward, bound to the module (``w.forward(x)`` is ``w(x)``)."""
        return types.MethodType(self._state.bound, self._module)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the proxy itself lacks: everything of the module's.
        if name in ("_module", "_state"):  # not set yet (a failed __init__): no recursion
            raise AttributeError(name)
        value = getattr(self._module, name)
        if isinstance(value, types.MethodType) and value.__self__ is self._module:
            return _ReturnsProxy(value, self)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._module, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._module, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._module)) | {"module", "forward", "stats", "specializations", "reset"})

    def __reduce__(self) -> Any:
        raise TypeError(
            "a compile_once module proxy cannot be pickled or copied: it holds compiled code bound "
            "to this process. Copy or pickle w.module, then call compile_once on the copy."
        )

    def __repr__(self) -> str:
        return f"<compile_once module {type(self._module).__name__}: {self._state.status()}>\n{self._module!r}"


class _ReturnsProxy:
    """A module method seen through the proxy: returns the proxy where the module returns itself."""

    __slots__ = ("_method", "_proxy")

    def __init__(self, method: types.MethodType, proxy: CompiledModule[Any]) -> None:
        self._method = method
        self._proxy = proxy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._method(*args, **kwargs)
        return self._proxy if result is self._proxy._module else result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._method)

    def __repr__(self) -> str:
        return repr(self._method)


def compile_module(module: M, options: CompileOptions) -> CompiledModule[M]:
    return CompiledModule(module, options)
