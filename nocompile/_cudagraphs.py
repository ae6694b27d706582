"""CUDA graphs for ``compile_once(cudagraphs=True)``: capture a specialization's call once, replay it.

Once guards are gone, what is left of a small call on a GPU is Python launching each kernel.
A ``torch.cuda.CUDAGraph`` records those launches once and replays them with one call. This
module owns that at run time: ``GraphedCall`` wraps one specialization's call (the captured
bytecode) and is what the state's per-call path runs instead; it captures, replays and hands
out the outputs. Built once per specialization from ``_cudagraph_setup`` (the compiling call's
checks, its ``Layout``, the per-call extractor), with ``_cudagraph_address`` (``AddressKey``)
and ``_cudagraph_outputs`` (mapping over outputs, the argument objects in them).

How a ``GraphedCall`` works (the same recipe as vLLM's and SGLang's decode graphs and
``torch.cuda.make_graphed_callables``):

* **Inputs.** The tensor arguments (found by walking args, kwargs, lists, tuples and dicts the
  way ``_layout`` does) are copied into *static* tensors that the graph reads. Everything
  else is read in place: parameters and buffers of ``self`` and any tensor hanging off a
  non-tensor argument object (a KV-cache object, say). An in-place update of such a tensor is
  seen by the next replay; *reassigning* the attribute to a new tensor is not (the graph keeps
  reading the old memory; call ``reset()``).
* **Argument objects.** Because the graph reads the tensors of non-tensor argument objects at
  the addresses it captured, each graph set (``_cudagraph_sets``) remembers *which* objects it
  was captured with (weak references where the object allows them) and, for a plain object
  whose tensors can all be reached by attribute (a KV cache), *where* those tensors were: their
  addresses, sizes, strides, dtypes and devices (``AddressKey``). A call with the same objects
  replays (an identity test per object: the per-call cost). A call with another object computes
  that object's address key once and replays a set whose tensors were at exactly those
  addresses; failing that, when the object a set was captured for has died and the new one's
  tensors have the same layouts, the new object *adopts* the dead one's memory (its values
  copied there, each tensor ``set_`` to it: ``_cudagraph_sets.GraphSet.adopt``) and the set
  replays: a new ``StaticCache`` per ``generate()`` costs a copy, not a capture. The memory of
  the last dead object is kept for that (one per specialization), never while anyone else holds
  a tensor or a view of it, and never moved under a graph that reads an object where it is. So
  a replay only ever reads memory of the current call's objects; anything else (the old cache
  still alive, a cache of another length) captures a new set. Modules and objects that cannot be
  walked whole are matched by identity only. At most ``MAX_OBJECT_SETS`` sets per
  specialization: a set whose objects died is evicted least recently used first; with every
  set's objects alive a new one raises ``GuardMismatchError``.
* **Capture.** On the first call of a specialization after it compiled: the call's tensors are
  copied into the static tensors and the compiled call runs once on them on a side stream (the
  warm-up, which *is* this call: its result is returned, so state updated in place changes once
  per call), then ``torch.cuda.graph`` captures it into the memory pool that all graphs of one
  state share (one ``graph_pool_handle`` per state). Each specialization (``guards="inputs"``
  signature) gets its own graphs; ``on_mismatch="recompile"`` compiles a new specialization,
  which captures its own.
* **Sizes.** With ``cudagraph_sizes`` and one dynamic dim, one graph per size, each captured the
  first time a call pads to it; a call is padded up to the next captured size (the padded rows'
  outputs are sliced away) and a call above the largest size runs the compiled code without a
  graph. Padding is only correct when rows of the dynamic dim do not interact (a batch dim), as in
  every inference engine.
* **Outputs.** ``cudagraph_outputs="static"`` (default) returns the graph's own output tensors:
  the next replay overwrites them, as ``torch.cuda.graph`` documents. Keep a result across calls
  with ``.clone()``, or ask for ``cudagraph_outputs="copy"``. Outputs must be tensors (or None,
  in tuples, lists and dicts, which keep their types; or one of the call's argument objects,
  returned as it is); anything else raises ``NoCompileError`` at capture.
* **Threads and streams.** One lock per state covers copy-in, replay and output handling, so
  concurrent callers never interleave on the static tensors. Work is enqueued on the caller's
  current stream of the capture device; when a call comes on another stream than the previous
  replay, it first waits for that stream, so graphs sharing static tensors and a memory pool
  never run concurrently on the GPU. With several threads, use ``cudagraph_outputs="copy"``:
  static outputs are overwritten by the other threads' calls.
* **Safety.** The graph replays only GPU work: Python side effects of the transformed bytecode
  (reassigning a buffer, which calls ``update``; setting an attribute; mutating a dict or
  list) would happen once at capture and never again. Such bytecode is refused when the state
  installs the specialization, with the decompiled source. A function that mutates one of its
  tensor arguments in place is refused at capture (the mutation would land in the static copy).
"""

from __future__ import annotations

import logging
import threading
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import _compat
from ._arguments import ArgumentTree, walk
from ._compiler import describe_function
from ._cudagraph_address import AddressKey
from ._cudagraph_outputs import clone, find_slots, map_outputs, put
from ._cudagraph_sets import GraphSet, Plan
from ._cudagraph_setup import Layout, build_extractor, prepare, substitute
from ._errors import GuardMismatchError, NoCompileError
from ._options import CompileOptions
from ._selector import ShapeCheck

log = logging.getLogger("nocompile")

MAX_OBJECT_SETS = 8
"""Graph sets one specialization keeps for different non-tensor argument objects (memory bound:
each set holds its graphs and their static outputs in the state's pool)."""


class CudaOps:
    """The CUDA calls this module makes, in one place (tests swap in a CPU stand-in)."""

    device_type = "cuda"

    def __init__(self) -> None:
        self.current_stream_id: Callable[[int], int] = _compat.current_raw_stream_getter()
        """``device index -> int`` naming the current stream: cheap, for the per-call path."""

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def current_stream(self, device: torch.device) -> Any:
        return torch.cuda.current_stream(device)

    def new_stream(self, device: torch.device) -> Any:
        new: Callable[..., Any] = torch.cuda.Stream  # an unannotated class in torch's stubs
        return new(device=device)

    def stream(self, stream: Any) -> Any:
        return torch.cuda.stream(stream)

    def pool_handle(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def default_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device())

    def capture(self, pool: Any, stream: Any, fn: Callable[[], Any]) -> tuple[Any, Any]:
        """``(graph, output)``: ``fn()`` captured into a new graph in ``pool`` on ``stream``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            out = fn()
        return graph, out


CUDA = CudaOps()


class GraphPool:
    """What every graph of one state shares: memory pool, lock, capture stream, last stream."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handle: Any = None
        self.capture_streams: dict[torch.device, Any] = {}
        self.last_stream: Any = None
        self.last_stream_id: int | None = None
        self.calls: weakref.WeakSet[GraphedCall] = weakref.WeakSet()
        """Every specialization's graphed call: they share argument objects (a prefill and the
        decode steps get the same cache) and so what adopting memory must know of."""

    def _sets(self) -> list[GraphSet]:
        return [graphs for call in list(self.calls) for graphs in call._sets]

    def release_outputs(self) -> None:
        """Static outputs of every specialization stop holding the argument objects of their last
        call (a call with other objects arrived): an old cache is then free to die."""
        for graphs in self._sets():
            for plan in graphs.plans.values():
                if plan.slots:
                    plan.release()

    def known(self, obj: Any) -> bool:
        """Whether some graph set of this state has ``obj`` among its live objects: its tensors
        may be read by those graphs where they are now, so they must stay where they are."""
        return any(ref() is obj for graphs in self._sets() for ref in graphs.refs)

    def holders(self, tensor: torch.Tensor) -> int:
        """How many graph sets' ``kept`` tuples hold ``tensor``."""
        return sum(any(t is tensor for t in kept) for graphs in self._sets() for kept in graphs.kept)

    def pool_handle(self) -> Any:
        if self.handle is None:
            self.handle = CUDA.pool_handle()
        return self.handle

    def capture_stream(self, device: torch.device) -> Any:
        stream = self.capture_streams.get(device)
        if stream is None:
            stream = self.capture_streams[device] = CUDA.new_stream(device)
        return stream

    def graphed(
        self,
        fn: types.FunctionType,
        call: Callable[..., Any],
        options: CompileOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        transformed_code: types.CodeType | None,
        shape_check: ShapeCheck | None,
        state_before: dict[str, Any] | None,
        automatic: Any,
        bound: dict[str, Any] | None = None,
    ) -> Callable[..., Any]:
        """What a new specialization's calls run: ``call`` replayed from CUDA graphs (captured on
        first use), given the compiling call's arguments as the call left them. A specialization
        made dynamic automatically (``automatic``: what was made dynamic) runs ``call`` itself: a
        graph has fixed shapes (``cudagraph_sizes`` with ``dynamic=`` pads calls to captured sizes
        instead). ``bound``: the call's arguments as its request bound them (not bound again)."""
        if automatic is not None:
            log.info(
                "%s: a specialization dynamic in %s runs without CUDA graphs",
                fn.__qualname__,
                ", ".join(automatic.describe()),
            )
            return call
        return GraphedCall.for_call(
            fn,
            call,
            self,
            walk(fn, args, kwargs, follow_modules=True, bound=bound),  # what the call left
            transformed_code=transformed_code,
            copy_outputs=options.cudagraph_outputs == "copy",
            dynamic=options.dynamic,
            sizes=options.cudagraph_sizes,
            shape_check=shape_check,
            state_before=state_before,
        )


# -- the graphed call -----------------------------------------------------------------------


class GraphedCall:
    """One specialization's call, captured into CUDA graphs on first use and replayed after.

    ``inner`` is the non-graph call (the captured bytecode); it also serves calls above the
    largest of ``cudagraph_sizes``. Construct with ``for_call``, which checks the compiling
    call's inputs.
    """

    def __init__(
        self,
        fn: types.FunctionType,
        inner: Callable[..., Any],
        pool: GraphPool,
        layout: Layout,
        device: torch.device,
        copy_outputs: bool,
        dyn: tuple[int, int] | None,
        sizes: tuple[int, ...],
        shape_check: ShapeCheck | None,
        address: AddressKey | None = None,
    ) -> None:
        self._fn = fn
        self._inner = inner
        self._pool = pool
        self._layout = layout
        self._device = device
        self._device_index = device.index if device.index is not None else 0
        self._copy_outputs = copy_outputs
        self._dyn = dyn  # (index among the tensors, dim) of the padded tensor, or None
        self._sizes = sizes
        self._shape_check = shape_check
        self._extract = build_extractor(fn, layout)
        self._address = address if address is not None else AddressKey([])
        self._sets: list[GraphSet] = []  # least recently used first
        self._last: GraphSet | None = None
        self._statics: list[torch.Tensor] | None = None  # shared by every graph of this call
        self._padded: dict[int, torch.Tensor] = {}  # size -> static buffer of the padded tensor
        self._allowed: dict[int, bool] = {}  # size -> whether Dynamo's shape guards hold there
        self.captures = 0
        """Graphs captured so far (one per size per argument-object set)."""
        self.fallbacks = 0
        """Calls that ran without a graph (above the largest captured size)."""
        self.rebinds = 0
        """Calls that brought other argument objects and replayed graphs captured for objects whose
        tensors were at the same addresses (a new cache in a freed cache's memory)."""
        self.adoptions = 0
        """Calls with new objects that adopted a dead object's memory (``GraphSet.adopt``)."""
        self._spare: GraphSet | None = None
        """The set whose dead objects' memory is kept for adoption (at most one)."""
        pool.calls.add(self)

    @classmethod
    def for_call(
        cls,
        fn: types.FunctionType,
        inner: Callable[..., Any],
        pool: GraphPool,
        tree: ArgumentTree,
        *,
        transformed_code: types.CodeType | None,
        copy_outputs: bool,
        dynamic: Mapping[str, tuple[int, ...]],
        sizes: Sequence[int] | None,
        shape_check: ShapeCheck | None,
        state_before: dict[str, Any] | None = None,
    ) -> GraphedCall:
        """The graphed call of a specialization; ``tree`` is the compiling call's arguments walked
        after it ran (modules followed), ``state_before`` their ``identity_snapshot`` before it.
        The checks are ``_cudagraph_setup.prepare``'s (``NoCompileError`` if it cannot be graphed)."""
        s = prepare(
            fn, tree, CUDA, transformed_code=transformed_code, dynamic=dynamic, sizes=sizes, state_before=state_before
        )
        return cls(fn, inner, pool, s.layout, s.device, copy_outputs, s.dyn, s.sizes, shape_check, s.address)

    # -- per call -----------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            objects, tensors = self._extract(*args, **kwargs)
        except Exception as exc:
            raise self._structure_error(exc) from exc
        dyn = self._dyn
        n = tensors[dyn[0]].shape[dyn[1]] if dyn is not None else -1
        pool = self._pool
        with pool.lock:
            graphs = self._last
            if graphs is None or not graphs.matches(objects):
                graphs = self._graph_set(objects)
            plan = graphs.plans.get(n)
            if plan is None:
                size = self._size_for(n, args, kwargs)
                if size is not None:
                    if size not in graphs.graphs:  # first call of this size: it runs, then is captured
                        return self._capture(graphs, size, n, args, kwargs, tensors)
                    plan = self._plan(graphs, size, n)
            if plan is not None:
                stream_id = CUDA.current_stream_id(self._device_index)
                if stream_id != pool.last_stream_id:  # another stream than the last replay's
                    self._follow(stream_id)
                for dst, src in zip(plan.dsts, tensors, strict=False):
                    dst.copy_(src)
                plan.graph.replay()
                if plan.slots:
                    plan.fill(objects)
                if self._copy_outputs:
                    return map_outputs(plan.output, clone)
                return plan.output
        self.fallbacks += 1
        return self._inner(*args, **kwargs)

    # -- capture (under the pool's lock) --------------------------------------------------------

    def _follow(self, stream_id: int) -> None:
        """Order the caller's stream after the previous replay's stream (under the lock)."""
        pool = self._pool
        stream = CUDA.current_stream(self._device)
        if pool.last_stream is not None:
            stream.wait_stream(pool.last_stream)
        pool.last_stream = stream
        pool.last_stream_id = stream_id

    def address_key(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """The ``AddressKey`` of a call's argument objects: what a call with new objects computes
        to find graphs it may replay (for tests and for measuring its cost)."""
        return self._address(self._extract(*args, **kwargs)[0])[0]

    def _graph_set(self, objects: tuple[Any, ...]) -> GraphSet:
        """The graph set for a call whose objects are not the last call's (under the lock)."""
        self._pool.release_outputs()  # outputs stop holding the last call's objects
        for graphs in self._sets:
            if graphs.matches(objects):
                return self._use(graphs)
        key, key_tensors = self._address(objects) if self._address.any else ((None,) * len(objects), ())
        if self._address.any:
            for graphs in self._sets:
                if graphs.reusable(objects, key):
                    graphs.bind(objects, key_tensors, self._address, self._died)
                    self.rebinds += 1
                    return self._use(graphs)
            for graphs in reversed(self._sets):  # most recently used first
                positions = graphs.adoptable(objects, key, key_tensors, self._pool)
                if positions:
                    graphs.adopt(positions, key_tensors)
                    graphs.bind(objects, key_tensors, self._address, self._died)
                    self.adoptions += 1
                    if self._spare is graphs:
                        self._spare = None
                    return self._use(graphs)
        # Sets that can never match again: an object matched by identity has died.
        self._sets = [g for g in self._sets if g.matchable()]
        while len(self._sets) >= MAX_OBJECT_SETS:
            dead = next((g for g in self._sets if not g.alive()), None)
            if dead is None:
                paths = ", ".join(
                    f"{p} ({type(o).__name__})" for p, o in zip(self._layout.object_paths, objects, strict=False)
                )
                raise GuardMismatchError(
                    f"compile_once(cudagraphs=True) on {self._where()}: this specialization already captured "
                    f"graphs for {MAX_OBJECT_SETS} different sets of argument objects [{paths}], all still alive, "
                    "and this call brings yet another. A CUDA graph reads those objects' tensors at the addresses "
                    "it captured, so each new object whose tensors sit elsewhere needs a new capture. Fix: pass "
                    "the same objects on every call (update their tensors in place), let old ones go, or use "
                    "cudagraphs=False."
                )
            self._sets.remove(dead)  # least recently used first
        graphs = GraphSet((), {}, key=key)
        graphs.bind(objects, key_tensors or tuple(() for _ in objects), self._address, self._died)
        self._sets.append(graphs)
        self._last = graphs
        return graphs

    def _died(self, graphs: GraphSet) -> None:
        """A plain object of ``graphs`` died: its memory is the spare now, the previous spare's goes
        (one object's memory kept per specialization, for the next new object to adopt)."""
        previous, self._spare = self._spare, graphs
        if previous is not None and previous is not graphs:
            previous.release_dead()

    def _use(self, graphs: GraphSet) -> GraphSet:
        self._sets.remove(graphs)
        self._sets.append(graphs)
        self._last = graphs
        return graphs

    def _size_for(self, n: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
        """The captured size a call of size ``n`` pads to (``-1``: no sizes), or None: no graph."""
        if self._dyn is None:
            return -1
        if n < 2:
            return None
        for size in self._sizes:
            if size >= n and self._size_allowed(size, args, kwargs):
                return size
        return None

    def _size_allowed(self, size: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether Dynamo's shape guards hold at ``size`` (the compiled code is only valid there)."""
        allowed = self._allowed.get(size)
        if allowed is None:
            allowed = True
            if self._shape_check is not None and self._dyn is not None:
                statics = list(self._extract(*args, **kwargs)[1])
                index, dim = self._dyn
                shape = list(statics[index].shape)
                shape[dim] = size
                statics[index] = torch.empty(shape, dtype=statics[index].dtype, device="meta")
                g_args, g_kwargs = substitute(self._fn, args, kwargs, statics)
                allowed = bool(self._shape_check(*g_args, **g_kwargs))
            self._allowed[size] = allowed
        return allowed

    def _static_inputs(self, tensors: tuple[torch.Tensor, ...], size: int) -> list[torch.Tensor]:
        """The static tensors a graph of ``size`` reads (made on first use, then shared)."""
        if self._statics is None:
            with torch.inference_mode(False):
                self._statics = [_static_like(t) for t in tensors]
        statics = list(self._statics)
        if self._dyn is not None:
            index, dim = self._dyn
            buffer = self._padded.get(size)
            if buffer is None:
                like = tensors[index]
                shape = list(like.shape)
                shape[dim] = size
                with torch.inference_mode(False):
                    buffer = self._padded[size] = torch.zeros(shape, dtype=like.dtype, device=like.device)
            statics[index] = buffer
        return statics

    def _capture(
        self,
        graphs: GraphSet,
        size: int,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tensors: tuple[torch.Tensor, ...],
    ) -> Any:
        """Run this call once on the static inputs (the warm-up, on a side stream), then capture it.

        The warm-up is the call itself, so a function that updates state in place (a buffer, a
        cache) runs exactly once per call, capture included. Returns the warm-up's result.
        """
        pool = self._pool
        current = CUDA.current_stream(self._device)
        last = pool.last_stream
        if last is not None and last != current:  # a replay on another stream may still read the statics
            current.wait_stream(last)
        statics = self._static_inputs(tensors, size)
        for dst, src in zip(self._destinations(statics, n), tensors, strict=False):
            dst.copy_(src)
        g_args, g_kwargs = substitute(self._fn, args, kwargs, statics)
        side = pool.capture_stream(self._device)
        side.wait_stream(current)
        versions = [_compat.tensor_version(t) for t in statics]
        with CUDA.stream(side):
            result = self._inner(*g_args, **g_kwargs)
        current.wait_stream(side)
        self._check_outputs(result, size, graphs)
        map_outputs(result, lambda t: t.record_stream(current) if t.device.type == "cuda" else None)
        mutated = [
            path
            for path, t, v in zip(self._layout.tensor_paths, statics, versions, strict=False)
            if _compat.tensor_version(t) != v
        ]
        if mutated:
            raise NoCompileError(
                f"compile_once(cudagraphs=True) on {self._where()}: the function mutates its tensor "
                f"argument(s) {mutated} in place. Under a CUDA graph, tensor arguments are copied into "
                "static tensors, so the mutation would land in the copy, never in your tensor. Fix: "
                "return the new value, keep such state in a module buffer or an attribute of an "
                "argument object (those are read in place), or use cudagraphs=False."
            )
        try:
            graph, out = CUDA.capture(pool.pool_handle(), side, lambda: self._inner(*g_args, **g_kwargs))
        except Exception as exc:
            raise NoCompileError(
                f"compile_once(cudagraphs=True) on {self._where()}: capturing the compiled call into a "
                f"CUDA graph failed ({type(exc).__name__}: {exc}). Typical causes: a CPU-GPU "
                "synchronisation in the function (.item(), .tolist(), printing a tensor, a CPU "
                "tensor), or a backend that cannot be captured. Fix: remove it, or use cudagraphs=False."
            ) from exc
        # The stored output must not hold this call's objects: a later call may bring others.
        slots = tuple(find_slots(out, {id(obj): i for i, obj in enumerate(self._extract(*args, **kwargs)[0])}))
        for path, _ in slots:
            out = put(out, path, None)
        graphs.graphs[size] = (graph, out, slots)
        self.captures += 1
        pool.last_stream = current  # the static inputs were filled on this stream
        pool.last_stream_id = CUDA.current_stream_id(self._device_index)
        if self._dyn is not None and n != size:
            dim = self._dyn[1]
            result = map_outputs(result, lambda t: t.narrow(dim, 0, n))
        return result

    def _destinations(self, statics: list[torch.Tensor], n: int) -> tuple[torch.Tensor, ...]:
        """Where a call of size ``n`` copies its tensors: the statics, the padded one narrowed to ``n``."""
        dsts = list(statics)
        if self._dyn is not None:
            index, dim = self._dyn
            dsts[index] = statics[index].narrow(dim, 0, n)
        return tuple(dsts)

    def _check_outputs(self, out: Any, size: int, graphs: GraphSet) -> None:
        tensors: list[torch.Tensor] = []
        arguments = {id(ref()) for ref in graphs.refs}
        try:
            map_outputs(out, tensors.append, lambda leaf: id(leaf) in arguments)
        except TypeError as exc:
            raise NoCompileError(
                f"compile_once(cudagraphs=True) on {self._where()}: the function returns a {exc} "
                "(inside its result). A CUDA graph replays GPU work only, so a Python value would be "
                "frozen at its capture-time value. Fix: return tensors only (or None, in tuples, lists "
                "and dicts; an argument object, such as a cache passed in, may be returned as it is), "
                "or use cudagraphs=False."
            ) from None
        for t in tensors:
            if t.requires_grad:
                raise NoCompileError(
                    f"compile_once(cudagraphs=True) on {self._where()}: an output requires grad. CUDA "
                    "graphs here serve inference: call the function under torch.no_grad() or "
                    "torch.inference_mode(), or use cudagraphs=False for training."
                )
            if self._dyn is not None:
                dim = self._dyn[1]
                if t.ndim <= dim or t.shape[dim] != size:
                    raise NoCompileError(
                        f"compile_once(cudagraph_sizes=...) on {self._where()}: an output of shape "
                        f"{tuple(t.shape)} does not keep the padded dim {dim} (size {size} in the graph "
                        f"for size {size}), so the padded rows cannot be sliced away and would change it. "
                        "Fix: return outputs that keep the dynamic dim at the same index, or drop "
                        "cudagraph_sizes."
                    )

    def _plan(self, graphs: GraphSet, size: int, n: int) -> Plan:
        """The plan of a call of size ``n`` (``-1``: no sizes) replaying the graph of ``size``."""
        graph, out, slots = graphs.graphs[size]
        statics = list(self._statics or ())  # made by the capture, which precedes any plan
        if self._dyn is not None:
            statics[self._dyn[0]] = self._padded[size]
            if n != size:
                dim = self._dyn[1]
                out = map_outputs(out, lambda t: t.narrow(dim, 0, n))
        plan = Plan(self._destinations(statics, n), graph, out, slots, [None] * len(slots))
        graphs.plans[n] = plan
        return plan

    # -- messages -----------------------------------------------------------------------------

    def _where(self) -> str:
        return describe_function(self._fn)

    def _structure_error(self, exc: BaseException) -> NoCompileError:
        return NoCompileError(
            f"compile_once(cudagraphs=True) on {self._where()}: this call's arguments do not have the "
            f"structure the graph was captured for (tensors at {list(self._layout.tensor_paths)}, "
            f"objects at {list(self._layout.object_paths)}): {type(exc).__name__}: {exc}. "
            "Fix: call with the same structure, or use guards='inputs' with on_mismatch='recompile'."
        )

    def __repr__(self) -> str:
        sizes = f", sizes={list(self._sizes)}" if self._dyn is not None else ""
        return f"<nocompile CUDA-graphed call of {self._where()} on {self._device}{sizes}; {self.captures} graph(s)>"


def _static_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor of ``t``'s shape, strides, dtype and device (the compiled code may assume the strides)."""
    return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
