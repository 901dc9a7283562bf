"""What each task does with a loaded model: the part of running a Generation that differs
between chat, summaries, translations, image labels and embeddings.

A handler reads the generation's stored input and parameters, calls `generation/`, hands
text to `on_text` as it is produced (so every text task streams like chat), and returns an
Outcome. It raises GenerationError or ValueError for a request the model cannot serve; the
message is shown to the user as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from generation.batching import open_stream
from generation.embeddings import embed, max_sequence_length
from generation.loading import LoadedModel
from generation.prompts import build_chat_input
from generation.rnn.batching import BatchedRNNStream
from generation.rnn.loading import LoadedRNN
from generation.rnn.prompts import chat_to_prompt
from generation.rnn.streaming import RNNStream
from generation.safety.model_layer import layer_for
from generation.specs import GenerationError, SamplingParams, Task
from generation.streaming import StreamStats
from generation.summarize import SummaryLength, SummaryStream
from generation.translate import TranslationStream
from generation.vision import ImageLimits, classify_image
from webapp.chat.titles import TITLE_TASK  # a chat request at background priority
from webapp.inference import uploads
from webapp.inference.models import Generation

OnText = Callable[[str], None]
ShouldStop = Callable[[], bool]

MAX_TOP_K = 20
MAX_TEXTS = 256  # per embed or moderation request


@dataclass
class Outcome:
    stats: StreamStats
    result: dict[str, Any] | None = None  # structured output, stored on Generation.result
    output: str | None = None  # the text to store, when it is not what was streamed
    images: int = 0  # images the model looked at, for the usage ledger


def _params(generation: Generation, default: SamplingParams | None = None) -> SamplingParams:
    if not generation.params and default is not None:
        return default
    return SamplingParams.from_dict(generation.params)


def _text_input(generation: Generation) -> str:
    text = generation.input.get("text")
    if not isinstance(text, str):
        raise GenerationError("the request has no text")
    return text


def _texts_input(generation: Generation) -> list[str]:
    texts = generation.input.get("texts")
    if (
        not isinstance(texts, list)
        or not texts
        or len(texts) > MAX_TEXTS
        or not all(isinstance(t, str) for t in texts)
    ):
        raise ValueError(f"texts must be a list of 1 to {MAX_TEXTS} strings")
    return texts


def _require_transformers(loaded: LoadedModel | LoadedRNN, what: str) -> LoadedModel:
    if isinstance(loaded, LoadedRNN):
        raise GenerationError(
            f"model {loaded.spec.name!r} is a character-level RNN, which cannot {what}; "
            "choose a transformers model"
        )
    return loaded


def chat(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    params = _params(generation)
    prompt_text = generation.input.get("prompt")
    if isinstance(prompt_text, str):  # a completion: the text continued as it is
        return _continue(loaded, prompt_text, params, on_text, stop)
    messages = generation.input["messages"]
    if isinstance(loaded, LoadedRNN):
        prompt = loaded.vocab.encode(chat_to_prompt(messages))
        if loaded.batcher is not None:
            batched = BatchedRNNStream(loaded.batcher, prompt, params, should_stop=stop)
            return Outcome(batched.run(on_text))
        return Outcome(RNNStream(loaded, prompt, params, should_stop=stop).run(on_text))
    # Keep room for the reply (up to half the context), then shorten the reply to what
    # fits after the prompt rather than refusing a long max_tokens.
    context = loaded.context_length
    reserve = min(params.max_new_tokens, context // 2)
    prompt_ids = build_chat_input(
        loaded.tokenizer,
        messages,
        system=generation.input.get("system", ""),
        max_prompt_tokens=context - reserve,
        model_name=loaded.spec.name,
    )
    fits = context - len(prompt_ids)
    if params.max_new_tokens > fits:
        params = replace(params, max_new_tokens=fits)
    stream = open_stream(loaded, prompt_ids, params, should_stop=stop)
    return Outcome(stream.run(on_text))


def _continue(
    loaded: LoadedModel | LoadedRNN,
    text: str,
    params: SamplingParams,
    on_text: OnText,
    stop: ShouldStop,
) -> Outcome:
    """A raw completion: the prompt's own tokens (no chat template), its oldest part cut to
    leave room for the reply (up to half the context), the reply shortened to what fits."""
    if isinstance(loaded, LoadedRNN):
        prompt = loaded.vocab.encode(text)
        if loaded.batcher is not None:
            batched = BatchedRNNStream(loaded.batcher, prompt, params, should_stop=stop)
            return Outcome(batched.run(on_text))
        return Outcome(RNNStream(loaded, prompt, params, should_stop=stop).run(on_text))
    context = loaded.context_length
    reserve = min(params.max_new_tokens, context // 2)
    ids = list(loaded.tokenizer(text)["input_ids"])[-(context - reserve) :]
    if not ids:
        raise GenerationError("the prompt is empty")
    if params.max_new_tokens > context - len(ids):
        params = replace(params, max_new_tokens=context - len(ids))
    return Outcome(open_stream(loaded, ids, params, should_stop=stop).run(on_text))


def summarize(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    model = _require_transformers(loaded, "summarize")
    length = generation.input.get("length") or SummaryLength.MEDIUM
    if length not in tuple(SummaryLength):
        raise ValueError(f"length must be one of {', '.join(SummaryLength)}, not {length!r}")
    stream = SummaryStream(
        model,
        _text_input(generation),
        length=length,
        params=_params(generation, SamplingParams(temperature=0.0)),
        should_stop=stop,
    )
    stats = stream.run(on_text)
    return Outcome(stats, result={"length": str(length), "model_calls": stream.calls})


def translate(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    model = _require_transformers(loaded, "translate")
    target = generation.input.get("target")
    if not isinstance(target, str) or not target:
        raise GenerationError("the request names no target language")
    source = generation.input.get("source") or None
    stream = TranslationStream(
        model,
        _text_input(generation),
        target=target,
        source=source,
        params=_params(generation, SamplingParams(temperature=0.0)),
        should_stop=stop,
    )
    stats = stream.run(on_text)
    result = {"source": stream.source, "target": stream.target, "detected": stream.detected}
    return Outcome(stats, result=result)


def classify(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    model = _require_transformers(loaded, "classify images")
    top_k = generation.input.get("top_k", 5)
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be a whole number from 1 to {MAX_TOP_K}")
    path = generation.input.get("image")
    if not isinstance(path, str):
        raise GenerationError("the request has no image")
    try:
        data = uploads.read(path)
    except uploads.UploadError as exc:
        raise GenerationError(str(exc)) from None
    labels = classify_image(
        model, data, top_k=top_k, limits=ImageLimits(max_bytes=settings.ATELIER_MAX_IMAGE_BYTES)
    )
    text = "\n".join(f"{item.label}: {item.score:.1%}" for item in labels)
    on_text(text)
    stats = StreamStats(prompt_tokens=0, completion_tokens=0, finish_reason="done")
    result = {"labels": [item.to_dict() for item in labels]}
    return Outcome(stats, result=result, output=text, images=1)


def embeddings(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    model = _require_transformers(loaded, "embed text")
    texts = _texts_input(generation)
    vectors = embed(model, texts)
    tokens = input_tokens(model, texts, max_length=max_sequence_length(model))
    stats = StreamStats(prompt_tokens=tokens, completion_tokens=0, finish_reason="done")
    return Outcome(stats, result={"embeddings": vectors.tolist()}, output="")


def moderate(
    generation: Generation, loaded: LoadedModel | LoadedRNN, on_text: OnText, stop: ShouldStop
) -> Outcome:
    """A moderation model's scores for texts, as a request of its own (e.g. from the API):
    per text the score, the category and the words that drove it. The policy's verdict is
    not applied here; the filter does that where it checks."""
    texts = _texts_input(generation)
    layer = layer_for(loaded)
    scores = [
        {
            "score": round(found.score, 6),
            "category": found.category or layer.category,
            "words": [word for word, _ in found.words],
            "note": found.note,
        }
        for found in layer.score_many(texts)
    ]
    tokens = input_tokens(loaded, texts) if isinstance(loaded, LoadedModel) else 0
    stats = StreamStats(prompt_tokens=tokens, completion_tokens=0, finish_reason="done")
    return Outcome(stats, result={"model": layer.name, "scores": scores}, output="")


def input_tokens(loaded: LoadedModel, texts: list[str], max_length: int | None = None) -> int:
    """The tokens a model read of these texts (cut at `max_length` as it cut them), for
    the usage ledger of tasks that write no text."""
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        return 0
    cut = {"truncation": True, "max_length": max_length} if max_length else {}
    return sum(len(ids) for ids in tokenizer(texts, **cut)["input_ids"])


Handler = Callable[[Generation, LoadedModel | LoadedRNN, OnText, ShouldStop], Outcome]

HANDLERS: dict[str, Handler] = {
    Task.CHAT: chat,
    TITLE_TASK: chat,
    Task.SUMMARIZE: summarize,
    Task.TRANSLATE: translate,
    Task.CLASSIFY_IMAGE: classify,
    Task.EMBED: embeddings,
    Task.MODERATION: moderate,
}


def handler_for(task: str) -> Handler:
    try:
        return HANDLERS[task]
    except KeyError:
        raise GenerationError(f"this worker cannot run {task!r} requests") from None
