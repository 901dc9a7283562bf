"""Load time, weight memory and decode speed of a chat model in each quantization mode,
through Atelier's own loading and streaming code (generation.loading / generation.streaming).

    python bench/quantized_decode.py --source var/models/SmolLM2-135M-Instruct --device cpu
    python bench/quantized_decode.py --shape-of DIR --device cuda --modes none,bnb_8bit,bnb_4bit

--shape-of builds a model with the architecture and tokenizer in DIR but random weights
(for a machine the real weights cannot be copied to): memory and tokens/s depend on the
shapes only, so they are the real model's; its text is noise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from generation.loading import load_causal_lm
from generation.prompts import build_chat_input
from generation.specs import Device, ModelSpec, Quantization, SamplingParams
from generation.streaming import TokenStream

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def random_model_like(shape_dir: Path, out: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(shape_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(shape_dir).save_pretrained(out)
    return out


def measure(source: str, mode: str, device: str, tokens: int, runs: int) -> dict[str, float | str]:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    loaded = load_causal_lm(
        ModelSpec(
            name=f"bench-{mode}",
            source=source,
            quantization=Quantization(mode),
            device=Device(device),
        )
    )
    weights_mb = (
        (torch.cuda.memory_allocated() - before) / 2**20 if device == "cuda" else float("nan")
    )
    prompt = build_chat_input(
        loaded.tokenizer, [{"role": "user", "content": PROMPT}], max_prompt_tokens=1024
    )
    params = SamplingParams(temperature=0, max_new_tokens=tokens)
    rates, firsts = [], []
    for attempt in range(runs + 1):  # the first run warms up kernels and caches
        stream = TokenStream(loaded, prompt, params)
        stream.run(lambda piece: None)
        if device == "cuda":
            torch.cuda.synchronize()
        if attempt:
            rates.append(stream.stats.completion_tokens / stream.stats.total_seconds)
            firsts.append((stream.stats.first_token_seconds or 0) * 1000)
    result: dict[str, float | str] = {
        "mode": mode,
        "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "load_s": loaded.load_seconds,
        "weights_mb": weights_mb,
        "tok_s": statistics.median(rates),
        "ttft_ms": statistics.median(firsts),
        "tokens": stream.stats.completion_tokens,
    }
    del loaded
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", help="a model folder")
    parser.add_argument(
        "--shape-of", type=Path, help="build a random-weight model shaped like this folder"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default="")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    modes = (
        args.modes.split(",")
        if args.modes
        else (
            ["none", "bnb_8bit", "bnb_4bit"] if args.device == "cuda" else ["none", "int8_dynamic"]
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or str(random_model_like(args.shape_of, Path(tmp) / "model"))
        rows = [measure(source, mode, args.device, args.tokens, args.runs) for mode in modes]
    name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.processor() or 'CPU'} x{os.cpu_count()}"
    )
    weights = " (random weights, real shapes)" if args.shape_of else ""
    header = f"{datetime.date.today()} · {name} · torch {torch.__version__}"
    print(f"\n{header} · {(args.shape_of or Path(source)).name}{weights}")
    print(f"{args.tokens} greedy tokens per run; median of {args.runs} runs after a warm-up")
    baseline = rows[0]
    print("\n| mode | dtype | load s | weights MiB | tokens/s | vs first row | first token ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = float(r["tok_s"]) / float(baseline["tok_s"])
        print(
            f"| {r['mode']} | {r['dtype']} | {r['load_s']:.2f} | {r['weights_mb']:.0f} "
            f"| {r['tok_s']:.1f} | {ratio:.2f}x | {r['ttft_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
