"""Hugging Face generate() with a static KV cache, its forward compiled by compile_once.

The recipe (docs/huggingface.md) for a model whose source you do not edit:

    model.forward = compile_once(model.forward, on_mismatch="recompile")
    model.generate(input_ids, max_new_tokens=N, do_sample=False, cache_implementation="static")

Prefill and decode are two argument signatures, so two specializations; later generate() calls
with prompts of the same length compile nothing. The model here is a tiny random Llama built
from a config (no download). Needs the optional extra: pip install "nocompile[hf]".
"""

import sys
import time

import torch

try:
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError:
    print("transformers is not installed: pip install 'nocompile[hf]' to run this example (skipped, nothing compiled).")
    sys.exit(0)

from nocompile import compile_once


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=128,
        eos_token_id=None,  # random weights: generate every requested token
    )
    return LlamaForCausalLM(config).eval()


def generate(model: LlamaForCausalLM, prompt: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, cache_implementation="static")
    return out, time.perf_counter() - started


if __name__ == "__main__":
    torch.set_num_threads(1)
    new_tokens = 32
    prompts = [torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    model = tiny_llama()
    eager = [generate(model, p, new_tokens) for p in prompts]

    # backend="eager" keeps this example fast on a small CPU; leave the default (inductor) on a real model.
    # On CUDA also pass disable_compile=True to generate(): transformers otherwise wraps the model's
    # __call__ in its own torch.compile there.
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    compiled = [generate(model, p, new_tokens) for p in prompts]

    for (ref, _), (out, _) in zip(eager, compiled, strict=True):
        assert torch.equal(ref, out), "compiled generate() differs from eager"
    stats = model.forward.stats
    print(
        f"tokens equal to eager for {len(prompts)} prompts; {stats.compiles} compiles (prefill, decode) "
        f"in {stats.compile_seconds:.1f} s for {stats.calls} forward calls"
    )
    for i, spec in enumerate(model.forward.specializations):
        assert spec.key_function is not None and spec.key is not None
        shapes = {path: tuple(v) for path, prop, v in spec.key_function.describe(spec.key) if prop == "shape"}
        ids, mask = shapes["kwargs['input_ids']"], shapes.get("kwargs['attention_mask']", "not passed")
        print(f"  specialization #{i + 1}: input_ids {ids}, attention_mask {mask}")
    print(
        f"last generate(): eager {eager[-1][1] / new_tokens * 1e6:.0f} us/token, "
        f"compile_once {compiled[-1][1] / new_tokens * 1e6:.0f} us/token"
    )
