"""A tensor-parallel MLP over torch.distributed, every way of calling it, side by side.

    torchrun --nproc_per_node=N scripts/distributed_bench.py [--width 1024 --layers 4 --dtype float32]
        [--batch 1] [--backend inductor] [--rounds 7] [--round-seconds 0.05] [--json]

Each of ``--layers`` residual blocks is a Megatron-style MLP split over the N ranks: a
column-parallel Linear (width -> 4*width/N), GELU, a row-parallel Linear (4*width/N -> width),
an all-reduce of the partial sums, the bias. Two columns: the all-reduce written as
``torch.distributed.all_reduce(y)`` (in place, c10d) or as
``torch.distributed._functional_collectives.all_reduce(y, "sum", group)``. Rows:

* eager;
* ``torch.compile`` (guards on);
* ``torch.compile(mode="reduce-overhead")`` (CUDA only; inductor's CUDA graphs);
* ``compile_once(guards="none")``: the captured bytecode;
* ``compile_once(cudagraphs=True)`` (CUDA only; ``guards="inputs"``, copy-in + replay);
* the compiled graph called directly with the flat inputs the bytecode passes it
  (``nocompile._bench.graph_floor``): the floor on the CPU;
* a bare ``CUDAGraph.replay()`` of that same call (``nocompile._bench.bare_replay``): the floor
  on CUDA (no input copy, no Python around it).

NCCL with one GPU per local rank when there are enough GPUs, else gloo on the CPU (where the
CUDA-graph rows are left out, so that this runs as a smoke test anywhere). Like ``python -m
nocompile bench``, all rows run in one process per rank on the same weights and input, interleaved
round by round; a figure is the median over rounds of the mean microseconds per call within a
round, taking in each round the slowest rank (a step costs what its slowest rank costs). Every
rank makes the same calls in the same order, and the number of calls per round is agreed by all
ranks (all-reduce of the calibration times), so no collective is left unmatched. "ref" says
whether the row's output equals the single-process result computed from the full weights
(relative error below 1e-4 in float32, 2e-2 in half precision) on every rank. Printed by rank 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn

from nocompile import compile_once
from nocompile._bench import bare_replay, graph_floor

Call = Callable[[], Any]

VARIANTS = ("dist.all_reduce", "functional all_reduce")
REPLAY_ROW = "bare CUDA-graph replay (floor)"
DIRECT_ROW = "compiled graph called directly"


def full_weights(width: int, hidden: int, layers: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "up": torch.randn(hidden, width, generator=g) / width**0.5,
            "up_bias": torch.randn(hidden, generator=g) * 0.1,
            "down": torch.randn(width, hidden, generator=g) / hidden**0.5,
            "down_bias": torch.randn(width, generator=g) * 0.1,
        }
        for _ in range(layers)
    ]


def reference(weights: list[dict[str, torch.Tensor]], x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One process, all the weights, float64 (weights and input first rounded to ``dtype``)."""
    x = x.to(dtype).double()
    for w in weights:
        w = {k: v.to(dtype).double() for k, v in w.items()}
        x = x + nn.functional.gelu(x @ w["up"].T + w["up_bias"]) @ w["down"].T + w["down_bias"]
    return x


class Block(nn.Module):
    def __init__(self, w: dict[str, torch.Tensor], rank: int, world: int) -> None:
        super().__init__()
        hidden, width = w["up"].shape
        part = hidden // world
        mine = slice(rank * part, (rank + 1) * part)
        self.up = nn.Linear(width, part)
        self.down = nn.Linear(part, width, bias=False)
        self.register_buffer("bias", w["down_bias"].clone())
        with torch.no_grad():
            self.up.weight.copy_(w["up"][mine])
            self.up.bias.copy_(w["up_bias"][mine])
            self.down.weight.copy_(w["down"][:, mine])


class TensorParallelMLP(nn.Module):
    def __init__(self, weights: list[dict[str, torch.Tensor]], rank: int, world: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(w, rank, world) for w in weights)


def forward_c10d(self: TensorParallelMLP, x: torch.Tensor) -> torch.Tensor:
    for block in self.blocks:
        partial = block.down(nn.functional.gelu(block.up(x)))
        dist.all_reduce(partial)
        x = x + partial + block.bias
    return x


def forward_functional(self: TensorParallelMLP, x: torch.Tensor) -> torch.Tensor:
    for block in self.blocks:
        partial = block.down(nn.functional.gelu(block.up(x)))
        x = x + funcol.all_reduce(partial, "sum", dist.group.WORLD) + block.bias
    return x


FORWARDS = {"dist.all_reduce": forward_c10d, "functional all_reduce": forward_functional}


class Cell:
    """One row of one column: the call, its samples, and whether its output equals the reference."""

    def __init__(self, row: str, variant: str) -> None:
        self.row, self.variant = row, variant
        self.call: Call | None = None
        self.failed: str | None = None
        self.rel_error: float | None = None
        self.samples: list[float] = []

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)


class Bench:
    def __init__(self, args: argparse.Namespace, rank: int, world: int, device: torch.device) -> None:
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.dtype: torch.dtype = getattr(torch, args.dtype)
        self.on_cuda = device.type == "cuda"
        hidden = 4 * args.width
        if hidden % world:
            raise SystemExit(f"4 * width ({hidden}) must divide by the number of ranks ({world})")
        self.weights = full_weights(args.width, hidden, args.layers)
        x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(1))
        self.expected = reference(self.weights, x, self.dtype)
        self.x = x.to(device=device, dtype=self.dtype)
        self.tolerance = 1e-4 if self.dtype == torch.float32 else 2e-2

    def sync(self) -> None:
        if self.on_cuda:
            torch.cuda.synchronize()

    def agree_max(self, values: list[float]) -> list[float]:
        """The maximum of each value over the ranks (one all-reduce; also a barrier)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [float(v) for v in t.tolist()]

    def model(self, variant: str, label: str, **options: Any) -> TensorParallelMLP:
        """A model of this column; ``compile_once(**options)`` on its forward unless options is empty."""
        forward = FORWARDS[variant]
        if options:
            forward = compile_once(**options)(forward)
        cls = type(f"TP_{label}", (TensorParallelMLP,), {"forward": forward})
        model: TensorParallelMLP = cls(self.weights, self.rank, self.world)
        return model.to(device=self.device, dtype=self.dtype).eval()

    def build(self, variant: str) -> list[Cell]:
        """This column's cells, each compiled (or captured) and warmed up, in the table's order."""
        backend = self.args.backend
        x = self.x

        def on_x(model: Callable[[torch.Tensor], Any]) -> Call:
            return lambda: model(x)

        builders: list[tuple[str, Callable[[], Call]]] = [
            ("eager", lambda: on_x(self.model(variant, "eager"))),
            ("torch.compile", lambda: on_x(torch.compile(self.model(variant, "stock"), backend=backend))),
        ]
        if self.on_cuda:
            builders.append(
                (
                    'torch.compile(mode="reduce-overhead")',
                    lambda: on_x(torch.compile(self.model(variant, "overhead"), mode="reduce-overhead")),
                )
            )
        bytecode: dict[str, TensorParallelMLP] = {}

        def once_none() -> Call:
            bytecode["model"] = self.model(variant, "none", backend=backend, guards="none")
            return on_x(bytecode["model"])

        builders.append(('compile_once(guards="none")', once_none))
        if self.on_cuda:
            builders.append(
                (
                    "compile_once(cudagraphs=True)",
                    lambda: on_x(self.model(variant, "graphs", backend=backend, cudagraphs=True)),
                )
            )
        cells = []
        with torch.no_grad():
            for name, build in builders:
                cells.append(self.warm(Cell(name, variant), build))
            direct = Cell(DIRECT_ROW, variant)
            if next(c for c in cells if c.row == 'compile_once(guards="none")').failed is None:
                cells.append(self.warm(direct, lambda: graph_floor(bytecode["model"], self.x)))
            else:
                direct.failed = 'needs compile_once(guards="none")'
                cells.append(direct)
            if self.on_cuda:
                replay = Cell(REPLAY_ROW, variant)
                if direct.call is not None:
                    cells.append(self.warm(replay, lambda: self.replay_of(direct.call)))  # type: ignore[arg-type]
                else:
                    replay.failed = "needs the direct call"
                    cells.append(replay)
        return cells

    @staticmethod
    def replay_of(call: Call) -> Call:
        """``bare_replay`` of ``call``; each replay returns the outputs the capture recorded."""
        captured: list[Any] = []

        def keep() -> None:
            captured[:] = [call()]  # the last run before replaying is the capture: its static outputs

        replay = bare_replay(keep)

        def replay_and_outputs() -> Any:
            replay()
            return captured[0]

        return replay_and_outputs

    def warm(self, cell: Cell, build: Callable[[], Call]) -> Cell:
        """Build, run 3 times, compare with the reference; a failure on any rank drops the cell on all."""
        static_out: list[Any] = []
        try:
            call = build()
            for _ in range(3):
                out = call()
            static_out.append(out)
            self.sync()
        except Exception as exc:
            cell.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            if self.args.verbose:
                traceback.print_exc()
        failed_anywhere = self.agree_max([1.0 if cell.failed else 0.0])[0] > 0
        if failed_anywhere:
            cell.failed = cell.failed or "failed on another rank"
            return cell
        cell.call = call
        out = static_out[0]
        if out is not None:
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            err = (tensor.double().cpu() - self.expected).abs().max() / self.expected.abs().max()
            cell.rel_error = self.agree_max([float(err)])[0]
        return cell

    def calibrate(self, call: Call) -> int:
        """How many calls fill about ``round_seconds``, the same number on every rank."""
        n = 1
        while True:
            self.sync()
            started = time.perf_counter()
            for _ in range(n):
                call()
            self.sync()
            elapsed = self.agree_max([time.perf_counter() - started])[0]
            if elapsed >= self.args.round_seconds / 4 or n >= 1 << 16:
                return max(1, int(n * self.args.round_seconds / max(elapsed, 1e-9)))
            n *= 4

    def measure(self, cells: list[Cell]) -> None:
        timed = [c for c in cells if c.call is not None]
        with torch.no_grad():
            loops = [self.calibrate(c.call) for c in timed]  # type: ignore[arg-type]
            for _ in range(self.args.rounds):
                mine = []
                for cell, n in zip(timed, loops, strict=True):
                    call = cell.call
                    assert call is not None
                    self.agree_max([0.0])  # start together
                    self.sync()
                    started = time.perf_counter()
                    for _ in range(n):
                        call()
                    self.sync()
                    mine.append((time.perf_counter() - started) / n * 1e6)
                for cell, us in zip(timed, self.agree_max(mine), strict=True):
                    cell.samples.append(us)


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "process_group": dist.get_backend(),
        "world": dist.get_world_size(),
    }


def result_of(bench: Bench, cells: list[Cell]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        mine = [c for c in cells if c.variant == variant]
        floor_name = REPLAY_ROW if bench.on_cuda else DIRECT_ROW
        floor = next((c for c in mine if c.row == floor_name and c.samples), None)
        for c in mine:
            entry: dict[str, Any] = {"failed": c.failed}
            if c.samples:
                entry["us_per_call"] = c.median_us
                entry["x_floor"] = c.median_us / floor.median_us if floor else None
                entry["samples_us"] = c.samples
            entry["rel_error"] = c.rel_error
            entry["equals_reference"] = None if c.rel_error is None else c.rel_error < bench.tolerance
            rows.setdefault(c.row, {})[variant] = entry
    return {
        "config": {**vars(bench.args), "floor": REPLAY_ROW if bench.on_cuda else DIRECT_ROW},
        "environment": environment(bench.device),
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    lines = [
        f"distributed bench: tensor-parallel MLP, {cfg['layers']} layers, width {cfg['width']} "
        f"(hidden {4 * cfg['width']}, {4 * cfg['width'] // env['world']} per rank), batch {cfg['batch']}, "
        f"{cfg['dtype']}, backend {cfg['backend']!r}, torch.no_grad()",
        f"{env['world']} ranks over {env['process_group']} on {env['device']}; torch {env['torch']}, "
        f"Python {env['python']}, {env['threads']} thread(s) per rank",
        f"median of {cfg['rounds']} interleaved rounds of the slowest rank's mean per call; "
        f"x floor: ratio to {cfg['floor']!r} of the same column; ref: equals the single-process result",
        "",
    ]
    name_width = max(len("way of calling"), *(len(name) for name in result["rows"]))
    cell_width = 26
    lines.append(f"{'way of calling':<{name_width}} | " + " | ".join(f"{v:<{cell_width}}" for v in VARIANTS))
    lines.append(f"{'':<{name_width}} | " + " | ".join(f"{'us/call':>9} {'x floor':>7} {'ref':<8}" for _ in VARIANTS))
    lines.append(f"{'-' * name_width}-|-" + "-|-".join("-" * cell_width for _ in VARIANTS))
    notes = []
    for name, cells in result["rows"].items():
        parts = []
        for variant in VARIANTS:
            c = cells.get(variant, {"failed": "not run"})
            if c.get("us_per_call") is None:
                parts.append(f"{'failed':>9} {'':>7} {'':<8}")
                notes.append(f"{name} / {variant}: {c['failed']}")
                continue
            ratio = f"{c['x_floor']:.2f}" if c.get("x_floor") is not None else "-"
            ref = {True: "yes", False: "NO", None: "-"}[c["equals_reference"]]
            if c["equals_reference"] is False:
                notes.append(f"{name} / {variant}: relative error {c['rel_error']:.2e}")
            parts.append(f"{c['us_per_call']:>9.1f} {ratio:>7} {ref:<8}")
        lines.append(f"{name:<{name_width}} | " + " | ".join(f"{p:<{cell_width}}" for p in parts))
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backend", default="inductor", help="torch.compile / compile_once backend (default inductor)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-seconds", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank on the CPU")
    p.add_argument("--timeout", type=float, default=300.0, help="process-group timeout, seconds")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.add_argument("--verbose", action="store_true", help="print the traceback of a row that fails")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if "RANK" not in os.environ:
        print("run under torchrun: torchrun --nproc_per_node=2 scripts/distributed_bench.py", file=sys.stderr)
        return 2
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    on_cuda = dist.is_nccl_available() and torch.cuda.device_count() >= local_ranks
    if on_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(args.threads)
    dist.init_process_group("nccl" if on_cuda else "gloo", timeout=datetime.timedelta(seconds=args.timeout))
    try:
        bench = Bench(args, dist.get_rank(), dist.get_world_size(), device)
        bench.agree_max([0.0])  # the communicator exists before anything is compiled or captured
        cells = [cell for variant in VARIANTS for cell in bench.build(variant)]
        bench.measure(cells)
        result = result_of(bench, cells)
        if bench.rank == 0:
            if args.json:
                json.dump(result, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                print(format_table(result), flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    # CUDA graphs that captured NCCL collectives (reduce-overhead's, compile_once's, the bare
    # replays) make destroy_process_group() and even the interpreter's exit hang while they live
    # (seen with torch 2.11, NCCL 2.28); a benchmark has nothing to clean up, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    if on_cuda:
        os._exit(0)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
