"""A battery of changes real users make between calls (issue #25, item 7).

Each scenario is a pattern taken from how models, notebooks and serving loops are written
(transformers' configs and attention registry, liger-kernel's and accelerate's patching, peft's
adapter switches, a sliding-window position, ...): a function or a model, the arguments of a
call, and a ``change`` made between calls. ``source`` names the pattern.

For every scenario the battery computes, on fresh objects each time:

* eager's answer to the call after the change (and, unless the scenario is ``unchanged``, that
  it differs from the answer without the change: the change matters);
* stock ``torch.compile(fullgraph=True, backend="eager")``'s answer after the change: it must be
  eager's, else the scenario is not one where guards save the user, and has no place here;
* ``compile_once(backend="eager")`` under the default ``guards="inputs"``, with
  ``on_mismatch="raise"`` and ``"recompile"``: two calls before the change (the compile, then
  the call that verifies the fingerprint, so the change meets the per-call check of a
  long-running loop), then the call after it. Right is eager's answer, or under ``"raise"`` a
  ``GuardMismatchError`` for a scenario that changed something;
* the control (``"unchanged"``): the same three calls without the change, under ``"raise"``:
  eager's answer from one compile. A check that refused or recompiled every call would pass the
  two modes above, not this.

``outcome()`` classifies what happened; ``tests/test_real_world.py`` asserts on it, and
``python tests/real_world.py`` (or ``scripts/real_world_report.py``) prints the whole table.
Everything global a scenario changes (a module attribute, ``os.environ``, ``builtins``, a torch
flag) goes through ``World.set``/``setitem``/``setenv`` and is restored after each run.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import dataclasses
import enum
import functools
import json
import logging
import math
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_leaves

try:  # imported as a top-level module by pytest (tests/ on sys.path) and by the report script
    import real_world_lib as lib
except ImportError:  # pragma: no cover - run from elsewhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import real_world_lib as lib

from nocompile import GuardAuditError, GuardMismatchError, compile_once

WARMUP = 2
"""Calls before the change: the compile, then the call that verifies the fingerprint."""

MODES = ("raise", "recompile", "unchanged")
"""``on_mismatch="raise"``, ``on_mismatch="recompile"``, and the control (no change, "raise")."""

# -- the table's machinery -----------------------------------------------------------------------

_MISSING = object()


@dataclasses.dataclass
class World:
    """One run's own objects: ``target`` is a function or an ``nn.Module``, called as
    ``scenario.call(world, callable)``. ``h`` holds what ``change`` needs to reach."""

    target: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    h: dict[str, Any] = dataclasses.field(default_factory=dict)
    undo: list[Callable[[], object]] = dataclasses.field(default_factory=list)

    def set(self, obj: Any, name: str, value: Any) -> None:
        """``setattr``, undone after the run (a module attribute, a torch flag, a builtin)."""
        old = getattr(obj, name, _MISSING)
        setattr(obj, name, value)
        self.undo.append(lambda: delattr(obj, name) if old is _MISSING else setattr(obj, name, old))

    def setitem(self, mapping: Any, key: Any, value: Any) -> None:
        """``mapping[key] = value``, undone after the run."""
        old = mapping.get(key, _MISSING)
        mapping[key] = value
        self.undo.append(lambda: mapping.pop(key) if old is _MISSING else mapping.__setitem__(key, old))

    def setenv(self, name: str, value: str) -> None:
        self.setitem(os.environ, name, value)

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def plain_call(world: World, fn: Callable[..., Any]) -> Any:
    return fn(*world.args, **world.kwargs)


@dataclasses.dataclass(frozen=True, eq=False)
class Scenario:
    """One row of the battery. ``build`` makes fresh objects (and sets the globals a run starts
    from, through ``World.set``); ``change`` runs between the warm-up calls and the call after."""

    id: str
    kind: str
    source: str
    """The real-world pattern the scenario is taken from."""
    build: Callable[[], World]
    change: Callable[[World], object]
    call: Callable[[World, Callable[..., Any]], Any] = plain_call
    form: str = "class"
    """For a module: ``"class"`` (``@compile_once`` on its class's ``forward``) or ``"bound"``
    (``model.forward = compile_once(model.forward)``, the form documented for Hugging Face models)."""
    unchanged: bool = False
    """The change changes nothing eager sees: any ``GuardMismatchError`` is a refused call."""
    repeat: int = 1
    """Calls after the change (a serving loop making the same call again)."""
    today: dict[str, str] = dataclasses.field(default_factory=dict)
    """Mode -> what compile_once does today where it is not right (``SILENT``, ``REFUSED``, ``crash(...)``)."""
    documented: str = ""
    """The row of docs/footguns.md ("What guards="inputs" does not see") that lists the change, if one does."""


SILENT = "silent wrong"
REFUSED = "refused"
AUDITED = "audited"
"""Under the audit (``NOCOMPILE_AUDIT=1``): ``GuardAuditError``, what a silent wrong answer becomes."""


def crash(exc: str) -> str:
    return f"crash {exc}"


def both(result: str, unchanged: str | None = None) -> dict[str, str]:
    """The same failure under both ``on_mismatch`` values (and, if given, in the control)."""
    today = {"raise": result, "recompile": result}
    if unchanged:
        today["unchanged"] = unchanged
    return today


def every(result: str) -> dict[str, str]:
    return dict.fromkeys(MODES, result)


class _Failed(Exception):
    def __init__(self, phase: str, exc: BaseException) -> None:
        super().__init__(phase)
        self.phase = phase
        self.exc = exc


def play(scenario: Scenario, prepare: Callable[[World], Callable[..., Any]], changed: bool = True) -> Any:
    """Fresh objects, ``WARMUP`` calls, the change (if ``changed``), the call(s) after it."""
    torch.manual_seed(0)
    world = scenario.build()
    phase = "prepare"
    try:
        fn = prepare(world)
        phase = "warm-up"
        for _ in range(WARMUP):
            scenario.call(world, fn)
        phase = "change"
        if changed:
            scenario.change(world)
        phase = "after"
        out = None
        for _ in range(scenario.repeat):
            out = scenario.call(world, fn)
        return out
    except Exception as exc:
        raise _Failed(phase, exc) from exc
    finally:
        world.restore()


def same(a: Any, b: Any) -> bool:
    """Equal structure, values (NaN equal to NaN), dtypes and strides."""
    try:
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-5, atol=1e-6)
    except (AssertionError, TypeError, ValueError, RuntimeError):
        return False
    strides_a = [t.stride() for t in tree_leaves(a) if isinstance(t, torch.Tensor)]
    strides_b = [t.stride() for t in tree_leaves(b) if isinstance(t, torch.Tensor)]
    return strides_a == strides_b


def eager(world: World) -> Callable[..., Any]:
    return world.target


def stock(world: World) -> Callable[..., Any]:
    return torch.compile(world.target, fullgraph=True, backend="eager")


def decorate_forward(module: nn.Module, **options: Any) -> Any:
    """``@compile_once`` on the module's class's ``forward``, without touching the class other
    runs use: the instance moves into a subclass whose ``forward`` is decorated."""
    cls = type(module)
    namespace = {"forward": compile_once(**options)(cls.forward), "__module__": cls.__module__}
    module.__class__ = type(cls.__name__, (cls,), namespace)
    return type(module).forward


def with_compile_once(scenario: Scenario, on_mismatch: str, kept: list[Any]) -> Callable[[World], Callable[..., Any]]:
    options: dict[str, Any] = {"backend": "eager", "on_mismatch": on_mismatch}

    def prepare(world: World) -> Callable[..., Any]:
        target = world.target
        if isinstance(target, nn.Module):
            if scenario.form == "bound":
                target.forward = compile_once(**options)(target.forward)
                kept.append(target.forward)
            else:
                kept.append(decorate_forward(target, **options))
            return target
        compiled = compile_once(**options)(target)
        kept.append(compiled)
        return compiled

    return prepare


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to a scenario in one mode."""

    result: str
    """``ok`` (eager's answer), ``caught`` (GuardMismatchError for a change, under "raise"),
    ``silent wrong``, ``refused`` (GuardMismatchError where none is right), ``crash <Exc>``."""
    detail: str = ""
    compiles: int = 0
    warned: bool = False
    """A wrong answer nocompile logged a WARNING about when it compiled (``cannot check ...``)."""

    @property
    def right(self) -> bool:
        return self.result in ("ok", "caught")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else ""


@functools.cache
def eager_answers(scenario: Scenario) -> tuple[Any, Any]:
    """Eager's answer without the change and with it (deterministic: fresh objects, one seed)."""
    return play(scenario, eager, changed=False), play(scenario, eager)


def stock_outcome(scenario: Scenario) -> Outcome:
    """Whether stock torch.compile gives eager's answer after the change."""
    _, after = eager_answers(scenario)
    torch._dynamo.reset()
    try:
        got = play(scenario, stock)
    except _Failed as failed:
        return Outcome(crash(type(failed.exc).__name__), f"{failed.phase}: {_first_line(failed.exc)}")
    finally:
        torch._dynamo.reset()
    return Outcome("ok") if same(got, after) else Outcome(SILENT)


def outcome(scenario: Scenario, mode: str) -> Outcome:
    """What ``compile_once(guards="inputs")`` does with the scenario in ``mode`` (see ``MODES``)."""
    before, after = eager_answers(scenario)
    changed = mode != "unchanged"
    expected = after if changed else before
    refusing_is_right = mode == "raise" and not scenario.unchanged
    kept: list[Any] = []
    with logged_warnings() as warnings:
        try:
            got = play(scenario, with_compile_once(scenario, "raise" if mode == "unchanged" else mode, kept), changed)
        except _Failed as failed:
            compiles = kept[0].stats.compiles if kept else 0
            if isinstance(failed.exc, GuardAuditError) and failed.phase == "after":
                reason = str(failed.exc).splitlines()[1:2]
                return Outcome(AUDITED, f"{failed.phase}: {reason[0].strip() if reason else ''}", compiles)
            if isinstance(failed.exc, GuardMismatchError):
                reason = str(failed.exc).splitlines()[1:2]
                detail = f"{failed.phase}: {reason[0].strip() if reason else ''}"
                if refusing_is_right and failed.phase == "after":
                    return Outcome("caught", detail, compiles)
                return Outcome(REFUSED, detail, compiles)
            return Outcome(crash(type(failed.exc).__name__), f"{failed.phase}: {_first_line(failed.exc)}", compiles)
    compiles = kept[0].stats.compiles
    if same(got, expected):
        return Outcome("ok", f"{compiles} compile(s)", compiles)
    stale = "; the answer from before the change" if changed and same(got, before) else ""
    warned = f"; nocompile logged: {warnings[0]}" if warnings else ""
    return Outcome(SILENT, f"{compiles} compile(s){stale}{warned}", compiles, warned=bool(warnings))


@contextlib.contextmanager
def logged_warnings() -> Iterator[list[str]]:
    """The WARNINGs nocompile logs meanwhile (``cannot check ...``: a wrong answer it announced)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage().split(";")[0])

    handler = Keep()
    logger = logging.getLogger("nocompile")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


# -- "the user's program": modules, globals and helpers the scenarios change --------------------


def _module(name: str, **attributes: Any) -> types.ModuleType:
    """A tiny importable module (a project's ``config.py``, a ``utils`` module), in ``sys.modules``."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


cfgmod: Any = _module("rw_cfgmod", SCALE=2.0, USE_FUSED=False, DEFAULTS={"scale": 2.0})
cfgmod.layers = _module("rw_cfgmod.layers", EPS=1e-5)


def _softcap(x: torch.Tensor, cap: float = 5.0) -> torch.Tensor:
    return cap * torch.tanh(x / cap)


def _softcap_fixed(x: torch.Tensor, cap: float = 5.0) -> torch.Tensor:
    return torch.clamp(x, -cap / 10, cap / 10)


mathutils = _module("rw_mathutils", softcap=_softcap)

NOTEBOOK_HELPERS_V1 = "def postprocess(x):\n    return x * 2 + 1\n"
NOTEBOOK_HELPERS_V2 = "def postprocess(x):\n    return x * 2 - 1\n"
notebook_helpers = _module("rw_notebook_helpers")
exec(NOTEBOOK_HELPERS_V1, notebook_helpers.__dict__)


def reload_with(world: World, module: types.ModuleType, source: str, original: str) -> None:
    """``importlib.reload`` of an edited file: the new source runs in the module's own dict."""
    exec(source, module.__dict__)
    world.undo.append(lambda: exec(original, module.__dict__))


def _env_getattr(name: str) -> Any:
    """vLLM's ``envs.py``: module attributes computed from ``os.environ`` on every access."""
    if name == "WINDOW":
        return int(os.environ.get("RW_WINDOW", "2"))
    raise AttributeError(name)


envs = _module("rw_envs", __getattr__=_env_getattr)


# The decorated functions' own globals (this module's): a global list and a dict of dicts.
LAYER_SCALES = [1.0, 2.0]
GENERATION_CONFIG = {"sampling": {"temperature": 1.0}, "penalties": {"repetition": 1.0}}
SCORE_TABLE = {"scale": 2.0}
RECENT_SCALES: collections.deque[float] = collections.deque([1.0, 2.0], maxlen=4)
TUPLE_SCALES = {(0, "q"): 1.0, (0, "k"): 2.0}
READ_ONLY_DEFAULTS_SOURCE = {"temperature": 1.0}
READ_ONLY_DEFAULTS = types.MappingProxyType(READ_ONLY_DEFAULTS_SOURCE)
REQUEST_CONTEXT = threading.local()
REQUEST_CONTEXT.scale = 2.0


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


PHASE_GAINS = {Phase.PREFILL: 1.0, Phase.DECODE: 2.0}


def x28() -> torch.Tensor:
    return torch.randn(2, 8)


def fn_world(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], World]:
    """A function called with fresh tensors: ``args`` items that are callables are factories."""

    def build() -> World:
        made = tuple(a() if callable(a) and not isinstance(a, torch.Tensor) else a for a in args)
        return World(fn, made, dict(kwargs))

    return build


def setter(obj: Any, name: str, value: Any) -> Callable[[World], None]:
    """A change that sets a global object's attribute (restored after the run)."""
    return lambda w: w.set(obj, name, value)


def item_setter(container: Any, key: Any, value: Any) -> Callable[[World], None]:
    return lambda w: w.setitem(container, key, value)


def handle_setter(handle: str, name: str, value: Any) -> Callable[[World], None]:
    """A change that sets an attribute of an object the build made (no restoring needed)."""
    return lambda w: setattr(w.h[handle], name, value)


# -- python modules are opaque -------------------------------------------------------------------


def scale_by_config_module(x: torch.Tensor) -> torch.Tensor:
    return x * cfgmod.SCALE


def fused_flag_branch(x: torch.Tensor) -> torch.Tensor:
    if cfgmod.USE_FUSED:
        return torch.tanh(x) * 2
    return x * 2


def config_module_dict(x: torch.Tensor) -> torch.Tensor:
    return x * cfgmod.DEFAULTS["scale"]


def config_submodule_eps(x: torch.Tensor) -> torch.Tensor:
    return x / (x.abs().mean() + cfgmod.layers.EPS)


def softcapped_logits(x: torch.Tensor) -> torch.Tensor:
    return mathutils.softcap(x * 10)


def notebook_postprocess(x: torch.Tensor) -> torch.Tensor:
    return notebook_helpers.postprocess(x)


def liger_rotary(x: torch.Tensor) -> torch.Tensor:
    """liger-kernel's faster rotary, standing in for ``liger_rotary_pos_emb``: here a different answer."""
    return x * 0.5


def rotary_through_library(x: torch.Tensor) -> torch.Tensor:
    return lib.apply_rotary(x) + 1


def library_settings_object(x: torch.Tensor) -> torch.Tensor:
    return x * lib.SETTINGS.scale + lib.SETTINGS.bias


def mha_fastpath_branch(x: torch.Tensor) -> torch.Tensor:
    """``nn.TransformerEncoderLayer.forward`` takes its fast path only when this flag is on."""
    if torch.backends.mha.get_fastpath_enabled():
        return x * 2
    return x - 1


def cudnn_deterministic_branch(x: torch.Tensor) -> torch.Tensor:
    if torch.backends.cudnn.deterministic:
        return x.sort(dim=-1).values
    return x * 2


def cudnn_benchmark_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 3 if torch.backends.cudnn.benchmark else x * 2


def cudnn_enabled_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 3 if torch.backends.cudnn.enabled else x * 2


def mkldnn_enabled_branch(x: torch.Tensor) -> torch.Tensor:
    return x * 3 if torch.backends.mkldnn.enabled else x * 2


def environ_attention_backend(x: torch.Tensor) -> torch.Tensor:
    """vLLM's ``VLLM_ATTENTION_BACKEND``, read as ``os.environ[...]``."""
    if os.environ["RW_ATTN_BACKEND"] == "FLASH":
        return torch.softmax(x, dim=-1)
    return torch.softmax(x * 2, dim=-1)


def environ_window_through_envs_module(x: torch.Tensor) -> torch.Tensor:
    return x[..., : envs.WINDOW].sum(-1)


def round_builtin(x: torch.Tensor) -> torch.Tensor:
    return x * round(2.4)


def _round_half_up(value: float, ndigits: int | None = None) -> int:
    return math.floor(value + 0.5) + 1


def disable_mha_fastpath(world: World) -> None:
    torch.backends.mha.set_fastpath_enabled(False)
    world.undo.append(lambda: torch.backends.mha.set_fastpath_enabled(True))


def with_env(name: str, value: str, fn: Callable[..., Any]) -> Callable[[], World]:
    def build() -> World:
        world = World(fn, (x28(),))
        world.setenv(name, value)
        return world

    return build


PYTHON_MODULES = [
    Scenario(
        "config_module_constant",
        "python module",
        "a project's config.py: `from . import config` then `x * config.SCALE`, edited in a notebook",
        fn_world(scale_by_config_module, x28),
        setter(cfgmod, "SCALE", 3.0),
    ),
    Scenario(
        "config_module_feature_flag",
        "python module",
        "a module-level feature flag (`USE_FUSED_KERNELS`) toggled by a test or a launcher",
        fn_world(fused_flag_branch, x28),
        setter(cfgmod, "USE_FUSED", True),
    ),
    Scenario(
        "config_module_dict_item",
        "python module",
        "a module-level defaults dict (`config.DEFAULTS['scale'] = ...`)",
        fn_world(config_module_dict, x28),
        lambda w: w.setitem(cfgmod.DEFAULTS, "scale", 3.0),
    ),
    Scenario(
        "config_submodule_constant",
        "python module",
        "a constant two modules deep (`pkg.layers.EPS`)",
        fn_world(config_submodule_eps, x28),
        setter(cfgmod.layers, "EPS", 10.0),
    ),
    Scenario(
        "mock_patch_module_function",
        "python module",
        "unittest.mock.patch.object(mathutils, 'softcap', ...) around a call (Gemma's logit softcapping helper)",
        fn_world(softcapped_logits, x28),
        setter(mathutils, "softcap", _softcap_fixed),
    ),
    Scenario(
        "importlib_reload_helper_module",
        "python module",
        "a notebook edits helpers.py and runs importlib.reload(helpers)",
        fn_world(notebook_postprocess, x28),
        lambda w: reload_with(w, notebook_helpers, NOTEBOOK_HELPERS_V2, NOTEBOOK_HELPERS_V1),
    ),
    Scenario(
        "liger_patches_library_function",
        "python module",
        "liger-kernel's apply_liger_kernel_to_llama: `modeling_llama.apply_rotary_pos_emb = liger_rotary_pos_emb`",
        fn_world(rotary_through_library, lambda: torch.randn(4, 8)),
        setter(lib, "apply_rotary", liger_rotary),
    ),
    Scenario(
        "library_settings_object_attribute",
        "python module",
        "a library-wide settings object (`lib.SETTINGS.bias = ...`) reached through the module",
        fn_world(library_settings_object, x28),
        lambda w: w.set(lib.SETTINGS, "bias", 1.0),
    ),
    Scenario(
        "torch_backends_mha_fastpath",
        "python module",
        "torch.backends.mha.set_fastpath_enabled(False), which nn.TransformerEncoderLayer's forward branches on",
        fn_world(mha_fastpath_branch, x28),
        disable_mha_fastpath,
    ),
    Scenario(
        "torch_backends_cudnn_deterministic",
        "python module",
        "torch.backends.cudnn.deterministic = True in a reproducibility helper (seed_everything)",
        fn_world(cudnn_deterministic_branch, x28),
        setter(torch.backends.cudnn, "deterministic", True),
    ),
    Scenario(
        "torch_backends_cudnn_benchmark",
        "python module",
        "torch.backends.cudnn.benchmark = True set by a training script after a warm-up",
        fn_world(cudnn_benchmark_branch, x28),
        setter(torch.backends.cudnn, "benchmark", True),
    ),
    Scenario(
        "torch_backends_cudnn_disabled",
        "python module",
        "torch.backends.cudnn.enabled = False to work around a cuDNN bug",
        fn_world(cudnn_enabled_branch, x28),
        setter(torch.backends.cudnn, "enabled", False),
    ),
    Scenario(
        "torch_backends_mkldnn_disabled",
        "python module",
        "torch.backends.mkldnn.enabled = False (oneDNN turned off for a CPU numerics issue)",
        fn_world(mkldnn_enabled_branch, x28),
        setter(torch.backends.mkldnn, "enabled", False),
    ),
    Scenario(
        "environ_attention_backend",
        "python module",
        "vLLM's VLLM_ATTENTION_BACKEND read as os.environ[...], switched between runs in one process",
        with_env("RW_ATTN_BACKEND", "XFORMERS", environ_attention_backend),
        lambda w: w.setenv("RW_ATTN_BACKEND", "FLASH"),
    ),
    Scenario(
        "envs_module_getattr",
        "python module",
        "vLLM's envs.py: a module __getattr__ that reads os.environ on every access",
        with_env("RW_WINDOW", "2", environ_window_through_envs_module),
        lambda w: w.setenv("RW_WINDOW", "5"),
    ),
    Scenario(
        "builtins_round_patched",
        "python module",
        "a test's monkeypatch.setattr(builtins, 'round', ...) (half-up rounding shim)",
        fn_world(round_builtin, x28),
        setter(builtins, "round", _round_half_up),
    ),
]


# -- globals read by helpers, by submodules' forward, or living in other modules -----------------

norm_helper = lib.rms_norm  # `from modeling import rms_norm`: a global of this module, code of lib's


def helper_reads_library_global(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return norm_helper(x, w) + 1


class UsesLibraryMLP(nn.Module):
    """A user's model holding a library module whose forward reads the library's globals."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = lib.LibMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + x


class UsesLibraryNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = lib.LibRMSNorm()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


def deprecate_kwarg(old_name: str, new_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """transformers' ``utils/deprecation.py::deprecate_kwarg``: the ``forward`` users get is this
    wrapper, whose ``__globals__`` are this module's, not the modeling module's."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if old_name in kwargs:
                kwargs[new_name] = kwargs.pop(old_name)
            return func(*args, **kwargs)

        return wrapped

    return decorator


class WrappedDecoder(lib.LibDecoder):
    """A transformers model as users get it: the modeling code's ``forward`` behind ``deprecate_kwarg``."""

    forward = deprecate_kwarg("scale", "position_scale")(lib.LibDecoder.forward)


def softcapped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """A user's attention kernel (Gemma 2's logit softcapping), registered under a name."""
    scores = 5.0 * torch.tanh((q @ k.transpose(-1, -2)) * scaling / 5.0) * 3.0
    return torch.softmax(scores, dim=-1) @ v


def decoder_world(cls: type[nn.Module] = lib.LibDecoder, **config: Any) -> Callable[[], World]:
    def build() -> World:
        model = cls(lib.Config(**config))
        return World(model, (torch.randn(1, 4, 8),))

    return build


def library_global_world(cls: type[nn.Module]) -> Callable[[], World]:
    return lambda: World(cls(), (x28(),))


class CustomScaleMLP(nn.Module):
    """A user's module plugged into a library model, reading a global of the user's script."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * SCORE_TABLE["scale"]


def decoder_with_custom_mlp() -> World:
    model = lib.LibDecoder(lib.Config())
    model.mlp = CustomScaleMLP()
    return World(model, (torch.randn(1, 4, 8),))


def function_with_library_decoder(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return model(x) * 2


OTHER_GLOBALS = [
    Scenario(
        "helper_from_library_reads_its_global",
        "other globals",
        "`from modeling import rms_norm` called by a user's function; modeling.EPS changed",
        fn_world(helper_reads_library_global, x28, torch.ones(8)),
        setter(lib, "EPS", 4.0),
    ),
    Scenario(
        "submodule_forward_reads_library_global",
        "other globals",
        "a user's model holding a library MLP whose forward reads a module-level ACT_SCALE",
        library_global_world(UsesLibraryMLP),
        setter(lib, "ACT_SCALE", 3.0),
    ),
    Scenario(
        "submodule_helper_reads_library_global",
        "other globals",
        "LlamaRMSNorm-style submodule calling a module-level helper that reads the library's EPS",
        library_global_world(UsesLibraryNorm),
        setter(lib, "EPS", 4.0),
    ),
    Scenario(
        "attention_registry_entry_replaced",
        "other globals",
        "transformers: `ALL_ATTENTION_FUNCTIONS['sdpa'] = my_attention` after compiling (class-decorated forward)",
        decoder_world(),
        lambda w: w.setitem(lib.ALL_ATTENTION_FUNCTIONS, "sdpa", softcapped_attention),
    ),
    Scenario(
        "eager_attention_function_patched",
        "other globals",
        "transformers: `modeling_llama.eager_attention_forward = patched` with attn_implementation='eager'",
        decoder_world(attn_implementation="eager"),
        setter(lib, "eager_attention_forward", softcapped_attention),
    ),
    Scenario(
        "wrapped_forward_registry_replaced",
        "other globals",
        "the documented `model.forward = compile_once(model.forward)` on a deprecate_kwarg-wrapped forward; "
        "ALL_ATTENTION_FUNCTIONS['sdpa'] replaced",
        decoder_world(WrappedDecoder),
        lambda w: w.setitem(lib.ALL_ATTENTION_FUNCTIONS, "sdpa", softcapped_attention),
        form="bound",
    ),
    Scenario(
        "wrapped_forward_library_global",
        "other globals",
        "deprecate_kwarg-wrapped forward (globals of utils/deprecation.py); the modeling module's "
        "apply_rotary_pos_emb replaced (liger)",
        decoder_world(WrappedDecoder),
        setter(lib, "apply_rotary", liger_rotary),
        form="bound",
    ),
    Scenario(
        "rope_theta_library_global",
        "other globals",
        "Llama 3 rope scaling patched in: `modeling.ROPE_THETA = 500000.0` read by a helper of the attention",
        decoder_world(),
        setter(lib, "ROPE_THETA", 500000.0),
    ),
    Scenario(
        "custom_module_in_library_model_reads_user_global",
        "other globals",
        "a user's module swapped into a library model (`model.mlp = MyMLP()`) before compiling; its forward "
        "reads a global of the user's script that changes",
        decoder_with_custom_mlp,
        lambda w: w.setitem(SCORE_TABLE, "scale", 3.0),
    ),
    Scenario(
        "library_model_passed_to_function",
        "other globals",
        "a user's function calling a library model passed in; the library's registry entry replaced",
        lambda: World(function_with_library_decoder, (torch.randn(1, 4, 8), lib.LibDecoder(lib.Config()))),
        lambda w: w.setitem(lib.ALL_ATTENTION_FUNCTIONS, "sdpa", softcapped_attention),
    ),
]


# -- callables reached indirectly ----------------------------------------------------------------


def _inner_activation(x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor] = torch.tanh) -> torch.Tensor:
    return act(x)


def _outer_block(x: torch.Tensor) -> torch.Tensor:
    return _inner_activation(x) * 2


def two_calls_deep_default(x: torch.Tensor) -> torch.Tensor:
    return _outer_block(x) + 1


def make_temperature_scaler(
    temperature: float,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[float], None]]:
    """A closure with a setter (the pattern of sampling helpers that keep their settings in cells)."""

    def scale(logits: torch.Tensor) -> torch.Tensor:
        return logits / temperature

    def set_temperature(value: float) -> None:
        nonlocal temperature
        temperature = value

    return scale, set_temperature


TEMPERATURE_SCALER, SET_TEMPERATURE = make_temperature_scaler(1.0)


def _apply_sampling(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(TEMPERATURE_SCALER(logits), dim=-1)


def lower_global_temperature(world: World) -> None:
    SET_TEMPERATURE(0.5)
    world.undo.append(lambda: SET_TEMPERATURE(1.0))


def two_calls_deep_cell(x: torch.Tensor) -> torch.Tensor:
    return _apply_sampling(x)


class Sampler(nn.Module):
    """A method with a default (``def warp(self, logits, temperature=1.0)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def warp(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return logits / temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(self.proj(x))


class PartialActivation(nn.Module):
    """timm's ``get_act_fn``: the activation is a ``functools.partial`` held by the module."""

    def __init__(self) -> None:
        super().__init__()
        self.act = functools.partial(F.leaky_relu, negative_slope=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


GLOBAL_ACTIVATION = functools.partial(F.leaky_relu, negative_slope=0.01)


def global_partial_activation(x: torch.Tensor) -> torch.Tensor:
    return GLOBAL_ACTIVATION(x) * 2


class Scorer:
    """A plain object whose bound method a module holds (a reward model's ``score`` hook)."""

    def __init__(self) -> None:
        self.temperature = 1.0

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.temperature


class HoldsBoundMethod(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scorer_obj = Scorer()
        self.score_fn = self.scorer_obj.score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_fn(x) + 1


class HoldsForeignBoundMethod(nn.Module):
    """The bound method's owner is reachable only through the method (``self.hook = other.score``)."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        self.score_fn = scorer.score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_fn(x) + 1


def foreign_bound_method_world() -> World:
    scorer = Scorer()
    return World(HoldsForeignBoundMethod(scorer), (x28(),), h={"scorer": scorer})


class HoldsClosure(nn.Module):
    """A function held by ``self`` whose closure cell a setter changes."""

    def __init__(self) -> None:
        super().__init__()
        self.scale_fn, self.set_scale = make_temperature_scaler(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_fn(x) * 2


class RotaryHelper(nn.Module):
    """transformers' ``LlamaRotaryEmbedding`` with its ``attention_scaling`` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_scaling = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_scaling


class HoldsSubmoduleMethod(nn.Module):
    """A block holding a submodule's bound method as a plain attribute (``self.rotary_fn = self.rotary.forward``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rotary = RotaryHelper()
        self.rotary_fn = self.rotary.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rotary_fn(x) + 1


@dataclasses.dataclass
class PostprocessContext:
    """An argument object holding a function (a request's post-processing hook)."""

    postprocess: Callable[[torch.Tensor], torch.Tensor]


def call_context_hook(x: torch.Tensor, ctx: PostprocessContext) -> torch.Tensor:
    return ctx.postprocess(x) + 1


def context_with_library_hook() -> World:
    return World(call_context_hook, (x28(), PostprocessContext(lib.scaled_gelu)))


def context_with_closure_hook() -> World:
    scale, set_scale = make_temperature_scaler(1.0)
    return World(call_context_hook, (x28(), PostprocessContext(scale)), h={"set": set_scale})


def options_decorator(**options: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A registry decorator keeping its options in a dict in a closure cell (mutated later)."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(x: torch.Tensor) -> torch.Tensor:
            return fn(x) * options["gain"]

        wrapped.options = options  # type: ignore[attr-defined]
        return wrapped

    return decorator


@options_decorator(gain=1.0)
def registered_activation(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def call_registered_activation(x: torch.Tensor) -> torch.Tensor:
    return registered_activation(x) + 1


def lambda_defaults_world() -> World:
    """A lambda whose default captured a value at definition (``lambda x, s=SCALE: x * s``), redefined."""
    return World(call_context_hook, (x28(), PostprocessContext(scaled_hook(2.0))))


def scaled_hook(scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``lambda x, s=scale: x * s`` as a notebook cell defines it: the default captures the value."""

    def hook(x: torch.Tensor, s: float = scale) -> torch.Tensor:
        return x * s

    return hook


INDIRECT_CALLABLES = [
    Scenario(
        "helper_default_two_calls_deep",
        "indirect callable",
        "a helper's helper with an activation default (`def act(x, fn=torch.tanh)`), its __defaults__ reassigned",
        fn_world(two_calls_deep_default, x28),
        lambda w: w.set(_inner_activation, "__defaults__", (torch.sigmoid,)),
    ),
    Scenario(
        "closure_cell_two_calls_deep",
        "indirect callable",
        "a sampling helper keeping its temperature in a closure cell (`set_temperature(0.5)`), two calls deep",
        fn_world(two_calls_deep_cell, x28),
        lower_global_temperature,
    ),
    Scenario(
        "method_default_changed",
        "indirect callable",
        "a method's default temperature changed on the class (`Sampler.warp.__defaults__ = (0.5,)`)",
        library_global_world(Sampler),
        lambda w: w.set(Sampler.warp, "__defaults__", (0.5,)),
    ),
    Scenario(
        "partial_keywords_on_self",
        "indirect callable",
        "timm's partial activations: `model.act.keywords['negative_slope'] = 0.2`",
        library_global_world(PartialActivation),
        lambda w: w.target.act.keywords.__setitem__("negative_slope", 0.2),
    ),
    Scenario(
        "partial_keywords_global",
        "indirect callable",
        "a global partial activation (`ACT = partial(F.leaky_relu, negative_slope=...)`), its keywords edited",
        fn_world(global_partial_activation, x28),
        lambda w: w.setitem(GLOBAL_ACTIVATION.keywords, "negative_slope", 0.3),
    ),
    Scenario(
        "bound_method_owner_held_by_self",
        "indirect callable",
        "a module holding a plain object and its bound method (`self.score_fn = self.scorer.score`)",
        library_global_world(HoldsBoundMethod),
        lambda w: setattr(w.target.scorer_obj, "temperature", 0.5),
    ),
    Scenario(
        "bound_method_owner_only_through_method",
        "indirect callable",
        "a reward hook `self.score_fn = scorer.score` whose owner changes (`scorer.temperature = 0.5`)",
        foreign_bound_method_world,
        handle_setter("scorer", "temperature", 0.5),
    ),
    Scenario(
        "submodule_bound_method_held_by_self",
        "indirect callable",
        "`self.rotary_fn = self.rotary_emb.forward`; the rotary's attention_scaling changed",
        library_global_world(HoldsSubmoduleMethod),
        lambda w: setattr(w.target.rotary, "attention_scaling", 2.0),
    ),
    Scenario(
        "function_held_by_self_closure",
        "indirect callable",
        "a function held by self whose closure a setter changes (`model.set_scale(0.5)`)",
        library_global_world(HoldsClosure),
        lambda w: w.target.set_scale(0.5),
    ),
    Scenario(
        "function_held_by_argument_reads_library_global",
        "indirect callable",
        "a request's post-processing hook (`ctx.postprocess = lib.scaled_gelu`) reading a library global",
        context_with_library_hook,
        setter(lib, "ACT_SCALE", 3.0),
    ),
    Scenario(
        "function_held_by_argument_closure",
        "indirect callable",
        "a request's temperature hook (a closure) passed in an argument object; its setter called",
        context_with_closure_hook,
        lambda w: w.h["set"](0.5),
        today=both(SILENT),
        documented="inside an argument object, a value the argument walk does not follow",
    ),
    Scenario(
        "decorator_options_dict_in_cell",
        "indirect callable",
        "a registry decorator's options dict in a closure cell (`registered_activation.options['gain'] = 2.0`)",
        fn_world(call_registered_activation, x28),
        lambda w: w.setitem(registered_activation.options, "gain", 2.0),  # type: ignore[attr-defined]
    ),
    Scenario(
        "lambda_with_default_replaced",
        "indirect callable",
        "a notebook redefines a hook lambda with another captured default (`ctx.postprocess = lambda x, s=3.0: x*s`)",
        lambda_defaults_world,
        lambda w: setattr(w.args[1], "postprocess", scaled_hook(3.0)),
    ),
]


# -- module edits that bypass registration hooks -------------------------------------------------


class Block(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x)) * self.scale


class FusedBlock(Block):
    """A drop-in replacement class (bitsandbytes/peft swap ``module.__class__`` in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.lin(x)) * self.scale


class Stack(nn.Module):
    def __init__(self, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(1.0 + i) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SeqHead(nn.Module):
    """A backbone with a classifier ``nn.Sequential`` whose last layer fine-tuning code drops."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class MultiHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"main": nn.Linear(8, 4), "aux": nn.Linear(8, 4)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum((head(x) for head in self.heads.values()), torch.zeros(()))


class WithBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) * 2


class RotaryBuffer(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inv_freq", torch.ones(8))


class WithRotaryBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rotary = RotaryBuffer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.rotary.inv_freq


class ScaleHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.temperature = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.temperature


GLOBAL_HEAD = ScaleHead()


def through_global_module(x: torch.Tensor) -> torch.Tensor:
    return GLOBAL_HEAD(x) + 1


def global_head_world() -> World:
    world = World(through_global_module, (x28(),))
    world.set(sys.modules[__name__], "GLOBAL_HEAD", ScaleHead())
    return world


@dataclasses.dataclass
class ModelContext:
    """An argument object holding a model (a pipeline's ``ctx.model``)."""

    model: nn.Module


def through_argument_module(x: torch.Tensor, ctx: ModelContext) -> torch.Tensor:
    return ctx.model(x) + 1


def through_bound_method_argument(x: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return head(x) + 1


def bound_method_argument_world() -> World:
    head = ScaleHead()
    return World(through_bound_method_argument, (x28(), head.forward), h={"head": head})


class Peft(nn.Module):
    """peft's LoRA layer: ``scaling`` is a dict per adapter; ``disable_adapters`` a plain flag."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(8, 8)
        self.lora_a = nn.Linear(8, 2, bias=False)
        self.lora_b = nn.Linear(2, 8, bias=False)
        nn.init.normal_(self.lora_b.weight)
        self.scaling = {"default": 1.0}
        self.disable_adapters = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.disable_adapters:
            return out
        return out + self.lora_b(self.lora_a(x)) * self.scaling["default"]


class PeftModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = Peft()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def new_weight(world: World) -> None:
    proj = world.target.block.lin
    proj._parameters["weight"] = nn.Parameter(torch.full_like(proj.weight, 0.1))


def module_world(cls: Callable[[], nn.Module]) -> Callable[[], World]:
    return lambda: World(cls(), (x28(),))


def _liger_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 0.5


MODULE_EDITS = [
    Scenario(
        "modulelist_insert",
        "module edit",
        "adding a layer in place (`model.layers.insert(0, Block())`, LayerDrop/adapter insertion)",
        module_world(Stack),
        lambda w: w.target.layers.insert(0, Block(5.0)),
    ),
    Scenario(
        "sequential_del_last",
        "module edit",
        "fine-tuning code dropping the classifier's last layer: `del model.head[-1]`",
        module_world(SeqHead),
        lambda w: w.target.head.__delitem__(-1),
    ),
    Scenario(
        "moduledict_pop",
        "module edit",
        "a multi-task model dropping its auxiliary head: `model.heads.pop('aux')`",
        module_world(MultiHead),
        lambda w: w.target.heads.pop("aux"),
    ),
    Scenario(
        "submodule_class_swapped",
        "module edit",
        "bitsandbytes/peft-style in-place class swap: `model.block.__class__ = FusedBlock`",
        module_world(WithBlock),
        lambda w: setattr(w.target.block, "__class__", FusedBlock),
    ),
    Scenario(
        "parameters_dict_written",
        "module edit",
        "accelerate's set_module_tensor_to_device: `module._parameters['weight'] = Parameter(...)`",
        module_world(WithBlock),
        new_weight,
    ),
    Scenario(
        "buffers_dict_written",
        "module edit",
        "dynamic rope recomputing inv_freq through `rotary._buffers['inv_freq'] = ...` (accelerate too)",
        module_world(WithRotaryBuffer),
        lambda w: w.target.rotary._buffers.__setitem__("inv_freq", torch.full((8,), 2.0)),
    ),
    Scenario(
        "modules_dict_written",
        "module edit",
        "quantization code replacing a layer with `parent._modules[name] = new` (torch.ao _swap_module style)",
        module_world(WithBlock),
        lambda w: w.target.block._modules.__setitem__("lin", nn.Linear(8, 8)),
    ),
    Scenario(
        "module_through_global_attribute",
        "module edit",
        "a head module held in a global of the script (`HEAD.temperature = 0.5`)",
        global_head_world,
        lambda w: setattr(GLOBAL_HEAD, "temperature", 0.5),
    ),
    Scenario(
        "module_through_argument_object",
        "module edit",
        "a pipeline context holding the model (`ctx.model.temperature = 0.5`)",
        lambda: World(through_argument_module, (x28(), ModelContext(ScaleHead()))),
        lambda w: setattr(w.args[1].model, "temperature", 0.5),
    ),
    Scenario(
        "module_through_bound_method_argument",
        "module edit",
        "a head's bound forward passed as a callback (`f(x, head.forward)`), then `head.temperature = 0.5`",
        bound_method_argument_world,
        handle_setter("head", "temperature", 0.5),
    ),
    Scenario(
        "submodule_attribute_eps",
        "module edit",
        "tuning a nested layer's attribute in a notebook: `model.layers[0].scale = 3.0`",
        module_world(Stack),
        lambda w: setattr(w.target.layers[0], "scale", 3.0),
    ),
    Scenario(
        "peft_scale_layer",
        "module edit",
        "peft's scale_layer: `lora_layer.scaling['default'] *= 0.5` (a dict held by a submodule)",
        module_world(PeftModel),
        lambda w: w.target.layer.scaling.__setitem__("default", 0.5),
    ),
    Scenario(
        "peft_disable_adapters",
        "module edit",
        "peft's disable_adapter_layers(): `layer.disable_adapters = True` on every LoRA submodule",
        module_world(PeftModel),
        lambda w: setattr(w.target.layer, "disable_adapters", True),
    ),
    Scenario(
        "liger_instance_forward_on_submodule",
        "module edit",
        "liger-kernel's _bind_method_to_module: `module.forward = MethodType(LigerRMSNorm.forward, module)`",
        module_world(WithBlock),
        lambda w: setattr(w.target.block, "forward", types.MethodType(_liger_forward, w.target.block)),
    ),
    Scenario(
        "modulelist_append",
        "module edit",
        "growing a stack (`model.layers.append(Block())`, through register_module)",
        module_world(Stack),
        lambda w: w.target.layers.append(Block(5.0)),
    ),
    Scenario(
        "modulelist_sliced_and_assigned",
        "module edit",
        "layer pruning in HF scripts: `model.layers = model.layers[:2]`",
        module_world(Stack),
        lambda w: setattr(w.target, "layers", w.target.layers[:2]),
    ),
]


# -- values that are not followed ----------------------------------------------------------------


class SkipLayers(nn.Module):
    """LayerSkip / early exit: a set of layer indices held by the model."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(1.0) for _ in range(2))
        self.skip: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i not in self.skip:
                x = layer(x)
        return x


def recent_scales_mean(x: torch.Tensor) -> torch.Tensor:
    return x * (sum(RECENT_SCALES) / len(RECENT_SCALES))


class ScaleContext:
    """A request context passed as an argument: attributes of assorted types."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def tuple_keyed_scales(x: torch.Tensor, ctx: Any) -> torch.Tensor:
    return x * ctx.scales[(0, "q")] + ctx.scales[(0, "k")]


def enum_keyed_gains(x: torch.Tensor, ctx: Any) -> torch.Tensor:
    return x * ctx.gains[Phase.DECODE]


def global_enum_keyed_gains(x: torch.Tensor) -> torch.Tensor:
    return x * PHASE_GAINS[Phase.DECODE]


def global_tuple_keyed_scales(x: torch.Tensor) -> torch.Tensor:
    return x * TUPLE_SCALES[(0, "q")]


def mapping_proxy_options(x: torch.Tensor, ctx: Any) -> torch.Tensor:
    return x / ctx.options["temperature"]


def global_mapping_proxy(x: torch.Tensor) -> torch.Tensor:
    return x / READ_ONLY_DEFAULTS["temperature"]


def numpy_statistics(x: torch.Tensor, ctx: Any) -> torch.Tensor:
    """Whisper's feature extractor keeps normalisation statistics as numpy arrays."""
    return (x - float(ctx.mean[0])) / float(ctx.std[0])


def memory_format_from_config(x: torch.Tensor, ctx: Any) -> torch.Tensor:
    return (x * 2).contiguous(memory_format=ctx.memory_format)


class ProcessorList(list[Any]):
    """transformers' ``LogitsProcessorList``: a list subclass, here with an attribute of its own."""

    temperature = 1.0


def list_subclass_attribute(x: torch.Tensor, processors: ProcessorList) -> torch.Tensor:
    out = x / processors.temperature
    for p in processors:
        out = out + p
    return out


class BatchEncoding(dict[str, Any]):
    """transformers' ``BatchEncoding``/``ModelOutput``: a dict subclass with attributes."""


def dict_subclass_attribute(x: torch.Tensor, batch: BatchEncoding) -> torch.Tensor:
    return (x + batch["bias"]) * batch.scale  # type: ignore[attr-defined]


def dict_subclass_world() -> World:
    batch = BatchEncoding(bias=torch.ones(8))
    batch.scale = 1.0  # type: ignore[attr-defined]
    return World(dict_subclass_attribute, (x28(), batch))


def list_subclass_world() -> World:
    processors = ProcessorList([torch.ones(8)])
    processors.temperature = 1.0
    return World(list_subclass_attribute, (x28(), processors))


class QuantLinear(nn.Module):
    """A weight carrying its quantisation scale as a Python attribute (bitsandbytes' ``weight.SCB``,
    torchao's tensor attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.weight.scale = 1.0  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight.T) * self.weight.scale  # type: ignore[attr-defined]


def tensor_attribute_argument(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * mask * mask.fill_value  # type: ignore[attr-defined]


def tensor_attribute_world() -> World:
    mask = torch.ones(8)
    mask.fill_value = 1.0  # type: ignore[attr-defined]
    return World(tensor_attribute_argument, (x28(), mask), h={"mask": mask})


class TextConfig:
    def __init__(self) -> None:
        self.scale = 1.0
        self.rope = types.SimpleNamespace(factor=1.0)


class CompositeConfig:
    """LLaVA's config: ``config.text_config`` holds the language model's settings."""

    def __init__(self) -> None:
        self.text = TextConfig()


class CompositeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = CompositeConfig()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.config.text.scale * self.config.text.rope.factor


def global_list_item(x: torch.Tensor) -> torch.Tensor:
    return x * LAYER_SCALES[0] + LAYER_SCALES[1]


def dict_of_dicts(x: torch.Tensor) -> torch.Tensor:
    return x / GENERATION_CONFIG["sampling"]["temperature"]


def library_list_item(x: torch.Tensor) -> torch.Tensor:
    return x * lib.LAYER_SCALES[0]


def global_dict_item(x: torch.Tensor) -> torch.Tensor:
    return x * SCORE_TABLE["scale"]


class ListOnSelf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer_scales = [1.0, 2.0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.layer_scales[0]


class ClassTemperature(nn.Module):
    temperature = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.temperature


class SlidingWindowCache:
    """Mistral's sliding-window cache: the position advances each decode step."""

    def __init__(self) -> None:
        self.keys = torch.randn(6, 8)
        self.position = 3
        self.window = 2


def sliding_window_attention(x: torch.Tensor, cache: SlidingWindowCache) -> torch.Tensor:
    start = max(0, cache.position - cache.window)
    keys = cache.keys[start : cache.position]
    return torch.softmax(x @ keys.T, dim=-1) @ keys


def thread_local_scale(x: torch.Tensor) -> torch.Tensor:
    return x * REQUEST_CONTEXT.scale


def thread_local_world() -> World:
    world = World(thread_local_scale, (x28(),))
    world.set(REQUEST_CONTEXT, "scale", 2.0)
    return world


@dataclasses.dataclass
class SamplingParams:
    """vLLM's ``SamplingParams``: a dataclass argument whose fields a serving loop edits."""

    temperature: float = 1.0
    top_k: int = 4


def sampling_params(x: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    return torch.topk(x / params.temperature, params.top_k, dim=-1).values


def container_world(fn: Callable[..., Any], name: str, value: Callable[[], Any]) -> Callable[[], World]:
    """A function reading a global container the build installs fresh (restored after the run)."""

    def build() -> World:
        world = World(fn, (x28(),))
        world.set(sys.modules[__name__], name, value())
        return world

    return build


def library_container_world(fn: Callable[..., Any], name: str, value: Callable[[], Any]) -> Callable[[], World]:
    def build() -> World:
        world = World(fn, (x28(),))
        world.set(lib, name, value())
        return world

    return build


def read_only_defaults_world() -> World:
    source = {"temperature": 1.0}
    world = World(global_mapping_proxy, (x28(),), h={"source": source})
    world.set(sys.modules[__name__], "READ_ONLY_DEFAULTS", types.MappingProxyType(source))
    return world


def context_world(fn: Callable[..., Any], **values: Callable[[], Any]) -> Callable[[], World]:
    return lambda: World(fn, (x28(), ScaleContext(**{k: v() for k, v in values.items()})))


def mapping_proxy_world() -> World:
    source = {"temperature": 1.0}
    return World(mapping_proxy_options, (x28(), ScaleContext(options=types.MappingProxyType(source))), h={"s": source})


VALUES = [
    Scenario(
        "set_of_skipped_layers",
        "value not followed",
        "LayerSkip/early exit: `model.skip.add(1)` (a set held by the model)",
        module_world(SkipLayers),
        lambda w: w.target.skip.add(1),
    ),
    Scenario(
        "global_deque_of_recent_values",
        "value not followed",
        "a serving loop's moving window of recent scales (`RECENT.append(v)`, a global deque)",
        container_world(recent_scales_mean, "RECENT_SCALES", lambda: collections.deque([1.0, 2.0], maxlen=4)),
        lambda w: RECENT_SCALES.append(9.0),
    ),
    Scenario(
        "argument_dict_tuple_keys",
        "value not followed",
        "per-(layer, projection) scales in a request context: `ctx.scales[(0, 'q')] = 2.0`",
        context_world(tuple_keyed_scales, scales=lambda: {(0, "q"): 1.0, (0, "k"): 2.0}),
        lambda w: w.args[1].scales.__setitem__((0, "q"), 3.0),
    ),
    Scenario(
        "global_dict_tuple_keys",
        "value not followed",
        "a global table keyed by (layer, projection): `SCALES[(0, 'q')] = 3.0`",
        container_world(global_tuple_keyed_scales, "TUPLE_SCALES", lambda: {(0, "q"): 1.0, (0, "k"): 2.0}),
        lambda w: TUPLE_SCALES.__setitem__((0, "q"), 3.0),
    ),
    Scenario(
        "global_dict_enum_keys",
        "value not followed",
        "per-phase gains keyed by an Enum (`GAINS[Phase.DECODE] = 3.0`), a global",
        container_world(global_enum_keyed_gains, "PHASE_GAINS", lambda: {Phase.PREFILL: 1.0, Phase.DECODE: 2.0}),
        lambda w: PHASE_GAINS.__setitem__(Phase.DECODE, 3.0),
    ),
    Scenario(
        "argument_mappingproxy",
        "value not followed",
        "a read-only options view (`MappingProxyType(options)`) in a request context; the options edited",
        mapping_proxy_world,
        lambda w: w.h["s"].__setitem__("temperature", 2.0),
        today=both(SILENT),
        documented="inside an argument object, a value the argument walk does not follow",
    ),
    Scenario(
        "global_mappingproxy",
        "value not followed",
        "a module-level read-only defaults view (`DEFAULTS = MappingProxyType(_defaults)`); _defaults edited",
        read_only_defaults_world,
        lambda w: w.h["source"].__setitem__("temperature", 2.0),
    ),
    Scenario(
        "argument_numpy_statistics",
        "value not followed",
        "Whisper-style feature normalisation statistics kept as numpy arrays, updated in place",
        context_world(numpy_statistics, mean=lambda: np.array([0.0]), std=lambda: np.array([1.0])),
        lambda w: w.args[1].std.__setitem__(0, 4.0),
    ),
    Scenario(
        "argument_memory_format",
        "value not followed",
        "a vision pipeline switching `cfg.memory_format = torch.channels_last`",
        lambda: World(
            memory_format_from_config,
            (torch.randn(1, 3, 2, 2), ScaleContext(memory_format=torch.contiguous_format)),
        ),
        lambda w: setattr(w.args[1], "memory_format", torch.channels_last),
    ),
    Scenario(
        "list_subclass_attribute",
        "value not followed",
        "transformers' LogitsProcessorList-style list subclass with an attribute (`procs.temperature = 0.5`)",
        list_subclass_world,
        lambda w: setattr(w.args[1], "temperature", 0.5),
        today=both(SILENT),
        documented="inside an argument object, a value the argument walk does not follow",
    ),
    Scenario(
        "dict_subclass_attribute",
        "value not followed",
        "transformers' BatchEncoding/ModelOutput: a dict subclass with attributes (`batch.scale = 2.0`)",
        dict_subclass_world,
        lambda w: setattr(w.args[1], "scale", 2.0),
        today=both(SILENT),
        documented="inside an argument object, a value the argument walk does not follow",
    ),
    Scenario(
        "parameter_python_attribute",
        "value not followed",
        "a quantised weight's scale stored on the Parameter (`layer.weight.scale = 0.5`, bitsandbytes' SCB)",
        module_world(QuantLinear),
        lambda w: setattr(w.target.weight, "scale", 0.5),
    ),
    Scenario(
        "tensor_argument_python_attribute",
        "value not followed",
        "an attention mask tensor carrying a Python attribute (`mask.fill_value = 0.5`), the same tensor passed again",
        tensor_attribute_world,
        handle_setter("mask", "fill_value", 0.5),
        today=both(SILENT),
        documented="inside an argument object, a value the argument walk does not follow",
    ),
    Scenario(
        "nested_config_attribute",
        "value not followed",
        "LLaVA-style composite config: `model.config.text_config.scale = 2.0`",
        module_world(CompositeModel),
        lambda w: setattr(w.target.config.text, "scale", 2.0),
    ),
    Scenario(
        "nested_config_three_deep",
        "value not followed",
        "rope scaling in a composite config: `model.config.text_config.rope_scaling.factor = 4.0`",
        module_world(CompositeModel),
        lambda w: setattr(w.target.config.text.rope, "factor", 4.0),
    ),
    Scenario(
        "global_list_item",
        "value not followed",
        "per-layer scales in a global list of the script (`LAYER_SCALES[0] = 3.0`)",
        container_world(global_list_item, "LAYER_SCALES", lambda: [1.0, 2.0]),
        lambda w: LAYER_SCALES.__setitem__(0, 3.0),
    ),
    Scenario(
        "library_global_list_item",
        "value not followed",
        "a library's global list edited by a user (`lib.LAYER_SCALES[0] = 3.0`)",
        library_container_world(library_list_item, "LAYER_SCALES", lambda: [1.0, 1.0]),
        lambda w: lib.LAYER_SCALES.__setitem__(0, 3.0),
    ),
    Scenario(
        "global_dict_of_dicts",
        "value not followed",
        "a generation config as a dict of dicts (`GEN['sampling']['temperature'] = 0.5`)",
        container_world(
            dict_of_dicts, "GENERATION_CONFIG", lambda: {"sampling": {"temperature": 1.0}, "penalties": {"rep": 1.0}}
        ),
        lambda w: GENERATION_CONFIG["sampling"].__setitem__("temperature", 0.5),
    ),
    Scenario(
        "global_dict_item",
        "value not followed",
        "a global scale table of the script (`TABLE['scale'] = 3.0`)",
        container_world(global_dict_item, "SCORE_TABLE", lambda: {"scale": 2.0}),
        lambda w: SCORE_TABLE.__setitem__("scale", 3.0),
    ),
    Scenario(
        "list_on_self_item",
        "value not followed",
        "per-layer scales in a list held by the model (`model.layer_scales[0] = 2.0`)",
        module_world(ListOnSelf),
        lambda w: w.target.layer_scales.__setitem__(0, 2.0),
    ),
    Scenario(
        "class_attribute",
        "value not followed",
        "a class-level default changed for every instance (`Model.temperature = 0.5`)",
        module_world(ClassTemperature),
        setter(ClassTemperature, "temperature", 0.5),
    ),
    Scenario(
        "sliding_window_position_advances",
        "value not followed",
        "Mistral's sliding-window cache: `cache.position += 1` each decode step",
        lambda: World(sliding_window_attention, (x28(), SlidingWindowCache())),
        lambda w: setattr(w.args[1], "position", 4),
    ),
    Scenario(
        "sampling_params_dataclass",
        "value not followed",
        "vLLM's SamplingParams edited between requests (`params.temperature = 0.5`)",
        lambda: World(sampling_params, (x28(), SamplingParams())),
        lambda w: setattr(w.args[1], "temperature", 0.5),
    ),
    Scenario(
        "threading_local_config_changed",
        "crash case",
        "a per-thread request context (`threading.local()`, Flask/Django style) whose scale changes",
        thread_local_world,
        setter(REQUEST_CONTEXT, "scale", 3.0),
    ),
]


# -- **kwargs in another order -------------------------------------------------------------------


def fold_kwargs(x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
    """transformers' ``**kwargs: Unpack[...]`` passed down and applied in order."""
    for value in kwargs.values():
        x = x * 2 + value
    return x


def fold_float_kwargs(x: torch.Tensor, **processors: float) -> torch.Tensor:
    """Logits processors configured by keyword (``temperature=..., penalty=...``), applied in order."""
    for value in processors.values():
        x = x * value + 1
    return x


def fold_dict(x: torch.Tensor, extras: dict[str, torch.Tensor]) -> torch.Tensor:
    for value in extras.values():
        x = x * 2 + value
    return x


def reorder_kwargs(world: World) -> None:
    world.kwargs = dict(reversed(list(world.kwargs.items())))


def kwargs_world(fn: Callable[..., Any], **values: Any) -> Callable[[], World]:
    return lambda: World(fn, (x28(),), {k: v() if callable(v) else v for k, v in values.items()})


# Not in the table: `model(x, **batch)` with the batch in another order. Stock torch.compile of a
# module (or of its bound forward) returns the first order's answer there too (torch 2.13), so
# guards do not save the user and the scenario is not one this battery can hold nocompile to.
KWARGS = [
    Scenario(
        "kwargs_tensors_reordered",
        "kwargs order",
        "transformers' **kwargs passed down (attention masks, position ids) in another order by another caller",
        kwargs_world(fold_kwargs, bias=lambda: torch.ones(8), shift=lambda: torch.full((8,), 3.0)),
        reorder_kwargs,
    ),
    Scenario(
        "kwargs_floats_reordered",
        "kwargs order",
        "logits processors given by keyword (`temperature=0.7, penalty=1.2`) in another order",
        kwargs_world(fold_float_kwargs, temperature=0.5, penalty=3.0),
        reorder_kwargs,
    ),
    Scenario(
        "dict_argument_reordered",
        "kwargs order",
        "a dict of extra inputs built in another order (`{'shift': s, 'bias': b}`)",
        lambda: World(fold_dict, (x28(), {"bias": torch.ones(8), "shift": torch.full((8,), 3.0)})),
        lambda w: setattr(w, "args", (w.args[0], dict(reversed(list(w.args[1].items()))))),
    ),
]


# -- crashes and refusals named by the issue -----------------------------------------------------


def enum_keyed_dict_argument(x: torch.Tensor, gains: dict[Phase, float]) -> torch.Tensor:
    return x * gains[Phase.DECODE]


def json_config_scale(x: torch.Tensor, cfg: types.SimpleNamespace) -> torch.Tensor:
    """A JSON config loaded as SimpleNamespace; it also has a key ``lambda`` (a regulariser's
    weight) that this function never reads (stock Dynamo fails on reading it: not a scenario)."""
    return x * cfg.scale


def json_config_hyphen(x: torch.Tensor, cfg: types.SimpleNamespace) -> torch.Tensor:
    return x * getattr(cfg, "rope-theta")


def clamp_scores(x: torch.Tensor, min: float = -1.0, max: float = 1.0) -> torch.Tensor:
    """``torch.clamp``'s own parameter names (``min``, ``max``), shadowing the builtins."""
    return torch.clamp(x, min, max) * 2


def norm_by_type(x: torch.Tensor, type: str = "l2") -> torch.Tensor:
    """A parameter named ``type`` (``norm_type``-like options often are)."""
    if type == "l2":
        return x / x.norm(dim=-1, keepdim=True)
    return x / x.abs().sum(-1, keepdim=True)


def join_chunks(chunks: list[torch.Tensor], len: int = 2) -> torch.Tensor:
    """A parameter named ``len`` (a target length), shadowing the builtin."""
    return torch.stack(chunks).sum(0)[:len] * 2


def fill_missing(x: torch.Tensor, fill: float) -> torch.Tensor:
    """pandas-style missing-value fill: ``fill=float('nan')`` marks padding."""
    return torch.where(x > 0, x, torch.full_like(x, fill))


def json_world(fn: Callable[..., Any], text: str) -> Callable[[], World]:
    return lambda: World(fn, (x28(), json.loads(text, object_hook=lambda d: types.SimpleNamespace(**d))))


def set_namespace_key(key: str, value: float) -> Callable[[World], None]:
    return lambda w: setattr(w.args[1], key, value)


CRASHES = [
    Scenario(
        "enum_dict_key_argument",
        "crash case",
        "per-phase gains passed as a dict keyed by an Enum (`{Phase.DECODE: 2.0}`)",
        lambda: World(enum_keyed_dict_argument, (x28(), {Phase.PREFILL: 1.0, Phase.DECODE: 2.0})),
        lambda w: w.args[1].__setitem__(Phase.DECODE, 3.0),
    ),
    Scenario(
        "argument_object_enum_keyed_dict",
        "crash case",
        "a request context holding a dict keyed by an Enum (`ctx.gains[Phase.DECODE] = 3.0`)",
        context_world(enum_keyed_gains, gains=lambda: {Phase.PREFILL: 1.0, Phase.DECODE: 2.0}),
        lambda w: w.args[1].gains.__setitem__(Phase.DECODE, 3.0),
    ),
    Scenario(
        "attribute_named_lambda",
        "crash case",
        "a JSON training config loaded as SimpleNamespace, with a key `lambda` (a regulariser weight); "
        "the model reads `cfg.scale`",
        json_world(json_config_scale, '{"scale": 1.0, "lambda": 0.5}'),
        set_namespace_key("scale", 2.0),
    ),
    Scenario(
        "attribute_with_hyphen",
        "crash case",
        "a JSON config key that is no identifier (`rope-theta`), loaded as SimpleNamespace",
        json_world(json_config_hyphen, '{"rope-theta": 0.5}'),
        set_namespace_key("rope-theta", 2.0),
    ),
    Scenario(
        "parameter_named_min",
        "crash case",
        "torch.clamp's own parameter names: `def clamp_scores(x, min=-1.0, max=1.0)`; a serving loop's batch "
        "size changes",
        lambda: World(clamp_scores, (x28(),), {"min": -1.0}),
        lambda w: setattr(w, "args", (torch.randn(3, 8),)),
    ),
    Scenario(
        "parameter_named_type",
        "crash case",
        "a parameter named `type` (`def norm(x, type='l2')`), called with type='l1'",
        lambda: World(norm_by_type, (x28(),), {"type": "l2"}),
        lambda w: w.kwargs.__setitem__("type", "l1"),
    ),
    Scenario(
        "parameter_named_len",
        "crash case",
        "a parameter named `len` next to a list argument (`def join_chunks(chunks, len=2)`), another chunk count",
        lambda: World(join_chunks, ([torch.ones(2), torch.ones(2)],), {"len": 2}),
        lambda w: setattr(w, "args", ([torch.ones(2), torch.ones(2), torch.ones(2)],)),
    ),
    Scenario(
        "del_first_layer",
        "crash case",
        "pruning the first layer: `del model.layers[0]`",
        module_world(Stack),
        lambda w: w.target.layers.__delitem__(0),
    ),
    Scenario(
        "nan_argument_unchanged",
        "crash case",
        "padding filled with `fill=float('nan')` written in the call of a serving loop (a new NaN object each call)",
        lambda: World(fill_missing, (x28(),)),
        lambda w: None,
        call=lambda w, fn: fn(w.args[0], float("nan")),
        unchanged=True,
        repeat=10,
    ),
    Scenario(
        "threading_local_config_unchanged",
        "crash case",
        "a per-thread request context (`threading.local()`) read by the model, unchanged between calls",
        thread_local_world,
        lambda w: None,
        unchanged=True,
    ),
]


SCENARIOS: list[Scenario] = [
    *PYTHON_MODULES,
    *OTHER_GLOBALS,
    *INDIRECT_CALLABLES,
    *MODULE_EDITS,
    *VALUES,
    *KWARGS,
    *CRASHES,
]


# -- the report ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    scenario: Scenario
    stock: Outcome
    outcomes: dict[str, Outcome]
    seconds: float
    matters: bool
    """The change shows in eager's answer (or the scenario is ``unchanged``)."""


def run_battery(scenarios: list[Scenario] | None = None) -> Iterator[Row]:
    for scenario in scenarios if scenarios is not None else SCENARIOS:
        start = time.perf_counter()
        stock_result = stock_outcome(scenario)
        modes = [m for m in MODES if not (m == "unchanged" and scenario.unchanged)]
        outcomes = {mode: outcome(scenario, mode) for mode in modes}
        before, after = eager_answers(scenario)
        matters = scenario.unchanged or not same(before, after)
        yield Row(scenario, stock_result, outcomes, time.perf_counter() - start, matters)


def report(rows: list[Row], verbose: bool = False) -> str:
    """The table: scenario, kind, stock, each mode's outcome; then counts per kind and mode."""
    lines = [f"{'scenario':<54} {'kind':<19} {'stock':<6} {'raise':<20} {'recompile':<20} {'unchanged':<20}"]
    for row in rows:
        cells = [row.outcomes[m].result if m in row.outcomes else "-" for m in MODES]
        stock_cell = "ok" if row.stock.result == "ok" else row.stock.result
        name = row.scenario.id + (" (doc)" if row.scenario.documented else "")
        lines.append(f"{name:<54} {row.scenario.kind:<19} {stock_cell:<6} " + " ".join(f"{c:<20}" for c in cells))
        if verbose:
            for mode in MODES:
                if mode in row.outcomes and row.outcomes[mode].detail:
                    lines.append(f"    {mode}: {row.outcomes[mode].detail}")
    lines.append("")
    kinds = list(dict.fromkeys(row.scenario.kind for row in rows))
    stock_right = sum(row.stock.result == "ok" for row in rows)
    lines.append(f"{len(rows)} scenarios, {stock_right} right under stock torch.compile")
    for mode in MODES:
        wrong = [row for row in rows if mode in row.outcomes and row.outcomes[mode].result == SILENT]
        if wrong:
            documented = sum(bool(row.scenario.documented) for row in wrong)
            warned = sum(row.outcomes[mode].warned for row in wrong)
            lines.append(
                f"{mode}: {len(wrong)} silent wrong answers, {documented} of them documented in docs/footguns.md, "
                f"{warned} announced by a WARNING nocompile logged when compiling"
            )
    idle = [row.scenario.id for row in rows if not row.matters]
    if idle:
        lines.append(f"NOT VALID, the change does not show in eager's answer: {', '.join(idle)}")
    header = f"{'kind':<19} {'n':>3}  " + "  ".join(f"{m + ': wrong/crash/refused/right':<36}" for m in MODES)
    lines.append(header)
    for kind in [*kinds, "all"]:
        chosen = [row for row in rows if kind in ("all", row.scenario.kind)]
        cells = []
        for mode in MODES:
            results = [row.outcomes[mode].result for row in chosen if mode in row.outcomes]
            silent = results.count(SILENT)
            crashed = sum(r.startswith("crash") for r in results)
            refused = results.count(REFUSED)
            right = sum(r in ("ok", "caught") for r in results)
            cells.append(f"{silent:>3} / {crashed:>3} / {refused:>3} / {right:>3}".ljust(36))
        lines.append(f"{kind:<19} {len(chosen):>3}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-k", default="", help="only scenarios whose id contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="each outcome's detail")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    chosen = [s for s in SCENARIOS if options.k in s.id]
    start = time.perf_counter()
    rows = []
    for row in run_battery(chosen):
        rows.append(row)
    print(report(rows, verbose=options.verbose))
    print(f"\n{time.perf_counter() - start:.1f} s")
    mismatched = [
        f"{row.scenario.id}/{mode}: today {row.scenario.today.get(mode, 'right')!r}, got {o.result!r}"
        for row in rows
        for mode, o in row.outcomes.items()
        if (row.scenario.today.get(mode) or "right") != ("right" if o.right else o.result)
    ]
    if mismatched:
        print("\nScenarios whose recorded 'today' differs from what happened:")
        print("\n".join(f"  {m}" for m in mismatched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
