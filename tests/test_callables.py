"""What ``compile_once`` takes beside a function: modules whose ``forward`` is torch's own,
``functools.partial``, callable instances and bound classmethods, and what it refuses (with why).

A ``forward`` defined inside ``torch.nn`` used to be refused ("Dynamo ran it without tracing"):
Dynamo never starts a trace in torch's own files, it only inlines them. The private code copy of
such a function gets a file name of nocompile's own (``_compiler.private_code``).
"""

from __future__ import annotations

import functools
import json
import linecache
import os
import pathlib
import subprocess
import sys
import traceback
from typing import Any

import pytest
import torch
from torch import nn

from nocompile import GuardMismatchError, compile_once

# -- modules whose forward lives in torch.nn --------------------------------------------------


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4), nn.LayerNorm(4)).eval()


def test_sequential_module_form_compiles_and_matches_eager() -> None:
    seq = mlp()
    x = torch.randn(3, 4)
    compiled = compile_once(seq, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), seq(x))
        torch.testing.assert_close(compiled(x), seq(x))
    assert compiled.stats.compiles == 1
    assert compiled.stats.calls == 2


def test_sequential_bound_method_form_compiles_and_matches_eager() -> None:
    seq = mlp()
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected = seq(x)
        seq.forward = compile_once(seq.forward, backend="eager")  # type: ignore[method-assign]
        torch.testing.assert_close(seq(x), expected)
        torch.testing.assert_close(seq(x), expected)
    assert seq.forward.stats.compiles == 1  # type: ignore[attr-defined]


def test_torch_nn_function_copy_gets_a_file_of_its_own_with_the_original_lines() -> None:
    seq = mlp()
    compiled = compile_once(seq, backend="eager")
    compiled(torch.randn(2, 4))
    (spec,) = compiled.specializations
    filename = spec.transformed_code.co_filename
    original = nn.Sequential.forward.__code__.co_filename
    assert filename != original and original in filename
    assert linecache.getlines(filename) == linecache.getlines(original)
    # nn.Sequential's own function and class are untouched
    assert nn.Sequential.forward.__code__.co_filename == original


def test_user_code_keeps_its_file() -> None:
    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    f(torch.ones(2))
    (spec,) = f.specializations
    assert spec.transformed_code.co_filename == __file__


def test_a_change_to_a_sequential_layer_is_seen() -> None:
    seq = mlp()
    compiled = compile_once(seq, backend="eager", on_mismatch="recompile")
    x = torch.randn(3, 4)
    compiled(x)
    seq[0] = nn.Linear(4, 8, bias=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), seq(x))
    assert compiled.stats.compiles == 2


def test_traceback_of_a_torch_nn_forward_shows_its_source_line() -> None:
    compiled = compile_once(nn.Sequential(nn.Linear(4, 4)), backend="eager")
    compiled(torch.randn(2, 4))
    code = compiled.specializations[0].transformed_code
    frame = traceback.FrameSummary(code.co_filename, code.co_firstlineno, "forward")
    assert frame.line is not None and frame.line.startswith("def forward(self, input)")
    assert "nocompile copy of" in traceback.format_list([frame])[0]


class Encoder(nn.TransformerEncoder):
    """A user's subclass of a torch.nn module, decorating a forward that calls torch's."""

    @compile_once(backend="eager")
    def forward(self, src: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out: torch.Tensor = super().forward(src)
        return out


def test_decorated_subclass_calling_super_forward() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
    enc = Encoder(layer, 2, enable_nested_tensor=False).eval()
    plain = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    plain.load_state_dict(enc.state_dict())
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), plain(x))
        torch.testing.assert_close(enc(x), plain(x))
    assert enc.forward.stats.compiles == 1


def test_torch_nn_module_explain_names_the_forward() -> None:
    compiled = compile_once(mlp(), backend="eager")
    compiled(torch.randn(2, 4))
    text = compiled.explain()
    assert "Sequential.forward" in text


SEQUENTIAL_CHILD = r"""
import json, os, sys
import torch
from torch import nn
from nocompile import compile_once
torch.manual_seed(0)
seq = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4)).eval()
compiled = compile_once(seq, backend="aot_eager", cache_dir=os.environ["TEST_CACHE"])
with torch.no_grad():
    out = compiled(torch.ones(2, 4))
s = compiled.stats
print(json.dumps({"compiles": s.compiles, "loads": s.loads, "out": out.tolist()}))
"""


def test_sequential_with_cache_dir_loads_in_a_second_process(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(SEQUENTIAL_CHILD)
    env = {**os.environ, "TEST_CACHE": str(tmp_path / "cache")}

    def run() -> dict[str, Any]:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    first, second = run(), run()
    assert (first["compiles"], first["loads"]) == (1, 0)
    assert (second["compiles"], second["loads"]) == (0, 1)
    assert first["out"] == second["out"]


# -- functools.partial --------------------------------------------------------------------------


def affine(x: torch.Tensor, scale: float, bias: float = 0.0) -> torch.Tensor:
    return x * scale + bias


def test_partial_compiles_and_its_keywords_are_checked() -> None:
    p = functools.partial(affine, scale=2.0, bias=1.0)
    compiled = compile_once(p, backend="eager")
    x = torch.randn(3)
    torch.testing.assert_close(compiled(x), p(x))
    p.keywords["scale"] = 3.0  # a partial's keywords dict can change in place
    with pytest.raises(GuardMismatchError, match=r"scale: value compiled for 2\.0, got 3\.0"):
        compiled(x)


def test_partial_positional_arguments_are_arguments_of_each_call() -> None:
    weight = torch.randn(3)
    p = functools.partial(affine, weight)
    compiled = compile_once(p, backend="eager", on_mismatch="recompile")
    torch.testing.assert_close(compiled(2.0), p(2.0))
    weight.mul_(2)  # the partial's tensor is read on every call, not baked in
    torch.testing.assert_close(compiled(2.0), p(2.0))
    assert compiled.stats.compiles == 1
    torch.testing.assert_close(compiled(4.0), p(4.0))  # another scalar: a new specialization
    assert compiled.stats.compiles == 2


def test_partial_call_keywords_override_the_partials() -> None:
    p = functools.partial(affine, scale=2.0)
    compiled = compile_once(p, backend="eager", on_mismatch="recompile")
    x = torch.ones(2)
    torch.testing.assert_close(compiled(x, scale=5.0), p(x, scale=5.0))


def test_partial_of_a_bound_method_and_of_a_module() -> None:
    seq = mlp()
    x = torch.randn(2, 4)
    of_module = compile_once(functools.partial(seq), backend="eager")
    of_method = compile_once(functools.partial(seq.forward, x), backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(of_module(x), seq(x))
        torch.testing.assert_close(of_method(), seq(x))
    assert of_module.stats.compiles == 1 and of_method.stats.compiles == 1


def test_partial_surface_reset_signature_and_pickling() -> None:
    import inspect
    import pickle

    p = functools.partial(affine, scale=2.0)
    compiled = compile_once(p, backend="eager")
    assert str(inspect.signature(compiled)) == str(inspect.signature(p))
    compiled(torch.ones(2))
    compiled.reset()
    compiled(torch.ones(2))
    assert compiled.stats.compiles == 1  # counters start again after reset
    assert compiled.__wrapped__ is p
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(compiled)
    with pytest.raises(TypeError, match="already compiled"):
        compile_once(compiled)


# -- callable instances -------------------------------------------------------------------------


class Scaler:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_callable_instance_compiles_and_watches_its_self() -> None:
    scaler = Scaler(2.0)
    compiled = compile_once(scaler, backend="eager")
    x = torch.ones(2)
    torch.testing.assert_close(compiled(x), x * 2)
    scaler.scale = 5.0
    with pytest.raises(GuardMismatchError, match="scale"):
        compiled(x)


def test_callable_instance_is_kept_alive_by_the_compiled_object() -> None:
    compiled = compile_once(Scaler(3.0), backend="eager", on_mismatch="recompile")
    import gc

    gc.collect()
    torch.testing.assert_close(compiled(torch.ones(2)), torch.full((2,), 3.0))


# -- bound classmethods -------------------------------------------------------------------------


class Factor:
    factor = 3

    @classmethod
    def apply(cls, x: torch.Tensor) -> torch.Tensor:
        return x * cls.factor


def test_bound_classmethod_compiles_and_sees_its_class_change() -> None:
    compiled = compile_once(Factor.apply, backend="eager", on_mismatch="recompile")
    x = torch.ones(2)
    torch.testing.assert_close(compiled(x), x * 3)
    try:
        Factor.factor = 4
        torch.testing.assert_close(compiled(x), x * 4)
    finally:
        Factor.factor = 3
    assert compiled.stats.compiles == 2


# -- refusals that say why -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "what"),
    [
        (torch.sin, "builtin_function_or_method"),
        (len, "builtin_function_or_method"),
        (Scaler, "a type is not a Python function"),
        (torch.nn.functional.relu6, None),
    ],
    ids=["torch.sin", "len", "a class", "F.relu6"],
)
def test_what_cannot_be_traced_is_refused_with_a_fix(target: Any, what: str | None) -> None:
    if what is None:  # a Python function of torch's own: compiled like any function
        compiled = compile_once(target, backend="eager")
        x = torch.linspace(-8, 8, 9)
        torch.testing.assert_close(compiled(x), target(x))
        return
    with pytest.raises(TypeError, match=what) as info:
        compile_once(target)
    assert "lambda" in str(info.value)  # the fix: wrap it in a function


def test_compiled_objects_are_not_compiled_twice() -> None:
    seq = mlp()
    for compiled in (compile_once(seq, backend="eager"), compile_once(Scaler(1.0), backend="eager")):
        with pytest.raises(TypeError, match="already compiled"):
            compile_once(compiled)


@pytest.mark.parametrize(
    "options",
    [{"guards": "dynamo"}, {"guards": "none"}, {"dispatch": "dynamo"}, {"backend": "aot_eager"}],
    ids=["guards=dynamo", "guards=none", "dispatch=dynamo", "aot_eager"],
)
def test_sequential_under_every_policy_and_dispatch(options: dict[str, Any]) -> None:
    seq = mlp()
    x = torch.randn(2, 4)
    compiled = compile_once(seq, **{"backend": "eager", **options})
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(compiled(x), seq(x))
    assert compiled.stats.compiles == 1


def test_sequential_aot_compile_then_calls_without_compiling() -> None:
    seq = mlp()
    x = torch.randn(2, 4)
    compiled = compile_once(seq, backend="aot_eager")
    with torch.no_grad():
        assert compiled.aot_compile(x) is not None
        torch.testing.assert_close(compiled(x), seq(x))
    assert (compiled.stats.compiles, compiled.stats.calls) == (1, 1)


def test_a_function_run_from_a_string_without_a_module_compiles() -> None:
    """``exec`` of a string in globals without ``__name__`` (code generators, templated models):
    ``inspect`` finds no source file, and torch 2.11's ``torch.compile`` then traces an extra frame
    of its own around the function, which nocompile's bytecode hook would miss ("Dynamo ran it
    without transforming it"). The private copy takes a file name ``linecache`` knows instead."""
    namespace: dict[str, Any] = {}
    exec("def f(x):\n    return x * 2 + 1\n", {}, namespace)
    f = compile_once(backend="eager")(namespace["f"])
    x = torch.ones(3)
    torch.testing.assert_close(f(x), x * 2 + 1)
    code = f.specializations[0].transformed_code
    assert "nocompile copy of <string>" in code.co_filename
