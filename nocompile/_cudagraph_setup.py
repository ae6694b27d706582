"""What a ``GraphedCall`` is built from: the compiling call's checks, its layout, its extractor.

Nothing here runs on a replay, which only runs the extractor ``build_extractor`` generates:
``prepare`` runs once per specialization, when the state installs it with ``cudagraphs=True``
(``_cudagraphs.GraphedCall.for_call``), and ``substitute`` at a capture or a size's first shape
check. ``prepare`` refuses what a graph cannot replay (``NoCompileError`` with the reason and
the fix):

* bytecode that rebinds a global or a closure cell, and a compiling call that changed what its
  arguments are (``_arguments.identity_snapshot`` before and after): a replay runs GPU work only;
* no CUDA, tensor arguments off the GPU or on several devices, a broadcast view (it cannot be
  copied into a static tensor of its layout), a padded argument that is not contiguous.

It returns a ``Setup``: the ``Layout`` (where the call's tensors and argument objects are, as
expressions), the device, the padded tensor's dim and the sizes, and the ``AddressKey``.
"""

from __future__ import annotations

import dataclasses
import dis
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ._arguments import ArgumentTree, identity_snapshot, rebuild, walk
from ._codegen import define_like, parameter_list
from ._compiler import describe_function
from ._cudagraph_address import AddressKey
from ._errors import NoCompileError

if TYPE_CHECKING:
    from ._cudagraphs import CudaOps

# Bytecode that rebinds a global or a closure cell: a replay would skip it. Attribute and item
# stores are not judged by opcode: torch versions write an attribute set differently (an opcode
# or a helper call; docs/cudagraphs.md, "Refused, with a clear error"), and both forms also build
# new objects (a returned ModelOutput) and reset library globals (transformers' output-capturing
# flags). What matters — a change to the arguments — is found by ``_arguments.identity_snapshot``;
# attribute changes of global objects are not seen (docs/cudagraphs.md).
_SIDE_EFFECT_OPS = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_DEREF"})
# No method names: ``update``, ``clear``, ``__setitem__``, ``object_setattr_ignore_descriptor``
# also appear when the code builds a *new* object it returns (transformers' ``ModelOutput``) or
# rewrites its own ``**kwargs`` dict (transformers' code does both). Mutations of the arguments — a
# module buffer reassigned (``self._buffers.update(...)``), an attribute set on a cache — are found
# by comparing the arguments before and after the compiling call instead
# (``_arguments.identity_snapshot``), which names exactly what changed.


# -- checks of the compiling call -----------------------------------------------------------


def side_effects(code: types.CodeType) -> list[str]:
    """The stores in the transformed bytecode that a graph replay would not repeat.

    Only the opcodes: method calls that mutate are judged by their effect on the arguments
    (``_arguments.identity_snapshot``), since the same calls also build new objects.
    """
    ops = {i.opname for i in dis.get_instructions(code)} & _SIDE_EFFECT_OPS
    return [f"executes {op}" for op in sorted(ops)]


def check_arguments_unchanged(
    before: dict[str, Any], after: dict[str, Any], where: str, code: types.CodeType | None
) -> None:
    """Refuse a compiled call that rebound anything reachable from its arguments (``NoCompileError``)."""
    changed = [path for path in dict.fromkeys([*before, *after]) if before.get(path) != after.get(path)]
    if not changed:
        return
    shown = ", ".join(changed[:8]) + (f", ... ({len(changed) - 8} more)" if len(changed) > 8 else "")
    source = "\n".join("    " + line for line in decompiled(code).splitlines()) if code is not None else ""
    raise NoCompileError(
        f"compile_once(cudagraphs=True) on {where}: the compiled call changed its arguments' Python "
        f"state ({shown}). A CUDA graph replays GPU work only: an attribute set, a tensor allocated "
        "and stored, a counter bumped would happen once, at capture, and never again.\n"
        + (f"Dynamo's transformed code:\n{source}\n" if source else "")
        + "Fix: create such state before the first call (for a Hugging Face StaticCache, "
        "cache.early_initialization(...)), update tensors in place instead of reassigning them "
        "(self.buf.copy_(...), self.buf.add_(...)), or use cudagraphs=False."
    )


def decompiled(code: types.CodeType) -> str:
    """Readable source of ``code``: depyf's decompilation, or the ``dis`` listing."""
    try:
        import depyf

        return str(depyf.decompile(code))
    except Exception:  # depyf missing, or this bytecode beyond it: the listing still shows the culprit
        return dis.Bytecode(code).dis()


def check_bytecode(code: types.CodeType | None, where: str) -> None:
    """Refuse transformed bytecode with Python side effects (``NoCompileError`` with the source)."""
    if code is None:
        return
    found = side_effects(code)
    if not found:
        return
    source = "\n".join("    " + line for line in decompiled(code).splitlines())
    raise NoCompileError(
        f"compile_once(cudagraphs=True) on {where}: the compiled code has Python side effects "
        f"that a CUDA graph replay would skip (it {', '.join(found)}). Typically the function "
        "reassigns a module buffer (self.buf = ..., compiled as self._buffers.update(...)) or "
        "sets an attribute on an argument object; under a graph that would happen once, at "
        "capture, and never again.\n"
        f"Dynamo's transformed code:\n{source}\n"
        "Fix: update the tensor in place instead (self.buf.copy_(...), self.buf.add_(...)), "
        "return the new value, or use cudagraphs=False."
    )


# -- argument layout ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the tensors and the non-tensor argument objects of a call are, as expressions.

    ``tensors`` and ``objects`` are the values of the call the layout was taken from (for the
    checks at install time); the layout a ``GraphedCall`` keeps has them emptied.
    """

    tensor_exprs: tuple[str, ...]
    tensor_paths: tuple[str, ...]
    object_exprs: tuple[str, ...]
    object_paths: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]
    objects: tuple[Any, ...]

    @classmethod
    def of(cls, tree: ArgumentTree) -> Layout:
        """The layout of a walked call: its argument tensors and the objects that hold state."""
        tensors = tree.argument_tensors()
        objects = tree.argument_objects()
        return cls(
            tuple(str(n.expr) for n in tensors),
            tuple(n.path for n in tensors),
            tuple(str(n.expr) for n in objects),
            tuple(n.path for n in objects),
            tuple(n.value for n in tensors),
            tuple(n.value for n in objects),
        )


def build_extractor(
    fn: types.FunctionType, layout: Layout
) -> Callable[..., tuple[tuple[Any, ...], tuple[torch.Tensor, ...]]]:
    """A function with ``fn``'s parameters returning ``(objects, tensors)`` of a call: the per-call walk."""
    objs = "".join(f"{e}, " for e in layout.object_exprs)
    tens = "".join(f"{e}, " for e in layout.tensor_exprs)
    source = f"def extract({parameter_list(fn)}):\n    return ({objs}), ({tens})\n"
    return define_like(fn, source, {})["extract"]


def substitute(
    fn: types.FunctionType, args: Sequence[Any], kwargs: Mapping[str, Any], tensors: Sequence[torch.Tensor]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` of the call with its argument tensors replaced, in layout order, by ``tensors``."""
    return rebuild(walk(fn, args, kwargs), tensors)


# -- the setup of a graphed call ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """What ``prepare`` found in the compiling call, for ``GraphedCall``'s constructor."""

    layout: Layout
    """Paths and expressions only (the compiling call's tensors and objects are not kept)."""
    device: torch.device
    dyn: tuple[int, int] | None
    """``(index among the tensors, dim)`` of the padded tensor, or None: no sizes."""
    sizes: tuple[int, ...]
    """The captured sizes (those of ``cudagraph_sizes`` of at least 2), when ``dyn`` is set."""
    address: AddressKey


def prepare(
    fn: types.FunctionType,
    tree: ArgumentTree,
    cuda: CudaOps,
    *,
    transformed_code: types.CodeType | None,
    dynamic: Mapping[str, tuple[int, ...]],
    sizes: Sequence[int] | None,
    state_before: dict[str, Any] | None = None,
) -> Setup:
    """Check the compiling call for a graph and take its layout (``NoCompileError`` if it cannot be
    graphed); ``tree`` is its arguments walked after it ran (modules followed), ``state_before``
    their ``identity_snapshot`` before it, ``cuda`` the CUDA calls (``_cudagraphs.CUDA``)."""
    where = describe_function(fn)
    check_bytecode(transformed_code, where)
    if state_before is not None:
        check_arguments_unchanged(state_before, identity_snapshot(tree), where, transformed_code)
    if not cuda.is_available():
        raise NoCompileError(
            f"compile_once(cudagraphs=True) on {where}: CUDA graphs need a CUDA device and "
            "torch.cuda.is_available() is False in this process. Fix: use cudagraphs=False here "
            "(e.g. cudagraphs=torch.cuda.is_available())."
        )
    layout = Layout.of(tree)
    devices: set[torch.device] = set()
    for path, t in zip(layout.tensor_paths, layout.tensors, strict=True):
        if t.device.type != cuda.device_type:
            raise NoCompileError(
                f"compile_once(cudagraphs=True) on {where}: tensor argument {path} is on "
                f"{t.device}; a CUDA graph can only read CUDA tensors. Fix: move it to the GPU "
                "before the call, pass a Python scalar instead, or use cudagraphs=False."
            )
        if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride(), strict=True)):
            raise NoCompileError(
                f"compile_once(cudagraphs=True) on {where}: tensor argument {path} is a broadcast "
                f"view (shape {tuple(t.shape)}, strides {t.stride()}): its elements share memory, so "
                "it cannot be copied into a static input of the same layout. Fix: pass "
                f"{path}.contiguous() (or the un-expanded tensor), or use cudagraphs=False."
            )
        devices.add(t.device)
    device = _device_of(layout, devices, where, cuda)
    dyn = None
    used_sizes: tuple[int, ...] = ()
    if sizes:
        ((name, dims),) = dynamic.items()  # validated: exactly one dynamic dim
        dim = dims[0]
        index = layout.tensor_paths.index(name)
        if layout.tensors[index].shape[dim] >= 2:  # a dynamic specialization; 0/1 are static
            if not layout.tensors[index].is_contiguous():
                raise NoCompileError(
                    f"compile_once(cudagraph_sizes=...) on {where}: the padded argument {name!r} is not "
                    "contiguous; calls are padded into contiguous static buffers, which the code "
                    f"compiled for these strides may not expect. Fix: pass {name}.contiguous()."
                )
            dyn = (index, dim)
            used_sizes = tuple(s for s in sizes if s >= 2)
    address = AddressKey(tree.argument_objects())
    # Keep the paths and expressions, not the compiling call's tensors and objects.
    layout = dataclasses.replace(layout, tensors=(), objects=())
    return Setup(layout, device, dyn, used_sizes, address)


def _device_of(layout: Layout, devices: set[torch.device], where: str, cuda: CudaOps) -> torch.device:
    """The one device of the tensor arguments; without any, of a module argument's CUDA tensors, or the current one."""
    if len(devices) > 1:
        raise NoCompileError(
            f"compile_once(cudagraphs=True) on {where}: tensor arguments are on several devices "
            f"{sorted(str(d) for d in devices)}; one CUDA graph runs on one device. Fix: put them on one."
        )
    if devices:
        return next(iter(devices))
    for obj in layout.objects:
        if isinstance(obj, torch.nn.Module):
            for t in (*obj.parameters(), *obj.buffers()):
                if t.device.type == cuda.device_type:
                    return t.device
    return cuda.default_device()
