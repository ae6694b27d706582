"""One decode step of a random Hugging Face Llama, every way of calling it, side by side (CUDA).

    python scripts/hf_decode_bench.py [--hidden 512] [--layers 8] [--cache 4096] [--dtype bfloat16]

Builds a randomly initialised ``LlamaForCausalLM`` from a config (no download), records the
keyword arguments ``generate()`` passes to ``forward`` at its first decode step (a
``StaticCache`` created and early-initialised here, so that no compiled call allocates cache
tensors), and times that step through:

* eager ``model.forward``;
* ``torch.compile(model.forward, fullgraph=True)`` (guards on);
* with ``--reduce-overhead``, instead of the rows below: ``torch.compile(model.forward,
  mode="reduce-overhead", fullgraph=True)`` (transformers' own recipe; what happens is reported,
  it may fail — in a process of its own, since a failed CUDA graph can poison the CUDA context);
* ``compile_once(model.forward, on_mismatch="recompile")`` (guards="inputs");
* ``compile_once(model.forward, cudagraphs=True, on_mismatch="recompile")``;
* the floor: the ``guards="none"`` bytecode captured once into a ``torch.cuda.CUDAGraph`` by
  hand and replayed bare (no input copy, no Python around it).

Rows are interleaved round by round; each figure is the median over rounds of the mean per call
(synchronised per round). The cache's write position is reset between rounds (in place), so
every timed call writes inside the cache. Then a whole ``generate()`` of ``--new-tokens``
tokens through eager, ``torch.compile``, both ``compile_once`` forms (each generate with a new
``StaticCache``), ``compile_once(cudagraphs=True)`` with one ``StaticCache`` kept and
``reset()`` between calls, and transformers' own recipe (``generate(cache_implementation=
"static")``, which compiles forward itself on CUDA), with tokens compared to eager's. Each
generate row: one compiling call and one warm-up call, then ``--repeats`` (at least 5) timed
calls, interleaved with the other rows' round by round, reported as median and spread (min-max).
Last, what a call with a new cache pays to find graphs it may replay: the address key of an 8- and
a 16-layer cache's tensors.

Arguments that cannot fit (a cache shorter than the longest prompt plus ``--new-tokens``) are
refused with one line and exit status 2 before any model is built; a row that fails prints its
traceback and makes the script exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import timeit
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=args.kv_heads or heads,
        vocab_size=args.vocab,
        max_position_embeddings=args.cache,
    )
    model = LlamaForCausalLM(config).to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    model.generation_config.pad_token_id = 0
    return model, config


def new_cache(model: Any, config: Any, length: int) -> Any:
    from transformers import StaticCache

    cache = StaticCache(config=config, max_cache_len=length)
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache.early_initialization(batch_size=1, num_heads=heads, head_dim=head_dim, dtype=model.dtype, device=model.device)
    return cache


def recipe_generate(model: Any, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """transformers' own compiled recipe: a static cache it makes (and on CUDA compiles) itself."""
    return model.generate(
        prompt,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        cache_implementation="static",
    )


def generate(model: Any, prompt: torch.Tensor, new_tokens: int, cache: Any) -> torch.Tensor:
    return model.generate(
        prompt,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        past_key_values=cache,
        disable_compile=True,
    )


def record_decode_kwargs(model: Any, config: Any, prompt: torch.Tensor, length: int) -> tuple[dict[str, Any], Any]:
    """The keyword arguments of generate()'s first decode step, with a cache of ``length``."""
    calls: list[dict[str, Any]] = []
    original = model.forward

    def recorder(*a: Any, **kw: Any) -> Any:
        calls.append(dict(kw))
        return original(*a, **kw)

    model.forward = recorder
    try:
        cache = new_cache(model, config, length)
        with torch.no_grad():
            generate(model, prompt, 3, cache)
    finally:
        del model.forward
    if len(calls) < 2 or calls[0].get("input_ids") is None:
        raise RuntimeError(f"expected a prefill and decode steps, recorded {len(calls)} call(s)")
    return calls[1], cache


def reset_positions(cache: Any, position: int) -> None:
    for layer in cache.layers:
        length = getattr(layer, "cumulative_length", None)
        if isinstance(length, torch.Tensor):
            length.fill_(position)


def time_rows(
    rows: dict[str, Callable[[], Any]], cache: Any, position: int, calls: int, rounds: int, sync: Callable[[], Any]
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in rows.items():
                reset_positions(cache, position)
                sync()
                started = time.perf_counter()
                for _ in range(calls):
                    fn()
                sync()
                samples[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def agreement(sequences: dict[str, torch.Tensor], name: str) -> str:
    """How ``name``'s tokens compare with eager's and with stock torch.compile's (same kernels)."""
    parts = []
    tokens = sequences[name]
    for other in ("eager", "torch.compile (guards on)"):
        if other == name or other not in sequences:
            continue
        reference = sequences[other]
        if torch.equal(tokens, reference):
            parts.append(f"= {other}")
        else:
            first = int((tokens != reference).nonzero()[0, -1]) if tokens.shape == reference.shape else -1
            parts.append(f"!= {other} from position {first}")
    return "tokens " + ", ".join(parts) if parts else "reference tokens"


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median (min-max)`` of ``values`` times ``scale``."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def validate(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot run (one line), or None: checked before any model is built."""
    prompts = args.mixed if args.mixed else [args.prompt]
    for name in ("hidden", "layers", "vocab", "cache", "new_tokens", "calls", "rounds"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})"
    if any(n < 1 for n in prompts):
        return f"prompt lengths must be at least 1 (got {prompts})"
    if args.repeats < 5:
        return f"--repeats must be at least 5 (got {args.repeats}): fewer generate() calls make no median to trust"
    longest = max(prompts)
    if args.cache < longest + args.new_tokens:
        return (
            f"--cache {args.cache} is shorter than the longest prompt ({longest}) plus --new-tokens "
            f"({args.new_tokens}) = {longest + args.new_tokens}: generate() would write past the cache's end. "
            f"Pass --cache {longest + args.new_tokens} or more, or fewer --new-tokens."
        )
    return None


def key_cost(args: argparse.Namespace) -> dict[str, float]:
    """Microseconds to compute the address key (what a call with a new cache object pays once per
    specialization to find graphs captured at the same addresses) of a StaticCache of 8 and 16 layers."""
    from transformers import LlamaConfig

    from nocompile._arguments import walk
    from nocompile._cudagraph_address import AddressKey

    def step(cache: Any) -> None:
        return None

    out = {}
    for layers in (8, 16):
        heads = max(1, args.hidden // 64)
        config = LlamaConfig(
            hidden_size=args.hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            vocab_size=args.vocab,
        )

        class Model:  # what new_cache reads of a model
            dtype = getattr(torch, args.dtype)
            device = torch.device(args.device)

        cache = new_cache(Model(), config, 16)
        key = AddressKey(walk(step, (cache,), {}, follow_modules=True).argument_objects())
        objects = (cache,)
        number = 1000
        best = min(timeit.repeat(lambda: key(objects), number=number, repeat=5))  # noqa: B023
        out[f"{layers} layers"] = best / number * 1e6
    return out


def mixed_generate(args: argparse.Namespace, model: Any, config: Any, original: Any, sync: Callable[[], Any]) -> int:
    """generate() over prompts of mixed lengths: a first pass that compiles, then ``--repeats``
    timed passes (tokens per second: median and spread) for eager, Hugging Face's own compiled
    recipe (a static cache, no disable_compile: generate() compiles forward itself on CUDA) and
    compile_once(cudagraphs=True)
    with a StaticCache of --cache positions made per call (prefills of any length share one
    dynamic specialization; the decode step keeps its shapes and replays a graph)."""
    from nocompile import compile_once

    prompts = [torch.randint(1, args.vocab, (1, n), device=args.device) for n in args.mixed]
    total = args.new_tokens * len(prompts)
    print(f"\ngenerate() over prompt lengths {args.mixed}, {args.new_tokens} new tokens each, greedy")
    sequences: dict[str, list[torch.Tensor]] = {}
    failed: list[str] = []

    def run(name: str, one: Callable[[torch.Tensor], torch.Tensor]) -> None:
        try:
            rates = []
            with torch.no_grad():
                for i in range(1 + args.repeats):  # the first pass compiles (and captures), the rest are timed
                    outputs = []
                    sync()
                    started = time.perf_counter()
                    for prompt in prompts:
                        outputs.append(one(prompt))
                    sync()
                    if i:
                        rates.append(total / (time.perf_counter() - started))
            sequences[name] = outputs
            same = (
                "reference"
                if name == "eager"
                else (
                    "tokens = eager"
                    if all(torch.equal(a, b) for a, b in zip(outputs, sequences["eager"], strict=True))
                    else "tokens differ from eager"
                )
            )
            extra = f", {model.forward.stats.compiles} compiles" if hasattr(model.forward, "stats") else ""
            print(f"  {name:<44} {spread(rates)} tokens/s over {args.repeats} passes  ({same}{extra})")
        except Exception as exc:
            failed.append(name)
            print(f"  {name:<44} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            traceback.print_exc()

    def with_cache(prompt: torch.Tensor) -> torch.Tensor:
        return generate(model, prompt, args.new_tokens, new_cache(model, config, args.cache))

    def hf_recipe(prompt: torch.Tensor) -> torch.Tensor:
        return recipe_generate(model, prompt, args.new_tokens)

    run("eager", with_cache)
    if args.hf_recipe:
        run("Hugging Face's compiled recipe (static cache)", hf_recipe)
    graphs = args.device.startswith("cuda")  # on the CPU (a smoke test) the same without graphs
    model.forward = compile_once(original, cudagraphs=graphs, on_mismatch="recompile")
    try:
        run(f"compile_once(cudagraphs={graphs})", with_cache)
    finally:
        del model.forward
    if failed:
        print(f"hf_decode_bench: {len(failed)} row(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument(
        "--kv-heads", type=int, default=None, help="key/value heads (default: as many as heads, hidden/64)"
    )
    parser.add_argument("--cache", type=int, default=4096)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of the script (no graph rows)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed generate() calls (passes with --mixed) per row, at least 5"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--reduce-overhead", action="store_true", help="time eager and mode='reduce-overhead' only")
    parser.add_argument(
        "--rows",
        default="all",
        choices=("all", "graphs"),
        help="graphs: only eager, compile_once(cudagraphs=True) and the replay floor, and the generate() rows "
        "of eager and compile_once(cudagraphs=True) (fewer compiles)",
    )
    parser.add_argument(
        "--mixed",
        type=int,
        nargs="*",
        default=None,
        help="prompt lengths for a mixed-length generate() comparison instead of the one-length one "
        "(eager and compile_once(cudagraphs=True); --hf-recipe adds Hugging Face's own compiled recipe)",
    )
    parser.add_argument(
        "--hf-recipe",
        action="store_true",
        help="with --mixed: also generate(cache_implementation='static'), which compiles forward itself on "
        "CUDA (once per cache size it meets: minutes of compiling)",
    )
    args = parser.parse_args()
    problem = validate(args)
    if problem is not None:
        print(f"hf_decode_bench: {problem}", file=sys.stderr)
        return 2
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("hf_decode_bench: needs a CUDA device (or --device cpu for a smoke test)", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    import transformers

    from nocompile import compile_once
    from nocompile._bench import bare_replay

    model, config = build(args)
    prompt = torch.randint(1, args.vocab, (1, args.prompt), device=args.device)
    decode_kwargs, cache = record_decode_kwargs(model, config, prompt, args.cache)
    position = args.prompt + 1
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name() if cuda else args.device}, "
        f"{args.dtype}; Llama hidden {args.hidden}, {args.layers} layers, static cache {args.cache}, batch 1"
    )
    print(
        "decode step arguments:",
        {
            k: (tuple(v.shape), str(v.dtype)) if isinstance(v, torch.Tensor) else type(v).__name__
            for k, v in decode_kwargs.items()
        },
    )

    original = model.forward
    notes: dict[str, str] = {}
    rows: dict[str, Callable[[], Any]] = {"eager": lambda: original(**decode_kwargs)}
    candidates: dict[str, Callable[[], Callable[..., Any]]] = {
        "torch.compile (guards on)": lambda: torch.compile(original, fullgraph=True),
        'compile_once (guards="inputs")': lambda: compile_once(original, on_mismatch="recompile"),
        "compile_once(cudagraphs=True)": lambda: compile_once(original, cudagraphs=True, on_mismatch="recompile"),
    }
    if not cuda:
        del candidates["compile_once(cudagraphs=True)"]
    if args.rows == "graphs":
        candidates = {k: v for k, v in candidates.items() if "cudagraphs" in k}
    if args.reduce_overhead:
        candidates = {
            'torch.compile(mode="reduce-overhead")': lambda: torch.compile(
                original, mode="reduce-overhead", fullgraph=True
            ),
        }
    with torch.no_grad():
        for name, make in candidates.items():
            try:
                fn = make()
                for _ in range(3):  # compile, warm up, capture
                    reset_positions(cache, position)
                    fn(**decode_kwargs)
                sync()
                rows[name] = lambda fn=fn: fn(**decode_kwargs)
            except Exception as exc:  # reported, not fatal: the point is to see what happens
                notes[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                traceback.print_exc(limit=3)
        if cuda and not args.reduce_overhead:
            unguarded = compile_once(original, guards="none")
            reset_positions(cache, position)
            unguarded(**decode_kwargs)
            reset_positions(cache, position)
            rows["bare CUDA graph replay (floor)"] = bare_replay(lambda: unguarded(**decode_kwargs))
    step = time_rows(rows, cache, position, args.calls, args.rounds, sync)
    floor = step.get("bare CUDA graph replay (floor)", step["eager"])
    stock = step.get("torch.compile (guards on)")
    print()
    print(f"{'one decode step':<40} {'us':>9} {'x floor':>8} {'stock/this':>10}")
    for name, us in step.items():
        ratio = f"{stock / us:>10.2f}" if stock else ""
        print(f"{name:<40} {us:>9.1f} {us / floor:>8.2f} {ratio}")
    for name, note in notes.items():
        print(f"{name:<40} failed: {note}")
    if args.reduce_overhead:
        return 1 if notes else 0

    if args.mixed:
        status = mixed_generate(args, model, config, original, sync)
        return 1 if notes else status

    # Whole generate(): each row one compiling call, one warm-up call, then --repeats timed calls.
    print()
    length = args.prompt + args.new_tokens

    def hf_recipe() -> torch.Tensor:
        return recipe_generate(model, prompt, args.new_tokens)

    kept: dict[str, Any] = {}

    def reused_cache() -> torch.Tensor:
        cache_r = kept.get("cache")
        if cache_r is None:
            cache_r = kept["cache"] = new_cache(model, config, length)
        else:
            cache_r.reset()  # in place: the graphs keep reading the same tensors
        return generate(model, prompt, args.new_tokens, cache_r)

    def fresh_cache() -> torch.Tensor:
        return generate(model, prompt, args.new_tokens, new_cache(model, config, length))

    graphed = "compile_once(cudagraphs=True)"
    # name -> (what model.forward becomes or None for eager forward, one generate call)
    variants: dict[str, tuple[Callable[[], Any] | None, Callable[[], torch.Tensor]]] = {
        "eager": (None, fresh_cache),
        "torch.compile (guards on)": (lambda: torch.compile(original, fullgraph=True), fresh_cache),
        'compile_once (guards="inputs")': (lambda: compile_once(original, on_mismatch="recompile"), fresh_cache),
        f"{graphed}, new StaticCache per call": (
            lambda: compile_once(original, cudagraphs=True, on_mismatch="recompile"),
            fresh_cache,
        ),
        f"{graphed}, one StaticCache reset() per call": (
            lambda: compile_once(original, cudagraphs=True, on_mismatch="recompile"),
            reused_cache,
        ),
        "transformers' recipe, generate(cache_implementation='static')": (None, hf_recipe),
    }
    if not cuda:
        variants = {k: v for k, v in variants.items() if "cudagraphs" not in k}
    if args.rows == "graphs":
        variants = {k: v for k, v in variants.items() if k == "eager" or k.startswith(graphed)}
    sequences: dict[str, torch.Tensor] = {}
    generate_ms: dict[str, list[float]] = {}
    failed: list[str] = []
    forwards: dict[str, Any] = {}  # name -> what model.forward is for that row (None: the model's own)
    caches: dict[str, dict[str, Any]] = {name: {} for name in variants}

    def one_call(name: str) -> float:
        """One generate() of row ``name``, in seconds; model.forward is the row's own meanwhile."""
        forward = forwards[name]
        if forward is not None:
            model.forward = forward
        kept.clear()
        kept.update(caches[name])
        try:
            sync()
            started = time.perf_counter()
            sequences[name] = variants[name][1]()
            sync()
            return time.perf_counter() - started
        finally:
            caches[name] = dict(kept)
            kept.clear()
            if "forward" in vars(model):
                del model.forward

    with torch.no_grad():
        # Each row compiles on its first call and warms up (captures) on its second; then the rows'
        # timed calls are interleaved, so that a drift of the machine falls on every row alike.
        for name, (make, _) in variants.items():
            try:
                forwards[name] = make() if make is not None else None
                one_call(name)
                one_call(name)
            except Exception as exc:
                failed.append(name)
                print(f"generate, {name}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                traceback.print_exc()
        live = [name for name in variants if name not in failed]
        times: dict[str, list[float]] = {name: [] for name in live}
        for _ in range(args.repeats):
            for name in list(live):
                try:
                    times[name].append(one_call(name))
                except Exception as exc:
                    failed.append(name)
                    live.remove(name)
                    print(f"generate, {name}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    traceback.print_exc()
        for name in live:
            generate_ms[name] = [t * 1e3 for t in times[name]]
            extra = ""
            forward = forwards[name]
            if hasattr(forward, "stats"):
                extra = f"; {forward.stats.compiles} compiles for {args.repeats + 2} generate calls"
                calls = [getattr(spec.call, "captures", None) for spec in forward.specializations]
                if any(c is not None for c in calls):
                    rebinds = [getattr(spec.call, "rebinds", 0) for spec in forward.specializations]
                    adopted = [getattr(spec.call, "adoptions", 0) for spec in forward.specializations]
                    extra += (
                        f", graphs captured per specialization {calls}, reused by address {rebinds}, "
                        f"memory adopted {adopted}"
                    )
            print(
                f"generate {args.new_tokens} tokens, {name:<62} {spread(times[name], 1e3)} ms  "
                f"{args.new_tokens / statistics.median(times[name]):8.1f} tokens/s  "
                f"{agreement(sequences, name)}{extra}"
            )
    if cuda:
        reused = statistics.median(generate_ms.get(f"{graphed}, one StaticCache reset() per call", [float("nan")]))
        fresh = statistics.median(generate_ms.get(f"{graphed}, new StaticCache per call", [float("nan")]))
        print(f"new cache per call / one reused cache: {fresh / reused:.3f}x")
    costs = key_cost(args)
    print(
        "address key (a call with a new cache object, once per specialization): "
        + ", ".join(f"{k} {us:.1f} us" for k, us in costs.items())
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "step_us": step,
                    "failed": notes,
                    "generate_ms": generate_ms,
                    "address_key_us": costs,
                    "failed_generate": failed,
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "config": vars(args),
                },
                handle,
                indent=2,
            )
    if notes or failed:
        print(f"hf_decode_bench: row(s) failed: {[*notes, *failed]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
