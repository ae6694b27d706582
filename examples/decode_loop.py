"""A decode loop: one token per call, a static KV cache, one compile serving every step.

Autoregressive decoding calls the model once per token, with the same shapes every time: small,
frequent calls whose cost is mostly Python and Dynamo overhead, which is what nocompile removes.
Two choices keep every step on one compiled specialization:

* the KV cache has a fixed length (``MAX_LEN``) and future positions are masked out, so no shape
  grows from step to step;
* the position is a 0-d tensor, not a Python int. An int is a constant baked into the graph:
  under the default ``guards="inputs"`` the next position would be refused with
  ``GuardMismatchError`` (``on_mismatch="recompile"`` would compile one graph per position), and
  under ``guards="none"`` it would silently reuse the first position.

Run: ``python examples/decode_loop.py`` (a few seconds on a CPU).
"""

from collections.abc import Callable

import torch
from torch import nn

from nocompile import GuardMismatchError, compile_once

VOCAB, WIDTH, MAX_LEN = 64, 32, 48


class TinyDecoder(nn.Module):
    """One attention block and an MLP over a fixed-length KV cache kept in buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.norm1 = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.norm2 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.head = nn.Linear(WIDTH, VOCAB)
        self.register_buffer("keys", torch.zeros(MAX_LEN, WIDTH))
        self.register_buffer("values", torch.zeros(MAX_LEN, WIDTH))
        self.register_buffer("slots", torch.arange(MAX_LEN))

    # backend="eager" compiles in a blink; the default "inductor" generates faster kernels.
    @compile_once(backend="eager")
    def forward(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits for the next token, given ``token`` (shape ``(1,)``) at position ``pos`` (0-d)."""
        x = self.embed(token)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        # In-place writes into the module's buffers: seen by the next call, as in eager mode.
        self.keys.index_copy_(0, pos.view(1), k)
        self.values.index_copy_(0, pos.view(1), v)
        scores = (q @ self.keys.T) * WIDTH**-0.5
        scores = scores.masked_fill(self.slots > pos, float("-inf"))
        x = x + self.proj(scores.softmax(-1) @ self.values)
        x = x + self.mlp(self.norm2(x))
        logits: torch.Tensor = self.head(x)[0]
        return logits


def greedy(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], prompt: list[int], new_tokens: int) -> list[int]:
    """Feed the prompt token by token, then append the most likely token ``new_tokens`` times."""
    tokens = list(prompt)
    for pos in range(len(prompt) + new_tokens - 1):
        logits = step(torch.tensor([tokens[pos]]), torch.tensor(pos))
        if pos >= len(prompt) - 1:
            tokens.append(int(logits.argmax()))
    return tokens


def main() -> None:
    torch.manual_seed(0)
    model = TinyDecoder().eval()
    prompt = [3, 14, 15, 9, 26]
    with torch.no_grad():
        compiled = greedy(model, prompt, new_tokens=20)
        # The original forward, run eagerly on the same module: __wrapped__ is the undecorated function.
        eager = greedy(lambda t, p: TinyDecoder.forward.__wrapped__(model, t, p), prompt, new_tokens=20)
        stats = model.forward.stats
        print("tokens:", compiled[len(prompt) :])
        print("same tokens as eager:", compiled == eager)
        print(f"{stats.calls} calls, {stats.compiles} compile ({stats.compile_seconds:.2f} s)")
        if compiled != eager or stats.compiles != 1:
            raise SystemExit("decode loop: expected eager's tokens from a single compile")

        # A Python int position is a different signature: refused, not silently reused.
        try:
            model(torch.tensor([1]), 7)
        except GuardMismatchError as exc:
            print("an int position is refused:", str(exc).splitlines()[1].strip())
        else:
            raise SystemExit("decode loop: an int position should have been refused")


if __name__ == "__main__":
    main()
