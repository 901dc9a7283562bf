"""Tiny random-weight models with locally trained tokenizers, for tests and benchmarks.

They are saved and then loaded through the real from_pretrained path, like any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Atelier streams tokens from a worker to the browser over a WebSocket.",
    "A language model predicts the next token from the ones before it.",
    "Hello! How can I help you today? Here is some code: def add(a, b): return a + b",
    "Paris is the capital of France. Rome is the capital of Italy.",
    "Summaries are short; translations keep the meaning; classifiers pick labels.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } * # - _",
    "Unicode: café, naïve, Straße, 東京, 😀",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(vocab_size: int = 300, corpus: Sequence[str] = ()) -> Any:
    """A byte-level BPE tokenizer trained on a small corpus (`corpus`, or the shipped one),
    with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(list(corpus) or CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_causal_lm(
    folder: Path, family: str = "llama", seed: int = 0, hidden_size: int = 32
) -> Path:
    """Save a tiny random-weight causal LM ('llama' or 'gpt2') and its tokenizer to folder.
    (bitsandbytes' 4-bit layers need hidden_size >= 64.)"""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    tokenizer = train_tokenizer()
    vocab = len(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config: LlamaConfig | GPT2Config
    if family == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=pad,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=True,
        )
    elif family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=hidden_size,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=pad,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    else:
        raise ValueError(f"unknown tiny family {family!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
