"""A stand-in for an imported modeling library, for the battery in ``tests/real_world.py``.

It plays the part of ``transformers/models/llama/modeling_llama.py`` or a timm layer file: a
module of its own, whose globals (``EPS``, ``ACT_SCALE``, the attention registry) are not the
globals of the function a user decorates. Functions and modules here read those globals by
name, as library code does; the battery's scenarios rebind or mutate them between calls, as
users, patching libraries (liger-kernel, a registered attention function) and notebooks do.

The battery restores everything it changes here after each run, so the values below are the
state every scenario starts from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6
ACT_SCALE = 1.0
ROPE_THETA = 10000.0
LAYER_SCALES = [1.0, 1.0]
GENERATION_DEFAULTS: dict[str, dict[str, float]] = {"sampling": {"temperature": 1.0}}


class Defaults:
    """A library-wide settings object (``transformers.utils.logging``-style module state)."""

    scale = 1.0

    def __init__(self) -> None:
        self.bias = 0.0


SETTINGS = Defaults()


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``LlamaRMSNorm``'s computation, reading the library's ``EPS`` global."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def scaled_gelu(x: torch.Tensor) -> torch.Tensor:
    """An activation that reads the library's ``ACT_SCALE`` global."""
    return F.gelu(x) * ACT_SCALE


def rotary_frequencies(dim: int) -> torch.Tensor:
    """Llama's ``inv_freq``, from the library's ``ROPE_THETA`` global."""
    return 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def apply_rotary(x: torch.Tensor) -> torch.Tensor:
    """A rotary embedding over the last dim of ``x`` (positions 0..seq-1), computed in place of
    transformers' ``apply_rotary_pos_emb``: liger-kernel replaces this function in the module."""
    seq, dim = x.shape[-2], x.shape[-1]
    angles = torch.arange(seq, dtype=torch.float32)[:, None] * rotary_frequencies(dim)[None, :]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
    half = dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def eager_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """transformers' ``eager_attention_forward``: softmax(q k^T * scaling) v."""
    weights = torch.softmax((q @ k.transpose(-1, -2)) * scaling, dim=-1)
    return weights @ v


def sdpa_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """transformers' ``sdpa_attention_forward``: the same computation through SDPA."""
    return F.scaled_dot_product_attention(q, k, v, scale=scaling)


ALL_ATTENTION_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "eager": eager_attention_forward,
    "sdpa": sdpa_attention_forward,
}
"""transformers' ``ALL_ATTENTION_FUNCTIONS``: users register their own kernels in it."""


class Config:
    """A ``PretrainedConfig`` in miniature: plain attributes, read by the modules that hold it."""

    def __init__(self, **values: Any) -> None:
        self.hidden = 8
        self.attn_implementation = "sdpa"
        self.__dict__.update(values)


class LibMLP(nn.Module):
    """An MLP of the library whose forward reads the library's ``ACT_SCALE`` global."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.up = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.up(x)) * ACT_SCALE


class LibRMSNorm(nn.Module):
    """``LlamaRMSNorm``: calls the module-level helper ``rms_norm``, which reads ``EPS``."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight)


class LibAttention(nn.Module):
    """``LlamaAttention``'s dispatch: ``eager_attention_forward`` unless the config names another
    implementation, looked up in ``ALL_ATTENTION_FUNCTIONS``; rotary through ``apply_rotary``."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.scaling = config.hidden**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = apply_rotary(q), apply_rotary(k)
        attention_interface: Callable[..., torch.Tensor] = eager_attention_forward
        if self.config.attn_implementation != "eager":
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config.attn_implementation]
        return attention_interface(q, k, v, self.scaling)


class LibDecoder(nn.Module):
    """A one-layer decoder of the library: norm, attention, MLP, as ``LlamaModel`` composes them."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config or Config()
        self.norm = LibRMSNorm(self.config.hidden)
        self.attn = LibAttention(self.config)
        self.mlp: nn.Module = LibMLP(self.config.hidden)

    def forward(self, x: torch.Tensor, position_scale: float = 1.0) -> torch.Tensor:
        h = x + self.attn(self.norm(x)) * position_scale
        return h + self.mlp(self.norm(h))
