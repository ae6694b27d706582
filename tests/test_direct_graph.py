"""The bytecode calls an inductor inference graph past its Python wrappers (``_compat.direct_graph_call``).

Dynamo's ``__compiled_fn_*`` is four layers of per-call Python around AOTAutograd's generated
runtime wrapper and inductor's kernels. nocompile keeps the generated wrapper (it carries the
semantics: grad mode, input mutations, aliased outputs) and calls it with the kernel runner
itself. These tests pin that the results are the ones the full path gives, that a structure it
does not know (a training graph, another backend) keeps the full path, and that the global it
installs in the function's module goes with the specialization. Inductor compiles are few and
small on purpose (seconds each on two cores).
"""

from __future__ import annotations

import gc
import sys

import pytest
import torch
from torch import nn

from nocompile import _compat, compile_once
from nocompile._compiler import DIRECT_PREFIX

#: The structure ``direct_graph_call`` knows is torch 2.13's (AOTAutograd's generated runtime
#: wrapper); elsewhere every graph keeps the full path, and only the results are pinned.
KNOWN = _compat.torch_version() >= (2, 13)
known_structure = pytest.mark.skipif(not KNOWN, reason="direct graph calls need torch 2.13's AOTAutograd")


def _direct_names() -> list[str]:
    return [name for name in vars(sys.modules[__name__]) if name.startswith(DIRECT_PREFIX)]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) + x


def test_an_inference_graph_is_called_directly_with_the_same_results() -> None:
    block = Block().eval()
    compiled = compile_once(block.forward, guards="none")
    x = torch.randn(4, 8)
    with torch.no_grad():
        expected = block(x)
        torch.testing.assert_close(compiled(x), expected)
        torch.testing.assert_close(compiled(x), expected)
    assert compiled.specializations[0].direct_graphs == int(KNOWN)


def test_the_generated_wrapper_still_applies_mutations_aliases_and_grad_mode() -> None:
    """An input mutated in the graph is copied back, an output that is a view of an input is
    regenerated as one, and grad mode is what the caller set (the wrapper turns it off only
    around the kernels): all of it is the generated runtime wrapper's, which the direct call keeps."""

    def step(x: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counter.add_(1)
        return (x * 2).sin(), x.view(-1)

    compiled = compile_once(step, guards="inputs")
    x, counter = torch.randn(2, 3), torch.zeros(())
    for calls in (1, 2, 3):  # compile, verify, per-call path
        out, flat = compiled(x, counter)
        torch.testing.assert_close(out, (x * 2).sin())
        assert counter.item() == calls
        assert flat._base is x
        assert torch.is_grad_enabled()
    assert compiled.specializations[0].direct_graphs == int(KNOWN)


def test_a_training_graph_keeps_the_full_path_and_its_gradients() -> None:
    block = Block()
    compiled = compile_once(block.forward, guards="none")
    x = torch.randn(4, 8, requires_grad=True)
    compiled(x).sum().backward()
    grad = x.grad.clone()  # type: ignore[union-attr]
    x.grad = None
    compiled(x).sum().backward()
    torch.testing.assert_close(x.grad, grad)
    assert compiled.specializations[0].direct_graphs == 0


def test_another_backend_keeps_the_full_path() -> None:
    compiled = compile_once(lambda x: x + 1, backend="aot_eager", guards="none")
    compiled(torch.ones(2))
    assert compiled.specializations[0].direct_graphs == 0


@known_structure
def test_the_direct_global_goes_with_the_specialization() -> None:
    before = set(_direct_names())

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    compiled = compile_once(double, guards="none")
    with torch.no_grad():
        compiled(torch.ones(2))
    added = set(_direct_names()) - before
    assert len(added) == 1
    compiled.reset()
    gc.collect()
    assert not set(_direct_names()) - before


@known_structure
@pytest.mark.parametrize("guards", ["none", "inputs"])
def test_the_bytecode_loads_the_direct_global(guards: str) -> None:
    """The specialization's function runs a copy of Dynamo's bytecode that loads nocompile's
    global; Dynamo's own (``__compiled_fn_*``) is left as it was, for anything else that runs it."""
    compiled = compile_once(lambda x: x - 1, guards=guards)
    with torch.no_grad():
        compiled(torch.ones(2))
    spec = compiled.specializations[0]
    loaded = spec.call.__code__.co_names
    assert any(name.startswith(DIRECT_PREFIX) for name in loaded)
    assert any(name.startswith("__compiled_fn") for name in spec.transformed_code.co_names)


@known_structure
def test_explain_says_the_graph_is_called_directly() -> None:
    compiled = compile_once(lambda x: x * 3, guards="none")
    with torch.no_grad():
        compiled(torch.ones(2))
    assert "called past its Python wrappers" in compiled.explain()
    assert compiled.report().specializations[0].direct_graphs == 1


@known_structure
def test_guards_dynamo_calls_each_cache_entry_directly() -> None:
    """``guards="dynamo"`` runs the transformed code of whichever of Dynamo's cache entries passes
    its guards: each entry's graph is called directly too, after a recompile as well."""
    compiled = compile_once(lambda x: x.cos(), guards="dynamo")
    with torch.no_grad():
        for n in (2, 3, 2):  # a Dynamo recompile for the new shape, then the first entry again
            x = torch.ones(n)
            torch.testing.assert_close(compiled(x), x.cos())
    assert compiled.stats.compiles == 2
    namespace = compiled.state.entry.__globals__["__nc_target"].__globals__
    candidates = namespace["__nc_candidates"]
    assert len(candidates) == 2
    assert all(any(n.startswith(DIRECT_PREFIX) for n in fn.__code__.co_names) for _, fn in candidates)
