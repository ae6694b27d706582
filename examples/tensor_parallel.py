"""Tensor parallelism: a compile_once forward with an all-reduce inside, one process per rank.

    torchrun --nproc_per_node=2 examples/tensor_parallel.py   # NCCL, one GPU per rank, CUDA graphs
    python examples/tensor_parallel.py                        # no torchrun: two local CPU ranks (gloo)

A Megatron-style MLP split over the ranks: each block's first Linear is column-parallel (each rank
holds a slice of the hidden features), its second row-parallel (the matching slice of its
inputs), so each rank computes a partial sum and ``torch.distributed.all_reduce`` adds them up.
The all-reduce is inside the compiled forward: Dynamo traces it into the graph (as
``_c10d_functional.all_reduce`` + ``wait_tensor``), and every later call runs the captured
bytecode, collective included. With NCCL the call is also captured into a CUDA graph
(``cudagraphs=True``): NCCL collectives can be captured and replayed.

Rules of thumb (docs/distributed.md): create the process group before the first call; every rank
makes the same calls with the same shapes; keep the process group's timeout finite, so a rank
that fails (to compile, say) does not leave the others waiting forever.

The weights come from one seed, so each rank also computes the single-process result from the
full weights and checks its own output against it.
"""

import datetime
import gc
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing
from torch import nn

from nocompile import compile_once

WIDTH, HIDDEN, LAYERS, BATCH = 64, 256, 2, 4


def use_gpus() -> bool:
    """NCCL with one GPU per local rank when torchrun started us and there are enough GPUs."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))
    return local_ranks > 0 and dist.is_nccl_available() and torch.cuda.device_count() >= local_ranks


ON_GPU = use_gpus()  # decided before the class below is decorated


def full_weights(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The unsharded weights of every block, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "up": torch.randn(HIDDEN, WIDTH, generator=g) / WIDTH**0.5,
            "up_bias": torch.randn(HIDDEN, generator=g) * 0.1,
            "down": torch.randn(WIDTH, HIDDEN, generator=g) / HIDDEN**0.5,
            "down_bias": torch.randn(WIDTH, generator=g) * 0.1,
        }
        for _ in range(LAYERS)
    ]


def single_process_reference(x: torch.Tensor) -> torch.Tensor:
    """What the model computes in one process with all the weights."""
    for w in full_weights():
        w = {k: v.to(x.device) for k, v in w.items()}
        x = x + nn.functional.gelu(x @ w["up"].T + w["up_bias"]) @ w["down"].T + w["down_bias"]
    return x


class ParallelBlock(nn.Module):
    """One residual MLP block, this rank's shard of it."""

    def __init__(self, w: dict[str, torch.Tensor], rank: int, world: int) -> None:
        super().__init__()
        part = HIDDEN // world
        mine = slice(rank * part, (rank + 1) * part)
        self.up = nn.Linear(WIDTH, part)  # column-parallel: a slice of the outputs
        self.down = nn.Linear(part, WIDTH, bias=False)  # row-parallel: the matching slice of the inputs
        self.register_buffer("down_bias", w["down_bias"].clone())  # added once, after the all-reduce
        with torch.no_grad():
            self.up.weight.copy_(w["up"][mine])
            self.up.bias.copy_(w["up_bias"][mine])
            self.down.weight.copy_(w["down"][:, mine])


class ParallelMLP(nn.Module):
    def __init__(self, rank: int, world: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ParallelBlock(w, rank, world) for w in full_weights())

    # backend="inductor" (the default) fuses the kernels too; "eager" keeps this example quick.
    @compile_once(backend="eager", cudagraphs=ON_GPU)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            partial = block.down(nn.functional.gelu(block.up(x)))
            dist.all_reduce(partial)  # in place, inside the compiled graph
            x = x + partial + block.down_bias
        return x


def run_rank(rank: int, world: int, device: torch.device) -> None:
    """One rank, with its process group already set up."""
    model = ParallelMLP(rank, world).to(device).eval()
    try:
        check_rank(model, rank, world, device)
    finally:
        # Drop the compiled state, CUDA graphs included, before the process group goes: a live
        # CUDA graph that captured an NCCL collective makes destroy_process_group() (and even
        # the interpreter's exit) hang (seen with torch 2.11, NCCL 2.28).
        model.forward.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize()


def check_rank(model: ParallelMLP, rank: int, world: int, device: torch.device) -> None:
    x = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        for _ in range(3):  # compile; (with CUDA graphs: capture); then the captured code
            out = model(x).clone()  # .clone(): with CUDA graphs the next call overwrites the output
        expected = single_process_reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    stats = model.forward.stats
    assert stats.compiles == 1, stats
    print(
        f"rank {rank}/{world} on {device} ({dist.get_backend()}): out[0, :4] = {out[0, :4].tolist()}, "
        f"equals the single-process reference; compiled: {stats}",
        flush=True,
    )


def torchrun_main() -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if ON_GPU:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    dist.init_process_group(
        "nccl" if ON_GPU else "gloo",
        timeout=datetime.timedelta(seconds=60),  # a failing rank frees the others after this long
    )
    # A first collective before any compiled call: NCCL creates its communicator lazily, and the
    # first call must not do that inside a CUDA graph capture.
    dist.all_reduce(torch.zeros(1, device=device))
    try:
        run_rank(rank, world, device)
    finally:
        dist.destroy_process_group()


def local_rank_main(rank: int, world: int, port: int) -> None:
    """A rank started by this script itself (no torchrun): gloo on the CPU."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torchrun_main()


def main() -> None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        torchrun_main()
        return
    world = 2
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"not under torchrun: starting {world} local ranks on the CPU (gloo)", flush=True)
    torch.multiprocessing.spawn(local_rank_main, args=(world, port), nprocs=world)


if __name__ == "__main__":
    main()
