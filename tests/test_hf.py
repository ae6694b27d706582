"""Hugging Face transformers: greedy generate() with a static cache through compile_once.

A tiny random Llama built from a config (no download). Skipped when transformers is absent
(install the extra: pip install -e ".[hf]"). docs/huggingface.md has the recipe and what
generate() passes to forward at each step, which test_what_generate_passes_to_forward pins.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nocompile import CompiledBoundMethod, GuardMismatchError, compile_once  # noqa: E402

VOCAB = 128


def tiny_llama(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        eos_token_id=None,  # random weights: never stop early, every step is a forward call
    )
    return transformers.LlamaForCausalLM(config).eval()


def twin(model: Any) -> Any:
    """An eager model with the same weights, so references do not touch the compiled one."""
    other = transformers.LlamaForCausalLM(model.config).eval()
    other.load_state_dict(model.state_dict())
    return other


def generate(model: Any, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, cache_implementation="static")


def prompt(length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))


def test_generate_matches_eager_with_one_compile_for_prefill_and_one_for_decode() -> None:
    model = tiny_llama()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    assert isinstance(model.forward, CompiledBoundMethod)

    first, second = prompt(5, 1), prompt(5, 2)
    torch.testing.assert_close(generate(model, first, 8), generate(reference, first, 8), rtol=0, atol=0)
    stats = model.forward.stats
    assert (stats.compiles, stats.calls) == (2, 8)  # prefill + 7 decode steps, 2 specializations
    prefill, decode = model.forward.specializations
    assert "kwargs['input_ids']: type=Tensor, shape=(1, 5)" in prefill.signature()
    assert "kwargs['input_ids']: type=Tensor, shape=(1, 1)" in decode.signature()

    # Another prompt of the same length: a new StaticCache object, nothing compiled.
    torch.testing.assert_close(generate(model, second, 8), generate(reference, second, 8), rtol=0, atol=0)
    assert model.forward.stats.compiles == 2 and model.forward.stats.calls == 16


def test_batch_with_padding_mask_matches_eager() -> None:
    # With an attention_mask from the caller, the prefill gets a 4-D mask too: (B, 1, P, L).
    model = tiny_llama()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # the second prompt is left-padded
    options = {"max_new_tokens": 5, "do_sample": False, "cache_implementation": "static", "pad_token_id": 0}
    for seed in (8, 9):
        ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(seed))
        out = model.generate(ids, attention_mask=mask, **options)
        torch.testing.assert_close(out, reference.generate(ids, attention_mask=mask, **options), rtol=0, atol=0)
    assert model.forward.stats.compiles == 2 and model.forward.stats.calls == 10
    marker = "kwargs['attention_mask']: type=Tensor, shape="
    masks = [spec.signature().split(marker)[1][:13] for spec in model.forward.specializations]
    assert masks == ["(2, 1, 6, 10)", "(2, 1, 1, 10)"]


def test_a_larger_cache_recompiles_instead_of_reusing_the_small_one() -> None:
    # generate() sizes the StaticCache to prompt + max_new_tokens - 1 (and never shrinks it).
    # The prefill's signature does not show the cache size (no attention mask is passed), so
    # only the check of the cache object's attributes (max_cache_len) tells the calls apart.
    model = tiny_llama()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    p = prompt(5, 3)
    generate(model, p, 4)
    torch.testing.assert_close(generate(model, p, 12), generate(reference, p, 12), rtol=0, atol=0)
    assert model.forward.stats.compiles == 4


def test_dynamic_cache_grows_into_one_dynamic_specialization() -> None:
    # Without cache_implementation="static", generate() uses a DynamicCache whose tensors grow by
    # one position per step. Automatic dynamic makes that dim dynamic after it changed once, so
    # the tokens equal eager's with a few compiles, not one per step.
    model = tiny_llama()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile", max_compiles=4)
    options = {"max_new_tokens": 8, "do_sample": False}
    torch.testing.assert_close(model.generate(prompt(5, 10), **options), reference.generate(prompt(5, 10), **options))
    assert model.forward.stats.compiles <= 4


def test_dynamic_cache_with_dynamic_false_is_caught_not_replayed_at_the_old_length() -> None:
    # dynamic=False: every step is a new signature, so max_compiles runs out with an error naming
    # the cache tensors. (Before argument objects were followed, inductor's code for the first
    # decode step was reused and failed with its internal size assertion, "expected size 6==5".)
    model = tiny_llama()
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile", max_compiles=3, dynamic=False)
    expected = r"layers\[0\]\.keys: shape compiled for \(1, 2, 6, 16\), got \(1, 2, 7, 16\)"
    with pytest.raises(GuardMismatchError, match=expected):
        model.generate(prompt(5, 10), max_new_tokens=6, do_sample=False)


def test_twelve_prompt_lengths_share_a_few_compiles() -> None:
    """Issue #14's traffic: prompt lengths 3 to 36 in one process, tokens equal eager's, at most 4
    compiles (prefill, decode, then each made dynamic once)."""
    model = tiny_llama()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    for i, length in enumerate((3, 5, 8, 11, 14, 17, 20, 23, 26, 29, 33, 36)):
        tokens = prompt(length, 40 + i)
        torch.testing.assert_close(generate(model, tokens, 4), generate(reference, tokens, 4), rtol=0, atol=0)
    assert model.forward.stats.compiles <= 4


def test_default_on_mismatch_raises_at_the_first_decode_step_with_the_fix() -> None:
    model = tiny_llama()
    model.forward = compile_once(model.forward, backend="eager")
    with pytest.raises(GuardMismatchError, match='on_mismatch="recompile"'):
        generate(model, prompt(5, 4), 3)
    assert model.forward.stats.compiles == 1  # the prefill


def test_module_proxy_generate_runs_eagerly() -> None:
    # generate() calls self(...) on the original module, not on the proxy: use the bound form.
    model = tiny_llama()
    proxy = compile_once(model, backend="eager", on_mismatch="recompile")
    out = proxy.generate(prompt(5, 5), max_new_tokens=3, do_sample=False, cache_implementation="static")
    assert out.shape == (1, 8) and proxy.stats.calls == 0


def test_what_generate_passes_to_forward() -> None:
    """Pins the per-step arguments docs/huggingface.md describes (transformers 5.x)."""
    model = tiny_llama()
    calls: list[dict[str, Any]] = []
    original = model.forward

    @functools.wraps(original)
    def spy(*args: Any, **kwargs: Any) -> Any:
        assert not args
        calls.append(dict(kwargs))
        return original(**kwargs)

    model.forward = spy
    generate(model, prompt(5, 6), 3)
    generate(model, prompt(5, 7), 3)
    prefill, decode = calls[0], calls[1]
    # transformers 5.24 renamed forward's past_key_values parameter to cache.
    name = "cache" if "cache" in prefill else "past_key_values"
    assert sorted(prefill) == sorted(["input_ids", "logits_to_keep", name, "position_ids", "return_dict", "use_cache"])
    assert sorted(decode) == sorted([*prefill, "attention_mask"])
    assert prefill["input_ids"].shape == (1, 5) and decode["input_ids"].shape == (1, 1)
    assert prefill["position_ids"].tolist() == [[0, 1, 2, 3, 4]]
    assert [c["position_ids"].tolist() for c in calls[1:3]] == [[[5]], [[6]]]  # values change, shape not
    cache = prefill[name]
    assert type(cache).__name__ == "StaticCache"
    assert decode["attention_mask"].shape == (1, 1, 1, cache.layers[0].max_cache_len)
    assert decode["attention_mask"].dtype == torch.bool
    assert (prefill["logits_to_keep"], prefill["use_cache"], prefill["return_dict"]) == (1, True, True)
    assert all(c[name] is cache for c in calls[:3])  # one object per generate() ...
    assert calls[3][name] is not cache  # ... and a new one for the next
