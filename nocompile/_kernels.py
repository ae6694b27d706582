"""Compiled kernels inside the artifact: Dynamo's graph built by AOTInductor, loaded without inductor.

With ``backend="inductor"`` the ahead-of-time path (``cache_dir``, ``aot_compile()``) hands
Dynamo's graph to ``KernelBackend`` instead of inductor's own backend. It compiles the graph
with AOTInductor into one package (the kernels and the C++ code that calls them, built into a
shared library; on CUDA the kernel binaries too) and returns ``CompiledKernels``, which torch's
ahead-of-time save stores by ``serialize_compile_artifacts``: the package's bytes travel in the
artifact's payload, under its checksum. Loading the artifact calls
``deserialize_compile_artifacts``, which hands the bytes to AOTInductor's C++ loader. A warm start
therefore imports nothing of inductor, runs no CPU ISA probe and compiles nothing, whatever
inductor's own cache holds: the artifact is all another machine needs.

Dynamo lifts parameters and buffers into the graph's inputs, so the package holds no weights:
the transformed bytecode passes the live tensors on every call (weights changed in place or
reassigned are seen, as with inductor's own kernels).

Graphs AOTInductor does not take go to inductor's own backend, as before (their artifact carries
inductor's generated sources, and a warm start finds the kernels in inductor's cache or builds
them): a graph that needs autograd (grad enabled and an input requiring grad), takes a
non-tensor input (a dynamic size), a tensor subclass, tensors of more than one device or of a
device other than CPU and CUDA, returns something other than tensors, runs under
``cudagraphs=True``, or that AOTInductor fails on (a warning).

Kernels built for another machine must not run: ``identity`` (the CPU architecture, the vector
ISAs its flags offer, the thread count the kernels were specialized for; the CUDA or HIP version
and each GPU's name and compute capability) is part of the artifact key.
"""

from __future__ import annotations

import logging
import pickle
import platform
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import _compat

log = logging.getLogger("nocompile")

#: What an artifact's header says of kernels compiled by AOTInductor.
AOTI = "aotinductor"

Layouts = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


class CompiledKernels:
    """One graph compiled by AOTInductor and loaded: called with the graph's flat tensors (what the
    transformed bytecode passes to ``__compiled_fn_*``), returns the list of its outputs."""

    def __init__(self, package: bytes, device_index: int, layouts: Layouts | None, isa: str) -> None:
        self.package = package
        self.device_index = device_index
        self.layouts = layouts
        """Each input's sizes and strides, checked per call like inductor's ``size_asserts``; None
        when those are off (``guards="inputs"`` checks the inputs itself)."""
        self.isa = isa
        self.loader = _compat.aoti_loader(package, device_index)
        self.direct_call: Callable[..., list[torch.Tensor]] = _call(self.loader.run, layouts)
        """What ``_compiler.bytecode_function`` binds for the transformed bytecode to call."""

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        return self.direct_call(*args)

    def __repr__(self) -> str:
        return f"<CompiledKernels: AOTInductor, {len(self.package)} bytes, ISA {self.isa}>"

    @classmethod
    def serialize_compile_artifacts(cls, fn: CompiledKernels) -> bytes:
        state = {"package": fn.package, "device_index": fn.device_index, "layouts": fn.layouts, "isa": fn.isa}
        return pickle.dumps(state)

    @classmethod
    def deserialize_compile_artifacts(cls, data: bytes) -> CompiledKernels:
        return cls(**pickle.loads(data))


def _call(
    run: Callable[[list[torch.Tensor]], list[torch.Tensor]], layouts: Layouts | None
) -> Callable[..., list[torch.Tensor]]:
    if layouts is None:

        def call(*args: torch.Tensor) -> list[torch.Tensor]:
            return run(list(args))

        return call
    check = _compat.size_stride_assert()

    def checked(*args: torch.Tensor) -> list[torch.Tensor]:
        for tensor, (size, stride) in zip(args, layouts, strict=True):
            check(tensor, size, stride)
        return run(list(args))

    return checked


_unavailable: list[str | None] = []


def unavailable() -> str | None:
    """Why this torch cannot build or load ``CompiledKernels`` (None when it can); asked once."""
    if not _unavailable:
        _unavailable.append(_compat.aoti_unavailable(CompiledKernels))
        if _unavailable[0] is not None:
            log.info("nocompile: artifacts carry inductor's own output: %s", _unavailable[0])
    return _unavailable[0]


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def not_taken(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> str | None:
    """Why AOTInductor does not take this graph (None when it does): see the module docstring."""
    if not example_inputs:
        return "the graph takes no inputs"
    if not all(isinstance(t, torch.Tensor) for t in example_inputs):
        return "the graph takes non-tensor inputs (dynamic sizes)"
    if any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in example_inputs):
        return "the graph takes a tensor subclass"
    devices = {t.device for t in example_inputs}
    if len(devices) > 1 or next(iter(devices)).type not in ("cpu", "cuda"):
        return f"the graph's inputs are on {sorted(map(str, devices))}"
    unverified = unverified_device(next(iter(devices)).type)
    if unverified is not None:
        return unverified
    if torch.is_grad_enabled() and any(t.requires_grad for t in example_inputs):
        return "the graph needs autograd (grad enabled and an input requires grad)"
    (output,) = [node for node in gm.graph.nodes if node.op == "output"]
    for leaf in _leaves(output.args):
        meta = getattr(leaf, "meta", {})
        if not isinstance(meta.get("example_value", meta.get("val")), torch.Tensor):
            return "the graph returns something other than tensors"
    return None


def unverified_device(device_type: str) -> str | None:
    """Why AOTInductor is not used on ``device_type`` with this torch, or None. On CUDA it needs
    torch 2.13: on torch 2.11 with an H100 the cold process crashed (SIGSEGV) compiling the 8-layer
    reference with it (2026-12-08); inductor's own backend is what was verified to save there."""
    if device_type == "cuda" and _compat.torch_version() < (2, 13):
        return "CUDA on torch < 2.13 (AOTInductor crashed there; inductor's own backend is verified)"
    return None


class KernelBackend:
    """The backend ``torch.compile`` gets on the ahead-of-time path for ``backend="inductor"``:
    AOTInductor where it takes the graph (``CompiledKernels``), inductor's own backend elsewhere.
    ``outcome`` says which, for the artifact's header."""

    __name__ = "inductor"  # what torch records as the backend's name

    def __init__(self, options: dict[str, Any], cudagraphs: bool = False) -> None:
        self.options = options
        self.cudagraphs = cudagraphs
        self.outcome = "not compiled"

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        reason = "cudagraphs=True" if self.cudagraphs else unavailable() or not_taken(gm, example_inputs)
        if reason is None:
            try:
                package = _compat.aoti_package(gm, example_inputs, self.options)
                device = example_inputs[0].device
                index = -1 if device.type == "cpu" else int(device.index or 0)
                layouts = None
                if self.options.get("size_asserts", True):
                    layouts = tuple((tuple(t.shape), tuple(t.stride())) for t in example_inputs)
                isa = _compat.built_cpu_isa() if device.type == "cpu" else device.type
                kernels = CompiledKernels(package, index, layouts, isa)
            except Exception as exc:  # an op AOTInductor cannot lower, a compiler error...
                reason = f"AOTInductor failed: {type(exc).__name__}: {str(exc)[:300]}"
                log.warning("nocompile: %s; compiling with inductor's own backend instead", reason)
            else:
                self.outcome = f"{AOTI} ({isa})"
                return kernels
        self.outcome = f"inductor ({reason})"
        log.info("nocompile: kernels by inductor's own backend: %s", reason)
        return _compat.compile_backend("inductor", None, self.options)(gm, example_inputs)


def identity(devices: Iterable[torch.device]) -> dict[str, Any]:
    """What makes compiled kernels foreign to another machine, for the artifact key: the CPU
    architecture, the vector ISAs its flags offer (by the flags alone, without inductor's compiler
    probe; ATen's dispatch level, which ``ATEN_CPU_CAPABILITY`` lowers), the thread count CPU
    kernels are specialized for; for CUDA devices in ``devices`` the CUDA (or HIP) version and each
    GPU's name and compute capability."""
    found: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu_isa": list(_compat.cpu_isa_candidates()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    cuda = [d for d in devices if d.type == "cuda"]
    gpus = sorted({d.index if d.index is not None else torch.cuda.current_device() for d in cuda})
    if gpus:
        found["cuda"] = torch.version.cuda
        found["hip"] = torch.version.hip
        found["gpus"] = [
            f"{i}: {torch.cuda.get_device_name(i)} sm_{''.join(map(str, torch.cuda.get_device_capability(i)))}"
            for i in gpus
        ]
    return found
