"""The continuous batching engine on a GPU: `generation.batching.Batcher` against sequential
generate() and transformers' `generate_batch` (paged), in one process, no Django.

Made for one short run on a lent GPU machine where nothing can be downloaded: the models
are built there from configs with random weights (torch.manual_seed; std 0.1, since at the
usual 0.02 a random model greedily repeats one token and every text equals every other),
saved with save_pretrained into a temporary folder and loaded back through the real
`generation.loading.load_causal_lm` path, with the SmolLM2 tokenizer (`--base`, a folder
holding SmolLM2's config.json and tokenizer files; .gpu/smollm2 by default). Two shapes:

* `135m`: SmolLM2-135M's own config (30 layers, hidden 576, 9 heads, 3 key/value heads);
* `1b`: Llama-3.2-1B's layer shape (16 layers, hidden 2048, 32 heads, 8 key/value heads,
  MLP 8192, tied embeddings) with SmolLM2's vocabulary: 1.07B parameters.

Random weights may pick the end-of-sequence token at any step, so the saved config and
generation config have no eos_token_id: neither generate() nor the Batcher (which ends a
row on the generation config's eos ids) nor generate_batch stops a request before its
max_new_tokens, and every request runs exactly --tokens new tokens ("exact" column).

`--runs` lists the steps in order, most wanted first. `shape:mode` (mode bf16, fp16, fp32,
bnb_8bit or bnb_4bit) loads the model and measures sequential generate() of the first
--baseline requests (the baseline), then the Batcher at each of --sizes concurrent
requests (--quant-sizes for bitsandbytes), one thread per request as a worker runs them:
aggregate tokens/s, the ratio to the baseline and to the Batcher at 1, time to first
token p50/p95, peak GPU memory (torch.cuda.max_memory_allocated, weights included), the
most rows decoded together, and whether greedy batched texts equal generate()'s alone for
the baseline's requests. `paged:shape:mode` runs transformers' generate_batch at --paged
requests (a warm-up call, then the timed one, each given up after --paged-timeout), with
a paged cache sized for them (by default it takes 90% of the free GPU memory).

With random weights the top logits are close together, so in bf16 the different matrix
shapes of a batch can flip a greedy pick that fp32 keeps; "same" counts whole texts.

Every step is guarded, so one failure loses nothing else; no step starts after --budget
seconds, and at --deadline seconds whatever runs is abandoned and the table printed. The
table is printed at the end and the figures are written to --out (default $OUT) as
gpu_batching.json after every step.

    PYTHONUNBUFFERED=1 python3 bench/gpu_batching.py [--out DIR] [--runs 1b:bf16,...]
        [--sizes 1,8,16,32,64] [--tokens 128] [--budget 330] [--deadline 420] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bench.engines import requests, same_text, sequential  # noqa: E402

BASE = ROOT / ".gpu" / "smollm2"
# In this order, most wanted first: whatever --budget leaves out comes last.
DEFAULT_RUNS = "1b:bf16,135m:bf16,paged:1b:bf16,1b:bnb_8bit,1b:bnb_4bit,135m:fp32,paged:135m:bf16"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SEED = 1234
# Random weights at the usual std (0.02) greedily repeat one token for ever, so every text
# would equal every other; at 0.1 the texts vary, and "same" means something.
INIT_STD = 0.1
PAGED_TIMEOUT = 120.0  # seconds for one generate_batch call, then the run goes on

# Overrides of the base (SmolLM2-135M) config, per shape.
SHAPES: dict[str, dict[str, Any]] = {
    "135m": {},
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "tie_word_embeddings": True,
    },
}
# --quick: the same two shapes, shrunk so a CPU runs them in seconds. (bitsandbytes'
# 4-bit layers need hidden_size >= 64.)
QUICK_SHAPES: dict[str, dict[str, Any]] = {
    "135m": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
    "1b": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
    },
}
FLOAT_MODES = ("bf16", "fp16", "fp32")
QUANT_MODES = ("bnb_8bit", "bnb_4bit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for the JSON")
    parser.add_argument("--base", type=Path, default=BASE, help="config + tokenizer folder")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument(
        "--runs", default=DEFAULT_RUNS, help="shape:mode or paged:shape:mode, in order"
    )
    parser.add_argument("--sizes", default="1,8,16,32,64")
    parser.add_argument("--quant-sizes", default="1,32")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--baseline", type=int, default=4, help="requests run by generate()")
    parser.add_argument("--quant-baseline", type=int, default=1)
    parser.add_argument("--paged", type=int, default=32, help="generate_batch size; 0: none")
    parser.add_argument("--paged-timeout", type=float, default=PAGED_TIMEOUT)
    parser.add_argument("--budget", type=float, default=330.0, help="no new step after it (s)")
    parser.add_argument("--deadline", type=float, default=420.0, help="print, save, exit (s)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few tokens (CPU)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.quant_sizes = "1,2,4", "1,2"
        args.tokens, args.baseline, args.quant_baseline, args.paged = 8, 2, 1, 4
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    args.quant_size_list = [int(s) for s in args.quant_sizes.split(",") if s]
    args.steps = []  # (engine, shape, mode): engine "batcher" or "paged"
    for item in filter(None, args.runs.split(",")):
        engine, shape, mode = (
            item.split(":") if item.count(":") == 2 else ("batcher", *item.split(":", 1))
        )
        modes = FLOAT_MODES if engine == "paged" else FLOAT_MODES + QUANT_MODES
        if engine not in ("batcher", "paged") or shape not in SHAPES or mode not in modes:
            parser.error(
                f"--runs: {item!r} is not [paged:]shape:mode ({', '.join(SHAPES)}; {modes})"
            )
        if engine == "paged" and not args.paged:
            continue
        args.steps.append((engine, shape, mode))
    return args


class Bench:
    """The run's clock, its figures and where they go."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.result: dict[str, Any] = {"args": sys.argv[1:], "runs": []}
        self.out = Path(args.out) if args.out else None
        self.baselines: dict[str, dict[str, Any]] = {}  # per shape:mode
        self.expected: dict[str, list[str]] = {}  # generate()'s texts alone, per shape:mode

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        """Seconds to the deadline."""
        return self.args.deadline - self.elapsed()

    def over_budget(self, what: str, notes: list[str]) -> bool:
        if self.elapsed() <= self.args.budget:
            return False
        note = f"skipped {what}: {self.elapsed():.0f}s > --budget {self.args.budget:.0f}s"
        log(note)
        notes.append(note)
        return True

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "gpu_batching.json"
        path.write_text(json.dumps(self.result, indent=1, default=str))


def log(message: str) -> None:
    print(message, flush=True)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "transformers_path": str(Path(transformers.__file__).parent),
        "device": device,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        info["bf16"] = torch.cuda.is_bf16_supported()
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:  # not installed, or no library for this CUDA
        info["bitsandbytes"] = f"unavailable ({error_text(exc)})"
    return info


# -- models -----------------------------------------------------------------------------


def build_model(args: argparse.Namespace, shape: str, folder: Path, device: str) -> dict[str, Any]:
    """A random-weight model of `shape` saved (bf16 on a GPU, fp32 on CPU) with the base's
    tokenizer into `folder`, with no end-of-sequence id anywhere."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    started = time.perf_counter()
    config = AutoConfig.from_pretrained(args.base)
    for key, value in (QUICK_SHAPES if args.quick else SHAPES)[shape].items():
        setattr(config, key, value)
    config.eos_token_id = None  # every request runs its max_new_tokens (module docstring)
    config.initializer_range = INIT_STD
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(SEED)
    try:
        with torch.device(device):  # random init on the GPU: seconds, not a minute
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as exc:
        log(f"building {shape} on {device} failed ({error_text(exc)}); building on cpu")
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id, eos_token_id=None
    )
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    for name in TOKENIZER_FILES:
        if (args.base / name).is_file():
            shutil.copy(args.base / name, folder / name)
    if not (folder / "tokenizer.json").is_file():  # a tokenizer saved another way
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(args.base).save_pretrained(folder)
    free_memory()
    layout = {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    seconds = time.perf_counter() - started
    log(f"built {shape}: {params / 1e6:.1f}M parameters {layout}, saved in {seconds:.1f}s")
    return {"params": params, **layout}


def load(folder: Path, shape: str, mode: str, device: str) -> Any:
    """The saved model through the real loading path, in `mode`."""
    import torch

    from generation.loading import load_causal_lm
    from generation.specs import Device, ModelSpec, Quantization

    quantization = Quantization(mode if mode in QUANT_MODES else "none")
    spec = ModelSpec(
        name=f"random-{shape}",
        source=str(folder),
        quantization=quantization,
        device=Device(device),
    )
    loaded = load_causal_lm(spec)
    wanted = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(mode)
    if wanted is not None and loaded.model.dtype != wanted:
        loaded.model.to(wanted)
    return loaded


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


# -- engines ----------------------------------------------------------------------------


def batched(loaded: Any, batch: list[list[int]], tokens: int) -> dict[str, Any]:
    """Every request of `batch` at once through one Batcher, a thread per request."""
    from generation.batching import BatchedStream, Batcher
    from generation.specs import SamplingParams

    engine = Batcher(loaded, max_batch=len(batch))
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    streams = [BatchedStream(engine, ids, params) for ids in batch]
    errors: list[str] = []

    def run(stream: BatchedStream) -> None:
        try:
            stream.run(lambda piece: None)
        except Exception as exc:  # out of memory beside the others, or a bug
            errors.append(error_text(exc))

    threads = [threading.Thread(target=run, args=(stream,)) for stream in streams]
    reset_peak()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    counts = [stream.stats.completion_tokens for stream in streams]
    first = [s.stats.first_token_seconds for s in streams if s.stats.first_token_seconds]
    each = [
        s.stats.completion_tokens / s.stats.total_seconds
        for s in streams
        if s.stats.total_seconds > 0
    ]
    return {
        "n": len(batch),
        "tokens_per_s": sum(counts) / seconds,
        "seconds": seconds,
        "ttft_p50": percentile(first, 0.5),
        "ttft_p95": percentile(first, 0.95),
        "per_request_tokens_per_s_median": statistics.median(each) if each else None,
        "peak_mib": peak_mib(),
        "steps": engine.steps,
        "widest": engine.widest,
        "exact": sum(1 for c in counts if c == tokens),
        "errors": errors,
        "texts": [stream.text for stream in streams],
    }


def baseline(loaded: Any, batch: list[list[int]], tokens: int) -> dict[str, Any]:
    reset_peak()
    started = time.perf_counter()
    rate, texts = sequential(loaded, batch, tokens)
    return {
        "n": len(batch),
        "tokens_per_s": rate,
        "seconds": time.perf_counter() - started,
        "peak_mib": peak_mib(),
        "texts": texts,
    }


def compare(got: list[str], expected: list[str]) -> dict[str, Any]:
    """Whether the first texts equal generate()'s alone, and how far each agrees."""
    count = min(len(got), len(expected))
    got, expected = got[:count], expected[:count]
    prefixes = []
    for a, b in zip(got, expected, strict=True):
        a, b = a.strip(), b.strip()
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        same = min(len(a), len(b)) if same is None else same
        prefixes.append(round(same / max(len(a), len(b), 1), 3))
    return {"same": same_text(got, expected) if count else "-", "prefix_fraction": prefixes}


def paged_config(size: int, longest: int) -> Any:
    """A paged cache for `size` requests of `longest` tokens each, with room to spare: by
    default generate_batch takes 90% of the free GPU memory (60% of the RAM on CPU)."""
    try:
        from transformers import ContinuousBatchingConfig
    except ImportError:
        try:
            from transformers.generation import ContinuousBatchingConfig
        except ImportError:
            return None
    page = 256
    return ContinuousBatchingConfig(page_size=page, num_blocks=2 * size * -(-longest // page) + 8)


def paged_once(
    loaded: Any, batch: list[list[int]], tokens: int, timeout: float, cb_config: Any
) -> tuple[float, list[str], float, int]:
    """One generate_batch call on a thread of its own, given up after `timeout` seconds
    (the thread is left running; it is a daemon), its manager kept for the next call.
    Returns tokens/s, texts, seconds and how many requests got exactly `tokens` tokens."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=tokens,
        do_sample=False,
        eos_token_id=loaded.model.generation_config.eos_token_id,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    kwargs: dict[str, Any] = {"persistent_manager": True}
    if cb_config is not None:
        kwargs["continuous_batching_config"] = cb_config
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["out"] = loaded.model.generate_batch(
                inputs=batch, generation_config=config, max_new_tokens=tokens, **kwargs
            )
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="generate_batch", daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(timeout)
    seconds = time.perf_counter() - started
    if thread.is_alive():
        raise TimeoutError(f"generate_batch still running after {timeout:.0f}s; left behind")
    if "error" in box:
        raise box["error"]
    out = box["out"]
    # in the order of the inputs (the ids go on counting from call to call)
    results = [list(result.generated_tokens) for result in out.values()]
    if len(results) != len(batch):
        raise RuntimeError(f"generate_batch returned {len(results)} of {len(batch)} requests")
    texts = [str(loaded.tokenizer.decode(ids, skip_special_tokens=True)) for ids in results]
    exact = sum(1 for ids in results if len(ids) == tokens)
    return sum(map(len, results)) / seconds, texts, seconds, exact


def measure_paged(bench: Bench, loaded: Any, key: str, size: int) -> dict[str, Any]:
    """transformers' generate_batch: the same call twice, its manager kept between them.
    The first sets up the paged cache (and may capture CUDA graphs); the second is timed
    against the run's own baseline."""
    tokens = bench.args.tokens
    row: dict[str, Any] = {"n": size, "engine": "generate_batch"}
    try:
        batch = requests(loaded, size, tokens)
        cb_config = paged_config(size, max(map(len, batch)) + tokens)
        timeout = bench.args.paged_timeout
        first = paged_once(loaded, batch, tokens, min(timeout, bench.left()), cb_config)
        row["first_call_tokens_per_s"], row["first_call_seconds"] = first[0], first[2]
        reset_peak()
        rate, texts, seconds, exact = paged_once(
            loaded, batch, tokens, min(timeout, bench.left()), cb_config
        )
        row.update(tokens_per_s=rate, seconds=seconds, exact=exact, peak_mib=peak_mib())
        base = bench.baselines.get(key)
        if base is not None:
            row["x_baseline"] = rate / base["tokens_per_s"]
            row.update(compare(texts, bench.expected[key]))
    except Exception as exc:
        row["error"] = error_text(exc)
        traceback.print_exc()
    finally:
        destroy = getattr(loaded.model, "destroy_cached_continuous_batching_manager", None)
        if destroy is not None:
            with contextlib.suppress(Exception):
                destroy()
    return row


# -- one run ----------------------------------------------------------------------------


def measure_run(
    bench: Bench, shape: str, mode: str, folder: Path, device: str, entry: dict[str, Any]
) -> None:
    """Load the model in `mode`; the generate() baseline, then the Batcher at each size."""
    args = bench.args
    notes: list[str] = entry["notes"]
    quantized = mode in QUANT_MODES
    if quantized and not bnb_ready(notes):
        return
    started = time.perf_counter()
    loaded = load(folder, shape, mode, device)
    entry["load_seconds"] = round(time.perf_counter() - started, 2)
    entry["dtype"] = str(loaded.model.dtype)
    log(f"\n== {shape} {mode}: loaded in {entry['load_seconds']}s ({entry['dtype']}, {device})")
    try:
        tokens = args.tokens
        sizes = args.quant_size_list if quantized else args.size_list
        count = args.quant_baseline if quantized else args.baseline
        warm_up(loaded)
        lengths = [len(ids) for ids in requests(loaded, max([*sizes, count]), tokens)]
        entry["prompt_tokens"] = [min(lengths), max(lengths)]

        base = baseline(loaded, requests(loaded, count, tokens), tokens)
        key = f"{shape}:{mode}"
        bench.expected[key] = base.pop("texts")
        bench.baselines[key] = entry["baseline"] = base
        log(
            f"generate() sequential x{count}: {base['tokens_per_s']:.1f} tokens/s "
            f"({base['seconds']:.1f}s, prompts {min(lengths)}-{max(lengths)} tokens)"
        )
        one: float | None = None
        for size in sizes:
            if bench.over_budget(f"{shape} {mode} n={size}", notes):
                break
            row: dict[str, Any]
            try:
                row = batched(loaded, requests(loaded, size, tokens), tokens)
            except Exception as exc:
                row = {"n": size, "error": error_text(exc)}
                traceback.print_exc()
            if "texts" in row:
                row.update(compare(row.pop("texts"), bench.expected[key]))
                row["x_baseline"] = row["tokens_per_s"] / base["tokens_per_s"]
                if size == 1:
                    one = row["tokens_per_s"]
                row["x_one"] = row["tokens_per_s"] / one if one else None
            entry["sizes"].append(row)
            log(line(f"{shape} {mode}", row))
            bench.save()
    finally:
        del loaded
        free_memory()


def bnb_ready(notes: list[str]) -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        note = f"bitsandbytes unavailable: {error_text(exc)}"
        log(note)
        notes.append(note)
        return False
    return True


def warm_up(loaded: Any) -> None:
    """Kernels, the allocator and cuBLAS handles, before anything is timed."""
    warm = requests(loaded, 2, 8)
    sequential(loaded, warm[:1], 8)
    batched(loaded, warm, 8)


# -- the table --------------------------------------------------------------------------

HEADER = (
    f"{'run':<14} {'n':>7} {'tok/s':>9} {'x seq':>6} {'x n=1':>6} {'ttft p50/p95 s':>15} "
    f"{'peak MiB':>9} {'same':>5} {'exact':>5} {'widest':>6}"
)


def _num(value: Any, spec: str, width: int) -> str:
    return f"{value:>{width}{spec}}" if isinstance(value, int | float) else f"{'-':>{width}}"


def line(run: str, row: dict[str, Any]) -> str:
    n = str(row.get("n", "?"))
    if row.get("engine") == "generate_batch":
        n = f"paged{n}"
    elif row.get("engine") == "generate":
        n = f"seq{n}"
    if "error" in row:
        return f"{run:<14} {n:>7} failed: {row['error']}"
    ttft = "-"
    if row.get("ttft_p50") is not None:
        ttft = f"{row['ttft_p50']:.2f}/{row['ttft_p95']:.2f}"
    exact = f"{row['exact']}/{row['n']}" if isinstance(row.get("exact"), int) else "-"
    errors = f"  errors: {row['errors'][:2]}" if row.get("errors") else ""
    if row.get("first_call_tokens_per_s"):
        errors += f"  (first call {row['first_call_tokens_per_s']:.1f} tok/s)"
    return (
        f"{run:<14} {n:>7} {_num(row.get('tokens_per_s'), '.1f', 9)} "
        f"{_num(row.get('x_baseline'), '.2f', 6)} {_num(row.get('x_one'), '.2f', 6)} "
        f"{ttft:>15} {_num(row.get('peak_mib'), '.0f', 9)} {row.get('same', '-'):>5} "
        f"{exact:>5} {_num(row.get('widest'), 'd', 6)}{errors}"
    )


def table(result: dict[str, Any]) -> list[str]:
    lines = [HEADER]
    for entry in result["runs"]:
        run = f"{entry['shape']} {entry['mode']}"
        if "baseline" in entry:
            lines.append(line(run, {**entry["baseline"], "engine": "generate"}))
        lines.extend(line(run, row) for row in entry["sizes"])
        if "paged" in entry:
            lines.append(line(run, entry["paged"]))
        if entry.get("error"):
            lines.append(f"{run:<14} failed: {entry['error']}")
        lines.extend(f"{run:<14} note: {note}" for note in entry["notes"])
    return lines


# -- main -------------------------------------------------------------------------------


def takes_cache_argument() -> bool:
    """Whether this transformers' models take `cache=` (older ones: past_key_values= only)."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" in inspect.signature(LlamaForCausalLM.forward).parameters


def summary(bench: Bench, info: dict[str, Any], device: str) -> None:
    bench.result["seconds"] = round(bench.elapsed(), 1)
    bench.save()
    log(
        f"\n== summary ({bench.result['seconds']}s; {info.get('gpu', device)}, "
        f"torch {info['torch']}, transformers {info['transformers']}, "
        f"bitsandbytes {info['bitsandbytes']})"
    )
    for text in table(bench.result):
        log(text)


def watchdog(bench: Bench, info: dict[str, Any], device: str) -> threading.Timer:
    """At --deadline, whatever is still running: print and save what was measured, exit.
    (The caller cancels it when the run ends in time.)"""

    def fire() -> None:
        log(f"\n!! --deadline {bench.args.deadline:.0f}s reached; what was measured so far:")
        bench.result["deadline_reached"] = True
        with contextlib.suppress(Exception):
            summary(bench, info, device)
        os._exit(3)

    timer = threading.Timer(max(1.0, bench.left()), fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    # bitsandbytes warns at every 8-bit matmul that bf16 inputs are cast to fp16
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    info = environment(device)
    bench.result["environment"] = info
    log(f"bench/gpu_batching.py  {json.dumps(info)}")
    log(
        f"{args.tokens} greedy new tokens per request, exactly (no eos id); Batcher at "
        f"{args.size_list}, bitsandbytes at {args.quant_size_list}; generate_batch at "
        f"{args.paged}; steps {args.steps}; budget {args.budget:.0f}s, deadline "
        f"{args.deadline:.0f}s"
    )
    if not takes_cache_argument():
        log(
            f"transformers {transformers.__version__} models take no cache= argument, which "
            "generation/batching.py passes (transformers >= 5.24): install .gpu/whl first"
        )
        return 2
    if "django" in sys.modules:  # the device machine has no Django: keep it that way here
        log("warning: django was imported; the GPU machine has none")
    timer = watchdog(bench, info, device)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-batching-"))
    folders: dict[str, Path] = {}
    entries: dict[str, dict[str, Any]] = {}

    def folder_for(shape: str, entry: dict[str, Any]) -> Path:
        if shape not in folders:
            entry["model"] = build_model(args, shape, workdir / shape, device)
            folders[shape] = workdir / shape
        return folders[shape]

    try:
        for engine, shape, mode in args.steps:
            key = f"{shape}:{mode}"
            if key not in entries:
                entries[key] = {"shape": shape, "mode": mode, "sizes": [], "notes": []}
                bench.result["runs"].append(entries[key])
            entry = entries[key]
            what = f"{shape} {mode}" + (" generate_batch" if engine == "paged" else "")
            if bench.over_budget(what, entry["notes"]):
                continue
            try:
                folder = folder_for(shape, entry)
                if engine == "batcher":
                    measure_run(bench, shape, mode, folder, device, entry)
                else:
                    loaded = load(folder, shape, mode, device)
                    log(f"\n== {shape} {mode}: generate_batch at {args.paged}")
                    try:
                        entry["paged"] = measure_paged(bench, loaded, key, args.paged)
                    finally:
                        del loaded
                        free_memory()
                    log(line(f"{shape} {mode}", entry["paged"]))
            except Exception as exc:
                if engine == "paged":
                    entry["paged"] = {"n": args.paged, "error": error_text(exc)}
                else:
                    entry["error"] = error_text(exc)
                traceback.print_exc()
            bench.save()
    finally:
        timer.cancel()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    summary(bench, info, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
