"""explain()/report(), dump_dir and NOCOMPILE_DUMP_DIR, logging levels, and the explain CLI."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from models import Block
from nocompile import ExplainReport, compile_once
from nocompile.__main__ import main

TESTS = Path(__file__).parent


class Norm(nn.Module):
    """Linear, a LayerNorm with a non-default eps and a buffer: every guard kind the report groups."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4, eps=1e-3)
        self.register_buffer("scale", torch.full((4,), 2.0))

    @compile_once(backend="eager", guards="none")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x)) * self.scale


def eager_norm(m: Norm, x: torch.Tensor) -> torch.Tensor:
    return m.norm(m.linear(x)) * m.scale


def guard_pairs(guards: tuple) -> set[tuple[str, str]]:
    return {(g.guard_type, g.name) for g in guards}


# -- explain() and report() ----------------------------------------------------------------------


def test_explain_before_the_first_compile_says_so() -> None:
    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    text = f.explain()
    assert "Not compiled yet" in text
    assert f"{f.__module__}.{f.__qualname__}" in text
    assert "guards='inputs'" in text
    report = f.report()
    assert isinstance(report, ExplainReport)
    assert not report.compiled and report.specializations == ()
    assert report.filename == __file__ and report.lineno == f.__wrapped__.__code__.co_firstlineno


def test_dropped_guards_include_the_input_tensor_match_and_the_layernorm_eps_constant() -> None:
    m = Norm().eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.allclose(m(x), eager_norm(m, x))
    report = m.forward.report()
    (spec,) = report.specializations
    dropped = guard_pairs(spec.guards_dropped)
    assert ("TENSOR_MATCH", "x") in dropped
    assert ("CONSTANT_MATCH", "self._modules['norm'].eps") in dropped
    eps = next(g for g in spec.guards_dropped if g.name == "self._modules['norm'].eps")
    assert eps.kind == "constants" and eps.code == ("L['self']._modules['norm'].eps == 0.001",)
    kinds = {g.kind for g in spec.guards_dropped}
    assert kinds >= {"tensor match", "module and global identity", "constants", "global state"}
    assert spec.guards_kept == ()
    assert spec.compile_seconds > 0
    assert "shape=(2, 4)" in spec.signature and "training=False" in spec.signature
    # one graph: x from the call, linear weight+bias and norm weight+bias, the buffer
    (graph,) = spec.graphs
    assert (graph.inputs, graph.from_call, graph.parameters, graph.buffers) == (6, 1, 4, 1)
    assert spec.transformed_source is not None and "__compiled_fn" in spec.transformed_source

    text = m.forward.explain()
    assert "specialization #1: compiled in" in text
    assert "dropped, tensor match" in text and "TENSOR_MATCH" in text
    assert "L['self']._modules['norm'].eps == 0.001" in text
    assert "6 input(s) = 1 from the call + 4 parameter(s) + 1 buffer(s)" in text
    assert "def forward(self, x):" in text
    assert f"dropped {len(spec.guards_dropped)}, kept 0" in text
    assert "more" in text and "FX graph" not in text  # long guard lists are cut, the graph left out
    verbose = m.forward.explain(verbose=True)
    assert "FX graph 1 (what the backend compiled):" in verbose and "class GraphModule" in verbose
    assert all(g.name in verbose for g in spec.guards_dropped if g.kind == "module and global identity")


def test_guards_dynamo_reports_every_guard_as_kept() -> None:
    @compile_once(backend="eager", guards="dynamo")
    def f(x: torch.Tensor, k: int) -> torch.Tensor:
        return x * k

    assert torch.equal(f(torch.ones(3), 2), torch.full((3,), 2.0))
    (spec,) = f.report().specializations
    assert spec.guards_dropped == ()
    assert ("TENSOR_MATCH", "x") in guard_pairs(spec.guards_kept)
    assert any(g.kind == "constants" and "k" in g.name for g in spec.guards_kept)  # k == 2 specialized
    text = f.explain()
    assert "kept, tensor match" in text and "dropped 0, kept" in text and "dropped," not in text


def test_method_reports_per_instance_and_on_the_class() -> None:
    class OwnBlock(Block):  # a class of its own: other tests' live Blocks do not show up here
        forward = compile_once(backend="eager", guards="none")(Block.forward.__wrapped__)

    assert "Not compiled yet" in OwnBlock.forward.explain()
    a, b, _unused = OwnBlock(), OwnBlock(), OwnBlock()
    x = torch.randn(1, 8)
    _ = _unused.forward  # creates its (uncompiled) state
    a(x)
    b(x)
    b(torch.randn(1, 8))
    one = a.forward.report()
    assert len(one.states) == 1 and one.uncompiled_states == 0
    assert len(one.specializations) == 1
    every = OwnBlock.forward.report()
    assert len(every.states) == 2  # a and b
    assert every.uncompiled_states == 1
    assert "instance state s" in OwnBlock.forward.explain()
    assert "more state(s) of this function have not compiled yet" in OwnBlock.forward.explain()


def test_shape_guards_under_inputs_with_dynamic_dims_are_reported_as_checked() -> None:
    @compile_once(backend="eager", dynamic={"x": 0})
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[0] > 3 else x

    f(torch.ones(5, 2))
    (spec,) = f.report().specializations
    assert any("L['x'].size()[0]" in e for e in spec.shape_guards_checked)
    assert "shape guards kept and checked" in f.explain()


def test_report_survives_bytecode_depyf_cannot_decompile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import depyf

    def broken(code: object) -> str:
        raise RuntimeError("unsupported opcode")

    monkeypatch.setattr(depyf, "decompile", broken)

    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x - 1

    assert torch.equal(f(torch.ones(2)), torch.zeros(2))
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        text = f.explain()
    assert "not available: depyf could not decompile it: RuntimeError: unsupported opcode" in text
    assert any(r.levelno == logging.WARNING and "not decompiled" in r.getMessage() for r in caplog.records)


def test_the_recording_backend_hands_mode_and_options_to_the_backend_as_torch_compile_would() -> None:
    seen: list[dict] = []

    def my_backend(gm: torch.fx.GraphModule, example_inputs: list, **kwargs: object) -> object:
        seen.append(kwargs)
        return gm.forward

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.ones(2)
    assert torch.equal(compile_once(backend=my_backend, options={"flag": 1}, guards="dynamo")(double)(x), x * 2)
    assert torch.equal(compile_once(backend=my_backend, options={"flag": 2}, guards="none")(double)(x), x * 2)
    assert torch.equal(compile_once(backend=my_backend, mode="fast", guards="dynamo")(double)(x), x * 2)
    assert torch.equal(compile_once(backend=my_backend)(double)(x), x * 2)
    assert seen == [{"options": {"flag": 1}}, {"options": {"flag": 2}}, {"mode": "fast"}, {}]


# -- dump_dir --------------------------------------------------------------------------------------


def test_dump_dir_writes_every_file_once_per_compile(tmp_path: Path) -> None:
    @compile_once(backend="eager", guards="inputs", on_mismatch="recompile", dump_dir=tmp_path)
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + 1

    f(torch.ones(2))
    f(torch.ones(2))  # no compile, no new dump
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 1
    files = {p.name for p in folders[0].iterdir()}
    assert files == {"transformed_code.py", "fx_graph.py", "guards.txt", "explain.txt"}
    transformed = (folders[0] / "transformed_code.py").read_text()
    ast.parse(transformed)  # valid Python
    assert "__compiled_fn" in transformed
    ast.parse((folders[0] / "fx_graph.py").read_text())
    assert "torch.relu" in (folders[0] / "fx_graph.py").read_text()
    # guards="inputs" keeps Dynamo's guards, evaluated when the per-call fingerprint changes.
    assert "watched\ttensor match\tTENSOR_MATCH\tx\t" in (folders[0] / "guards.txt").read_text()
    assert "specialization #1" in (folders[0] / "explain.txt").read_text()
    assert f.report().specializations[0].dump_path == str(folders[0])

    f(torch.ones(3))  # a second specialization: a folder of its own
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 2
    assert [p.name.rsplit("-", 1)[1] for p in folders] == ["spec1", "spec2"]


def test_dump_folders_never_collide_across_instances_and_resets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOCOMPILE_DUMP_DIR", str(tmp_path))
    a, b = Block(), Block()
    x = torch.randn(1, 8)
    a(x)
    b(x)
    a.forward.reset()
    a(x)  # same state, index 1 again: gets a suffix rather than overwriting
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 3 and len(set(folders)) == 3
    assert all(name.startswith("models.Block.forward-s") for name in folders)
    assert sum(name.endswith("-2") for name in folders) == 1


def test_unwritable_dump_dir_logs_a_warning_and_the_call_still_returns_the_right_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    bad = not_a_dir / "dumps"  # cannot be created, also as root

    @compile_once(backend="eager", dump_dir=bad)
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 3

    with caplog.at_level(logging.DEBUG, logger="nocompile"):
        assert torch.equal(f(torch.ones(2)), torch.full((2,), 3.0))
        assert torch.equal(f(torch.full((2,), 2.0)), torch.full((2,), 6.0))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(bad) in warnings[0].getMessage() and "could not create a dump folder" in warnings[0].getMessage()
    assert f.stats.compiles == 1


def test_a_file_that_cannot_be_written_is_a_warning_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @compile_once(backend="eager", dump_dir=tmp_path)
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 2

    import nocompile._dump as dump_module

    monkeypatch.setattr(
        dump_module, "_fx_graphs", lambda record, where: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    )
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert torch.equal(f(torch.zeros(2)), torch.full((2,), 2.0))
    (folder,) = tmp_path.iterdir()
    assert {p.name for p in folder.iterdir()} == {"transformed_code.py", "guards.txt", "explain.txt"}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(folder / "fx_graph.py") in warning and "No space left on device" in warning


def test_undecompilable_bytecode_is_dumped_disassembled_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import depyf

    monkeypatch.setattr(depyf, "decompile", lambda code: (_ for _ in ()).throw(ValueError("bad bytecode")))

    @compile_once(backend="eager", dump_dir=tmp_path)
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 5

    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert torch.equal(f(torch.zeros(1)), torch.full((1,), 5.0))
    (folder,) = tmp_path.iterdir()
    text = (folder / "transformed_code.py").read_text()
    ast.parse(text)
    assert "Not decompiled: depyf could not decompile it: ValueError: bad bytecode" in text
    assert "__compiled_fn" in text  # the disassembly names the graph call
    assert any("not decompiled" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_the_dump_of_a_lambda_is_valid_python(tmp_path: Path) -> None:
    """depyf names a lambda's code ``<lambda>``; the dumped file renames it so it parses."""
    f = compile_once(backend="eager", dump_dir=str(tmp_path))(lambda x: x.sin() + 1)
    f(torch.ones(2))
    (path,) = tmp_path.glob("*/transformed_code.py")
    source = path.read_text()
    ast.parse(source)
    assert "def _lambda_(x):" in source and "<lambda>" not in source.split("\n\n", 1)[1]


def test_generated_functions_show_their_source_in_tracebacks_and_inspect() -> None:
    """Generated code is registered in linecache (as attrs does): tracebacks and pdb show its lines."""
    import inspect
    import linecache

    @compile_once(backend="eager")
    def scale(x: torch.Tensor, n: int) -> torch.Tensor:
        return x * n

    scale(torch.ones(2), 2)
    entry = scale._state.entry
    filename = entry.__code__.co_filename
    assert filename.startswith("<nocompile generated for ") and linecache.getline(filename, 1).startswith("def ")
    assert "__nc_state.calls += 1" in inspect.getsource(entry)


def test_dump_dir_is_validated_at_decoration() -> None:
    with pytest.raises(TypeError, match="dump_dir"):
        compile_once(dump_dir=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dump_dir"):
        compile_once(dump_dir="  ")


# -- logging ---------------------------------------------------------------------------------------


def test_log_levels(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    @compile_once(backend="eager", on_mismatch="recompile")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin()

    with caplog.at_level(logging.DEBUG, logger="nocompile"):
        f(torch.ones(2))
        f(torch.ones(2))
        first = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nocompile"]
        caplog.clear()
        f(torch.ones(3))
        second = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nocompile"]

    infos = [m for level, m in first if level == logging.INFO]
    assert len(infos) == 2
    assert infos[0].startswith("compiling ") and "shape=(2,)" in infos[0] and f.__qualname__ in infos[0]
    assert infos[1].startswith("compiled ") and "shape=(2,)" in infos[1]
    assert infos[1].endswith(" s") and float(infos[1].rsplit(" in ", 1)[1][:-2]) > 0
    assert not [m for level, m in first if level >= logging.WARNING]
    assert any(level == logging.DEBUG and "keeping all" in m and "guards Dynamo wanted" in m for level, m in first)

    # An expected recompile (on_mismatch="recompile") is INFO; WARNING only once the bound is near.
    (recompiling,) = [m for level, m in second if "recompiling for a new signature" in m]
    assert "shape compiled for (2,), got (3,)" in recompiling
    assert not [m for level, m in second if level >= logging.WARNING]
    # recompiling, compiling, compiled dynamic (automatic dynamic: the size changed), compiled
    assert sum(level == logging.INFO for level, _ in second) == 4
    assert any("compiled dynamic in x dim 0" in m for _, m in second)
    assert capsys.readouterr() == ("", "")  # nothing printed

    near = compile_once(backend="eager", on_mismatch="recompile", max_compiles=3)(lambda x: x.cos())
    with caplog.at_level(logging.INFO, logger="nocompile"):
        near(torch.ones(2))
        caplog.clear()
        near(torch.ones(3))  # specialization #2 of 3: the bound is near
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "specialization #2 of at most 3" in warning


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_explain_without_example_says_not_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "explain_targets:scale_add"]) == 0
    out = capsys.readouterr().out
    assert "explain_targets.scale_add" in out and "Not compiled yet" in out


def test_cli_explain_with_example_on_a_decorated_function_and_a_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "explain_targets:scale_add", "--example", "explain_targets:make_scale_add_inputs"]) == 0
    out = capsys.readouterr().out
    assert "specialization #1" in out and "shape=(2, 3)" in out and "guards='none'" in out
    assert main(["explain", "models:Block.forward", "--example", "explain_targets:make_block_inputs", "--no-grad"]) == 0
    out = capsys.readouterr().out
    assert "shape=(2, 4)" in out and "grad_enabled=False" in out and "CONSTANT_MATCH" in out


def test_cli_bad_targets_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "no_colon_here"]) == 2
    assert "module:function" in capsys.readouterr().err
    assert main(["explain", "explain_targets:missing"]) == 2
    assert "has no attribute 'missing'" in capsys.readouterr().err
    assert main(["explain", "nonexistent_module_xyz:f"]) == 2
    assert "cannot import module" in capsys.readouterr().err
    assert main(["explain", "explain_targets:make_mlp_inputs", "--backend", "no-such-backend"]) == 2
    assert "backend='no-such-backend'" in capsys.readouterr().err


def test_cli_a_function_that_cannot_compile_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "explain",
                "explain_targets:graph_break",
                "--example",
                "explain_targets:make_mlp_inputs",
                "--backend",
                "eager",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: torch.compile could not compile explain_targets.graph_break")


def test_cli_explain_undecorated_reference_model_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nocompile",
            "explain",
            "nocompile._reference:ReferenceMLP.forward",
            "--example",
            "explain_targets:make_mlp_inputs",
            "--backend",
            "eager",
            "--no-grad",
            "--dump-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    out = done.stdout
    # logging is not configured in that process: INFO/DEBUG records print nothing by default
    assert "compiling" not in done.stderr and "dropping all" not in done.stderr
    assert "nocompile._reference.ReferenceMLP.forward" in out
    assert "11 input(s) = 1 from the call + 10 parameter(s) + 0 buffer(s)" in out
    assert "L['self']._modules['norm'].eps == 1e-05" in out
    (folder,) = tmp_path.iterdir()
    assert (folder / "transformed_code.py").is_file()


def test_dynamo_recompiles_are_reported_compile_by_compile() -> None:
    @compile_once(backend="eager", guards="dynamo")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    f(torch.ones(2))
    f(torch.ones(2, 2))  # rank change: Dynamo recompiles
    (spec,) = f.report().specializations
    assert {g.compile for g in spec.guards_kept} == {1, 2}
    assert len(spec.graphs) == 2
    text = f.explain()
    assert "in Dynamo compile 1 of 2:" in text and "in Dynamo compile 2 of 2 (a recompile):" in text
    assert "transformed bytecode (of Dynamo's first compile)" in text


def test_explain_under_nocompile_disable_says_it_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOCOMPILE_DISABLE", "1")

    @compile_once(backend="eager")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    f(torch.ones(1))
    assert "NOCOMPILE_DISABLE is set" in f.explain()


def test_shared_state_of_a_per_instance_false_method_is_labelled() -> None:
    from models import SharedBlock

    a = SharedBlock()
    a(torch.randn(1, 8))
    report = SharedBlock.forward.report()
    assert report.states[0].label.startswith("shared state s")
    assert "shared state s" in SharedBlock.forward.explain()


# -- what the report says was dropped, pinned --------------------------------------------------------


def test_dropped_constant_eps_is_baked_in_and_a_later_submodule_hook_is_not_run() -> None:
    """docs/debugging.md: the CONSTANT_MATCH on eps and the hooks-dict guards are really gone."""
    m = Norm().eval()
    x = torch.randn(3, 4) * 100
    with torch.no_grad():
        before = m(x)
        dropped = m.forward.report().specializations[0].guards_dropped
        assert ("CONSTANT_MATCH", "self._modules['norm'].eps") in guard_pairs(dropped)
        m.norm.eps = 10.0  # eager would now give a different result
        assert not torch.allclose(eager_norm(m, x), before)
        assert torch.equal(m(x), before)  # the compiled code still uses eps=1e-3
        calls: list[int] = []
        m.linear.register_forward_hook(lambda mod, args, out: calls.append(1))
        m(x)
        assert calls == []  # inlined at compile time; the hook is not run
        top: list[int] = []
        m.register_forward_hook(lambda mod, args, out: top.append(1))
        m(x)
        assert top == [1]  # the decorated module's own hooks run (nn.Module.__call__)


def test_inductor_with_a_mode_through_the_recording_backend() -> None:
    """The one inductor test here: mode expanded into options reaches inductor through the recorder."""

    @compile_once(backend="inductor", mode="max-autotune-no-cudagraphs", guards="none")
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * y + 1

    x, y = torch.randn(4, 4), torch.randn(4, 4)
    assert torch.allclose(f(x, y), torch.relu(x) * y + 1)
    (spec,) = f.report().specializations
    (graph,) = spec.graphs
    assert (graph.inputs, graph.from_call, graph.parameters) == (2, 2, 0)
    assert "torch.relu" in graph.code
    assert "mode='max-autotune-no-cudagraphs'" in f.explain()
