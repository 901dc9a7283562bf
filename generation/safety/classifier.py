"""Classifiers that score a text as offensive, and explain the score.

`TextClassifier` is what the filter needs from one. The shipped, offline one is
`ProfanityCheckClassifier`: the model of the `alt-profanity-check` package, a TF-IDF
vectorizer (unigrams) and five linear SVMs with sigmoid calibration, trained on 200k
labelled texts. Its weights are read once from the package's joblib files and scored here
directly: the same arithmetic as the package's `predict_prob` (a test checks it agrees to
1e-9), at a few microseconds per text instead of milliseconds of scikit-learn overhead,
and with each word's share of the score, which is the explanation.

Catalog models (a toxicity classifier, a generative safety model), run on the worker,
follow the same protocol: see `model_layer`.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from generation.starter import find_packaged_file

PROFANITY_CHECK_PACKAGE = "alt-profanity-check"


class ClassifierLoadError(RuntimeError):
    """The classifier's model could not be loaded or is not the kind this code reads."""


@dataclass(frozen=True)
class ClassifierScore:
    score: float  # probability that the text is offensive, 0..1
    # The words that pushed the score up, most first: (word, share of the decision value).
    words: tuple[tuple[str, float], ...] = ()
    # For a classifier with several labels: the one scored (else the classifier's category).
    category: str | None = None
    note: str = ""  # more for the explanation, e.g. what a generative safety model answered


@runtime_checkable
class TextClassifier(Protocol):
    """Scores texts; the filter turns scores into actions with the policy's thresholds."""

    name: str
    category: str

    def score_many(self, texts: Sequence[str]) -> list[ClassifierScore]: ...


@dataclass(frozen=True)
class _LinearTfidfModel:
    """The numbers of a fitted TfidfVectorizer + CalibratedClassifierCV(LinearSVC)."""

    token_pattern: re.Pattern[str]
    # term -> (idf, one coefficient per calibrated SVM, their mean)
    terms: dict[str, tuple[float, tuple[float, ...], float]]
    intercepts: tuple[float, ...]
    calibration: tuple[tuple[float, float], ...]  # sigmoid (a, b) per SVM
    vectorizer: Any  # the scikit-learn objects, kept for reference_probabilities()
    model: Any

    def score(self, text: str, top_words: int) -> ClassifierScore:
        counts = Counter(t for t in self.token_pattern.findall(text.lower()) if t in self.terms)
        decisions = list(self.intercepts)
        shares: list[tuple[str, float]] = []
        if counts:
            weighted = [(term, count * self.terms[term][0]) for term, count in counts.items()]
            norm = math.sqrt(sum(value * value for _, value in weighted))
            for term, value in weighted:
                _, coefs, mean = self.terms[term]
                x = value / norm
                for k, coef in enumerate(coefs):
                    decisions[k] += coef * x
                if mean > 0:
                    shares.append((term, mean * x))
        probability = sum(
            _sigmoid(-(a * decision + b))
            for (a, b), decision in zip(self.calibration, decisions, strict=True)
        ) / len(decisions)
        shares.sort(key=lambda item: -item[1])
        return ClassifierScore(probability, tuple(shares[:top_words]))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


_LOCK = threading.Lock()
_LOADED: _LinearTfidfModel | None = None


def load_profanity_model() -> _LinearTfidfModel:
    """alt-profanity-check's model, loaded on first use, once per process."""
    global _LOADED
    with _LOCK:
        if _LOADED is None:
            _LOADED = _read_profanity_model()
        return _LOADED


def _read_profanity_model() -> _LinearTfidfModel:
    # The files are read directly: importing the package would load them at import time.
    try:
        vectorizer_file = find_packaged_file(PROFANITY_CHECK_PACKAGE, "data/vectorizer.joblib")
        model_file = find_packaged_file(PROFANITY_CHECK_PACKAGE, "data/model.joblib")
        import joblib

        vectorizer = joblib.load(vectorizer_file)
        model = joblib.load(model_file)
    except (FileNotFoundError, ImportError) as exc:
        raise ClassifierLoadError(
            f"the offensive-language classifier needs {PROFANITY_CHECK_PACKAGE}: {exc}"
        ) from exc
    return _linear_model(vectorizer, model)


def _linear_model(vectorizer: Any, model: Any) -> _LinearTfidfModel:
    """Read the weights, refusing anything whose arithmetic score() would not reproduce."""
    params = vectorizer.get_params()
    expected = {
        "analyzer": "word",
        "ngram_range": (1, 1),
        "lowercase": True,
        "norm": "l2",
        "use_idf": True,
        "smooth_idf": True,
        "sublinear_tf": False,
        "binary": False,
        "preprocessor": None,
        "tokenizer": None,
        "strip_accents": None,
    }
    wrong = {k: params.get(k) for k, v in expected.items() if params.get(k) != v}
    calibrated = getattr(model, "calibrated_classifiers_", None)
    if wrong or not calibrated or list(getattr(model, "classes_", [])) != [0, 1]:
        raise ClassifierLoadError(
            f"{PROFANITY_CHECK_PACKAGE}'s model is not the TF-IDF + calibrated linear SVM "
            f"this code reads (vectorizer settings {wrong}, model {type(model).__name__})"
        )
    coefs = []
    intercepts = []
    calibration = []
    for member in calibrated:
        if member.method != "sigmoid" or member.estimator.coef_.shape[0] != 1:
            raise ClassifierLoadError(f"unexpected calibrated member: {member.method}")
        coefs.append(member.estimator.coef_[0])
        intercepts.append(float(member.estimator.intercept_[0]))
        calibrator = member.calibrators[0]
        calibration.append((float(calibrator.a_), float(calibrator.b_)))
    idf = vectorizer.idf_
    terms = {}
    for term, index in vectorizer.vocabulary_.items():
        per_model = tuple(float(c[index]) for c in coefs)
        terms[term] = (float(idf[index]), per_model, sum(per_model) / len(per_model))
    return _LinearTfidfModel(
        token_pattern=re.compile(vectorizer.token_pattern),
        terms=terms,
        intercepts=tuple(intercepts),
        calibration=tuple(calibration),
        vectorizer=vectorizer,
        model=model,
    )


class ProfanityCheckClassifier:
    """The offline default classifier (category "offensive")."""

    name = "alt-profanity-check"
    category = "offensive"

    def __init__(self, top_words: int = 5) -> None:
        self.top_words = top_words

    def load(self) -> None:
        """Load now (e.g. when a worker starts) rather than on the first check."""
        load_profanity_model()

    def score_many(self, texts: Sequence[str]) -> list[ClassifierScore]:
        model = load_profanity_model()
        return [model.score(text, self.top_words) for text in texts]

    def reference_probabilities(self, texts: Sequence[str]) -> list[float]:
        """The package's own scikit-learn path (slow): what score_many() must agree with."""
        model = load_profanity_model()
        probabilities = model.model.predict_proba(model.vectorizer.transform(list(texts)))
        return [float(p) for p in probabilities[:, 1]]
