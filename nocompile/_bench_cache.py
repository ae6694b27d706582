"""``python -m nocompile bench-cache``: the first call of a fresh process, cold versus warm caches.

Each measurement is a fresh Python process that imports torch and nocompile (which imports
Dynamo), builds a model, then times its **first call** alone — the imports are left out, being
the same for every row — and prints it, with the time from spawning the process to the result
and the microseconds of later calls. Models: the reference MLP (``--layers``) and, with
``--models llama``, one decode step of a tiny random Hugging Face Llama (``transformers``
needed; a ``StaticCache``, the keyword arguments ``generate()`` passes at its first decode step).

* **cold**: ``compile_once(cache_dir=...)`` on an empty ``cache_dir`` and an empty
  ``TORCHINDUCTOR_CACHE_DIR``: compile ahead of time, save the artifact, run.
* **warm**: the ``cache_dir`` and the inductor cache the cold run filled (the same machine, the
  next process): load the artifact, run.
* **warm, empty inductor cache**: the ``cache_dir`` the cold run filled and an empty inductor
  cache: another machine or a new container that was given the cache directory alone.
* **stock, caches warm**: ``torch.compile`` without nocompile, inductor's caches (FX graph,
  AOTAutograd) warm from an untimed run on the same machine: Dynamo traces, inductor loads.
* **stock, mega-cache loaded**: ``torch.compile`` on an empty inductor cache after
  ``torch.compiler.load_cache_artifacts`` of what ``save_cache_artifacts`` returned in that
  untimed run (the load is inside the timed first call): torch's own way to ship its caches.

Every process gets private, fresh ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` unless the
row reuses the ones named above. Rounds are interleaved (cold, warm, ..., cold, ...) so machine
load drifts evenly over the rows; figures are medians.
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
import copy, json, os, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
import nocompile
from nocompile import compile_once
from nocompile._reference import ReferenceMLP
imported = time.perf_counter()

way, model_name, device = os.environ["BENCH_WAY"], os.environ["BENCH_MODEL"], os.environ["BENCH_DEVICE"]
backend, cache, mega = os.environ["BENCH_BACKEND"], os.environ.get("BENCH_CACHE") or None, os.environ.get("BENCH_MEGA")
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

def decode_step():
    import transformers
    from transformers import StaticCache
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=128, eos_token_id=None)
    model = transformers.LlamaForCausalLM(config).to(device).eval()
    model.generation_config.pad_token_id = 0
    calls = []
    original = model.forward
    def recorder(*a, **kw):
        calls.append(dict(kw))
        return original(*a, **kw)
    model.forward = recorder
    kv = StaticCache(config=config, max_cache_len=64)
    kv.early_initialization(batch_size=1, num_heads=2, head_dim=16, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        model.generate(torch.randint(0, 128, (1, 5), device=device), max_new_tokens=2, min_new_tokens=2,
                       do_sample=False, past_key_values=kv, disable_compile=True)
    del model.forward
    kwargs = calls[1]
    key = next(k for k, v in kwargs.items() if isinstance(v, StaticCache))
    def fresh():
        return {**kwargs, key: copy.deepcopy(kwargs[key])}
    def rewind(kwargs, lengths=[int(layer.cumulative_length) for layer in kwargs[key].layers]):
        for layer, length in zip(kwargs[key].layers, lengths):
            layer.cumulative_length.fill_(length)  # every timed step writes inside the cache
    def logits(out):
        return out.logits
    return model, model.forward, fresh, rewind, logits

if model_name == "llama":
    model, forward, fresh, rewind, result = decode_step()
else:
    torch.manual_seed(0)
    width = int(os.environ["BENCH_WIDTH"])
    model = ReferenceMLP(width=width, layers=int(os.environ["BENCH_LAYERS"])).to(device).eval()
    x = torch.randn(1, width, device=device)
    forward, fresh, rewind, result = model.forward, (lambda: {"x": x}), (lambda kwargs: None), (lambda out: out)

if way == "nocompile":
    step = compile_once(forward, backend=backend, cache_dir=cache)
else:
    step = torch.compile(forward, backend=backend)
with torch.no_grad():
    expected = result(forward(**fresh()))
    kwargs = fresh()
    sync()
    before = time.perf_counter()
    if mega and way == "stock-mega":
        with open(mega, "rb") as fh:
            data = fh.read()
        if data:  # empty when torch had nothing to save (a backend without caches)
            torch.compiler.load_cache_artifacts(data)
    y = result(step(**kwargs))
    sync()
    first = time.perf_counter()
    if way == "stock-save-mega":
        saved = torch.compiler.save_cache_artifacts()  # None when there is nothing to save
        with open(mega, "wb") as fh:
            fh.write(saved[0] if saved is not None else b"")
    per_call = []
    for _ in range(5):
        rewind(kwargs)
        sync()
        t = time.perf_counter()
        for _ in range(20):
            step(**kwargs)
        sync()
        per_call.append((time.perf_counter() - t) / 20)
stats = step.stats if way == "nocompile" else None
print("RESULT " + json.dumps({
    "import_s": imported - started, "first_call_s": first - before, "us_per_call": min(per_call) * 1e6,
    "compiles": stats.compiles if stats else None, "loads": stats.loads if stats else None,
    "correct": bool(torch.allclose(y, expected, atol=1e-4, rtol=1e-3)),
}), flush=True)
"""


KINDS = ("cold", "warm", "warm, empty inductor cache", "stock, caches warm", "stock, mega-cache loaded")
MODELS = ("mlp", "llama")


@dataclasses.dataclass(frozen=True)
class CacheBenchConfig:
    layers: tuple[int, ...] = (4,)
    width: int = 16
    backend: str = "inductor"
    rounds: int = 3
    threads: int = 1
    models: tuple[str, ...] = ("mlp",)
    device: str = "cpu"


def _run(cfg: CacheBenchConfig, model: str, layers: int, way: str, dirs: dict[str, str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_THREADS": str(cfg.threads),
        "BENCH_BACKEND": cfg.backend,
        "BENCH_WIDTH": str(cfg.width),
        "BENCH_LAYERS": str(layers),
        "BENCH_MODEL": model,
        "BENCH_DEVICE": cfg.device,
        "BENCH_WAY": way,
        "BENCH_CACHE": dirs.get("cache", ""),
        "BENCH_MEGA": dirs.get("mega", ""),
        "TORCHINDUCTOR_CACHE_DIR": dirs["inductor"],
        "TRITON_CACHE_DIR": os.path.join(dirs["inductor"], "triton"),
    }
    for name in ("NOCOMPILE_CACHE_DIR", "NOCOMPILE_DISABLE"):
        env.pop(name, None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
        raise RuntimeError("benchmark child has no stdout")
    line = ""
    for line in proc.stdout:
        if line.startswith("RESULT "):
            break
    seconds = time.perf_counter() - started
    _out, err = proc.communicate()
    if proc.returncode != 0 or not line.startswith("RESULT "):
        raise RuntimeError(f"benchmark child ({model}, {way}) failed (exit {proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["start_to_result_s"] = seconds
    return result


def _cases(cfg: CacheBenchConfig) -> list[tuple[str, int]]:
    return [(model, layers) for model in cfg.models for layers in (cfg.layers if model == "mlp" else (2,))]


def measure(cfg: CacheBenchConfig, log: Any = None) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="nocompile-bench-cache-") as tmp:

        def folder(name: str) -> str:
            return tempfile.mkdtemp(prefix=f"{name}-", dir=tmp)

        for model, layers in _cases(cfg):
            samples: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
            stock = {"inductor": folder("stock"), "mega": os.path.join(tmp, f"mega-{model}-{layers}")}
            _run(cfg, model, layers, "stock-save-mega", stock)  # primes inductor's caches, saves the mega-cache
            for r in range(cfg.rounds):
                own = {"cache": folder("cache"), "inductor": folder("inductor")}
                samples["cold"].append(_run(cfg, model, layers, "nocompile", own))
                samples["warm"].append(_run(cfg, model, layers, "nocompile", own))
                empty = {"cache": own["cache"], "inductor": folder("empty")}
                samples["warm, empty inductor cache"].append(_run(cfg, model, layers, "nocompile", empty))
                samples["stock, caches warm"].append(_run(cfg, model, layers, "stock", stock))
                mega = {"inductor": folder("mega"), "mega": stock["mega"]}
                samples["stock, mega-cache loaded"].append(_run(cfg, model, layers, "stock-mega", mega))
                if log is not None:
                    log(
                        f"  {model} {layers} layers, round {r + 1}/{cfg.rounds}: "
                        + ", ".join(f"{k} {v[-1]['first_call_s']:.3f} s" for k, v in samples.items())
                    )
            row: dict[str, Any] = {"model": model, "layers": layers}
            for name, runs in samples.items():
                row[name] = {
                    "median_first_call_s": statistics.median(s["first_call_s"] for s in runs),
                    "first_call_samples_s": [round(s["first_call_s"], 3) for s in runs],
                    "median_start_to_result_s": statistics.median(s["start_to_result_s"] for s in runs),
                    "median_import_s": statistics.median(s["import_s"] for s in runs),
                    "median_us_per_call": statistics.median(s["us_per_call"] for s in runs),
                    "compiles": [s["compiles"] for s in runs],
                    "loads": [s["loads"] for s in runs],
                    "correct": all(s["correct"] for s in runs),
                }
            rows.append(row)
    import torch

    config = {**dataclasses.asdict(cfg), "torch": torch.__version__, "python": sys.version.split()[0]}
    return {"config": config, "rows": rows}


def _first(row: dict[str, Any], name: str) -> float:
    return float(row[name]["median_first_call_s"])


def format_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"first call of a fresh process (imports excluded), backend {cfg['backend']!r} on {cfg['device']}, "
        f"torch {cfg['torch']}, {cfg['threads']} thread(s), median of {cfg['rounds']} runs (seconds)",
        "",
        f"{'model':<12} {'run':<28} {'first call':>10} {'spawn->result':>13} {'us/call after':>13}",
    ]
    for row in result["rows"]:
        label = f"mlp {row['layers']}L" if row["model"] == "mlp" else "llama decode"
        for name in KINDS:
            lines.append(
                f"{label:<12} {name:<28} {_first(row, name):>10.3f} "
                f"{row[name]['median_start_to_result_s']:>13.2f} {row[name]['median_us_per_call']:>13.1f}"
            )
        warm, empty, stock = _first(row, "warm"), _first(row, "warm, empty inductor cache"), _first(row, KINDS[3])
        lines.append(
            f"{'':<12} warm / stock warm {warm / stock:.3f}, empty inductor cache / warm {empty / warm:.2f}, "
            f"empty / stock warm {empty / stock:.3f}"
        )
        bad = [name for name in KINDS if not row[name]["correct"]]
        if bad:
            lines.append(f"{'':<12} WRONG RESULT in: {', '.join(bad)}")
        for name in ("warm", "warm, empty inductor cache"):
            if set(row[name]["loads"]) != {1} or set(row[name]["compiles"]) != {0}:
                loads, compiles = row[name]["loads"], row[name]["compiles"]
                lines.append(f"{'':<12} {name}: not every run loaded: loads {loads}, compiles {compiles}")
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


def parse_models(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(","))
    if not values or any(v not in MODELS for v in values):
        raise ValueError(f"--models takes {' and '.join(MODELS)} separated by commas, got {text!r}")
    return values


__all__: Sequence[str] = ("CacheBenchConfig", "format_table", "main", "measure")
