"""Content-safety evaluation: precision, recall and F1 of the default filter, and the
latency of one input check.

Runs `SafetyFilter.default()` (the shipped rules and the alt-profanity-check classifier)
under the default policy, or one given as JSON, on the labelled set the project ships in
tests/generation/data/safety_eval.jsonl: benign texts (tricky ones included: "Scunthorpe",
"kill the process", medical terms) and harmful ones, each harmful text with obfuscated
variants (leetspeak, confusable letters, zero-width characters, spacing, a mix). A text
counts as caught when the verdict is flag or block.

Prints precision, recall and F1, overall and for the two parts of the set ("dev": the
default rules were written with it in view; "holdout": written after they were frozen);
recall on plain and on obfuscated harmful texts, per obfuscation and per category; and
the time of one input check (`SafetyFilter.check`, the classifier already loaded, after a
warm-up pass): p50, p95 and max over all texts, and the median for longer inputs.
Targets (issue 5): p95 <= 5 ms on CPU; recall on obfuscated >= recall on plain.

    .venv/bin/python bench/safety_eval.py [--repeat 5] [--policy '{"flag_threshold": 0.8}']
        [--errors] [--model FOLDER_OR_HUB_ID ...]

`--model` adds a moderation model (a text classifier such as a toxicity model, or a
generative safety model such as Llama Guard; see generation/safety/model_layer.py) as a
classifier layer, as a policy naming it does on the worker; with
`--policy '{"use_classifier": false}'` it replaces the built-in classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from generation.safety import Action, Policy, SafetyFilter, Verdict  # noqa: E402

DATA = ROOT / "tests" / "generation" / "data" / "safety_eval.jsonl"
TARGET_P95_MS = 5.0
LONG_INPUTS = (1000, 4000)  # characters
BUSY_LOAD = 0.5  # load average per core above which a warning says timings are noisy


@dataclass(frozen=True)
class Example:
    id: str
    group: str
    text: str
    harmful: bool
    category: str
    obfuscated: bool
    obfuscation: str | None
    split: str  # "dev": rules were written with it in view; "holdout": written after


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int


def load_examples(path: Path = DATA) -> list[Example]:
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["label"] not in ("harmful", "benign") or row["variant"] not in (
            "plain",
            "obfuscated",
        ):
            raise ValueError(f"{path}:{number}: bad label or variant")
        examples.append(
            Example(
                id=row["id"],
                group=row["group"],
                text=row["text"],
                harmful=row["label"] == "harmful",
                category=row["category"],
                obfuscated=row["variant"] == "obfuscated",
                obfuscation=row.get("obfuscation"),
                split=row.get("split", "dev"),
            )
        )
    return examples


def caught(verdict: Verdict) -> bool:
    return verdict.action is not Action.ALLOW


def scores(pairs: Iterable[tuple[Example, Verdict]]) -> Scores:
    tp = fp = fn = 0
    for example, verdict in pairs:
        hit = caught(verdict)
        tp += hit and example.harmful
        fp += hit and not example.harmful
        fn += (not hit) and example.harmful
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, fp, fn)


def recall_of(pairs: Iterable[tuple[Example, Verdict]]) -> tuple[float, int, int]:
    harmful = [(e, v) for e, v in pairs if e.harmful]
    hits = sum(caught(v) for _, v in harmful)
    return (hits / len(harmful) if harmful else 0.0), hits, len(harmful)


def evaluate(
    safety: SafetyFilter, policy: Policy, examples: list[Example]
) -> list[tuple[Example, Verdict]]:
    return [(example, safety.check(example.text, policy)) for example in examples]


def time_checks(
    safety: SafetyFilter, policy: Policy, examples: list[Example], repeat: int
) -> list[float]:
    """Seconds per check, every text `repeat` times (interleaved), after one warm-up pass."""
    for example in examples:
        safety.check(example.text, policy)
    timings = []
    for _ in range(repeat):
        for example in examples:
            started = time.perf_counter()
            safety.check(example.text, policy)
            timings.append(time.perf_counter() - started)
    return timings


def time_long_inputs(
    safety: SafetyFilter, policy: Policy, examples: list[Example], sizes: tuple[int, ...]
) -> dict[int, float]:
    """Median seconds of one check of a long input (the benign texts joined, cut to size):
    the cost grows with the length, which the short set above does not show."""
    benign = " ".join(e.text for e in examples if not e.harmful)
    medians = {}
    for size in sizes:
        text = (benign * (size // max(1, len(benign)) + 1))[:size]
        runs = []
        for _ in range(7):
            started = time.perf_counter()
            safety.check(text, policy)
            runs.append(time.perf_counter() - started)
        medians[size] = statistics.median(runs)
    return medians


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="labelled JSONL set")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over the set")
    parser.add_argument("--policy", default="{}", help="policy as JSON (Policy.from_dict)")
    parser.add_argument("--errors", action="store_true", help="list every miss and false alarm")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="a moderation model (folder or hub id) to run as a classifier layer; repeatable",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def report(
    args: argparse.Namespace,
    policy: Policy,
    pairs: list[tuple[Example, Verdict]],
    timings: list[float],
    load_seconds: float,
    long_inputs: dict[int, float],
) -> bool:
    """Print the figures; True when both targets are met."""
    plain_recall = recall_of([(e, v) for e, v in pairs if not e.obfuscated])
    obf_recall = recall_of([(e, v) for e, v in pairs if e.obfuscated])
    ms = [t * 1000 for t in timings]
    p50, p95, worst = statistics.median(ms), percentile(ms, 0.95), max(ms)
    load = os.getloadavg()[0]
    data = args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data

    layers = ["shipped rules"]
    if policy.use_classifier:
        layers.append("alt-profanity-check")
    layers.extend(policy.model_classifiers)
    print(f"Content-safety evaluation (filter: {' + '.join(layers)})")
    print(f"  data       {data}")
    print(f"  policy     {json.dumps(policy.to_dict())}")
    print(
        f"  machine    {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.2f}"
    )
    print(f"  classifier loaded in {load_seconds:.2f} s (once per process)")
    print()
    header = ("set", "benign", "harmful", "precision", "recall", "F1", "plain R", "obfusc. R")
    line = "  {:<8} {:>6} {:>14} {:>9} {:>7} {:>6} {:>13} {:>15}"
    print(line.format(*header))
    splits = sorted({e.split for e, _ in pairs})
    for name in ["all", *splits]:
        chosen = [(e, v) for e, v in pairs if name == "all" or e.split == name]
        s = scores(chosen)
        plain = recall_of([(e, v) for e, v in chosen if not e.obfuscated])
        obfuscated = recall_of([(e, v) for e, v in chosen if e.obfuscated])
        print(
            line.format(
                name,
                sum(not e.harmful for e, _ in chosen),
                f"{plain[2]}+{obfuscated[2]} obf",
                f"{s.precision:.3f}",
                f"{s.recall:.3f}",
                f"{s.f1:.3f}",
                f"{plain[0]:.3f} ({plain[1]})",
                f"{obfuscated[0]:.3f} ({obfuscated[1]})",
            )
        )
    print("  (dev: the default rules were written with these examples in view; holdout: written")
    print("   after the rules and thresholds were frozen, never tuned on)")
    print()
    by_kind: dict[str, list[tuple[Example, Verdict]]] = defaultdict(list)
    by_category: dict[str, list[tuple[Example, Verdict]]] = defaultdict(list)
    for example, verdict in pairs:
        if example.harmful:
            by_kind[example.obfuscation or "plain"].append((example, verdict))
            by_category[example.category].append((example, verdict))
    kinds = ", ".join(f"{k} {recall_of(v)[0]:.3f}" for k, v in sorted(by_kind.items()))
    categories = ", ".join(f"{k} {recall_of(v)[0]:.3f}" for k, v in sorted(by_category.items()))
    print(f"  recall per obfuscation (all): {kinds}")
    print(f"  recall per category (all):    {categories}")
    print()
    print(
        f"  one input check: p50 {p50:.3f} ms, p95 {p95:.3f} ms, max {worst:.3f} ms "
        f"({len(ms)} checks: {args.repeat} passes over the set after a warm-up pass)"
    )
    longer = ", ".join(f"{size} chars {t * 1000:.1f} ms" for size, t in long_inputs.items())
    print(f"  longer inputs (median of 7, not a target): {longer}")
    print()
    latency_ok = p95 <= TARGET_P95_MS
    recall_ok = obf_recall[0] >= plain_recall[0]
    outcome = "PASS" if latency_ok else "MISS"
    print(f"  target p95 <= {TARGET_P95_MS:g} ms: {outcome} ({p95:.3f} ms)")
    outcome = "PASS" if recall_ok else "MISS"
    print(
        f"  target recall on obfuscated >= recall on plain (all): {outcome} "
        f"({obf_recall[0]:.3f} vs {plain_recall[0]:.3f})"
    )
    if load > BUSY_LOAD * (os.cpu_count() or 1):
        print(
            f"  WARNING: load average {load:.2f} on {os.cpu_count()} cores: other processes "
            "share the cores and the timings are unreliable; rerun on a quiet machine"
        )
    if args.errors:
        print()
        for example, verdict in pairs:
            if caught(verdict) != example.harmful:
                kind = "missed" if example.harmful else "false alarm"
                print(f"  {kind:11} {example.id:22} {example.text!r}")
                print(f"              -> {verdict.action}: {verdict.explanation}")
    return latency_ok and recall_ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    policy = Policy.from_dict(json.loads(args.policy))
    examples = load_examples(args.data)
    safety = SafetyFilter.default()
    started = time.perf_counter()
    for classifier in safety.classifiers:
        load: Any = getattr(classifier, "load", None)
        if load is not None:
            load()
    if args.model:
        from generation.loading import load_model
        from generation.safety.model_layer import layer_for
        from generation.specs import ModelSpec, Task

        layers = [
            layer_for(load_model(ModelSpec(name=source, source=source, task=Task.MODERATION)))
            for source in args.model
        ]
        safety = safety.with_models(layers)
        names = (*policy.model_classifiers, *(layer.name for layer in layers))
        policy = Policy.from_dict({**policy.to_dict(), "model_classifiers": names})
    load_seconds = time.perf_counter() - started
    pairs = evaluate(safety, policy, examples)
    timings = time_checks(safety, policy, examples, args.repeat)
    long_inputs = time_long_inputs(safety, policy, examples, LONG_INPUTS)
    report(args, policy, pairs, timings, load_seconds, long_inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
