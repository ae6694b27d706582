"""What the input check costs on a Hugging Face decode step, by model depth (CPU or CUDA).

    python scripts/hf_check_cost.py [--layers 2 8 32 80] [--hidden 64] [--backend eager] [--device cpu] [--check-only]

For each depth: a tiny random ``LlamaForCausalLM`` (no download), the keyword arguments of
``generate()``'s first decode step with an early-initialised ``StaticCache``, and
``model.forward = compile_once(model.forward, guards=...)`` for ``"none"`` and ``"inputs"``.
Two measurements, rows interleaved round by round in one process, medians over rounds:

* the whole decode step under each policy (what a user sees; the difference is the check, but it
  sits on top of a step of hundreds of microseconds and moves with the machine);
* the check alone: the same two entries with the compiled call replaced by a no-op, so what is
  left is each policy's per-call work (binding, counting, and for ``"inputs"`` the key, the
  fingerprint of the model and of the cache's layers, the global-state and tensor checks).

The compiled code is the same under both policies, so the backend does not change the check's
cost: ``eager`` (the default) compiles in seconds even at 80 layers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

CACHE = 1024
"""Static cache length: room for every timed call of a round (positions are reset between rounds)."""


def reset_positions(kwargs: dict[str, Any], position: int) -> None:
    """Rewind the cache's write position (a tensor, updated in place by each step)."""
    cache = next(v for v in kwargs.values() if hasattr(v, "layers"))
    for layer in cache.layers:
        length = getattr(layer, "cumulative_length", None)
        if isinstance(length, torch.Tensor):
            length.fill_(position)


def decode_kwargs(layers: int, hidden: int, device: str) -> tuple[Any, dict[str, Any]]:
    from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=CACHE,
    )
    model = LlamaForCausalLM(config).to(device).eval()
    calls: list[dict[str, Any]] = []
    original = model.forward

    def recorder(*args: Any, **kwargs: Any) -> Any:
        calls.append(dict(kwargs))
        return original(*args, **kwargs)

    cache = StaticCache(config=config, max_cache_len=CACHE)
    cache.early_initialization(
        batch_size=1, num_heads=2, head_dim=hidden // 4, dtype=torch.float32, device=torch.device(device)
    )
    model.forward = recorder
    try:
        with torch.no_grad():
            model.generate(
                torch.randint(1, 128, (1, 8), device=device),
                max_new_tokens=3,
                do_sample=False,
                past_key_values=cache,
                disable_compile=True,
            )
    finally:
        del model.forward
    return model, calls[1]


def timed(
    rows: dict[str, Callable[[], Any]], calls: int, rounds: int, before: Callable[[], Any] = lambda: None
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in rows.items():
                before()
                started = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def check_only(compiled: Any) -> Callable[..., Any]:
    """The state's entry with every specialization's call replaced by a no-op (a copy of its tables)."""
    state = compiled.state
    entry = state.entry

    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    namespace = entry.__globals__
    if "__nc_verified" in namespace:  # guards="inputs": the selector's call
        table = state.inputs.tables[0].selector.verified.table
        for key, candidates in list(table.items()):
            table[key] = tuple(candidate._replace(call=noop) for candidate in candidates)
    else:  # the direct entry
        namespace["__nc_target"] = noop
    return entry


def measure(layers: int, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    """``(whole step, check alone)``: microseconds per call under each policy."""
    from nocompile import compile_once

    model, kwargs = decode_kwargs(layers, args.hidden, args.device)
    forwards = {}
    for guards in ("none", "inputs"):
        model.forward = compile_once(model.forward, guards=guards, backend=args.backend, on_mismatch="recompile")
        with torch.no_grad():
            for _ in range(3):  # compile, verify, settle
                reset_positions(kwargs, 9)
                model.forward(**kwargs)
        forwards[guards] = model.forward
        del model.forward
    with torch.no_grad():
        for f in forwards.values():  # once more: ``del model.forward`` was a store into the model's dict
            reset_positions(kwargs, 9)
            f(**kwargs)
    step = (
        {}
        if args.check_only
        else timed(
            {g: (lambda f=f: f(**kwargs)) for g, f in forwards.items()},
            min(args.calls, CACHE // 2),
            args.rounds,
            before=lambda: reset_positions(kwargs, 9),
        )
    )
    entries = {g: check_only(f) for g, f in forwards.items()}
    check = timed({g: (lambda e=e: e(model, **kwargs)) for g, e in entries.items()}, args.calls * 5, args.rounds)
    return step, check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8, 32, 80])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--check-only", action="store_true", help="time the check alone, not the whole step (minutes at 80 layers)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    from nocompile import _native_checks

    print(
        f"torch {torch.__version__}, {args.device}, backend {args.backend!r}, tiny Llama hidden {args.hidden}, "
        f"decode step with a StaticCache, C extension {'on' if _native_checks.NATIVE is not None else 'off'} "
        f"(NOCOMPILE_NATIVE=0 turns it off); median of {args.rounds} interleaved rounds of {args.calls} calls"
    )
    print(
        f"{'layers':>6}  {'none us':>9}  {'inputs us':>9}  {'step diff':>9}  "
        f"{'check none':>10}  {'check inputs':>12}  {'check adds':>10}"
    )
    for layers in args.layers:
        step, check = measure(layers, args)
        whole = (
            f"{'-':>9}  {'-':>9}  {'-':>9}"  # --check-only
            if args.check_only
            else f"{step['none']:>9.1f}  {step['inputs']:>9.1f}  {step['inputs'] - step['none']:>9.1f}"
        )
        print(
            f"{layers:>6}  {whole}  "
            f"{check['none']:>10.2f}  {check['inputs']:>12.2f}  {check['inputs'] - check['none']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
