"""Which batching engine: Atelier's `Batcher` against transformers' own continuous batching
(`generate_batch`: paged attention, its own scheduler) and sequential generate(), in one
process, on the same requests.

For each batch size (1, 4, 8, 16 by default), that many different chat prompts with
--tokens greedy new tokens each are run (a) one after another with generate() (the
baseline), (b) together through `generation.batching.Batcher` (one thread per request, as
the worker runs them) and (c) through `model.generate_batch`. It prints aggregate tokens/s,
the ratio to the baseline, and whether each engine's texts equal generate()'s. The
issue asked to measure transformers' paged path on CPU before choosing it (it is known to
slow down as the batch grows there); on CUDA run the same script with --device cuda.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engines.py [--tokens 128] [--sizes 1,4,8,16]
        [--quantization none] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.batching import prompt  # noqa: E402

STARTER = Path.home() / ".cache" / "atelier" / "starter-models" / "SmolLM2-135M-Instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=STARTER, help="a chat model folder")
    parser.add_argument("--skip-paged", action="store_true", help="leave out generate_batch")
    args = parser.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",")]
    return args


def requests(loaded: Any, count: int, tokens: int) -> list[list[int]]:
    from generation.prompts import build_chat_input

    return [
        build_chat_input(
            loaded.tokenizer,
            [{"role": "user", "content": prompt(i)}],
            system="",
            max_prompt_tokens=loaded.context_length - tokens,
        )
        for i in range(count)
    ]


def _texts(loaded: Any, outputs: list[list[int]]) -> list[str]:
    return [str(loaded.tokenizer.decode(ids, skip_special_tokens=True)) for ids in outputs]


def sequential(loaded: Any, batch: list[list[int]], tokens: int) -> tuple[float, list[str]]:
    import torch

    outputs = []
    started = time.perf_counter()
    for ids in batch:
        tensor = torch.tensor([ids], device=loaded.device)
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=tensor,
                attention_mask=torch.ones_like(tensor),
                max_new_tokens=tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        outputs.append(out[0, len(ids) :].tolist())
    seconds = time.perf_counter() - started
    return sum(map(len, outputs)) / seconds, _texts(loaded, outputs)


def batcher(loaded: Any, batch: list[list[int]], tokens: int) -> tuple[float, list[str]]:
    from generation.batching import BatchedStream, Batcher
    from generation.specs import SamplingParams

    engine = Batcher(loaded, max_batch=len(batch))
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    streams = [BatchedStream(engine, ids, params) for ids in batch]
    threads = [
        threading.Thread(target=stream.run, args=(lambda piece: None,)) for stream in streams
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    total = sum(stream.stats.completion_tokens for stream in streams)
    return total / seconds, [stream.text for stream in streams]


def paged(loaded: Any, batch: list[list[int]], tokens: int) -> tuple[float, list[str]]:
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=tokens,
        do_sample=False,
        eos_token_id=loaded.model.generation_config.eos_token_id,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    started = time.perf_counter()
    out = loaded.model.generate_batch(inputs=batch, generation_config=config, max_new_tokens=tokens)
    seconds = time.perf_counter() - started
    results = [list(out[f"req_{i}"].generated_tokens) for i in range(len(batch))]
    return sum(map(len, results)) / seconds, _texts(loaded, results)


def same_text(got: list[str], expected: list[str]) -> str:
    same = sum(1 for a, b in zip(got, expected, strict=True) if a.strip() == b.strip())
    return f"{same}/{len(expected)}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from generation.loading import load_model
    from generation.specs import ModelSpec

    loaded = load_model(
        ModelSpec(
            name=args.model.name,
            source=str(args.model),
            quantization=args.quantization,
            device=args.device,
        )
    )
    print(
        f"bench/engines.py  {time.strftime('%Y-%m-%d')}  {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.model.name} "
        f"({args.quantization}, {args.device}), {args.tokens} greedy tokens per request"
    )
    warm = requests(loaded, 1, 8)
    sequential(loaded, warm, 8)
    print(f"{'n':>3} {'generate() seq':>15} {'Batcher':>9} {'x':>6} {'same':>6}", end="")
    print("" if args.skip_paged else f" {'generate_batch':>15} {'x':>6} {'same':>6}")
    for size in args.size_list:
        batch = requests(loaded, size, args.tokens)
        base, expected = sequential(loaded, batch, args.tokens)
        ours, ours_ids = batcher(loaded, batch, args.tokens)
        line = (
            f"{size:>3} {base:>15.1f} {ours:>9.1f} {ours / base:>6.2f} "
            f"{same_text(ours_ids, expected):>6}"
        )
        if not args.skip_paged:
            theirs, their_ids = paged(loaded, batch, args.tokens)
            line += f" {theirs:>15.1f} {theirs / base:>6.2f} {same_text(their_ids, expected):>6}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
