"""``python -m nocompile bench-cache``: process start to first result, cold versus warm cache.

Each measurement is a fresh Python process that imports torch and nocompile, builds the
reference MLP with ``forward`` decorated by ``compile_once(cache_dir=...)``, calls it once and
prints the result. The parent times from spawning the process to reading that line, so the
figure includes interpreter start, ``import torch`` and everything a real program pays.

* **cold**: an empty ``cache_dir`` and an empty ``TORCHINDUCTOR_CACHE_DIR``: compile ahead of
  time, save the artifact, run.
* **warm**: the ``cache_dir`` and the ``TORCHINDUCTOR_CACHE_DIR`` the cold run filled (the same
  machine, the next process): load the artifact, run.
* **warm, new inductor dir**: the ``cache_dir`` the cold run filled, an empty
  ``TORCHINDUCTOR_CACHE_DIR`` (the artifact copied to a fresh container). The artifact carries
  inductor's kernel *sources*; loading it without inductor's cache rebuilds the C++ kernels.
* **torch caches only**: no ``cache_dir``; inductor's own on-disk caches (FX graph and
  AOTAutograd caches, primed by one untimed run) are warm, Dynamo still traces. This is what a
  second process gets from torch alone.

Rounds are interleaved (cold, warm, ..., cold, ...) so machine load drifts evenly over the rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
from nocompile import compile_once
from nocompile._reference import ReferenceMLP
imported = time.perf_counter()

cache = os.environ.get("BENCH_CACHE") or None

class Model(ReferenceMLP):
    forward = compile_once(backend=os.environ["BENCH_BACKEND"], cache_dir=cache)(ReferenceMLP.forward)

torch.manual_seed(0)
model = Model(width=int(os.environ["BENCH_WIDTH"]), layers=int(os.environ["BENCH_LAYERS"])).eval()
x = torch.randn(1, int(os.environ["BENCH_WIDTH"]))
with torch.no_grad():
    before = time.perf_counter()
    y = model(x)
    first = time.perf_counter()
    expected = ReferenceMLP.forward(model, x)
    per_call = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(200):
            model(x)
        per_call.append((time.perf_counter() - t) / 200)
stats = model.forward.stats
print("RESULT " + json.dumps({
    "import_s": imported - started, "first_call_s": first - before, "us_per_call": min(per_call) * 1e6,
    "compiles": stats.compiles, "loads": stats.loads,
    "correct": bool(torch.allclose(y, expected, atol=1e-5, rtol=1e-4)),
}), flush=True)
"""


KINDS = ("cold", "warm", "warm, new inductor dir", "torch caches only")


@dataclasses.dataclass(frozen=True)
class CacheBenchConfig:
    layers: tuple[int, ...] = (4, 64)
    width: int = 16
    backend: str = "inductor"
    rounds: int = 3
    threads: int = 1


def _run(cfg: CacheBenchConfig, layers: int, cache: str | None, inductor_dir: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_THREADS": str(cfg.threads),
        "BENCH_BACKEND": cfg.backend,
        "BENCH_WIDTH": str(cfg.width),
        "BENCH_LAYERS": str(layers),
        "BENCH_CACHE": cache or "",
        "TORCHINDUCTOR_CACHE_DIR": inductor_dir,
    }
    for name in ("NOCOMPILE_CACHE_DIR", "NOCOMPILE_DISABLE"):
        env.pop(name, None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = ""
    for line in proc.stdout:
        if line.startswith("RESULT "):
            break
    seconds = time.perf_counter() - started
    _out, err = proc.communicate()
    if proc.returncode != 0 or not line.startswith("RESULT "):
        raise RuntimeError(f"benchmark child failed (exit {proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["start_to_result_s"] = seconds
    return result


def measure(cfg: CacheBenchConfig, log: Any = None) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="nocompile-bench-cache-") as tmp:
        for layers in cfg.layers:
            samples: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
            torch_dir = os.path.join(tmp, f"inductor-shared-{layers}")
            _run(cfg, layers, None, torch_dir)  # primes inductor's own caches for the last row
            for r in range(cfg.rounds):
                cache = os.path.join(tmp, f"cache-{layers}-{r}")
                inductor_dir = os.path.join(tmp, f"ind-{layers}-{r}")
                samples["cold"].append(_run(cfg, layers, cache, inductor_dir))
                samples["warm"].append(_run(cfg, layers, cache, inductor_dir))
                new_inductor_dir = os.path.join(tmp, f"ind-{layers}-{r}-new")
                samples["warm, new inductor dir"].append(_run(cfg, layers, cache, new_inductor_dir))
                samples["torch caches only"].append(_run(cfg, layers, None, torch_dir))
                if log is not None:
                    log(
                        f"  {layers} layers, round {r + 1}/{cfg.rounds}: "
                        + ", ".join(f"{k} {v[-1]['start_to_result_s']:.2f} s" for k, v in samples.items())
                    )
            row: dict[str, Any] = {"layers": layers}
            for name, runs in samples.items():
                row[name] = {
                    "median_s": statistics.median(s["start_to_result_s"] for s in runs),
                    "samples_s": [round(s["start_to_result_s"], 3) for s in runs],
                    "median_first_call_s": statistics.median(s["first_call_s"] for s in runs),
                    "median_import_s": statistics.median(s["import_s"] for s in runs),
                    "median_us_per_call": statistics.median(s["us_per_call"] for s in runs),
                    "compiles": [s["compiles"] for s in runs],
                    "loads": [s["loads"] for s in runs],
                    "correct": all(s["correct"] for s in runs),
                }
            for name in KINDS[1:]:
                row[f"cold / {name}"] = row["cold"]["median_s"] / row[name]["median_s"]
            rows.append(row)
    import torch

    config = {**dataclasses.asdict(cfg), "torch": torch.__version__, "python": sys.version.split()[0]}
    return {"config": config, "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"process start -> first result, reference MLP width {cfg['width']}, backend {cfg['backend']!r}, "
        f"torch {cfg['torch']}, {cfg['threads']} thread(s), median of {cfg['rounds']} runs (seconds)",
        "",
        f"{'layers':>6}  {'run':<24} {'start->result':>13} {'first call':>10} "
        f"{'cold / this':>11} {'us/call after':>13}",
    ]
    for row in result["rows"]:
        for name in KINDS:
            ratio = row.get(f"cold / {name}")
            lines.append(
                f"{row['layers']:>6}  {name:<24} {row[name]['median_s']:>13.2f} "
                f"{row[name]['median_first_call_s']:>10.2f} "
                + (f"{ratio:>10.2f}x" if ratio is not None else f"{'':>11}")
                + f" {row[name]['median_us_per_call']:>13.1f}"
            )
        bad = [name for name in KINDS if not row[name]["correct"]]
        if bad:
            lines.append(f"        WRONG RESULT in: {', '.join(bad)}")
        for name in ("warm", "warm, new inductor dir"):
            if set(row[name]["loads"]) != {1} or set(row[name]["compiles"]) != {0}:
                lines.append(
                    f"        {name}: not every run loaded: "
                    f"loads {row[name]['loads']}, compiles {row[name]['compiles']}"
                )
    return "\n".join(lines)


def main(cfg: CacheBenchConfig, as_json: bool) -> int:
    result = measure(cfg, log=None if as_json else lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return 0


def parse_layers(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(","))
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--layers takes positive integers separated by commas, got {text!r}")
    return values


__all__: Sequence[str] = ("CacheBenchConfig", "format_table", "main", "measure")
