"""``python -m nocompile bench``: every way of calling the reference model, side by side.

All rows run in one process on the same weights and the same input, interleaved round by round
so that a noisy neighbour slows every row alike. Each row's figure is the median over rounds of
the mean microseconds per call within a round; the ratio is to the floor row, the compiled graph
callable called directly with the flat inputs the transformed bytecode would pass it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import torch

from . import _native_checks
from ._compiler import DIRECT_PREFIX
from ._decorator import compile_once
from ._reference import LayerStack, ReferenceMLP, sequential_mlp
from ._state import CompileState

Call = Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    layers: int = 4
    width: int = 16
    batch: int = 1
    device: str = "cpu"
    backend: str = "inductor"
    rounds: int = 7
    round_seconds: float = 0.05
    threads: int = 1
    dtype: str = "float32"
    rows: str = "all"
    """``"all"``, or ``"graphs"``: only the rows that matter on a GPU (bytecode, CUDA graphs, floors)."""
    aoti: bool = False
    """Also build an AOTInductor package and time its C++ runner (a C++ compile: minutes)."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)  # type: ignore[no-any-return]

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclasses.dataclass
class Row:
    name: str
    call: Call
    note: str = ""
    samples: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)


def _decorated_model(base: ReferenceMLP, label: str, **options: Any) -> ReferenceMLP:
    """A ReferenceMLP whose class has ``compile_once(**options)`` on ``forward``, same weights."""
    cls = type(
        f"ReferenceMLP_{label}",
        (ReferenceMLP,),
        {"forward": compile_once(**options)(ReferenceMLP.forward)},
    )
    width = base.norm.normalized_shape[0]
    model: ReferenceMLP = cls(width=width, layers=len(base.layers))
    model.load_state_dict(base.state_dict())
    reference = next(base.parameters())
    model.to(device=reference.device, dtype=reference.dtype).eval()
    return model


def graph_floor(model: ReferenceMLP, x: torch.Tensor) -> Call:
    """A call of the compiled graph alone, with the exact flat inputs the bytecode passes it.

    Runs the model's captured bytecode once with the ``__compiled_fn_*`` global it loads
    swapped for a recorder, then calls the real graph callable with what was recorded.
    """
    state = model.forward.__func__.state  # type: ignore[attr-defined]
    if not isinstance(state, CompileState) or not state.specializations:
        raise RuntimeError("graph_floor needs a compiled compile_once model")
    spec = state.specializations[0]
    code = spec.transformed_code
    if code is None:
        raise RuntimeError("graph_floor needs the captured bytecode")
    names = [n for n in code.co_names if n.startswith("__compiled_fn")]
    if len(names) != 1:
        raise RuntimeError(f"expected one compiled graph in the transformed code, found {names}")
    namespace = state.function.__globals__
    graph = namespace[names[0]]
    # What the specialization's bytecode loads: the same global, or nocompile's direct call of
    # that graph (``_compiler.bytecode_function``). The floor is Dynamo's callable either way.
    called = getattr(spec.call, "__code__", code).co_names
    loaded = next(n for n in called if n == names[0] or n.startswith(DIRECT_PREFIX))
    target = namespace[loaded]
    recorded: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recorder(*args: Any, **kwargs: Any) -> Any:
        recorded.append((args, kwargs))
        return target(*args, **kwargs)

    namespace[loaded] = recorder
    try:
        spec.call(model, x)
    finally:
        namespace[loaded] = target
    args, kwargs = recorded[0]
    return lambda: graph(*args, **kwargs)


def build_rows(cfg: BenchConfig) -> tuple[list[Row], Row]:
    """The rows to time and the floor row. Compiles everything once before returning."""
    torch.manual_seed(0)
    device = torch.device(cfg.device)
    dtype = cfg.torch_dtype
    base = ReferenceMLP(cfg.width, cfg.layers).to(device=device, dtype=dtype).eval()
    x = torch.randn(cfg.batch, cfg.width, device=device, dtype=dtype)

    def copy_of_base() -> ReferenceMLP:
        model = ReferenceMLP(cfg.width, cfg.layers).to(device=device, dtype=dtype).eval()
        model.load_state_dict(base.state_dict())
        return model

    if cfg.rows == "graphs":
        return _graph_rows(cfg, base, x, copy_of_base)

    stock = torch.compile(copy_of_base(), backend=cfg.backend)
    # A class of its own, on its own copy of forward's code: Dynamo caches per code object, and on
    # the stock row's code the filtered compile would sit behind the guarded entry.
    unguarded = torch.compile(
        _own_forward_copy(copy_of_base(), "unguarded"),
        backend=cfg.backend,
        options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe},
    )
    ahead = _aot_compiled(copy_of_base(), x, cfg.backend)
    once = {
        policy: _decorated_model(base, policy, backend=cfg.backend, guards=policy)
        for policy in ("none", "inputs", "dynamo")
    }
    via_dynamo = _decorated_model(base, "none_dynamo", backend=cfg.backend, guards="none", dispatch="dynamo")
    torch.manual_seed(0)
    sequential = sequential_mlp(cfg.width, cfg.layers).to(device=device, dtype=dtype).eval()
    sequential_once = compile_once(sequential, backend=cfg.backend)
    stack_class = type(
        "LayerStack_inputs", (LayerStack,), {"forward": compile_once(backend=cfg.backend)(LayerStack.forward)}
    )
    stack = stack_class(sequential)

    rows = [
        Row("eager module", lambda: base(x)),
        Row("torch.compile (guards on)", lambda: stock(x)),
        Row("torch.compile, every guard filtered", lambda: unguarded(x)),
        Row('compile_once(guards="dynamo")', lambda: once["dynamo"](x), "Dynamo's guards, no frame hook"),
        Row('compile_once(guards="none", dispatch="dynamo")', lambda: via_dynamo(x), "Dynamo's entry, no guards"),
        Row('compile_once(guards="inputs")', lambda: once["inputs"](x), "default policy"),
        Row('compile_once(guards="none")', lambda: once["none"](x), "captured bytecode"),
        Row("compile_once(nn.Sequential(...))", lambda: sequential_once(x), "no residual: a forward of torch's own"),
        Row("the same layers, forward decorated", lambda: stack(x), "twin of the Sequential row, class-decorated"),
    ]
    if ahead is not None:
        rows.insert(3, Row("torch.compile(...).aot_compile(...), guard check off", ahead, "torch's own"))
    with torch.no_grad():
        for row in rows:  # compile and warm up every row before anything is timed
            for _ in range(3):
                row.call()
        floor = Row("compiled graph called directly (floor)", graph_floor(once["none"], x))
        if cfg.backend == "inductor":  # guards="inputs" compiles with size_asserts=False
            rows.append(
                Row(
                    "compiled graph directly, no size asserts", graph_floor(once["inputs"], x), "the inputs row's graph"
                )
            )
    if cfg.aoti and cfg.backend == "inductor":
        rows += _aoti_rows(base, x)
    if cfg.on_cuda:
        rows += _cuda_rows(cfg, base, x, copy_of_base, floor)
    return rows, floor


def _own_forward_copy(model: ReferenceMLP, label: str) -> ReferenceMLP:
    """``model`` moved into a subclass whose ``forward`` runs on a copy of the code object."""
    forward = ReferenceMLP.forward
    copy = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__, forward.__defaults__)
    model.__class__ = type(f"ReferenceMLP_{label}", (ReferenceMLP,), {"forward": copy})
    return model


def _aot_compiled(model: ReferenceMLP, x: torch.Tensor, backend: str) -> Call | None:
    """``torch.compile(forward).aot_compile(...)`` with its guard check turned off, or None where
    this torch has no ahead-of-time path."""
    from . import _compat

    if _compat.aot_available() is not None:
        return None
    forward: Any = type(model).forward
    aot = _compat.aot_compile(forward, {"backend": backend}, (model, x), {})
    aot.disable_guard_check()
    return functools.partial(aot, model, x)


def _aoti_rows(base: ReferenceMLP, x: torch.Tensor) -> list[Row]:
    """AOTInductor: the model exported and compiled into a package, its kernels run from C++."""
    import tempfile

    from . import _compat

    try:
        with tempfile.TemporaryDirectory() as folder:
            runner = _compat.aoti_runner(base, x, os.path.join(folder, "model.pt2"))
    except Exception as exc:  # a C++ toolchain is needed to build the package
        print(f"(AOTInductor row skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return []
    with torch.no_grad():
        for _ in range(3):
            runner()
    return [Row("AOTInductor, kernels run from C++", runner, "no Python per call; exported graph")]


def _graph_rows(
    cfg: BenchConfig, base: ReferenceMLP, x: torch.Tensor, copy_of_base: Callable[[], ReferenceMLP]
) -> tuple[list[Row], Row]:
    """The short list (``rows="graphs"``): eager, the captured bytecode, and the CUDA-graph rows."""
    bytecode = _decorated_model(base, "none", backend=cfg.backend, guards="none")
    rows = [
        Row("eager module", lambda: base(x)),
        Row('compile_once(guards="none")', lambda: bytecode(x), "captured bytecode"),
    ]
    with torch.no_grad():
        for row in rows:
            for _ in range(3):
                row.call()
        floor = Row("compiled graph called directly (floor)", graph_floor(bytecode, x))
    if cfg.on_cuda:
        rows += _cuda_rows(cfg, base, x, copy_of_base, floor)
    return rows, floor


def _cuda_rows(
    cfg: BenchConfig, base: ReferenceMLP, x: torch.Tensor, copy_of_base: Callable[[], ReferenceMLP], floor: Row
) -> list[Row]:
    """CUDA only: reduce-overhead, compile_once(cudagraphs=True), and a bare graph replay (floor).

    The bare replay is the compiled floor call captured once into a ``torch.cuda.CUDAGraph``:
    replaying it does the same GPU work with no input copy and no Python around it.
    """
    graphed = {
        policy: _decorated_model(base, f"graphs_{policy}", backend=cfg.backend, guards=policy, cudagraphs=True)
        for policy in ("none", "inputs")
    }
    rows = []
    if cfg.backend == "inductor":
        overhead = torch.compile(copy_of_base(), mode="reduce-overhead")
        rows.append(Row('torch.compile(mode="reduce-overhead")', lambda: overhead(x), "inductor's CUDA graphs"))
    rows += [
        Row('compile_once(cudagraphs=True, guards="none")', lambda: graphed["none"](x), "copy-in + replay"),
        Row("compile_once(cudagraphs=True)", lambda: graphed["inputs"](x), 'guards="inputs" check + copy-in + replay'),
    ]
    with torch.no_grad():
        for row in rows:  # compile, capture, warm up
            for _ in range(3):
                row.call()
        rows.append(Row(REPLAY_ROW, bare_replay(floor.call), "no copy, no Python around it"))
    torch.cuda.synchronize()
    return rows


REPLAY_ROW = "bare CUDA graph replay (floor)"


def bare_replay(call: Call) -> Call:
    """``call`` captured once into a CUDA graph (after a side-stream warm-up); returns the replay."""
    new_stream: Callable[..., Any] = torch.cuda.Stream  # an unannotated class in torch's stubs
    side = new_stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def _first_plus_one(*tensors: torch.Tensor) -> torch.Tensor:
    return tensors[0] + 1


def check_cost_rows(cfg: BenchConfig, counts: tuple[int, ...] = (1, 4, 16)) -> list[tuple[int, Row, Row]]:
    """For n tensor arguments: the same tiny function under guards="none" and guards="inputs".

    The difference between the two is what the input check costs per call.
    """
    device = torch.device(cfg.device)
    pairs = []
    for n in counts:
        tensors = [torch.randn(2, 4, device=device) for _ in range(n)]
        unchecked = compile_once(backend="eager", guards="none")(_first_plus_one)
        checked = compile_once(backend="eager", guards="inputs")(_first_plus_one)
        with torch.no_grad():
            for f in (unchecked, checked):
                f(*tensors)
                f(*tensors)
        pairs.append(
            (
                n,
                Row(f'{n} tensor(s), guards="none"', functools.partial(unchecked, *tensors)),
                Row(f'{n} tensor(s), guards="inputs"', functools.partial(checked, *tensors)),
            )
        )
    return pairs


def _loops_for(call: Call, seconds: float, sync: Callable[[], None]) -> int:
    """How many calls fill about ``seconds``."""
    n = 1
    while True:
        started = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 4 or n >= 1 << 20:
            return max(1, int(n * seconds / max(elapsed, 1e-9)))
        n *= 4


def measure(rows: list[Row], cfg: BenchConfig) -> None:
    """Fill each row's ``samples`` with per-call microseconds, one sample per round."""
    sync: Callable[[], None] = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        loops = [_loops_for(row.call, cfg.round_seconds, sync) for row in rows]
        for _ in range(cfg.rounds):
            for row, n in zip(rows, loops, strict=True):
                call = row.call
                sync()
                started = time.perf_counter()
                for _ in range(n):
                    call()
                sync()
                row.samples.append((time.perf_counter() - started) / n * 1e6)


def environment(cfg: BenchConfig) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": cfg.device if not cfg.device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        # nocompile's C item loop (README: set-up): whether the argument objects' check uses it here.
        "c_extension": _native_checks.NATIVE is not None,
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    rows, floor = build_rows(cfg)
    checks = check_cost_rows(cfg) if cfg.rows == "all" else []
    measure([*rows, floor, *(r for _, a, b in checks for r in (a, b))], cfg)
    replay = next((r for r in rows if r.name == REPLAY_ROW), None)
    return {
        "check_cost": [
            {
                "tensors": n,
                "none_us": unchecked.median_us,
                "inputs_us": checked.median_us,
                "check_us": checked.median_us - unchecked.median_us,
            }
            for n, unchecked, checked in checks
        ],
        "config": dataclasses.asdict(cfg),
        "environment": environment(cfg),
        "rows": [
            {
                "name": row.name,
                "us_per_call": row.median_us,
                "x_floor": row.median_us / floor.median_us,
                "x_replay": row.median_us / replay.median_us if replay is not None else None,
                "samples_us": row.samples,
                "note": row.note,
            }
            for row in [*rows, floor]
        ],
    }


def format_table(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    lines = [
        f"nocompile bench: reference MLP, {cfg['layers']} layers, width {cfg['width']}, "
        f"batch {cfg['batch']}, {cfg.get('dtype', 'float32')}, backend {cfg['backend']!r}, torch.no_grad()",
        f"torch {env['torch']}, Python {env['python']}, {env['device']}, {env['threads']} thread(s), "
        f"C extension {'on' if env.get('c_extension') else 'off'}; median of {cfg['rounds']} interleaved rounds",
        "",
    ]
    name_width = max(len(r["name"]) for r in result["rows"])
    replay = any(r.get("x_replay") is not None for r in result["rows"])
    extra = f"  {'x replay':>8}" if replay else ""
    lines.append(f"{'way of calling':<{name_width}}  {'us/call':>9}  {'x floor':>8}{extra}  note")
    lines.append(f"{'-' * name_width}  {'-' * 9}  {'-' * 8}{'  ' + '-' * 8 if replay else ''}  ----")
    for r in result["rows"]:
        ratio = f"  {r['x_replay']:>8.2f}" if replay else ""
        lines.append(f"{r['name']:<{name_width}}  {r['us_per_call']:>9.2f}  {r['x_floor']:>8.2f}{ratio}  {r['note']}")
    if not result["check_cost"]:
        return "\n".join(lines)
    lines += [
        "",
        'cost of the guards="inputs" check: f(*tensors) -> tensors[0] + 1, backend "eager"',
        f"{'tensor args':>11}  {'none us':>9}  {'inputs us':>9}  {'check us':>9}",
    ]
    for c in result["check_cost"]:
        lines.append(f"{c['tensors']:>11}  {c['none_us']:>9.2f}  {c['inputs_us']:>9.2f}  {c['check_us']:>9.2f}")
    return "\n".join(lines)


def main(cfg: BenchConfig, as_json: bool) -> int:
    result = run(cfg)
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(result))
    return 0
