"""Catalog models as classifier layers of the safety filter, run where they are loaded
(on a worker, through its model cache).

Two kinds of model serve as a moderation model (catalog task "moderation"):

- a text-classification model (`...ForSequenceClassification`, e.g. a toxicity classifier):
  `SequenceClassifierLayer` reads its labels from the config. Labels that name harmless text
  ("non-toxic", "neutral", "safe", LABEL_0 of a two-label model) are left out; each other
  label is a category, and the score is the highest probability of one (sigmoid for a
  multi-label model, softmax otherwise), over windows of the model's length for a long
  text. The explanation names the words whose removal lowers the score most.
- a generative safety model that answers through its chat template, Llama Guard's way:
  "safe", or "unsafe" and a line of hazard codes ("S10"). `GenerativeJudgeLayer` scores the
  probability of "unsafe" against "safe" as the first answer token, and when unsafe reads
  the codes, named with Llama Guard 3's table unless the model's folder has a
  `moderation.json` with its own ({"categories": {"S1": "violent_crimes", ...}}).

`layer_for(loaded)` picks the one that fits the loaded model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from generation.loading import LoadedModel
from generation.safety.classifier import ClassifierScore, TextClassifier
from generation.specs import GenerationError, looks_like_path

# Labels of harmless text, left out of the categories.
_BENIGN = re.compile(
    r"(?i)(non|not|no)[-_ ]?(toxic|offensive|hate|harmful|spam|unsafe)|"
    r"neutral|safe|normal|ok|okay|clean|benign|none|acceptable|appropriate|negative"
)
_GENERIC = re.compile(r"(?i)label_?(\d+)")

# Llama Guard 3's hazard categories (MLCommons taxonomy).
LLAMA_GUARD_3_CATEGORIES = {
    "S1": "violent_crimes",
    "S2": "non_violent_crimes",
    "S3": "sex_crimes",
    "S4": "child_exploitation",
    "S5": "defamation",
    "S6": "specialized_advice",
    "S7": "privacy",
    "S8": "intellectual_property",
    "S9": "indiscriminate_weapons",
    "S10": "hate",
    "S11": "self_harm",
    "S12": "sexual_content",
    "S13": "elections",
    "S14": "code_interpreter_abuse",
}
_CODE = re.compile(r"\bS\d{1,2}\b")

# How many texts (or windows) go through the model at once.
_BATCH = 16


def category_slug(label: str, fallback: str) -> str:
    """A label as a category name (lowercase letters, digits and _; at most 40)."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40]
    if not slug or not slug[0].isalpha() or _GENERIC.fullmatch(slug):
        return fallback
    return slug


class SequenceClassifierLayer:
    """A text-classification model as a classifier of the filter."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        category: str = "toxic",
        top_words: int = 5,
        explain_from: float = 0.5,
        max_words_explained: int = 64,
    ) -> None:
        if loaded.tokenizer is None:
            raise GenerationError(f"model {loaded.spec.name!r} has no tokenizer")
        self.loaded = loaded
        self.name = loaded.spec.name
        self.category = category
        self.top_words = top_words
        self.explain_from = explain_from
        self.max_words_explained = max_words_explained
        config = loaded.model.config
        labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        self.multi_label = config.problem_type == "multi_label_classification"
        generic = all(_GENERIC.fullmatch(label) for label in labels.values())
        if generic and not self.multi_label and len(labels) == 2:
            harmful = {1: labels[1]}  # LABEL_0 / LABEL_1: the second is the positive class
        else:
            harmful = {i: label for i, label in labels.items() if not _BENIGN.fullmatch(label)}
        if not harmful:
            raise GenerationError(
                f"model {self.name!r} has no label for harmful text (labels: "
                f"{', '.join(labels.values())}); it cannot serve as a moderation model"
            )
        self.harmful = {i: category_slug(label, category) for i, label in harmful.items()}
        limit = getattr(loaded.tokenizer, "model_max_length", None) or 512
        self.window = max(16, min(int(limit), loaded.context_length, 512))

    def score_many(self, texts: Sequence[str]) -> list[ClassifierScore]:
        results = []
        for text, (score, index) in zip(texts, self._best(texts), strict=True):
            words: tuple[tuple[str, float], ...] = ()
            if score >= self.explain_from:
                words = self._explain(text, index, score)
            results.append(ClassifierScore(score, words, category=self.harmful[index]))
        return results

    def _best(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """Per text: the highest probability of a harmful label, and that label's index,
        over all windows of the text."""
        tokenizer = self.loaded.tokenizer
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=self.window,
            stride=self.window // 8,
            return_overflowing_tokens=True,
            padding=True,
            return_tensors="pt",
        )
        owners = encoded.pop("overflow_to_sample_mapping", None)
        rows = encoded["input_ids"].shape[0]
        owner = owners.tolist() if owners is not None else list(range(rows))
        best = [(0.0, next(iter(self.harmful))) for _ in texts]
        indices = list(self.harmful)
        for start in range(0, rows, _BATCH):
            batch = {
                key: value[start : start + _BATCH].to(self.loaded.device)
                for key, value in encoded.items()
                if isinstance(value, torch.Tensor)
            }
            probabilities = self._probabilities(batch)[:, indices]
            values, positions = probabilities.max(dim=1)
            for row, (value, position) in enumerate(
                zip(values.tolist(), positions.tolist(), strict=True)
            ):
                text_index = owner[start + row]
                if value > best[text_index][0]:
                    best[text_index] = (value, indices[position])
        return best

    @torch.inference_mode()
    def _probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.loaded.model(**batch).logits.float()
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)

    def _label_scores(self, texts: Sequence[str], index: int) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), _BATCH):
            batch = self.loaded.tokenizer(
                list(texts[start : start + _BATCH]),
                truncation=True,
                max_length=self.window,
                padding=True,
                return_tensors="pt",
            ).to(self.loaded.device)
            scores.extend(self._probabilities(dict(batch))[:, index].tolist())
        return scores

    def _explain(self, text: str, index: int, score: float) -> tuple[tuple[str, float], ...]:
        """The words whose removal lowers the score most (leave-one-out), for a short text."""
        words = text.split()
        if not 2 <= len(words) <= self.max_words_explained:
            return ()
        variants = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        drops: dict[str, float] = {}
        for word, without in zip(words, self._label_scores(variants, index), strict=True):
            drop = score - without  # (a text this short is one window: its score is the base)
            if drop > 0.01 and drop > drops.get(word, 0.0):
                drops[word] = drop
        ranked = sorted(drops.items(), key=lambda item: -item[1])
        return tuple((word, round(drop, 4)) for word, drop in ranked[: self.top_words])


class GenerativeJudgeLayer:
    """A generative safety model (Llama Guard's answer format) as a classifier."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        category: str = "unsafe",
        categories: dict[str, str] | None = None,
        max_new_tokens: int = 12,
        chunk_chars: int = 4000,
    ) -> None:
        tokenizer = loaded.tokenizer
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise GenerationError(
                f"model {loaded.spec.name!r} has no chat template, so it cannot answer as a "
                "generative safety model"
            )
        self.loaded = loaded
        self.name = loaded.spec.name
        self.category = category
        self.categories = categories if categories is not None else _categories_of(loaded)
        self.max_new_tokens = max_new_tokens
        self.chunk_chars = chunk_chars
        self.safe_id = self._first_answer_token("safe")
        self.unsafe_id = self._first_answer_token("unsafe")
        if self.safe_id == self.unsafe_id:
            raise GenerationError(
                f"model {self.name!r}: 'safe' and 'unsafe' begin with the same token, so its "
                "answer cannot be scored"
            )

    def _prompt(self, text: str) -> list[int]:
        ids = self.loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # a BatchEncoding in newer transformers
            ids = ids["input_ids"]
        room = self.loaded.context_length - self.max_new_tokens - 1
        return list(ids[-room:]) if len(ids) > room else list(ids)

    def _first_answer_token(self, word: str) -> int:
        """The first token of `word` as the model's answer (tokenized after the prompt,
        since a tokenizer may merge it with what comes before)."""
        tokenizer = self.loaded.tokenizer
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False
        )
        before = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        after = tokenizer(prompt + word, add_special_tokens=False)["input_ids"]
        if after[: len(before)] == before and len(after) > len(before):
            return int(after[len(before)])
        return int(tokenizer(word, add_special_tokens=False)["input_ids"][0])

    def score_many(self, texts: Sequence[str]) -> list[ClassifierScore]:
        results = []
        for text in texts:
            chunks = [
                text[i : i + self.chunk_chars]
                for i in range(0, max(len(text), 1), self.chunk_chars)
            ]
            scored = [self._judge(chunk) for chunk in chunks]
            results.append(max(scored, key=lambda result: result.score))
        return results

    @torch.inference_mode()
    def _judge(self, text: str) -> ClassifierScore:
        model = self.loaded.model
        ids = torch.tensor([self._prompt(text)], device=self.loaded.device)
        logits = model(input_ids=ids).logits[0, -1].float()
        pair = torch.stack([logits[self.safe_id], logits[self.unsafe_id]]).softmax(dim=0)
        score = float(pair[1])
        if score < 0.5:
            return ClassifierScore(score, category=self.category, note='answered "safe"')
        # Read the hazard codes that follow "unsafe" (greedy).
        answer = torch.cat([ids, torch.tensor([[self.unsafe_id]], device=ids.device)], dim=1)
        output = model.generate(
            input_ids=answer,
            attention_mask=torch.ones_like(answer),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.loaded.tokenizer.pad_token_id,
        )
        rest = self.loaded.tokenizer.decode(output[0, answer.shape[1] :], skip_special_tokens=True)
        codes = list(dict.fromkeys(_CODE.findall(rest)))
        named = [self.categories.get(code, category_slug(code, self.category)) for code in codes]
        category = named[0] if named else self.category
        said = " ".join(["unsafe", *codes])
        return ClassifierScore(score, category=category, note=f'answered "{said}"')


def _categories_of(loaded: LoadedModel) -> dict[str, str]:
    """The model's own hazard table (moderation.json in its folder), or Llama Guard 3's."""
    if looks_like_path(loaded.spec.source):
        file = Path(loaded.spec.source).expanduser() / "moderation.json"
        if file.is_file():
            try:
                table = json.loads(file.read_text())["categories"]
                return {
                    str(code): category_slug(str(name), "unsafe") for code, name in table.items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise GenerationError(
                    f"model {loaded.spec.name!r}: {file} is not "
                    '{"categories": {"S1": "name", ...}}: ' + str(exc)
                ) from exc
    return dict(LLAMA_GUARD_3_CATEGORIES)


def is_sequence_classifier(loaded: LoadedModel) -> bool:
    return type(loaded.model).__name__.endswith("ForSequenceClassification")


def layer_for(loaded: Any) -> TextClassifier:
    """The classifier layer for a loaded moderation model; GenerationError when the model
    can serve as neither kind."""
    if not isinstance(loaded, LoadedModel):
        raise GenerationError(
            f"model {loaded.spec.name!r} is not a transformers model; a moderation model must "
            "be a text classifier or a generative safety model"
        )
    if is_sequence_classifier(loaded):
        return SequenceClassifierLayer(loaded)
    return GenerativeJudgeLayer(loaded)
