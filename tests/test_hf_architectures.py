"""Hugging Face architectures through compile_once: forward and greedy generate() equal eager.

One table of tiny random models built from configs (no download): the decoder-only families
people run, plus BERT, ViT, T5 and BART for forward only. Each compiles with backend="eager"
(the same Dynamo path, no C++ build) and is compared with an eager twin holding the same weights.
What breaks on real models is specialization, not tracing: every prompt length is a new prefill,
every cache length a new decode step, and a sliding-window cache keeps a Python int that grows
each step. Automatic dynamic sizes keep that to a few compiles for prompts of three lengths;
docs/huggingface.md has the recipe. Generate cases beyond one per attention or cache path are
marked slow: deselected by default, run by ``bash .ci/run`` (pytest -m slow).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nocompile import compile_once  # noqa: E402

VOCAB = 128
HIDDEN = 64
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
# Random weights: no end-of-sequence token, so every requested token is a forward call. The pad
# token (0) and the prompts' tokens (2 and up) differ, so generate() infers no padding mask.
TOKENS = {"eos_token_id": None, "pad_token_id": 0, "bos_token_id": 1}
# Smaller than prompt + new tokens for every prompt below, and than the longest prompt itself:
# the cache's not-yet-full, becoming-full and full paths all run.
WINDOW = 4
PROMPT_LENGTHS = (3, 5, 9)  # ascending: each generate() sizes a larger StaticCache than the last
NEW_TOKENS = 6
# Automatic dynamic sizes: prefill and decode compiled static for the first prompt, then once
# more each with the prompt and cache lengths dynamic (2 + 2), as stock torch.compile does for
# these calls (without them: one specialization per length, 6).
GENERATE_COMPILES = 4
# Generate cases that run by default: one per distinct attention or cache path (full attention
# with RoPE, all layers sliding, sliding and full layers mixed, GPT-2's own attention, ALiBi, MoE
# routing). Each case compiles several specializations of a whole model: the rest are marked slow.
GENERATE_BY_DEFAULT = {"llama", "mistral", "gemma2", "gemma3", "gpt2", "bloom", "mixtral"}


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    model_class: str  # a transformers attribute: missing in this transformers version -> skipped
    config: Callable[[], Any]
    kind: str = "causal"  # "causal" | "encoder" | "vision" | "seq2seq"
    generate_compiles: int = GENERATE_COMPILES  # bound for the three-prompt generate test

    def build(self, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return model_class(self.model_class)(self.config()).eval()


def model_class(name: str) -> Any:
    cls = getattr(transformers, name, None)
    if cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {name}")
    return cls


def config(class_name: str, **fields: Any) -> Callable[[], Any]:
    return lambda: model_class(class_name)(**{**TOKENS, **fields})


def llama_like(class_name: str, **overrides: Any) -> Callable[[], Any]:
    """The field names Llama and its descendants share."""
    fields = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    return config(class_name, **{**fields, **overrides})


def gpt2_like(class_name: str, **overrides: Any) -> Callable[[], Any]:
    """GPT-2's field names (n_embd, n_layer, ...), which GPT-J and GPT-BigCode keep."""
    fields = {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": 2, "n_head": HEADS, "n_positions": 64}
    return config(class_name, **{**fields, **overrides})


ARCHITECTURES = [
    Architecture("llama", "LlamaForCausalLM", llama_like("LlamaConfig")),
    Architecture("mistral", "MistralForCausalLM", llama_like("MistralConfig", sliding_window=WINDOW)),
    Architecture("qwen2", "Qwen2ForCausalLM", llama_like("Qwen2Config")),
    Architecture("qwen3", "Qwen3ForCausalLM", llama_like("Qwen3Config", head_dim=HEAD_DIM)),
    Architecture("gemma", "GemmaForCausalLM", llama_like("GemmaConfig", head_dim=HEAD_DIM)),
    # Gemma 2 and 3 alternate sliding-window and full-attention layers: one of each. Their decode
    # step compiles once more than Llama's: the sliding layer branches on whether its window is
    # full (the first prompt decodes on both sides of that), and the full layer's cache length
    # varies. Mistral's layers are all sliding, their cache capped at the window: 4 is its bound.
    Architecture(
        "gemma2",
        "Gemma2ForCausalLM",
        llama_like(
            "Gemma2Config",
            head_dim=HEAD_DIM,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"],
        ),
        generate_compiles=GENERATE_COMPILES + 1,
    ),
    Architecture(
        "gemma3",
        "Gemma3ForCausalLM",
        llama_like(
            "Gemma3TextConfig",
            head_dim=HEAD_DIM,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"],
        ),
        generate_compiles=GENERATE_COMPILES + 1,
    ),
    Architecture("phi", "PhiForCausalLM", llama_like("PhiConfig")),
    Architecture("phi3", "Phi3ForCausalLM", llama_like("Phi3Config")),
    Architecture("gpt2", "GPT2LMHeadModel", gpt2_like("GPT2Config")),
    Architecture("gpt_neox", "GPTNeoXForCausalLM", llama_like("GPTNeoXConfig", num_key_value_heads=HEADS)),
    Architecture(
        "opt",
        "OPTForCausalLM",
        config(
            "OPTConfig",
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            ffn_dim=2 * HIDDEN,
            word_embed_proj_dim=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            max_position_embeddings=64,
        ),
    ),
    Architecture(
        "falcon",
        "FalconForCausalLM",
        config("FalconConfig", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS),
    ),
    Architecture(
        "bloom",
        "BloomForCausalLM",
        config("BloomConfig", vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=2, n_head=HEADS),
    ),
    Architecture("gptj", "GPTJForCausalLM", gpt2_like("GPTJConfig", rotary_dim=HEAD_DIM // 2)),
    Architecture(
        "mixtral",
        "MixtralForCausalLM",
        llama_like("MixtralConfig", num_local_experts=4, num_experts_per_tok=2),
    ),
    Architecture(
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        llama_like(
            "Qwen2MoeConfig",
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=HIDDEN,
            shared_expert_intermediate_size=HIDDEN,
        ),
    ),
    Architecture("stablelm", "StableLmForCausalLM", llama_like("StableLmConfig")),
    Architecture("olmo", "OlmoForCausalLM", llama_like("OlmoConfig")),
    Architecture("cohere", "CohereForCausalLM", llama_like("CohereConfig")),
    Architecture("starcoder2", "Starcoder2ForCausalLM", llama_like("Starcoder2Config")),
    Architecture("gpt_bigcode", "GPTBigCodeForCausalLM", gpt2_like("GPTBigCodeConfig")),
    Architecture("granite", "GraniteForCausalLM", llama_like("GraniteConfig")),
    Architecture(
        "bert",
        "BertModel",
        config(
            "BertConfig",
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            max_position_embeddings=64,
        ),
        kind="encoder",
    ),
    Architecture(
        "vit",
        "ViTModel",
        lambda: model_class("ViTConfig")(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            image_size=32,
            patch_size=8,
        ),
        kind="vision",
    ),
    Architecture(
        "t5",
        "T5ForConditionalGeneration",
        config(
            "T5Config",
            vocab_size=VOCAB,
            d_model=HIDDEN,
            d_kv=HEAD_DIM,
            d_ff=2 * HIDDEN,
            num_layers=2,
            num_heads=HEADS,
            decoder_start_token_id=0,
        ),
        kind="seq2seq",
    ),
    Architecture(
        "bart",
        "BartForConditionalGeneration",
        config(
            "BartConfig",
            vocab_size=VOCAB,
            d_model=HIDDEN,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS,
            encoder_ffn_dim=2 * HIDDEN,
            decoder_ffn_dim=2 * HIDDEN,
            max_position_embeddings=64,
            forced_eos_token_id=None,
        ),
        kind="seq2seq",
    ),
]
GENERATE_CASES = [
    pytest.param(arch, id=arch.name, marks=() if arch.name in GENERATE_BY_DEFAULT else pytest.mark.slow)
    for arch in ARCHITECTURES
    if arch.kind == "causal"
]


def ids(arch: Architecture) -> str:
    return arch.name


def twin(model: Any) -> Any:
    """An eager model with the same weights, so references do not touch the compiled one."""
    other = type(model)(model.config).eval()
    other.load_state_dict(model.state_dict())
    return other


def tokens(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(2, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def inputs(kind: str, seed: int) -> dict[str, torch.Tensor]:
    if kind == "vision":
        return {"pixel_values": torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))}
    if kind == "seq2seq":
        return {"input_ids": tokens((1, 7), seed), "decoder_input_ids": tokens((1, 4), seed + 100)}
    return {"input_ids": tokens((1, 7), seed)}


def main_output(output: Any) -> torch.Tensor:
    """The logits where the model has a head, else its last hidden state."""
    return output["logits"] if "logits" in output else output["last_hidden_state"]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=ids)
def test_forward_matches_eager(arch: Architecture) -> None:
    # Two inputs of one signature: the second runs the captured bytecode, not a new compile.
    model = arch.build()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    with torch.no_grad():
        for seed in (1, 2):
            got, expected = model(**inputs(arch.kind, seed)), reference(**inputs(arch.kind, seed))
            torch.testing.assert_close(main_output(got), main_output(expected), rtol=0, atol=0)
    assert model.forward.stats.compiles == 1, model.forward.stats


@pytest.mark.parametrize("arch", GENERATE_CASES)
def test_generate_with_a_static_cache_matches_eager(arch: Architecture) -> None:
    # The recipe of docs/huggingface.md over prompts of three lengths, each generate() with a new,
    # larger StaticCache. Tokens must equal eager's exactly; the compile bound is what automatic
    # dynamic sizes should give (stock torch.compile's count for the same calls).
    model = arch.build()
    reference = twin(model)
    model.forward = compile_once(model.forward, backend="eager", on_mismatch="recompile")
    options = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "cache_implementation": "static"}
    for seed, length in enumerate(PROMPT_LENGTHS):
        prompt = tokens((1, length), seed)
        got, expected = model.generate(prompt, **options), reference.generate(prompt, **options)
        assert got.shape == (1, length + NEW_TOKENS)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    stats = model.forward.stats
    assert stats.calls == NEW_TOKENS * len(PROMPT_LENGTHS)
    assert stats.compiles <= arch.generate_compiles, stats
