"""The offline offensive-language classifier (alt-profanity-check's model): scores that agree
with the package's own scikit-learn path, explanations, loading once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generation.safety.classifier import (
    ClassifierScore,
    ProfanityCheckClassifier,
    TextClassifier,
    load_profanity_model,
)

DATA = Path(__file__).parent / "data" / "safety_eval.jsonl"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def classifier() -> ProfanityCheckClassifier:
    return ProfanityCheckClassifier()


def test_it_is_a_text_classifier(classifier: ProfanityCheckClassifier) -> None:
    assert isinstance(classifier, TextClassifier)
    assert classifier.category == "offensive"


def test_scores_agree_with_the_package_on_every_evaluation_text(
    classifier: ProfanityCheckClassifier,
) -> None:
    texts = [json.loads(line)["text"] for line in DATA.read_text("utf-8").splitlines()]
    texts += ["", "   ", "the and of", "ok"]  # no known word at all
    fast = [result.score for result in classifier.score_many(texts)]
    reference = classifier.reference_probabilities(texts)
    assert len(fast) == len(reference) == len(texts)
    worst = max(abs(a - b) for a, b in zip(fast, reference, strict=True))
    assert worst < 1e-9


def test_offensive_text_scores_high_and_ordinary_text_low(
    classifier: ProfanityCheckClassifier,
) -> None:
    offensive, polite = classifier.score_many(
        ["you are a stupid idiot", "could you recommend a good book about gardening"]
    )
    assert offensive.score > 0.99
    assert polite.score < 0.1


def test_the_explanation_names_the_words_that_drove_the_score(
    classifier: ProfanityCheckClassifier,
) -> None:
    (result,) = classifier.score_many(["Well, you are a stupid idiot, my friend."])
    words = [word for word, _ in result.words]
    assert words[:2] == ["idiot", "stupid"]
    shares = [share for _, share in result.words]
    assert all(share > 0 for share in shares)
    assert shares == sorted(shares, reverse=True)
    assert "friend" not in words  # pulls the score down, so it does not explain it


def test_the_explanation_is_capped_at_top_words() -> None:
    (result,) = ProfanityCheckClassifier(top_words=1).score_many(["stupid idiot moron"])
    assert len(result.words) == 1


def test_a_text_without_known_words_gets_the_models_prior(
    classifier: ProfanityCheckClassifier,
) -> None:
    (empty,) = classifier.score_many([""])
    assert empty == ClassifierScore(empty.score, ())
    assert 0.0 < empty.score < 0.5


def test_the_model_is_loaded_once_and_shared(classifier: ProfanityCheckClassifier) -> None:
    classifier.load()
    assert load_profanity_model() is load_profanity_model()
    other = ProfanityCheckClassifier()
    other.score_many(["hello"])
    assert load_profanity_model() is load_profanity_model()


def test_nothing_is_loaded_until_the_first_check() -> None:
    """A fresh process: building the default filter reads no model and imports no
    scikit-learn; the first check loads it."""
    code = (
        "import sys\n"
        "from generation.safety import SafetyFilter\n"
        "from generation.safety import classifier\n"
        "safety = SafetyFilter.default()\n"
        "before = (classifier._LOADED is None, 'sklearn' in sys.modules)\n"
        "safety.check('hello there')\n"
        "after = (classifier._LOADED is not None, 'sklearn' in sys.modules)\n"
        "print(before, after)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(True, False) (True, True)"
