"""Tiny random-weight seq2seq, vision and encoder models for tests, with locally trained
tokenizers and saved image processor configs.

Each builder writes a folder that loads through the real from_pretrained path, like a model
from the hub: T5, BART, Marian, M2M100 and an NLLB-style M2M100 for summaries and
translations, ViT and ResNet image classifiers, a BERT encoder for sentence embeddings.
The models are a few thousand parameters, so building and running them takes moments.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from tests.tiny.causal import CORPUS

# Enough text in each language the translation tests use for the tokenizers to cover it.
SEQ2SEQ_CORPUS = [
    *CORPUS,
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Paris ist die Hauptstadt von Frankreich. Berlin ist die Hauptstadt von Deutschland.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Paris est la capitale de la France. Les traductions gardent le sens.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "summarize: translate English to German: a summary of the text.",
]
IMAGE_LABELS = ("cat", "dog", "bird", "fish", "horse")

# T5's config names the prefixes it was trained with; summarize.py reads them from here.
T5_TASK_PARAMS = {
    "summarization": {"prefix": "summarize: "},
    "translation_en_to_de": {"prefix": "translate English to German: "},
    "translation_en_to_fr": {"prefix": "translate English to French: "},
}


# fairseq's special token ids, which BART and M2M100/NLLB keep; </s> starts decoding.
_FAIRSEQ_IDS = {
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}


def _seq2seq_config(config_class: Any, hidden_size: int, vocab_size: int, **ids: int) -> Any:
    """A two-layer encoder-decoder config of the BART family (BART, Marian, M2M100)."""
    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "d_model": hidden_size,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 2 * hidden_size,
        "decoder_ffn_dim": 2 * hidden_size,
        "max_position_embeddings": 512,
        **ids,
    }
    return config_class(**settings)


def _random_model(model_class: Any, config: Any, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return _spread_weights(model_class(config), 1.0)


def _fast_tokenizer(
    specials: list[str],
    template: str,
    *,
    byte_level: bool,
    vocab_size: int = 400,
    **tokens: str,
) -> Any:
    """A BPE tokenizer trained on SEQ2SEQ_CORPUS with `specials` first (ids 0, 1, ...),
    whose post-processor adds special tokens as `template` says (e.g. "$A </s>")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=tokens.get("unk_token")))
    if byte_level:
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # sentencepiece style: words start with "▁"
        raw.pre_tokenizer = pre_tokenizers.Metaspace()
        raw.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet
    )
    raw.train_from_iterator(SEQ2SEQ_CORPUS * 4, trainer=trainer)
    single = template
    raw.post_processor = processors.TemplateProcessing(
        single=single,
        pair=f"{single} $B:1",
        special_tokens=[(s, raw.token_to_id(s)) for s in specials if s in template],
    )
    return PreTrainedTokenizerFast(tokenizer_object=raw, **tokens)


def _spread_weights(model: Any, std: float) -> Any:
    """Random seq2seq models with their usual tiny initialisation greedily repeat one
    token, often <pad> or </s> (so the text is empty); wider weights give varied text."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
                module.weight.normal_(0.0, std)
    return model


def save_folder(folder: Path, model: Any, *companions: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for companion in companions:
        companion.save_pretrained(folder)
    return folder


def build_tiny_t5(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """T5: <pad> starts decoding, </s> ends every input; the config carries task prefixes."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = _fast_tokenizer(
        ["<pad>", "</s>", "<unk>"],
        "$A </s>",
        byte_level=False,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    settings: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        d_model=hidden_size,
        d_kv=hidden_size // 4,
        d_ff=2 * hidden_size,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        n_positions=512,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params=T5_TASK_PARAMS,
    )
    config = T5Config(**settings)
    return save_folder(folder, _random_model(T5ForConditionalGeneration, config, seed), tokenizer)


def build_tiny_bart(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """BART: </s> starts decoding and <s> is forced as the first generated token."""
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = _fast_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        "<s> $A </s>",
        byte_level=True,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    config = _seq2seq_config(
        BartConfig, hidden_size, len(tokenizer), **_FAIRSEQ_IDS, forced_eos_token_id=2
    )
    model = _random_model(BartForConditionalGeneration, config, seed)
    model.generation_config.forced_bos_token_id = 0  # as facebook/bart-* have it
    return save_folder(folder, model, tokenizer)


def _train_sentencepiece(vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SEQ2SEQ_CORPUS * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def build_tiny_marian(
    folder: Path,
    source_lang: str = "en",
    target_lang: str = "de",
    seed: int = 0,
    hidden_size: int = 32,
    target_codes: tuple[str, ...] = (),
) -> Path:
    """Marian with its real (SentencePiece) tokenizer, like Helsinki-NLP/opus-mt-xx-yy: the
    pair is in the tokenizer config; `target_codes` adds >>xx<< tokens of a multi-target
    model. <pad> (the last id) starts decoding."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    spm_bytes = _train_sentencepiece(200)
    processor = spm.SentencePieceProcessor(model_proto=spm_bytes)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for piece in [f">>{code}<<" for code in target_codes] + pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(spm_bytes)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(
        str(folder / "source.spm"),
        str(folder / "target.spm"),
        str(folder / "vocab.json"),
        source_lang=source_lang,
        target_lang=target_lang,
    )
    pad = vocab["<pad>"]
    config = _seq2seq_config(
        MarianConfig,
        hidden_size,
        len(vocab),
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
    )
    return save_folder(folder, _random_model(MarianMTModel, config, seed), tokenizer)


def build_tiny_nllb(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """An NLLB-style M2M100 model: the tokenizer marks the source language with a token
    (`tokenizer.src_lang`), and generation is told the target by a forced first token."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    trained = _fast_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>"],
        "$A </s>",
        byte_level=False,
        unk_token="<unk>",
    )
    backend = json.loads(trained.backend_tokenizer.to_str())["model"]
    merges: Any = [tuple(merge) for merge in backend["merges"]]  # pairs, whatever the stub says
    tokenizer = NllbTokenizer(vocab=backend["vocab"], merges=merges)
    config = _seq2seq_config(M2M100Config, hidden_size, len(tokenizer), **_FAIRSEQ_IDS)
    return save_folder(
        folder, _random_model(M2M100ForConditionalGeneration, config, seed), tokenizer
    )


def build_tiny_m2m100(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """M2M100 with its real (SentencePiece) tokenizer: "__de__"-style language tokens after
    the vocabulary, the source one set through `tokenizer.src_lang`, the target forced."""
    import sentencepiece as spm
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    spm_bytes = _train_sentencepiece(200)
    processor = spm.SentencePieceProcessor(model_proto=spm_bytes)
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sentencepiece.bpe.model").write_bytes(spm_bytes)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = M2M100Tokenizer(
        str(folder / "vocab.json"), str(folder / "sentencepiece.bpe.model"), num_madeup_words=0
    )
    # The language tokens have ids after the vocabulary, and len(tokenizer) leaves them out.
    vocab_size = max(tokenizer.lang_code_to_id.values()) + 1
    config = _seq2seq_config(M2M100Config, hidden_size, vocab_size, **_FAIRSEQ_IDS)
    return save_folder(
        folder, _random_model(M2M100ForConditionalGeneration, config, seed), tokenizer
    )


def _labels(labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def build_tiny_vit(folder: Path, seed: int = 0, labels: tuple[str, ...] = IMAGE_LABELS) -> Path:
    """A ViT classifier on 32x32 images with its ViTImageProcessor config."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        **_labels(labels),
    )
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    torch.manual_seed(seed)
    return save_folder(folder, ViTForImageClassification(config), processor)


def build_tiny_resnet(folder: Path, seed: int = 0, labels: tuple[str, ...] = IMAGE_LABELS) -> Path:
    """A ResNet classifier with the ConvNextImageProcessor config microsoft/resnet-* use
    (resize the short side, centre crop)."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        **_labels(labels),
    )
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config)
    # Random BatchNorm statistics are all (0, 1): give them some spread, as trained ones have.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return save_folder(folder, model, processor)


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_tokenizer(raw: Any, max_length: int) -> Any:
    """A trained `tokenizers.Tokenizer` (whose first ids are BERT_SPECIALS) wrapped as BERT's:
    lowercasing, BERT's pre-tokenizer, "[CLS] text [SEP]"."""
    from tokenizers import normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def build_tiny_bert(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A BERT encoder (no head) with a WordPiece tokenizer, shaped like all-MiniLM-L6-v2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.decoder = decoders.WordPiece()
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)  # (before training)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(
        SEQ2SEQ_CORPUS * 4,
        trainer=trainers.WordPieceTrainer(vocab_size=400, special_tokens=BERT_SPECIALS),
    )
    tokenizer = bert_tokenizer(raw, max_length=128)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return save_folder(folder, BertModel(config), tokenizer)
