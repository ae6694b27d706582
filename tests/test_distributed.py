"""Tensor parallelism over torch.distributed: collectives inside a compile_once forward, two ranks.

Each test starts two processes (``spawn``), one rank each, with ``gloo`` on CPU, or ``nccl`` on
two GPUs (those cases skip unless ``torch.cuda.device_count() >= 2``). The model is a
Megatron-style MLP: a column-parallel Linear (each rank holds half of the hidden features), GELU,
a row-parallel Linear (each rank holds the matching half of its inputs), an all-reduce of the
partial sums, then the bias. Its weights are built from a seed, so the parent process computes
the single-process reference from the full weights. The all-reduce is
``torch.distributed.all_reduce`` (in place, c10d) or ``_functional_collectives.all_reduce``;
Dynamo rewrites the first into the second, so both compile to one graph with
``_c10d_functional.all_reduce`` and ``wait_tensor`` in it.

Ranks write their results as JSON files into the test's tmp_path; the parent joins the
processes with a deadline and kills what is left, so a hang fails the test instead of the
suite. Spawning two interpreters costs several seconds, so one run of processes serves
several tests (module-scoped fixtures), as in ``test_persistence.py``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing
from torch import nn

from nocompile import GuardMismatchError, NoCompileError, compile_once

if not dist.is_available():  # pragma: no cover - torch builds without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

import torch.distributed._functional_collectives as funcol

WORLD = 2
WIDTH, HIDDEN, BATCH = 8, 16, 2
SEED = 0
CALLS = 3
#: How long a run of two processes may take before the parent kills it (spawn + import + compile).
RUN_DEADLINE = 120.0
#: The process-group timeout of the failing-rank test: what the healthy rank waits before erroring.
FAIL_TIMEOUT = 3.0

TWO_GPUS = dist.is_nccl_available() and torch.cuda.device_count() >= 2
GLOO = pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
NCCL = pytest.mark.skipif(not TWO_GPUS, reason="needs NCCL and two CUDA devices")
BACKENDS = [pytest.param("gloo", marks=GLOO), pytest.param("nccl", marks=NCCL)]


# -- the model, built the same way in every rank and in the parent -------------------------------


def full_weights(seed: int = SEED) -> dict[str, torch.Tensor]:
    """The unsharded MLP: up (HIDDEN x WIDTH) with bias, down (WIDTH x HIDDEN), output bias."""
    g = torch.Generator().manual_seed(seed)
    return {
        "w1": torch.randn(HIDDEN, WIDTH, generator=g) / WIDTH**0.5,
        "b1": torch.randn(HIDDEN, generator=g),
        "w2": torch.randn(WIDTH, HIDDEN, generator=g) / HIDDEN**0.5,
        "b2": torch.randn(WIDTH, generator=g),
    }


def make_input(rows: int = BATCH) -> torch.Tensor:
    return torch.randn(rows, WIDTH, generator=torch.Generator().manual_seed(1))


def reference(x: torch.Tensor, seed: int = SEED) -> torch.Tensor:
    """One process, full weights: what every rank must return."""
    w = full_weights(seed)
    out: torch.Tensor = nn.functional.gelu(x @ w["w1"].T + w["b1"]) @ w["w2"].T + w["b2"]
    return out


class ShardedMLP(nn.Module):
    """This rank's shard: rows of the up projection, the matching columns of the down projection."""

    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        super().__init__()
        w = full_weights()
        part = HIDDEN // world
        rows = slice(rank * part, (rank + 1) * part)
        self.up = nn.Linear(WIDTH, part)
        self.down = nn.Linear(part, WIDTH, bias=False)  # the bias is added once, after the reduce
        with torch.no_grad():
            self.up.weight.copy_(w["w1"][rows])
            self.up.bias.copy_(w["b1"][rows])
            self.down.weight.copy_(w["w2"][:, rows])
        self.register_buffer("bias", w["b2"].clone())
        self.to(device).eval()


def _c10d_forward(self: ShardedMLP, x: torch.Tensor) -> torch.Tensor:
    y = self.down(nn.functional.gelu(self.up(x)))
    dist.all_reduce(y)
    return y + self.bias


def _functional_forward(self: ShardedMLP, x: torch.Tensor) -> torch.Tensor:
    y = self.down(nn.functional.gelu(self.up(x)))
    return funcol.all_reduce(y, "sum", dist.group.WORLD) + self.bias


def _rank_offset_forward(self: ShardedMLP, x: torch.Tensor) -> torch.Tensor:
    y = self.down(nn.functional.gelu(self.up(x)))
    dist.all_reduce(y)
    return y + self.bias + dist.get_rank()  # Dynamo folds the rank into the graph as a constant


def _graph_break_forward(self: ShardedMLP, x: torch.Tensor) -> torch.Tensor:
    y = self.down(nn.functional.gelu(self.up(x)))
    if y.sum() > 0:  # data-dependent branch: a graph break, so compile_once raises NoCompileError
        y = y * 1
    dist.all_reduce(y)
    return y + self.bias


#: kind -> (forward, extra compile_once options)
KINDS: dict[str, tuple[Callable[..., torch.Tensor], dict[str, Any]]] = {
    "c10d": (_c10d_forward, {}),
    "functional": (_functional_forward, {}),
    "c10d_graphs": (_c10d_forward, {"cudagraphs": True}),
    "functional_graphs": (_functional_forward, {"cudagraphs": True}),
    "rank_offset": (_rank_offset_forward, {}),
    "graph_break": (_graph_break_forward, {}),
}


def make_model(kind: str, rank: int, world: int, device: torch.device, **options: Any) -> ShardedMLP:
    """A ShardedMLP subclass whose forward is ``compile_once(backend="eager", ...)`` of the kind's."""
    forward, extra = KINDS[kind]
    cls = type(f"TP_{kind}", (ShardedMLP,), {"forward": compile_once(backend="eager", **extra, **options)(forward)})
    model: ShardedMLP = cls(rank, world, device)
    return model


# -- what each rank runs -------------------------------------------------------------------------


def _scenario_calls(
    rank: int, world: int, device: torch.device, out_dir: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Per kind: CALLS calls, then one with another batch size, then the first shape again."""
    out: dict[str, Any] = {}
    x = make_input().to(device)
    for kind in params["kinds"]:
        model = make_model(kind, rank, world, device)
        with torch.no_grad():
            outputs = [model(x).clone().cpu().tolist() for _ in range(CALLS)]
            stats = model.forward.stats
            try:
                model(make_input(BATCH + 1).to(device))
                mismatch = None
            except GuardMismatchError as exc:
                mismatch = str(exc)
            after = model(x).clone().cpu().tolist()  # both ranks still in step: nothing half-ran
        out[kind] = {
            "outputs": outputs,
            "compiles": stats.compiles,
            "calls": stats.calls,
            "mismatch": mismatch,
            "after_mismatch": after,
            "compiles_after": model.forward.stats.compiles,
        }
    return out


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _scenario_cache(
    rank: int, world: int, device: torch.device, out_dir: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Per kind: a model with ``cache_dir`` (one directory for every rank, or one per rank)."""
    records = _Records()
    logging.getLogger("nocompile").addHandler(records)
    out: dict[str, Any] = {}
    x = make_input().to(device)
    for name, kind, per_rank in params["models"]:
        cache = pathlib.Path(params["cache"]) / (f"rank{rank}" if per_rank else "shared")
        model = make_model(kind, rank, world, device, cache_dir=str(cache))
        with torch.no_grad():
            outputs = [model(x).clone().cpu().tolist() for _ in range(CALLS)]
        stats = model.forward.stats
        out[name] = {"outputs": outputs, "compiles": stats.compiles, "loads": stats.loads}
    out["warnings"] = records.messages
    return out


def _scenario_fail(rank: int, world: int, device: torch.device, out_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """Rank 1's forward has a graph break; rank 0's is fine and enters the all-reduce alone.

    Rank 1 stays alive (it caught the error) until the parent says rank 0 has ended, so rank 0
    can only be freed by the process group's timeout, not by a closed connection. With NCCL the
    watchdog aborts rank 0 (SIGABRT): no core file for that, please.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    model = make_model("c10d" if rank == 0 else "graph_break", rank, world, device)
    x = make_input().to(device)
    (pathlib.Path(out_dir) / f"calling{rank}").write_text(repr(time.time()))
    started = time.monotonic()
    out: dict[str, Any] = {}
    try:
        with torch.no_grad():
            out["output"] = model(x).cpu().tolist()  # .cpu() waits for the collective (NCCL is async)
        out["error_type"] = None
    except Exception as exc:
        out["error_type"] = type(exc).__name__
        out["error_mro"] = [c.__name__ for c in type(exc).__mro__]
        out["error"] = str(exc)[:2000]
        out["is_no_compile_error"] = isinstance(exc, NoCompileError)
    out["seconds"] = time.monotonic() - started
    _write_result(out_dir, rank, {"rank": rank, "fail": out})  # rank 0's file tells the parent it is done
    if rank == 1:
        release = pathlib.Path(out_dir) / "release"
        deadline = time.monotonic() + RUN_DEADLINE
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return out


SCENARIOS: dict[str, Callable[[int, int, torch.device, str, dict[str, Any]], dict[str, Any]]] = {
    "calls": _scenario_calls,
    "cache": _scenario_cache,
    "fail": _scenario_fail,
}


def _write_result(out_dir: str, rank: int, result: dict[str, Any]) -> None:
    path = pathlib.Path(out_dir) / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def _wait_for_files(paths: list[pathlib.Path], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every rank got ready: {[str(p) for p in paths if not p.exists()]}")
        time.sleep(0.02)


def rank_main(
    rank: int, world: int, port: int, backend: str, scenarios: list[str], out_dir: str, params: dict[str, Any]
) -> None:
    """One rank: set up the process group, run the scenarios in order, write ``rank<N>.json``.

    Module-level so that ``spawn`` can pickle it. Ranks first wait for each other's ready file,
    so a slow interpreter start never eats into a short process-group timeout.
    """
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ready = pathlib.Path(out_dir) / f"ready{rank}"
    ready.touch()
    _wait_for_files([pathlib.Path(out_dir) / f"ready{r}" for r in range(world)], RUN_DEADLINE)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=params.get("timeout", 60.0)),
    )
    # One collective before anything is compiled: NCCL sets up its communicator lazily, at the
    # first collective, and a CUDA graph must not be the first to use it.
    dist.all_reduce(torch.zeros(1, device=device))
    result: dict[str, Any] = {"rank": rank}
    try:
        for scenario in scenarios:
            result[scenario] = SCENARIOS[scenario](rank, world, device, out_dir, params)
    except BaseException:
        result["unexpected"] = traceback.format_exc()
    if "fail" not in scenarios or "unexpected" in result:  # "fail" writes its own, before waiting
        _write_result(out_dir, rank, result)
    # No destroy_process_group(): os._exit ends the process. (With NCCL, after CUDA graphs that
    # captured collectives, destroy_process_group() hung on torch 2.11: docs/distributed.md.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # also skips the interpreter's teardown of torch: seconds per process on this machine


# -- the parent's side -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Run:
    """The outcome of one run of WORLD processes."""

    def __init__(
        self, results: list[dict[str, Any] | None], exitcodes: list[int | None], ended: list[float | None]
    ) -> None:
        self.results = results
        self.exitcodes = exitcodes
        self.ended = ended  # time.time() when the parent saw each process end (None: killed)

    def ok(self) -> list[dict[str, Any]]:
        """Every rank's result; fails the test if a rank crashed, hung or raised unexpectedly."""
        for rank, (result, code) in enumerate(zip(self.results, self.exitcodes, strict=True)):
            assert code == 0 and result is not None, f"rank {rank}: exit code {code}, result {result}"
            assert "unexpected" not in result, f"rank {rank}:\n{result['unexpected']}"
        return [r for r in self.results if r is not None]


def run_ranks(backend: str, scenarios: list[str], out_dir: pathlib.Path, **params: Any) -> Run:
    """Start WORLD spawned processes running ``rank_main``; join them within RUN_DEADLINE."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = torch.multiprocessing.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=rank_main, args=(rank, WORLD, port, backend, scenarios, str(out_dir), params))
        for rank in range(WORLD)
    ]
    ended: list[float | None] = []
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + RUN_DEADLINE
        for rank, p in enumerate(procs):
            p.join(max(0.0, deadline - time.monotonic()))
            ended.append(None if p.is_alive() else time.time())
            if rank == 0:
                (out_dir / "release").touch()  # the failing-rank scenario: rank 1 may go now
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    results: list[dict[str, Any] | None] = []
    for rank in range(WORLD):
        path = out_dir / f"rank{rank}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return Run(results, [p.exitcode for p in procs], ended)


def kinds_for(backend: str) -> list[str]:
    graphs = ["c10d_graphs", "functional_graphs"] if backend == "nccl" else []
    return ["c10d", "functional", *graphs]


#: The cache scenario's models: (name, kind, one cache directory per rank instead of a shared one).
CACHE_MODELS = [
    ("c10d", "c10d", False),
    ("functional", "functional", False),
    ("rank_offset", "rank_offset", False),
    ("rank_offset_per_rank_dir", "rank_offset", True),
]


class Runs:
    """Per backend, started when a test first asks: a first run of two processes (the calls of
    (a) and (b), then the cache scenario compiling and saving), and a second run that loads."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self._first: dict[str, list[dict[str, Any]]] = {}
        self._files: dict[str, dict[str, list[str]]] = {}
        self._second: dict[str, list[dict[str, Any]]] = {}

    def cache(self, backend: str) -> pathlib.Path:
        return self.tmp / backend / "cache"

    def first(self, backend: str) -> list[dict[str, Any]]:
        if backend not in self._first:
            params = {"kinds": kinds_for(backend), "cache": str(self.cache(backend)), "models": CACHE_MODELS}
            run = run_ranks(backend, ["calls", "cache"], self.tmp / backend / "first", **params)
            self._first[backend] = run.ok()
            self._files[backend] = {d.name: sorted(p.name for p in d.iterdir()) for d in self.cache(backend).iterdir()}
        return self._first[backend]

    def files_after_first(self, backend: str) -> dict[str, list[str]]:
        """Cache subdirectory ("shared", "rank0", "rank1") -> file names, right after the first run."""
        self.first(backend)
        return self._files[backend]

    def second(self, backend: str) -> list[dict[str, Any]]:
        self.first(backend)
        if backend not in self._second:
            params = {"cache": str(self.cache(backend)), "models": CACHE_MODELS}
            self._second[backend] = run_ranks(backend, ["cache"], self.tmp / backend / "second", **params).ok()
        return self._second[backend]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"))


CASES = [
    pytest.param("gloo", "c10d", marks=GLOO, id="gloo-c10d"),
    pytest.param("gloo", "functional", marks=GLOO, id="gloo-functional"),
    pytest.param("nccl", "c10d", marks=NCCL, id="nccl-c10d"),
    pytest.param("nccl", "functional", marks=NCCL, id="nccl-functional"),
    pytest.param("nccl", "c10d_graphs", marks=NCCL, id="nccl-c10d-cudagraphs"),
    pytest.param("nccl", "functional_graphs", marks=NCCL, id="nccl-functional-cudagraphs"),
]


def assert_matches_reference(output: list[list[float]], expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(torch.tensor(output), expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")


def named(files: list[str], function: str) -> list[str]:
    """The artifacts of one forward function among ``files``."""
    return [n for n in files if n.endswith(".nocompile") and f".{function}-" in n]


# -- (a) results and compile counts ---------------------------------------------------------------


@pytest.mark.parametrize(("backend", "kind"), CASES)
def test_every_rank_returns_the_single_process_result_from_one_compile(runs: Runs, backend: str, kind: str) -> None:
    """The collective runs inside the compiled graph: each rank holds half the weights, and each
    returns what one process computes with all of them, from one compile per rank."""
    expected = reference(make_input())
    for result in runs.first(backend):
        mine = result["calls"][kind]
        for i, output in enumerate(mine["outputs"]):
            assert_matches_reference(output, expected, f"rank {result['rank']}, call {i + 1}")
        assert (mine["compiles"], mine["calls"]) == (1, CALLS), result["rank"]


# -- (b) a call outside the compiled signature ------------------------------------------------------


@pytest.mark.parametrize(("backend", "kind"), CASES)
def test_another_shape_is_the_same_guard_mismatch_on_every_rank(runs: Runs, backend: str, kind: str) -> None:
    """The check runs before the compiled code, so a rank that raises has not entered a
    collective: when every rank makes the same wrong call, every rank raises and none is left
    waiting. The next call with the compiled shape still works on both (no recompile)."""
    expected = reference(make_input())
    results = runs.first(backend)
    for result in results:
        mine = result["calls"][kind]
        assert mine["mismatch"] is not None, f"rank {result['rank']} did not raise"
        assert f"x: shape compiled for ({BATCH}, {WIDTH}), got ({BATCH + 1}, {WIDTH})" in mine["mismatch"]
        assert_matches_reference(mine["after_mismatch"], expected, f"rank {result['rank']} after the error")
        assert mine["compiles_after"] == 1
    assert len({r["calls"][kind]["mismatch"] for r in results}) == 1  # the same message on every rank


# -- (c) cache_dir shared by the ranks ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_cache_dir_first_run_compiles_and_saves(runs: Runs, backend: str) -> None:
    """Graphs with collectives save through Dynamo's ahead-of-time path like any other.

    The key holds the rank and the world size when ``torch.distributed`` is initialised: one
    file per rank, also with gloo, where both ranks are on the CPU with same-shaped shards.
    """
    files = runs.files_after_first(backend)["shared"]
    expected = reference(make_input())
    per_key = WORLD
    for function in ("_c10d_forward", "_functional_forward", "_rank_offset_forward"):
        assert len(named(files, function)) == per_key, files
    assert len(files) == 3 * per_key  # nothing else: no temporary files, nothing set aside as *.bad
    for result in runs.first(backend):
        cache = result["cache"]
        assert cache["warnings"] == [], cache["warnings"]  # no "ahead-of-time compile failed" fallback
        for name in ("c10d", "functional"):
            assert (cache[name]["compiles"], cache[name]["loads"]) == (1, 0)
            for output in cache[name]["outputs"]:
                assert_matches_reference(output, expected, f"rank {result['rank']} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_cache_dir_second_run_loads_on_every_rank(runs: Runs, backend: str) -> None:
    """New processes load the artifacts instead of compiling, and still agree with the reference
    (the weights are graph inputs, not constants, so a shard's graph saved by another rank is fine)."""
    expected = reference(make_input())
    for result in runs.second(backend):
        cache = result["cache"]
        assert cache["warnings"] == [], cache["warnings"]
        for name in ("c10d", "functional"):
            assert (cache[name]["compiles"], cache[name]["loads"]) == (0, 1), (result["rank"], name)
            for output in cache[name]["outputs"]:
                assert_matches_reference(output, expected, f"rank {result['rank']} {name}, loaded")
    assert (
        sorted(p.name for p in (runs.cache(backend) / "shared").iterdir()) == runs.files_after_first(backend)["shared"]
    )


@GLOO
def test_rank_read_in_forward_gets_one_artifact_per_rank_on_cpu(runs: Runs) -> None:
    """``dist.get_rank()`` in the forward is a constant in the graph. The artifact key holds the
    rank, so with gloo, where both ranks share the CPU and the shapes, each rank still saves and
    loads its own graph and returns its own result (a separate directory per rank works too)."""
    expected = reference(make_input())
    for result in runs.first("gloo"):  # compiled in-process: each rank's own rank is in its graph
        mine = result["cache"]["rank_offset"]
        assert_matches_reference(mine["outputs"][-1], expected + result["rank"], "first run")
    assert len(named(runs.files_after_first("gloo")["shared"], "_rank_offset_forward")) == WORLD
    for result in runs.second("gloo"):
        for name in ("rank_offset", "rank_offset_per_rank_dir"):
            mine = result["cache"][name]
            assert (mine["compiles"], mine["loads"]) == (0, 1), (result["rank"], name)
            assert_matches_reference(mine["outputs"][-1], expected + result["rank"], f"{name}, loaded")
    files = runs.files_after_first("gloo")
    assert sorted(files) == ["rank0", "rank1", "shared"]
    assert [len(named(files[f"rank{r}"], "_rank_offset_forward")) for r in range(WORLD)] == [1, 1]


@NCCL
def test_rank_read_in_forward_gets_one_artifact_per_device_on_gpus(runs: Runs) -> None:
    """With one GPU per rank the keys differ (rank and device): each rank loads its own graph."""
    expected = reference(make_input())
    assert len(named(runs.files_after_first("nccl")["shared"], "_rank_offset_forward")) == WORLD
    for result in runs.second("nccl"):
        mine = result["cache"]["rank_offset"]
        assert mine["loads"] == 1
        assert_matches_reference(mine["outputs"][-1], expected + result["rank"], "loaded")


# -- (d) a rank that fails to compile ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rank_failing_to_compile_leaves_the_other_to_the_process_group_timeout(
    tmp_path: pathlib.Path, backend: str
) -> None:
    """compile_once cannot tell the other ranks that this one failed: rank 1 raises
    NoCompileError (graph break) before its collective, rank 0 compiles fine and waits in the
    all-reduce. The process group's timeout is what frees it, about FAIL_TIMEOUT seconds later:
    with gloo the call raises RuntimeError ("Timed out ..."); with NCCL the collective is
    asynchronous, the call returns, and the watchdog aborts the process (SIGABRT,
    DistBackendError "Watchdog caught collective operation timeout") while it waits for the
    result, a minute later (its debug dump). Bounded either way: keep the timeout finite."""
    started = time.monotonic()
    run = run_ranks(backend, ["fail"], tmp_path, timeout=FAIL_TIMEOUT)
    elapsed = time.monotonic() - started
    healthy, failing = (r["fail"] if r is not None else None for r in run.results)
    assert failing is not None and failing["is_no_compile_error"], failing
    assert "Data-dependent branching" in failing["error"]
    assert failing["seconds"] < FAIL_TIMEOUT  # it failed while tracing, before any collective
    if backend == "gloo":
        assert healthy is not None and healthy["error_type"] is not None, healthy
        assert "RuntimeError" in healthy["error_mro"]
        assert "timed out" in healthy["error"].lower(), healthy["error"]
        assert FAIL_TIMEOUT * 0.9 <= healthy["seconds"] < FAIL_TIMEOUT + 15, healthy["seconds"]
        assert run.exitcodes == [0, 0]
    else:
        assert healthy is None and run.exitcodes[0] == -signal.SIGABRT, (healthy, run.exitcodes)
        called = float((tmp_path / "calling0").read_text())
        ended = run.ended[0]
        # torch 2.11, NCCL 2.28: the watchdog saw the timeout after 3.1 s, then waited 60 s for its
        # debug-info dump (flight recorder) before taking the process down: 63.5 s in all.
        assert ended is not None and FAIL_TIMEOUT * 0.9 <= ended - called < FAIL_TIMEOUT + 80, ended - called
    assert elapsed < RUN_DEADLINE - 10, elapsed  # ended by the timeout, not by the parent's kill
