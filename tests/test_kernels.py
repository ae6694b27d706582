"""Compiled kernels inside the artifact (``_kernels``): a warm start compiles nothing, anywhere.

One inductor compile for the module (the ``inductor_cache`` fixture, a child process); the warm
loads run in children with an empty inductor cache, and the damaged, foreign and other-torch
artifacts are loaded in-process from copies of that artifact (a load compiles nothing). The
fallback to inductor's own backend and the key's parts are checked without compiling.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types
from typing import Any

import pytest
import torch

from nocompile import _artifacts, _compat, _explain, _kernels
from nocompile._artifacts import BadArtifact
from nocompile._inputs import request_for
from nocompile._options import CompileOptions

CHILD = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
from nocompile import compile_once, _compat
if os.environ.get("FAKE_ISA"):
    _compat.cpu_isa_candidates = lambda: (os.environ["FAKE_ISA"],)
from torch._dynamo.utils import counters

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    @compile_once(backend="inductor", cache_dir=os.environ["TEST_CACHE"])
    def forward(self, x):
        return self.norm(x + torch.nn.functional.gelu(self.lin(x)))

device = os.environ.get("TEST_DEVICE", "cpu")
torch.manual_seed(0)
net = Net().to(device)
x = torch.randn(2, 8, device=device)

def close():
    return bool(torch.allclose(net(x), Net.forward.__wrapped__(net, x), atol=1e-5 if device == "cpu" else 1e-4))

out = {}
with torch.no_grad():
    counters.clear()
    before = set(sys.modules)
    out["first"] = close()
    out["imported"] = sorted(m for m in set(sys.modules) - before if m.startswith("torch._inductor"))
    out["counters"] = {k: dict(v) for k, v in counters.items() if v}
    net.lin.weight.mul_(2)
    out["in_place"] = close()
    net.lin.weight = torch.nn.Parameter(torch.randn(8, 8, device=device))
    out["reassigned"] = close()
stats = net.forward.stats
out["compiles"], out["loads"] = stats.compiles, stats.loads
import torch._inductor.cpu_vec_isa as isa
out["isa_probes"] = isa.valid_vec_isa_list.cache_info().currsize
spec = net.forward.report().states[0].specializations[0]
out["report"] = [spec.origin, spec.artifact_path, spec.kernels]
out["explain"] = net.forward.explain()
print("RESULT " + json.dumps(out))
"""


def run_child(tmp: pathlib.Path, cache: pathlib.Path, inductor: pathlib.Path, **env: str) -> dict[str, Any]:
    script = tmp / "kernels_child.py"
    script.write_text(CHILD)
    full_env = {
        **os.environ,
        "TEST_CACHE": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(inductor),
        "TRITON_CACHE_DIR": str(inductor / "triton"),
        **env,
    }
    for name in ("NOCOMPILE_CACHE_DIR", "NOCOMPILE_DISABLE"):
        full_env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=full_env, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["stderr"] = proc.stderr
    return result


def artifact(cache: pathlib.Path) -> pathlib.Path:
    (path,) = [p for p in cache.iterdir() if p.name.endswith(_artifacts.SUFFIX)]
    return path


def files_under(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, Any]]:
    """The one inductor compile of this file: a child compiles Net.forward and saves its artifact."""
    tmp = tmp_path_factory.mktemp("kernels")
    cache = tmp / "cache"
    first = run_child(tmp, cache, tmp / "inductor-cold")
    return cache, first


def test_the_cold_process_saves_aotinductor_kernels_in_the_artifact(
    inductor_cache: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    cache, first = inductor_cache
    assert (first["compiles"], first["loads"]) == (1, 0)
    assert first["first"] and first["in_place"] and first["reassigned"]
    header, payload = _artifacts.decode(artifact(cache).read_bytes())
    assert header["kernels_made_by"].startswith(_kernels.AOTI), header["kernels_made_by"]
    assert header["kernels"]["cpu_isa"] == list(_compat.cpu_isa_candidates())
    assert header["kernels"]["threads"] == 1
    assert len(payload) > 10_000  # the shared library travels in the payload
    assert first["report"] == ["compiled", str(artifact(cache)), header["kernels_made_by"]]
    assert re.search(
        rf"specialization #1: compiled in [0-9.]+ s, saved to {re.escape(str(artifact(cache)))}\n", first["explain"]
    )
    explained = " ".join(first["explain"].split())  # unwrapped
    assert "kernels: AOTInductor (" in explained and "built into the artifact (a load compiles nothing)" in explained


def test_a_warm_load_on_an_empty_inductor_cache_does_no_compile_work(
    inductor_cache: tuple[pathlib.Path, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    """The issue's "compiled once, anywhere": another machine given the cache directory alone."""
    cache = tmp_path / "cache"
    shutil.copytree(inductor_cache[0], cache)
    empty = tmp_path / "inductor"
    empty.mkdir()
    warm = run_child(tmp_path, cache, empty)
    assert (warm["compiles"], warm["loads"]) == (0, 1)
    assert warm["first"] and warm["in_place"] and warm["reassigned"]  # live weights, in place and reassigned
    assert warm["counters"] == {}  # no Dynamo trace, no AOTAutograd, no inductor cache lookups or misses
    assert warm["isa_probes"] == 0  # inductor's CPU ISA probe never ran
    assert warm["imported"] == []  # no module of inductor imported by the load
    assert files_under(empty) == []  # nothing written to (or built in) inductor's cache
    made_by = _artifacts.decode(artifact(cache).read_bytes())[0]["kernels_made_by"]
    assert warm["report"] == ["loaded", str(artifact(cache)), made_by]
    assert f"s from {artifact(cache)}" in warm["explain"] and "specialization #1: loaded in " in warm["explain"]
    assert "kernels: AOTInductor (" in warm["explain"]
    assert "called past its Python wrappers (AOTInductor's loader called directly)" in warm["explain"]


def test_aotinductor_on_cuda_needs_torch_2_13(monkeypatch: pytest.MonkeyPatch) -> None:
    """On torch 2.11 with an H100 the cold process crashed (SIGSEGV) building AOTInductor's CUDA
    kernels: there, CUDA graphs keep inductor's own backend (the path verified to save on 2.11)."""
    monkeypatch.setattr(_compat, "torch_version", lambda: (2, 11))
    assert "torch < 2.13" in str(_kernels.unverified_device("cuda"))
    assert _kernels.unverified_device("cpu") is None
    monkeypatch.setattr(_compat, "torch_version", lambda: (2, 13))
    assert _kernels.unverified_device("cuda") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(_compat.torch_version() < (2, 13), reason="AOTInductor on CUDA: torch 2.13")
def test_a_warm_cuda_load_on_empty_inductor_and_triton_caches_does_no_compile_work(tmp_path: pathlib.Path) -> None:
    """The same on a GPU (``STEPS=warmstart bash scripts/gpu_check.sh``): the kernels (cubins and
    the C++ calling them) travel in the artifact, so an empty inductor and Triton cache builds nothing."""
    cache = tmp_path / "cache"
    cold = run_child(tmp_path, cache, tmp_path / "inductor-cold", TEST_DEVICE="cuda")
    header = _artifacts.decode(artifact(cache).read_bytes())[0]
    assert (cold["compiles"], cold["loads"]) == (1, 0)
    assert cold["first"] and cold["in_place"] and cold["reassigned"]
    assert header["kernels_made_by"] == f"{_kernels.AOTI} (cuda)", header["kernels_made_by"]
    assert header["kernels"]["gpus"] and header["kernels"]["cuda"] == torch.version.cuda
    empty = tmp_path / "inductor"
    empty.mkdir()  # TRITON_CACHE_DIR is empty/triton, inside it
    warm = run_child(tmp_path, cache, empty, TEST_DEVICE="cuda")
    assert (warm["compiles"], warm["loads"]) == (0, 1)
    assert warm["first"] and warm["in_place"] and warm["reassigned"]
    assert warm["counters"] == {}  # no Dynamo trace, no AOTAutograd, no inductor or Triton cache lookups
    assert warm["imported"] == []  # no module of inductor imported by the load
    assert files_under(empty) == []  # nothing written to (or built in) inductor's or Triton's cache
    assert "kernels: AOTInductor (cuda), built into the artifact" in " ".join(warm["explain"].split())


# -- artifacts that must not load: damaged, built for another machine or torch ---------------------


def _load(path: pathlib.Path, material: dict[str, Any]) -> Any:
    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    return _artifacts._load(str(path), forward, forward.__code__, (None, torch.ones(2, 8)), {}, material)


def _rewrite(path: pathlib.Path, change: Any) -> dict[str, Any]:
    """Rewrite ``path``'s header with ``change(header)``; returns the header before."""
    header, payload = _artifacts.decode(path.read_bytes())
    before = json.loads(json.dumps(header))
    change(header)
    for name in ("format", "payload_bytes", "payload_sha256"):
        del header[name]
    path.write_bytes(_artifacts.encode(header, payload))
    return before


@pytest.fixture
def warm_copy(inductor_cache: tuple[pathlib.Path, dict[str, Any]], tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / artifact(inductor_cache[0]).name
    shutil.copy(artifact(inductor_cache[0]), path)
    os.chmod(path, 0o600)
    return path


def test_a_damaged_kernel_is_set_aside(warm_copy: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    header, _ = _artifacts.decode(warm_copy.read_bytes())
    data = bytearray(warm_copy.read_bytes())
    data[-5000] ^= 0xFF  # inside the package's shared library
    warm_copy.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert _load(warm_copy, header) is None
    assert "checksum" in caplog.text
    assert not warm_copy.exists() and warm_copy.with_name(warm_copy.name + ".bad").exists()


def test_a_kernel_the_loader_refuses_is_set_aside(
    warm_copy: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An intact file whose shared library does not load here (built against another C++ runtime
    or glibc, say): AOTInductor's loader raises, the file is set aside, nothing crashes."""
    header, _ = _artifacts.decode(warm_copy.read_bytes())

    def refusing(package: bytes, device_index: int) -> Any:
        assert package[:2] == b"PK" and device_index == -1  # the .pt2 package (a zip) for the CPU
        raise RuntimeError("undefined symbol: _ZN5torch3aot6runner")

    monkeypatch.setattr(_compat, "aoti_loader", refusing)
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert _load(warm_copy, header) is None
    assert "undefined symbol" in caplog.text
    assert not warm_copy.exists() and warm_copy.with_name(warm_copy.name + ".bad").exists()


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("kernels", lambda h: h["kernels"].update(cpu_isa=["avx10_2 (another CPU)"])),
        ("kernels", lambda h: h["kernels"].update(gpus=["0: another GPU sm_90"], cuda="99.9")),
        ("torch", lambda h: h.update(torch="2.99.0")),
    ],
    ids=["other-cpu-isa", "other-gpu", "other-torch"],
)
def test_a_header_for_another_machine_or_torch_is_set_aside(
    warm_copy: pathlib.Path, caplog: pytest.LogCaptureFixture, field: str, change: Any
) -> None:
    """A file found under this process's key whose header names other kernels (copied or renamed):
    set aside and compiled anew, never loaded. (A foreign artifact under its own name is a miss:
    its key differs, see test_the_key_holds_what_makes_kernels_foreign.)"""
    material = _rewrite(warm_copy, change)
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert _load(warm_copy, material) is None
    assert "does not match its key" in caplog.text and f"{field}:" in caplog.text
    assert warm_copy.with_name(warm_copy.name + ".bad").exists()


def test_the_key_holds_what_makes_kernels_foreign(monkeypatch: pytest.MonkeyPatch) -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def key(options: CompileOptions) -> tuple[str, dict[str, Any]]:
        request = request_for(f, options, (torch.ones(3),), {})
        material = _artifacts.key_material(f, options, request.tree, request.key_function, request.key, "")
        return _artifacts.artifact_key(material), material

    here, material = key(CompileOptions(backend="inductor"))
    assert material["kernels"] == {
        "machine": material["kernels"]["machine"],
        "cpu_isa": list(_compat.cpu_isa_candidates()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    assert key(CompileOptions(backend="eager"))[1]["kernels"] is None  # no kernels, nothing foreign
    monkeypatch.setattr(_compat, "cpu_isa_candidates", lambda: ("avx10_2",))
    assert key(CompileOptions(backend="inductor"))[0] != here
    monkeypatch.undo()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert key(CompileOptions(backend="inductor"))[0] != here


def test_the_isa_candidates_do_not_run_or_cache_inductors_probe() -> None:
    import torch._inductor.cpu_vec_isa as isa

    _compat.cpu_isa_candidates.cache_clear()
    before = isa.valid_vec_isa_list.cache_info().currsize
    candidates = _compat.cpu_isa_candidates()
    assert isa.valid_vec_isa_list.cache_info().currsize == before
    assert all(isinstance(c, str) for c in candidates)


@pytest.mark.slow
def test_a_process_on_another_cpu_compiles_its_own_and_leaves_the_other(
    inductor_cache: tuple[pathlib.Path, dict[str, Any]], tmp_path: pathlib.Path
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(inductor_cache[0], cache)
    os.chmod(cache, 0o700)
    other = run_child(tmp_path, cache, tmp_path / "inductor", FAKE_ISA="avx10_2")
    assert (other["compiles"], other["loads"]) == (1, 0)
    assert other["first"] and other["in_place"] and other["reassigned"]
    assert len([p for p in cache.iterdir() if p.name.endswith(_artifacts.SUFFIX)]) == 2
    assert not [p for p in cache.iterdir() if p.name.endswith(".bad")]


# -- which graphs AOTInductor takes, and the fallback to inductor's own backend --------------------


class _Subclass(torch.Tensor):
    pass


def _graph(returns_tensor: bool = True) -> torch.fx.GraphModule:
    gm = torch.fx.symbolic_trace(lambda x: x * 2)
    (output,) = [n for n in gm.graph.nodes if n.op == "output"]
    output.args[0].meta["example_value"] = torch.ones(2) if returns_tensor else 3
    return gm


@pytest.mark.parametrize(
    ("inputs", "grad", "reason"),
    [
        ([torch.ones(2)], False, None),
        ([torch.ones(2), 3], False, "non-tensor inputs"),
        ([torch.ones(2, requires_grad=True)], True, "needs autograd"),
        ([torch.ones(2, requires_grad=True)], False, None),
        ([torch.ones(2, device="meta")], False, "on ['meta']"),
        ([torch.nn.Parameter(torch.ones(2))], False, None),
        ([torch.ones(2).as_subclass(_Subclass)], False, "tensor subclass"),
        ([], False, "takes no inputs"),
    ],
)
def test_what_aotinductor_takes(inputs: list[Any], grad: bool, reason: str | None) -> None:
    with torch.set_grad_enabled(grad):
        found = _kernels.not_taken(_graph(), inputs)
    assert found is None if reason is None else reason in str(found)


def test_a_graph_returning_non_tensors_is_not_taken() -> None:
    assert "returns something other than tensors" in str(_kernels.not_taken(_graph(False), [torch.ones(2)]))


def test_graphs_aotinductor_does_not_take_or_fails_on_go_to_inductors_backend(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[dict[str, Any] | None] = []

    def inductor(backend: str, mode: Any, options: dict[str, Any] | None) -> Any:
        made.append(options)
        return lambda gm, inputs: "inductor's own output"

    monkeypatch.setattr(_compat, "compile_backend", inductor)
    backend = _kernels.KernelBackend({"size_asserts": False})
    with torch.enable_grad():
        assert backend(_graph(), [torch.ones(2, requires_grad=True)]) == "inductor's own output"
    assert backend.outcome.startswith("inductor (the graph needs autograd")
    assert made == [{"size_asserts": False}]

    def failing(*args: Any) -> bytes:
        raise RuntimeError("no lowering for this op")

    monkeypatch.setattr(_compat, "aoti_package", failing)
    with caplog.at_level(logging.WARNING, logger="nocompile"):
        assert backend(_graph(), [torch.ones(2)]) == "inductor's own output"
    assert "AOTInductor failed: RuntimeError: no lowering" in caplog.text
    cudagraphs = _kernels.KernelBackend({}, cudagraphs=True)
    assert cudagraphs(_graph(), [torch.ones(2)]) == "inductor's own output"
    assert cudagraphs.outcome == "inductor (cudagraphs=True)"


@pytest.mark.parametrize(
    ("made_by", "says"),
    [
        ("aotinductor (avx512)", "AOTInductor (avx512), built into the artifact (a load compiles nothing)"),
        ("inductor (cudagraphs=True)", "inductor's own (cudagraphs=True): a load on an empty inductor cache"),
        ("eager", None),
        (None, None),
    ],
)
def test_explain_says_what_made_the_kernels(made_by: str | None, says: str | None) -> None:
    text = _explain._kernels_text(made_by)
    assert text == says if says is None else str(text).startswith(says)


def test_size_asserts_check_each_input_as_inductor_would() -> None:
    call = _kernels._call(lambda tensors: tensors, (((2, 3), (3, 1)),))
    call(torch.ones(2, 3))
    with pytest.raises(AssertionError):
        call(torch.ones(3, 2))
    unchecked = _kernels._call(lambda tensors: tensors, None)
    unchecked(torch.ones(3, 2))


# -- what the artifact does not carry: live closure values and modules Dynamo named ----------------


def _inner(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def test_closure_values_pickle_cannot_find_by_name_are_supplied_by_the_loading_process() -> None:
    @functools.wraps(_inner)
    def wrapper(x: torch.Tensor) -> torch.Tensor:  # wraps: its qualname is _inner's
        return _inner(x)

    def outer(x: torch.Tensor) -> torch.Tensor:
        return wrapped_inner(x) + plain(x)

    wrapped_inner, plain = _inner, wrapper
    values = _artifacts.external_values(outer)
    assert values == {"closure plain": wrapper}  # _inner is found by name; the wrapper is not


def test_modules_dynamo_installed_under_its_own_names_are_recorded_and_installed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["___module_json_1_c0"]
    monkeypatch.setattr(_compat, "aot_outside_names", lambda aot: names)
    assert _artifacts.outside_modules(None, {"___module_json_1_c0": json}) == {"___module_json_1_c0": "json"}
    names.append("___value_2_c0")
    with pytest.raises(ValueError, match="installed in this process only"):
        _artifacts.outside_modules(None, {"___module_json_1_c0": json, "___value_2_c0": 3})

    fresh: dict[str, Any] = {}
    _artifacts.install_outside_modules({"outside_modules": {"___module_json_1_c0": "json"}}, fresh)
    assert fresh == {"___module_json_1_c0": json}
    _artifacts.install_outside_modules({"outside_modules": {"___module_json_1_c0": "json"}}, fresh)  # already there
    with pytest.raises(BadArtifact, match="should be module 'json'"):
        _artifacts.install_outside_modules({"outside_modules": {"x": "json"}}, {"x": types.ModuleType("other")})


HF_CHILD = r"""
import json, os, sys, copy
import torch
torch.set_num_threads(1)
import transformers
from transformers import StaticCache
from nocompile import compile_once

torch.manual_seed(0)
config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=1, vocab_size=64, max_position_embeddings=32, eos_token_id=None)
model = transformers.LlamaForCausalLM(config).eval()
cache = StaticCache(config=config, max_cache_len=16)
cache.early_initialization(batch_size=1, num_heads=1, head_dim=16, dtype=torch.float32, device="cpu")
ids = torch.tensor([[3]])
kwargs = {"input_ids": ids, "attention_mask": torch.ones(1, 6, dtype=torch.long), "use_cache": True}
for layer in cache.layers:
    layer.cumulative_length.fill_(5)
import inspect
key = "past_key_values" if "past_key_values" in inspect.signature(model.forward).parameters else "cache"
step = compile_once(model.forward, backend="eager", cache_dir=os.environ["TEST_CACHE"])
with torch.no_grad():
    expected = model.forward(**kwargs, **{key: copy.deepcopy(cache)}).logits
    got = step(**kwargs, **{key: cache}).logits
print("RESULT " + json.dumps({"close": bool(torch.allclose(got, expected, atol=1e-5)),
                              "compiles": step.stats.compiles, "loads": step.stats.loads}))
"""


@pytest.mark.slow
def test_a_hugging_face_decode_step_saved_with_cache_dir_loads_in_the_next_process(tmp_path: pathlib.Path) -> None:
    """transformers' forward is a wrapper whose closure holds the real forward under the same name,
    and its output type makes Dynamo install ``collections`` under a name of its own: both used to
    make the artifact unsavable (PicklingError) or unloadable (missing external reference)."""
    pytest.importorskip("transformers")
    script = tmp_path / "hf_child.py"
    script.write_text(HF_CHILD)
    env = {**os.environ, "TEST_CACHE": str(tmp_path / "cache")}
    env.pop("NOCOMPILE_CACHE_DIR", None)
    results = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        results.append(json.loads(proc.stdout.split("RESULT ", 1)[1]))
        assert "could not save" not in proc.stderr and "unusable" not in proc.stderr, proc.stderr[-3000:]
    assert results == [
        {"close": True, "compiles": 1, "loads": 0},
        {"close": True, "compiles": 0, "loads": 1},
    ]
