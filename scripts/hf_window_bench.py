"""A sliding-window model against its twin without a window: ``generate()`` time per way.

    python scripts/hf_window_bench.py [--backend eager] [--layers 4] [--new-tokens 48] [--rounds 7] [--device cuda]

Tiny random ``MistralForCausalLM`` (every layer sliding, window 16) and ``LlamaForCausalLM`` of the
same sizes and weights' seed (no download), each with a static cache, greedy. Each is timed under
``model.forward = compile_once(model.forward, on_mismatch="recompile")`` (the default
``guards="inputs"``) and under stock ``torch.compile(fullgraph=True)``; the four rows are
interleaved round by round in one process and the medians printed, with the Mistral/Llama ratio
of each way. A sliding-window cache keeps a Python int that advances every step, which the
default's fingerprint once took for a change on every call (issue #25).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch


def build(name: str, layers: int, **extra: Any) -> Any:
    import transformers

    fields = {
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    torch.manual_seed(0)
    config = getattr(transformers, f"{name}Config")(**fields, **extra)
    return getattr(transformers, f"{name}ForCausalLM")(config).eval()


def main() -> int:
    from nocompile import compile_once

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    ids = torch.randint(3, 128, (1, 8), generator=torch.Generator().manual_seed(0)).to(device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def generate(model: Any) -> Any:
        return model.generate(
            ids,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            cache_implementation="static",
            disable_compile=True,  # on CUDA generate() would compile forward itself, around compile_once
        )

    models = {}
    for label, name, extra in (("llama", "Llama", {}), ("mistral", "Mistral", {"sliding_window": 16})):
        for way in ("compile_once", "torch.compile"):
            model = build(name, args.layers, **extra).to(device)
            if way == "compile_once":
                model.forward = compile_once(model.forward, backend=args.backend, on_mismatch="recompile")
            else:
                model.forward = torch.compile(model.forward, backend=args.backend, fullgraph=True)
            with torch.no_grad():
                generate(model)
                generate(model)  # the second prompt's calls settle every specialization
            models[(label, way)] = model
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    with torch.no_grad():
        for _ in range(args.rounds):
            for key, model in models.items():
                synchronize()
                started = time.perf_counter()
                generate(model)
                synchronize()
                seconds[key].append(time.perf_counter() - started)
    medians = {key: statistics.median(times) * 1e3 for key, times in seconds.items()}
    print(
        f"torch {torch.__version__}, {device.type}, backend {args.backend!r}, {args.layers} layers, hidden 64, "
        f"{args.new_tokens} new tokens, median of {args.rounds} interleaved rounds (ms per generate())"
    )
    for way in ("compile_once", "torch.compile"):
        llama, mistral = medians[("llama", way)], medians[("mistral", way)]
        print(f"{way:<14} llama {llama:8.1f}  mistral {mistral:8.1f}  mistral/llama {mistral / llama:.3f}")
    for (label, way), model in models.items():
        if way == "compile_once":
            print(f"{label}: {model.forward.stats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
