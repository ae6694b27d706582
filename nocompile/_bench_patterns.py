"""``python -m nocompile bench-patterns``: how real code calls a compiled model, per guard policy.

Each *pattern* is one way user code calls the reference model between calls of the compiled
function: a loop inside a function (the fast path), a loop at the top level of the script that
defines the function (every iteration rebinds the script's globals, which are the function's
globals), a caller bumping a global counter the function never reads, a fresh dataclass or dict
of tensors each call, an int attribute of an argument object advancing each call (a
sliding-window position), and a value the compiled code baked in written again each call with
an equal value ("fingerprint new": a call whose per-call evidence is new, so the input check
verifies it). Each pattern runs under ``compile_once`` with ``guards="inputs"``, ``"none"`` and
``"dynamo"`` and under stock ``torch.compile(fullgraph=True)``, every function on a script
namespace of its own (``_script``), timed side by side in one process, interleaved round by
round (``_bench.measure``). Results are checked against eager once before timing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

from ._bench import BenchConfig, Row, environment, measure
from ._decorator import compile_once
from ._reference import ReferenceMLP

#: The script every way gets a namespace of its own of: the functions the patterns call.
SCRIPT = """
def step(x):
    return MODEL(x)

def step_batch(batch):
    return MODEL(batch.x)

def step_dict(inputs):
    return MODEL(inputs["x"])

def step_window(x, state):
    return MODEL(x) + state.position

def step_scaled(x):
    return MODEL(x) * SETTINGS.scale
"""

WAYS = (
    'compile_once(guards="inputs")',
    'compile_once(guards="none")',
    'compile_once(guards="dynamo")',
    "torch.compile",
)


@dataclasses.dataclass
class Batch:
    x: torch.Tensor


class WindowState:
    """An argument object whose int attribute advances each call (a sliding-window position)."""

    def __init__(self) -> None:
        self.position = 0


class Settings:
    scale = 2.0


def _script(model: torch.nn.Module) -> dict[str, Any]:
    """A script's namespace: a module of its own (registered in ``sys.modules``, as ``__main__``
    is; torch 2.11's Dynamo imports a frame's module by name)."""
    script = types.ModuleType(f"nocompile_bench_script_{next(_SCRIPTS)}")
    sys.modules[script.__name__] = script
    namespace: dict[str, Any] = vars(script)
    namespace.update(MODEL=model, SETTINGS=Settings())
    exec(compile(SCRIPT, "<nocompile bench script>", "exec"), namespace)
    return namespace


_SCRIPTS = itertools.count()


def _compiled(way: str, fn: Callable[..., Any], backend: str) -> Callable[..., Any]:
    if way == "torch.compile":
        return torch.compile(fn, fullgraph=True, backend=backend)
    policy = way.split('"')[1]
    extra: dict[str, Any] = {} if policy == "none" else {"on_mismatch": "recompile"}
    return compile_once(fn, backend=backend, guards=policy, **extra)  # type: ignore[call-overload, no-any-return]


def pattern_calls(
    way: str, model: torch.nn.Module, x: torch.Tensor, backend: str
) -> tuple[dict[str, Callable[[], Any]], set[str]]:
    """Each pattern's call for one way, on a script namespace of its own, warmed up (compiled);
    and the patterns whose last warm-up result differed from eager (``guards="none"`` runs the
    first compile's code whatever changed)."""
    ns = _script(model)
    step = _compiled(way, ns["step"], backend)
    step_batch = _compiled(way, ns["step_batch"], backend)
    step_dict = _compiled(way, ns["step_dict"], backend)
    step_window = _compiled(way, ns["step_window"], backend)
    step_scaled = _compiled(way, ns["step_scaled"], backend)
    counter = itertools.count()
    state = WindowState()
    settings = ns["SETTINGS"]

    def top_level_loop() -> Any:
        ns["i"] = next(counter)  # what `for i in range(n): y = step(x)` at a script's top level writes
        ns["y"] = step(x)
        return ns["y"]

    def global_counter() -> Any:
        ns["CALLS"] = next(counter)
        return step(x)

    def window() -> Any:
        state.position = next(counter) % 64 + 2  # 0 and 1 are specialized apart; from 2 on, one dynamic int
        return step_window(x, state)

    def scaled() -> Any:
        settings.scale = 2.0 + 0.0 * next(counter)  # a new float object each call, always 2.0
        return step_scaled(x)

    calls: dict[str, Callable[[], Any]] = {
        "a loop inside a function (the fast path)": lambda: step(x),
        "a loop at a script's top level (rebinds its globals)": top_level_loop,
        "the caller bumps a global the function never reads": global_counter,
        "a fresh dataclass of tensors each call": lambda: step_batch(Batch(x)),
        "a fresh dict of tensors each call": lambda: step_dict({"x": x}),
        "an int attribute of an argument advancing (sliding window)": window,
        "fingerprint new: a baked-in value rewritten, equal": scaled,
    }
    wrong = set()
    with torch.no_grad():
        expected = model(x)
        for name, call in calls.items():
            for _ in range(4):  # compile, automatic dynamic's recompile, warm up
                out = call()
            base = expected + state.position if "window" in name else expected
            base = base * 2.0 if "baked-in" in name else base
            if not torch.allclose(out, base, atol=1e-5):
                wrong.add(name)
    if wrong and way != WAYS[1]:
        raise RuntimeError(f"bench-patterns: {way}: results differ from eager in {sorted(wrong)}")
    return calls, wrong


def run(cfg: BenchConfig, layer_counts: tuple[int, ...]) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    results = []
    for layers in layer_counts:
        torch.manual_seed(0)
        model = ReferenceMLP(cfg.width, layers).eval()
        x = torch.randn(cfg.batch, cfg.width)
        made = {way: pattern_calls(way, model, x, cfg.backend) for way in WAYS}
        table = {way: calls for way, (calls, _) in made.items()}
        rows = [Row(f"{pattern} | {way}", call) for way, calls in table.items() for pattern, call in calls.items()]
        measure(rows, cfg)
        by_name = {row.name: row.median_us for row in rows}
        fast = {way: by_name[f"{next(iter(table[way]))} | {way}"] for way in WAYS}
        results.append(
            {
                "layers": layers,
                "patterns": [
                    {
                        "pattern": pattern,
                        "us": {way: by_name[f"{pattern} | {way}"] for way in WAYS},
                        "x_fast_path": {way: by_name[f"{pattern} | {way}"] / fast[way] for way in WAYS},
                        "wrong": sorted(way for way in WAYS if pattern in made[way][1]),
                    }
                    for pattern in table[WAYS[0]]
                ],
            }
        )
    return {"config": dataclasses.asdict(cfg), "environment": environment(cfg), "results": results}


def format_table(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    lines = [
        f"nocompile bench-patterns: reference MLP, width {cfg['width']}, batch {cfg['batch']}, backend "
        f"{cfg['backend']!r}, torch.no_grad(); torch {env['torch']}, Python {env['python']}, "
        f"{env['threads']} thread(s); median of {cfg['rounds']} interleaved rounds, us per call "
        "(x: that way's own fast path)",
    ]
    short = {WAYS[0]: "inputs", WAYS[1]: "none", WAYS[2]: "dynamo", WAYS[3]: "stock"}
    for block in result["results"]:
        width = max(len(p["pattern"]) for p in block["patterns"])
        lines += ["", f"{block['layers']} layers", f"{'how the function is called':<{width}}"]
        lines[-1] += "".join(f"  {short[w]:>16}" for w in WAYS)
        for p in block["patterns"]:
            cells = "".join(
                f"  {p['us'][w]:>8.1f} ({p['x_fast_path'][w]:>5.1f}x)"
                if w not in p["wrong"]
                else f"  {'wrong result':>16}"
                for w in WAYS
            )
            lines.append(f"{p['pattern']:<{width}}{cells}")
    lines += ["", '"wrong result": the way returned another result than eager (guards="none" checks nothing).']
    return "\n".join(lines)


def main(cfg: BenchConfig, layer_counts: tuple[int, ...], as_json: bool) -> int:
    result = run(cfg, layer_counts)
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(result))
    return 0
