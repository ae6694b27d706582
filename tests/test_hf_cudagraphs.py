"""Hugging Face generate() with compile_once(cudagraphs=True) on a GPU (skipped without CUDA).

The recipe of docs/huggingface.md: an early-initialised StaticCache passed to generate(), so
no compiled call allocates cache tensors (a lazily initialised cache is refused under CUDA
graphs: the graph would never repeat the allocation). Each generate() gets a new cache object:
the graphs captured for an old object replay on it only where its tensors sit at the old
object's addresses (the caching allocator handing it the freed cache's blocks).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf import VOCAB  # noqa: E402
from test_hf import tiny_llama as _cpu_tiny_llama  # noqa: E402

from nocompile import NoCompileError, compile_once  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_llama() -> Any:
    return _cpu_tiny_llama().to("cuda")


def initialized_cache(model: Any, length: int) -> Any:
    config = model.config
    cache = transformers.StaticCache(config=config, max_cache_len=length)
    cache.early_initialization(
        batch_size=1,
        num_heads=config.num_key_value_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        dtype=model.dtype,
        device=model.device,
    )
    return cache


def generate(model: Any, prompt: torch.Tensor, cache: Any, new_tokens: int = 8) -> torch.Tensor:
    return model.generate(
        prompt, max_new_tokens=new_tokens, do_sample=False, past_key_values=cache, disable_compile=True
    )


@torch.no_grad()
def test_generate_with_cuda_graphs_matches_eager_and_a_new_cache_adopts_the_old_ones_memory() -> None:
    model = tiny_llama()
    prompt = torch.randint(0, VOCAB, (1, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    references = [generate(model, prompt, initialized_cache(model, 16)) for _ in range(2)]
    model.forward = compile_once(model.forward, backend="eager", cudagraphs=True, on_mismatch="recompile")
    outputs = [generate(model, prompt, initialized_cache(model, 16)) for _ in range(6)]
    for out in outputs:
        torch.testing.assert_close(out, references[0], rtol=0, atol=0)
    specs = model.forward.specializations
    assert len(specs) == 2  # prefill and decode
    # Six caches, each dead after its generate(). The first generate() compiles the prefill and
    # captures the decode step on the first cache; the second captures the prefill on the second
    # cache, whose decode steps then capture too (a prefill graph reads that cache where it is,
    # so its memory is not moved). From the third on, the prefill adopts the dead cache's memory
    # and the decode step finds the new cache at the addresses it captured: no more captures.
    counts = [(spec.call.captures, spec.call.rebinds, spec.call.adoptions) for spec in specs]
    assert sorted(counts) == [(1, 0, 4), (2, 4, 0)], counts


@torch.no_grad()
def test_generate_with_an_old_cache_alive_never_reads_it() -> None:
    model = tiny_llama()
    prompt = torch.randint(0, VOCAB, (1, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    reference = generate(model, prompt, initialized_cache(model, 16))
    model.forward = compile_once(model.forward, backend="eager", cudagraphs=True, on_mismatch="recompile")
    caches = [initialized_cache(model, 16) for _ in range(4)]  # all alive: four address sets
    for cache in caches:
        torch.testing.assert_close(generate(model, prompt, cache), reference, rtol=0, atol=0)
    other = torch.randint(0, VOCAB, (1, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    del model.forward
    expected = generate(model, other, initialized_cache(model, 24))
    model.forward = compile_once(model.forward, backend="eager", cudagraphs=True, on_mismatch="recompile")
    for _ in range(3):  # a cache of another length: its own specializations and graphs
        torch.testing.assert_close(generate(model, other, initialized_cache(model, 24)), expected, rtol=0, atol=0)


@torch.no_grad()
def test_a_lazily_initialised_cache_is_refused_with_the_fix() -> None:
    model = tiny_llama()
    prompt = torch.randint(0, VOCAB, (1, 5), device="cuda")
    model.forward = compile_once(model.forward, backend="eager", cudagraphs=True, on_mismatch="recompile")
    with pytest.raises(NoCompileError, match=r"early_initialization"):
        model.generate(prompt, max_new_tokens=4, do_sample=False, cache_implementation="static", disable_compile=True)
