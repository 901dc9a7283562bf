"""Catalog moderation models as classifier layers: a text classifier (toxicity) and a
generative safety model (Llama Guard's answer format), both trained tiny models run for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from generation.loading import LoadedModel, load_model
from generation.safety import Policy, SafetyFilter
from generation.safety.model_layer import (
    GenerativeJudgeLayer,
    SequenceClassifierLayer,
    category_slug,
    layer_for,
)
from generation.specs import GenerationError, ModelSpec
from tests.conftest import TOXIC_TRIGGERS
from tests.tiny.moderation import build_tiny_toxicity_classifier


def _load(folder: Path, name: str) -> LoadedModel:
    return load_model(ModelSpec(name=name, source=str(folder), task="moderation"))


@pytest.fixture(scope="module")
def toxic(tiny_toxicity_dir: Path) -> SequenceClassifierLayer:
    layer = layer_for(_load(tiny_toxicity_dir, "tiny-toxic"))
    assert isinstance(layer, SequenceClassifierLayer)
    return layer


@pytest.fixture(scope="module")
def judge(tiny_judge_dir: Path) -> GenerativeJudgeLayer:
    layer = layer_for(_load(tiny_judge_dir, "tiny-judge"))
    assert isinstance(layer, GenerativeJudgeLayer)
    return layer


def test_a_text_classifier_scores_each_harmful_label_and_names_the_words(
    toxic: SequenceClassifierLayer,
) -> None:
    assert toxic.harmful == {1: "insult", 2: "threat"}  # "non-toxic" is left out
    benign, insult, threat = toxic.score_many(
        [
            "the quick brown fox jumps over the lazy dog",
            "the quick grumbleflax fox jumps over the dog",
            "paris is the capital snorbwick of france",
        ]
    )
    assert benign.score < 0.1
    assert insult.score > 0.9 and insult.category == "insult"
    assert threat.score > 0.9 and threat.category == "threat"
    assert insult.words[0][0] == "grumbleflax" and threat.words[0][0] == "snorbwick"


def test_a_long_text_is_scored_in_windows(toxic: SequenceClassifierLayer) -> None:
    filler = " ".join(["the lazy dog"] * 200)  # far past the model's 64 positions
    late, clean = toxic.score_many([f"{filler} grumbleflax {filler}", filler])
    assert late.score > 0.9 and clean.score < 0.1


def test_a_multi_label_classifier_uses_sigmoid_per_label(tmp_path: Path) -> None:
    folder = build_tiny_toxicity_classifier(tmp_path / "multi", TOXIC_TRIGGERS, multi_label=True)
    layer = layer_for(_load(folder, "multi"))
    assert isinstance(layer, SequenceClassifierLayer) and layer.multi_label
    assert layer.harmful == {0: "insult", 1: "threat"}
    benign, threat = layer.score_many(["the lazy dog", "the snorbwick dog"])
    assert benign.score < 0.2 and threat.score > 0.8 and threat.category == "threat"


def test_a_classifier_without_a_harmful_label_is_refused(tiny_toxicity_dir: Path) -> None:
    loaded = _load(tiny_toxicity_dir, "tiny-toxic")
    loaded.model.config.id2label = {0: "safe", 1: "neutral", 2: "non-toxic"}
    with pytest.raises(GenerationError, match="no label for harmful text"):
        SequenceClassifierLayer(loaded)


def test_labels_become_category_names() -> None:
    assert category_slug("Severe Toxic", "toxic") == "severe_toxic"
    assert category_slug("LABEL_1", "toxic") == "toxic"
    assert category_slug("S10", "unsafe") == "s10"


def test_the_filter_runs_a_model_only_when_the_policy_names_it(
    toxic: SequenceClassifierLayer,
) -> None:
    safety = SafetyFilter(models=[toxic])
    named = Policy(use_classifier=False, model_classifiers=("tiny-toxic",))
    verdict = safety.check("you grumbleflax", named)
    assert verdict.blocked and verdict.category == "insult"
    assert "tiny-toxic scored" in verdict.explanation and '"grumbleflax"' in verdict.explanation
    assert not safety.check("you grumbleflax", Policy(use_classifier=False)).findings
    # The policy's ceiling for the model's category applies as for any classifier.
    lenient = Policy(model_classifiers=("tiny-toxic",), actions={"insult": "flag"})
    assert safety.check("you grumbleflax", lenient).flagged


@pytest.mark.parametrize(
    "obfuscated",
    ["g r u m b l e f l a x", "GRUMBLEFLAX", "grum\u200bbleflax", "grumb1efl4x"],
)
def test_obfuscation_does_not_get_past_a_model(
    toxic: SequenceClassifierLayer, obfuscated: str
) -> None:
    # The model sees the normalized readings too, as the built-in classifier does.
    policy = Policy(use_classifier=False, model_classifiers=("tiny-toxic",))
    assert SafetyFilter(models=[toxic]).check(f"you {obfuscated}", policy).blocked


def test_a_generative_safety_model_answers_safe_or_unsafe_with_a_category(
    judge: GenerativeJudgeLayer,
) -> None:
    safe, hate, violent = judge.score_many(
        ["the quick brown fox", "you grumbleflax people", "snorbwick the dog"]
    )
    assert safe.score < 0.1 and safe.note == 'answered "safe"'
    assert hate.score > 0.9 and hate.category == "hate" and hate.note == 'answered "unsafe S10"'
    assert violent.score > 0.9 and violent.category == "violent_crimes"
    verdict = SafetyFilter(models=[judge]).check(
        "you grumbleflax people", Policy(model_classifiers=("tiny-judge",))
    )
    assert verdict.blocked and 'answered "unsafe S10"' in verdict.explanation


def test_a_generative_model_can_bring_its_own_category_table(
    tiny_judge_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "judge"
    shutil.copytree(tiny_judge_dir, folder)
    (folder / "moderation.json").write_text(json.dumps({"categories": {"S10": "Slurs"}}))
    layer = layer_for(_load(folder, "judge"))
    assert layer.score_many(["you grumbleflax people"])[0].category == "slurs"
    (folder / "moderation.json").write_text("[1, 2]")
    with pytest.raises(GenerationError, match=r"moderation\.json"):
        layer_for(_load(folder, "judge"))


def test_a_language_model_without_a_chat_template_cannot_judge(tiny_judge_dir: Path) -> None:
    loaded = _load(tiny_judge_dir, "judge")
    loaded.tokenizer.chat_template = None
    with pytest.raises(GenerationError, match="no chat template"):
        layer_for(loaded)


def test_policies_carry_their_moderation_models_as_data() -> None:
    policy = Policy.from_dict({"model_classifiers": ["a", "b", "a"], "use_classifier": False})
    assert policy.model_classifiers == ("a", "b")
    assert Policy.from_dict(policy.to_dict()) == policy
