"""compile_once on a plain function: compiled on the first call, bytecode called directly after."""

import torch

from nocompile import compile_once


@compile_once(backend="eager")  # "inductor" (the default) generates faster kernels; "eager" compiles in a blink
def gelu_residual(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x + torch.nn.functional.gelu(x @ weight)


if __name__ == "__main__":
    x, w = torch.randn(4, 16), torch.randn(16, 16)
    for _ in range(3):
        out = gelu_residual(x, w)
    torch.testing.assert_close(out, x + torch.nn.functional.gelu(x @ w))
    print(gelu_residual.stats)  # one compile, three calls
