"""Quantization, measured: for each mode, load time, resident memory, weight size, decode
speed and perplexity on a fixed held-out text, against the unquantized model in the same run.

    python bench/quantization.py                          # SmolLM2 on this machine's CPU
    python bench/quantization.py --model shakespeare-gru  # the starter RNN
    python bench/quantization.py --device cuda --modes none,bnb_8bit,bnb_4bit
    python bench/quantization.py --store --write-docs     # keep the figures (see below)

Each mode runs in a fresh child process, so resident memory is that mode's alone. Models
load through Atelier's own code (`generation.loading` / `generation.rnn.loading`) and decode
through its streams, as the worker does. The held-out text is the last 5 % of the
Shakespeare plays in the `shakespeare` package (the part the starter RNN never trains on).

--store writes the figures onto the catalog entries that serve that model folder (the admin
shows them on the model's page); --write-docs replaces this model and device's table in
docs/benchmarks.md. Targets (issue 3) are printed with the table: on CPU, int8_dynamic at
least 2.5x fp32's tokens/s with perplexity within +5 %; bnb_4bit weights at most 35 % of fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
DOCS = ROOT / "docs" / "benchmarks.md"
STARTER = {"smollm2": "SmolLM2-135M-Instruct", "shakespeare-gru": "shakespeare-char-gru"}


def held_out_text(chars: int) -> str:
    from generation.rnn.corpus import read_shakespeare
    from generation.rnn.train import split_corpus

    return split_corpus(read_shakespeare(), 0.05)[1][:chars]


def _rss() -> int:
    """Resident memory, after handing freed heap pages back to the system (glibc keeps
    them otherwise, so a mode that loads float weights and then quantizes would be charged
    for the float copy it freed)."""
    import ctypes
    import gc

    import psutil

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


def _serialized_mib(model: Any) -> float:
    """The weights' size as torch.save writes them: counts int8 and 4-bit packed weights
    as they are stored (parameter counts would miss dynamic int8's packed weights)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


# -- one mode, in a child process ------------------------------------------------------------


def measure_transformers(
    folder: str, mode: str, device: str, args: argparse.Namespace
) -> dict[str, Any]:
    import torch

    from generation.loading import load_causal_lm
    from generation.prompts import build_chat_input
    from generation.specs import Device, ModelSpec, Quantization, SamplingParams
    from generation.streaming import TokenStream

    before = _rss()
    loaded = load_causal_lm(
        ModelSpec(
            name=f"bench-{mode}",
            source=folder,
            quantization=Quantization(mode),
            device=Device(device),
        )
    )
    prompt = build_chat_input(
        loaded.tokenizer, [{"role": "user", "content": PROMPT}], max_prompt_tokens=512
    )
    params = SamplingParams(temperature=0, max_new_tokens=args.tokens)
    rates = []
    for attempt in range(args.runs + 1):  # the first run warms up
        stream = TokenStream(
            loaded, prompt, params, generate_kwargs={"min_new_tokens": args.tokens}
        )
        stream.run(lambda piece: None)
        if attempt:
            rates.append(stream.stats.completion_tokens / stream.stats.total_seconds)
    rss_mib = (_rss() - before) / 2**20  # after decoding: every weight page has been touched

    # Perplexity: non-overlapping windows of the held-out text, every token scored once.
    ids = loaded.tokenizer(held_out_text(args.ppl_chars), return_tensors="pt")["input_ids"][0]
    window = min(args.window, loaded.context_length)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window].unsqueeze(0).to(loaded.device)
            if chunk.shape[1] < 2:
                break
            out = loaded.model(input_ids=chunk, labels=chunk)
            scored = chunk.shape[1] - 1
            total += float(out.loss) * scored
            count += scored
    # The same text scored one token at a time with the KV cache, as decoding runs: dynamic
    # int8 then scales each token's activations alone (in a prompt-length window the whole
    # window shares one scale, so both figures are shown).
    steps = min(args.decode_tokens, len(ids))
    decode_total, past = 0.0, None
    with torch.inference_mode():
        for i in range(steps - 1):
            token = ids[i : i + 1].unsqueeze(0).to(loaded.device)
            out = loaded.model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            target = ids[i + 1 : i + 2].to(loaded.device)
            decode_total += float(torch.nn.functional.cross_entropy(out.logits[0, -1:], target))
    return {
        "load_s": loaded.load_seconds,
        "rss_mib": rss_mib,
        "weights_mib": _serialized_mib(loaded.model),
        "tokens_per_s": statistics.median(rates),
        "perplexity": math.exp(total / count),
        "scored": count,
        "decode_perplexity": math.exp(decode_total / (steps - 1)),
        "decode_scored": steps - 1,
        "unit": "tokens",
    }


def measure_rnn(folder: str, mode: str, device: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from generation.rnn.loading import load_rnn
    from generation.rnn.streaming import RNNStream
    from generation.rnn.train import evaluate
    from generation.specs import Backend, Device, ModelSpec, Quantization, SamplingParams

    before = _rss()
    loaded = load_rnn(
        ModelSpec(
            name=f"bench-{mode}",
            source=folder,
            backend=Backend.RNN,
            quantization=Quantization(mode),
            device=Device(device),
        )
    )
    rss_mib = (_rss() - before) / 2**20
    chars = args.tokens * 4  # a character per step: ask for about a token's worth of text
    params = SamplingParams(temperature=0, max_new_tokens=chars)
    rates = []
    for attempt in range(args.runs + 1):
        stream = RNNStream(loaded, loaded.vocab.encode(PROMPT), params)
        stream.run(lambda piece: None)
        if attempt:
            rates.append(stream.stats.completion_tokens / stream.stats.total_seconds)
    ids = torch.tensor(loaded.vocab.encode(held_out_text(args.ppl_chars)), dtype=torch.long)
    loss = evaluate(loaded.model, ids.to(loaded.device), batch_size=32, seq_len=128)
    return {
        "load_s": loaded.load_seconds,
        "rss_mib": rss_mib,
        "weights_mib": _serialized_mib(loaded.model),
        "tokens_per_s": statistics.median(rates),
        "perplexity": math.exp(loss),
        "scored": len(ids) - 1,
        "unit": "characters",
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    measure = measure_rnn if args.backend == "rnn" else measure_transformers
    result = measure(args.folder, args.child, args.device, args)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: one child per mode, then the table -----------------------------------------


def run_mode(args: argparse.Namespace, folder: Path, backend: str, mode: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", mode, "--folder", str(folder), "--backend", backend,
        "--device", args.device, "--tokens", str(args.tokens), "--runs", str(args.runs),
        "--ppl-chars", str(args.ppl_chars), "--window", str(args.window),
        "--decode-tokens", str(args.decode_tokens),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"mode": mode, "error": " / ".join(tail) or f"exit {done.returncode}"}
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["mode"] = mode
    print(f"  {mode}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return result


def machine_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def resolve_model(name: str) -> tuple[Path, str]:
    """(folder, backend) for a starter model's key or a folder path."""
    if name in STARTER:
        from generation.starter_pack import STARTER_PACK

        models_dir = Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models"))
        models_dir.mkdir(parents=True, exist_ok=True)
        [starter] = [s for s in STARTER_PACK if s.key == name]
        prepared = starter.prepare(models_dir, None)
        return prepared.folder, starter.registrations[0].backend.value
    folder = Path(name).expanduser().resolve()
    backend = "transformers" if (folder / "config.json").is_file() else "rnn"
    if (folder / "vocab.json").is_file() and (folder / "model.safetensors").is_file():
        backend = "rnn"
    return folder, backend


def _mib(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    base = rows[0]
    unit = base.get("unit", "tokens")
    per = "chars/s" if unit == "characters" else "tokens/s"
    decode = "decode_perplexity" in base
    lines = [
        f"| mode | load s | RSS MiB | weights MiB | vs {base['mode']} | {per} | vs {base['mode']} "
        f"| perplexity{' (window)' if decode else ''} | vs {base['mode']} |"
        + (f" perplexity (decoding) | vs {base['mode']} |" if decode else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if decode else ""),
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error'][:160]} |||||||")
            continue
        ok = "error" not in base
        lines.append(
            f"| {r['mode']} | {r['load_s']:.2f} | {r['rss_mib']:.0f} | {_mib(r['weights_mib'])} "
            f"| {r['weights_mib'] / base['weights_mib']:.0%} | {r['tokens_per_s']:.1f} "
            f"| {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['perplexity']:.3f} "
            f"| {(r['perplexity'] / base['perplexity'] - 1) * 100:+.2f}% |"
            + (
                f" {r['decode_perplexity']:.3f} "
                f"| {(r['decode_perplexity'] / base['decode_perplexity'] - 1) * 100:+.2f}% |"
                if decode
                else ""
            )
            if ok
            else f"| {r['mode']} | {r['load_s']:.2f} | {r['rss_mib']:.0f} "
            f"| {_mib(r['weights_mib'])} | | {r['tokens_per_s']:.1f} | | {r['perplexity']:.3f} | |"
        )
    return lines


def targets(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    found = {r["mode"]: r for r in rows if "error" not in r}
    base = found.get("none")
    if base is None:
        return []
    notes = []
    int8 = found.get("int8_dynamic")
    if int8:
        speed = int8["tokens_per_s"] / base["tokens_per_s"]
        ppl = int8["perplexity"] / base["perplexity"] - 1
        decoding = int8["decode_perplexity"] / base["decode_perplexity"] - 1
        notes.append(
            f"int8_dynamic: {speed:.2f}x tokens/s (target >= 2.5x: "
            f"{'met' if speed >= 2.5 else 'MISSED'}); perplexity {decoding:+.2%} decoding, "
            f"{ppl:+.2%} in {args.window}-token windows (target <= +5%: "
            f"{'met' if max(ppl, decoding) <= 0.05 else 'MISSED'})"
        )
    nf4 = found.get("bnb_4bit")
    if nf4:
        share = nf4["weights_mib"] / base["weights_mib"]
        notes.append(
            f"bnb_4bit weights: {share:.0%} of unquantized (target <= 35%): "
            f"{'met' if share <= 0.35 else 'MISSED'}"
        )
    return notes


def store(folder: Path, backend: str, figures: dict[str, Any]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from webapp.catalog.models import ModelEntry

    entries = ModelEntry.objects.filter(backend=backend, source__in=[str(folder), f"{folder}/"])
    for entry in entries:
        latest = dict(entry.benchmark or {})
        latest[figures["device"]] = figures
        entry.benchmark = latest
        entry.save(update_fields=["benchmark"])
    return len(entries)


def write_docs(key: str, lines: list[str]) -> None:
    start, end = f"<!-- bench/quantization.py {key} -->", f"<!-- /bench/quantization.py {key} -->"
    block = "\n".join([start, *lines, end])
    text = DOCS.read_text()
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="smollm2, shakespeare-gru or a folder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--modes", default="", help="comma-separated; 'none' first is the baseline")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs, after one warm-up")
    parser.add_argument("--ppl-chars", type=int, default=12_000, help="held-out characters scored")
    parser.add_argument("--window", type=int, default=512, help="tokens per perplexity window")
    parser.add_argument(
        "--decode-tokens", type=int, default=128, help="tokens scored one at a time (KV cache)"
    )
    parser.add_argument("--store", action="store_true", help="save figures on catalog entries")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="transformers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    folder, backend = resolve_model(args.model)
    if args.modes:
        modes = args.modes.split(",")
    elif backend == "rnn":
        modes = ["none", "int8_dynamic"]
    elif args.device == "cuda":
        modes = ["none", "bnb_8bit", "bnb_4bit"]
    else:
        modes = ["none", "int8_dynamic", "bnb_8bit", "bnb_4bit"]
    import torch

    print(f"measuring {folder.name} on {args.device}: {', '.join(modes)}", file=sys.stderr)
    rows = [run_mode(args, folder, backend, mode) for mode in modes]
    machine = machine_name(args.device)
    today = datetime.date.today().isoformat()
    unit = next((r["unit"] for r in rows if "unit" in r), "tokens")
    header = (
        f"**{today} · {folder.name} · {args.device} ({machine}) · torch {torch.__version__}.** "
        f"{args.tokens * (4 if unit == 'characters' else 1)} greedy {unit} per run, median of "
        f"{args.runs} runs after a warm-up; perplexity per {unit[:-1]} over "
        f"{rows[0].get('scored', '?'):,} held-out {unit} (the last 5 % of the Shakespeare plays)"
        + (
            f", in {args.window}-token windows and one token at a time over the first "
            f"{rows[0]['decode_scored']}; "
            if "decode_scored" in rows[0]
            else "; "
        )
        + "RSS is the process's growth from before loading to after decoding; weights as "
        "torch.save writes them."
    )
    notes = targets(rows, args) if backend == "transformers" and args.device == "cpu" else []
    lines = [header, "", *table(rows), *([""] + [f"- {n}" for n in notes] if notes else [])]
    print("\n".join(lines))
    if args.store:
        figures = {
            "device": args.device,
            "machine": machine,
            "measured_at": today,
            "unit": unit,
            "modes": {r["mode"]: r for r in rows},
        }
        print(f"stored on {store(folder, backend, figures)} catalog entries", file=sys.stderr)
    if args.write_docs:
        write_docs(f"{folder.name} {args.device}", lines)
        print(f"updated {DOCS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
