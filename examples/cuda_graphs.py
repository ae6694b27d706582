"""compile_once(cudagraphs=True): a decode-sized call replayed from a CUDA graph.

On a GPU, once guards are gone, most of a small call's time is Python launching kernels one by
one. With ``cudagraphs=True`` the compiled call is captured into a CUDA graph on the first call
after compiling, and every later call copies its tensor arguments into the graph's static
inputs and replays it with one launch. Parameters and buffers are read in place, so an in-place
update (``param.mul_``, ``buf.copy_``) is seen by the next replay.

Outputs are the graph's own tensors by default: the next call overwrites them. ``.clone()``
what you keep, or pass ``cudagraph_outputs="copy"``.

``cudagraph_sizes`` serves a varying batch: one graph per size, a call padded up to the next
size, the padded rows sliced off the outputs.

Without CUDA this script says so and exits 0.
"""

import torch
from torch import nn

from nocompile import compile_once


class Decoder(nn.Module):
    def __init__(self, width: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    @compile_once(backend="eager", cudagraphs=True)  # backend="inductor" (default) fuses kernels too
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + nn.functional.gelu(layer(x))
        return self.norm(x)


@compile_once(
    backend="eager",
    cudagraphs=True,
    dynamic={"x": 0},  # the batch dim varies...
    cudagraph_sizes=[1, 2, 4, 8],  # ...so capture these sizes and pad calls up to them
    on_mismatch="recompile",  # Dynamo compiles size 1 as a specialization of its own
    cudagraph_outputs="copy",  # fresh outputs: safe to keep across calls
)
def head(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x @ weight, dim=-1)


def main() -> None:
    if not torch.cuda.is_available():
        print("cuda_graphs.py: no CUDA device here, nothing to compile or capture; this example needs a GPU.")
        return
    torch.manual_seed(0)
    model = Decoder().cuda().eval()
    x = torch.randn(1, 64, device="cuda")
    with torch.no_grad():
        for _ in range(3):  # compile, capture, replay
            out = model(x)
        torch.testing.assert_close(out, Decoder.forward.__wrapped__(model, x))  # equals eager
        kept = out.clone()  # the next call overwrites `out`
        model.layers[0].weight.mul_(0.5)  # in place: the next replay sees it
        changed = model(x)
        torch.testing.assert_close(changed, Decoder.forward.__wrapped__(model, x))
        print("replay after an in-place weight update changed the output:", not torch.equal(kept, changed))

        weight = torch.randn(64, 10, device="cuda")
        for batch in [3, 1, 6, 2, 12]:  # 12 > 8: runs without a graph
            probs = head(torch.randn(batch, 64, device="cuda"), weight)
            assert probs.shape == (batch, 10)
    print("compiled:", model.forward.stats)
    print("compiled:", head.stats)


if __name__ == "__main__":
    main()
