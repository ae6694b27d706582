"""Command line: ``python -m nocompile bench [--layers N] [--width N] [--json]``, ``bench-cache``, and
``python -m nocompile explain module:function [--example module:make_inputs]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nocompile", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "bench",
        help="time every way of calling the reference model, side by side, in one process",
        description="Time eager, torch.compile, and compile_once under each guard policy on the "
        "reference MLP, against the compiled graph called directly (the floor).",
    )
    bench.add_argument("--layers", type=_positive, default=4, help="residual blocks (default 4)")
    bench.add_argument("--width", type=_positive, default=16, help="features per layer (default 16)")
    bench.add_argument("--batch", type=_positive, default=1, help="batch size (default 1)")
    bench.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    bench.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    bench.add_argument("--rounds", type=_positive, default=7, help="interleaved timing rounds (default 7)")
    bench.add_argument(
        "--round-seconds", type=float, default=0.05, help="seconds each row runs per round (default 0.05)"
    )
    bench.add_argument("--threads", type=_positive, default=1, help="torch CPU threads (default 1)")
    bench.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="model and input dtype (default float32)",
    )
    bench.add_argument(
        "--rows",
        choices=("all", "graphs"),
        default="all",
        help="'all' (default), or 'graphs': eager, captured bytecode, CUDA-graph rows and floors only",
    )
    bench.add_argument(
        "--aoti",
        action="store_true",
        help="also build an AOTInductor package of the model and time its C++ runner (needs a C++ compiler; minutes)",
    )
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    from ._explain_cli import add_parser as add_explain

    add_explain(commands)
    cache = commands.add_parser(
        "bench-cache",
        help="time the first call of a fresh process with a cold and a warm cache_dir, and stock torch.compile",
        description="Fresh processes build a model, wrap it with compile_once(cache_dir=...) and time the "
        "first call (imports excluded): cold (empty caches), warm (the cold run's artifact and inductor cache), "
        "warm on an empty inductor cache (the artifact alone), and stock torch.compile with its own caches "
        "warm and with its mega-cache loaded. Medians of --rounds runs.",
    )
    cache.add_argument("--layers", type=_layers, default=(4,), help="comma-separated layer counts (default 4)")
    cache.add_argument(
        "--models", type=_models, default=("mlp",), help="mlp (the reference MLP), llama (a tiny HF decode step)"
    )
    cache.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    cache.add_argument("--width", type=_positive, default=16, help="features per layer (default 16)")
    cache.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    cache.add_argument("--rounds", type=_positive, default=3, help="runs of each kind (default 3)")
    cache.add_argument("--threads", type=_positive, default=1, help="torch CPU threads (default 1)")
    cache.add_argument("--json", action="store_true", help="print the result as JSON")
    patterns = commands.add_parser(
        "bench-patterns",
        help="time the ways real code calls a compiled function, per guard policy, side by side",
        description="The reference MLP called as a loop in a function, a loop at a script's top level, "
        "with a global counter bumped, with fresh argument objects each call, with an argument's int "
        "advancing, and with a baked-in value rewritten; under compile_once with each guard policy "
        "and under stock torch.compile, interleaved in one process. Ratios are to each way's own "
        "fast path.",
    )
    patterns.add_argument("--layers", type=_layers, default=(4, 64), help="comma-separated layer counts (default 4,64)")
    patterns.add_argument("--width", type=_positive, default=16, help="features per layer (default 16)")
    patterns.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    patterns.add_argument("--rounds", type=_positive, default=7, help="interleaved timing rounds (default 7)")
    patterns.add_argument(
        "--round-seconds", type=float, default=0.05, help="seconds each row runs per round (default 0.05)"
    )
    patterns.add_argument("--threads", type=_positive, default=1, help="torch CPU threads (default 1)")
    patterns.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _models(text: str) -> tuple[str, ...]:
    from ._bench_cache import parse_models

    try:
        return parse_models(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _layers(text: str) -> tuple[int, ...]:
    from ._bench_cache import parse_layers

    try:
        return parse_layers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        import torch

        from ._bench import BenchConfig
        from ._bench import main as bench_main

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        cfg = BenchConfig(
            layers=args.layers,
            width=args.width,
            batch=args.batch,
            device=device,
            backend=args.backend,
            rounds=args.rounds,
            round_seconds=args.round_seconds,
            threads=args.threads,
            dtype=args.dtype,
            rows=args.rows,
            aoti=args.aoti,
        )
        return bench_main(cfg, args.json)
    if args.command == "explain":
        from ._explain_cli import run as explain_run

        return explain_run(args)
    if args.command == "bench-cache":
        from ._bench_cache import CacheBenchConfig
        from ._bench_cache import main as cache_main

        return cache_main(
            CacheBenchConfig(
                layers=args.layers,
                width=args.width,
                backend=args.backend,
                rounds=args.rounds,
                threads=args.threads,
                models=args.models,
                device=args.device,
            ),
            args.json,
        )
    if args.command == "bench-patterns":
        from ._bench import BenchConfig
        from ._bench_patterns import main as patterns_main

        cfg = BenchConfig(
            width=args.width,
            backend=args.backend,
            rounds=args.rounds,
            round_seconds=args.round_seconds,
            threads=args.threads,
        )
        return patterns_main(cfg, args.layers, args.json)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
