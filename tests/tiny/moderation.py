"""Tiny moderation models for tests, trained here in seconds, that behave like the real kinds:

- `build_tiny_toxicity_classifier`: a BERT text classifier (like unitary/toxic-bert) that
  has learnt that some trigger words make a text harmful, each under its own label;
- `build_tiny_safety_judge`: a small causal LM with a chat template (like Llama Guard) that
  has learnt to answer "safe", or "unsafe" and a hazard code when a trigger word is present.

Both are trained on sentences made from the tiny corpus with random made-up words mixed in
(so text the tokenizer does not know, such as another tiny model's output, stays harmless),
and saved for loading through from_pretrained like any model.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from tests.tiny.causal import train_tokenizer
from tests.tiny.models import BERT_SPECIALS, SEQ2SEQ_CORPUS, bert_tokenizer, save_folder

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _corpus_words() -> list[str]:
    return sorted(
        {w.strip(".,;:!?()[]{}").lower() for s in SEQ2SEQ_CORPUS for w in s.split()} - {""}
    )


def _examples(triggers: Mapping[str, str], count: int, seed: int) -> list[tuple[str, str | None]]:
    """(sentence, the label of the trigger it holds or None), half of them harmful."""
    rng = random.Random(seed)
    words = _corpus_words()
    made_up = ["".join(rng.choices(_LETTERS, k=rng.randint(3, 9))) for _ in range(200)]
    found = []
    for i in range(count):
        sentence = [
            rng.choice(words if rng.random() < 0.6 else made_up) for _ in range(rng.randint(3, 14))
        ]
        label = None
        if i % 2:
            trigger = rng.choice(sorted(triggers))
            sentence.insert(rng.randint(0, len(sentence)), trigger)
            label = triggers[trigger]
        found.append((" ".join(sentence), label))
    return found


def build_tiny_toxicity_classifier(
    folder: Path,
    triggers: Mapping[str, str],
    *,
    multi_label: bool = False,
    seed: int = 0,
    steps: int = 150,
) -> Path:
    """A trained tiny BERT classifier: a text holding a trigger word scores high on that
    word's label. Single-label models get a first label "non-toxic" (softmax); multi-label
    ones have only the harmful labels (sigmoid)."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForSequenceClassification

    words = [*BERT_SPECIALS, *_corpus_words(), *sorted(triggers)]
    vocab = {token: i for i, token in enumerate(words)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer = bert_tokenizer(raw, max_length=64)
    harmful = sorted(set(triggers.values()))
    labels = harmful if multi_label else ["non-toxic", *harmful]
    config = BertConfig(  # type: ignore[call-arg]  # num_labels etc. go to PreTrainedConfig
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    examples = _examples(triggers, 512, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = rng.sample(examples, 32)
        encoded = tokenizer([text for text, _ in batch], padding=True, return_tensors="pt")
        if multi_label:
            target = torch.zeros(len(batch), len(labels))
            for row, (_, label) in enumerate(batch):
                if label is not None:
                    target[row, labels.index(label)] = 1.0
        else:
            target = torch.tensor([labels.index(label) if label else 0 for _, label in batch])
        loss = model(**encoded, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return save_folder(folder, model, tokenizer)


def build_tiny_safety_judge(
    folder: Path,
    triggers: Mapping[str, str],
    *,
    seed: int = 0,
    steps: int = 300,
) -> Path:
    """A trained tiny causal LM with a ChatML template that answers a user message with
    "safe", or "unsafe" then a new line and the hazard code of the trigger word it holds
    (`triggers` maps a word to a code such as "S10")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    examples = _examples(triggers, 512, seed)
    tokenizer = train_tokenizer(
        600, [*SEQ2SEQ_CORPUS * 4, *[t for t, _ in examples], "safe", "unsafe\nS1 S10"]
    )
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    sequences = []
    for text, code in examples:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        answer = f"unsafe\n{code}" if code else "safe"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"] + [eos]
        sequences.append((full, len(prompt_ids)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = rng.sample(sequences, 32)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, answer_from) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, answer_from : len(ids)] = torch.tensor(ids[answer_from:])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    return save_folder(folder, model, tokenizer)
