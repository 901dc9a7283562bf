"""The safety filter: rules and classifiers under a policy, giving one verdict per text.

A `Policy` is plain data that the web app builds per group from its database and passes
to every check, so a change takes effect on the next check without a restart. Rules are
swapped whole with `SafetyFilter.set_rules` when an admin edits them.

How actions are decided:
- a rule match takes the policy's action for the rule's category, or the rule's own
  action hint when the policy does not name the category;
- a classifier's score becomes "block" at or above `block_threshold`, "flag" at or above
  `flag_threshold`, and "allow" below; if the policy names the classifier's category, that
  action is the most the classifier may do ("offensive": "flag" means never block on it);
- the most severe finding is the verdict (the higher score breaks a tie, then rules
  before classifiers); every finding is kept on the verdict for the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from generation.safety.classifier import ProfanityCheckClassifier, TextClassifier
from generation.safety.normalize import NormalizedText, normalize, without_invisibles
from generation.safety.rules import Action, Rule, RuleMatch, RuleSet, load_default_rules


class Layer(StrEnum):
    RULES = "rules"
    CLASSIFIER = "classifier"


class OutputCheck(StrEnum):
    STREAMING = "streaming"  # check a reply as it grows; withhold only the unchecked tail
    END = "end"  # check a reply once, when it is complete; withhold all of it until then


@dataclass(frozen=True)
class Finding:
    """One thing one layer found (or, for a classifier, its score even when low)."""

    layer: Layer
    action: Action
    category: str
    score: float
    explanation: str
    rule_id: str | None = None
    classifier: str | None = None
    words: tuple[str, ...] = ()  # the matched text, or the words that drove the score
    span: tuple[int, int] | None = None  # in the checked text, for a rule match

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": str(self.layer),
            "action": str(self.action),
            "category": self.category,
            "score": round(self.score, 6),
            "explanation": self.explanation,
            "rule_id": self.rule_id,
            "classifier": self.classifier,
            "words": list(self.words),
            "span": list(self.span) if self.span else None,
        }

    def shifted(self, offset: int) -> Finding:
        if self.span is None or offset == 0:
            return self
        return replace(self, span=(self.span[0] + offset, self.span[1] + offset))


@dataclass(frozen=True)
class Verdict:
    action: Action
    category: str | None  # None when allowed
    score: float  # 1.0 for a rule match; a classifier's probability otherwise
    explanation: str
    layer: Layer | None
    rule_id: str | None = None
    words: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def flagged(self) -> bool:
        return self.action is Action.FLAG

    @classmethod
    def from_findings(cls, findings: Iterable[Finding]) -> Verdict:
        ordered = tuple(sorted(findings, key=_importance, reverse=True))
        if not ordered or ordered[0].action is Action.ALLOW:
            scores = [f.score for f in ordered if f.layer is Layer.CLASSIFIER]
            top = max(scores, default=0.0)
            explanation = (
                f"allowed: no rule matched; highest classifier score {top:.2f}"
                if scores
                else "allowed: no rule matched"
            )
            return cls(Action.ALLOW, None, top, explanation, None, findings=ordered)
        first = ordered[0]
        return cls(
            action=first.action,
            category=first.category,
            score=first.score,
            explanation=first.explanation,
            layer=first.layer,
            rule_id=first.rule_id,
            words=first.words,
            findings=ordered,
        )

    def shifted(self, offset: int) -> Verdict:
        """The same verdict for a text that starts `offset` characters later."""
        return replace(self, findings=tuple(f.shifted(offset) for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        """JSON for a Generation's moderation record and the audit trail."""
        return {
            "action": str(self.action),
            "category": self.category,
            "score": round(self.score, 6),
            "explanation": self.explanation,
            "layer": str(self.layer) if self.layer else None,
            "rule_id": self.rule_id,
            "words": list(self.words),
            "findings": [f.to_dict() for f in self.findings],
        }


def _importance(finding: Finding) -> tuple[int, float, int]:
    return finding.action.severity, finding.score, finding.layer is Layer.RULES


_POLICY_FIELDS = frozenset(
    {
        "actions",
        "flag_threshold",
        "block_threshold",
        "output_check",
        "use_classifier",
        "model_classifiers",
    }
)


@dataclass(frozen=True)
class Policy:
    actions: Mapping[str, Action] = field(default_factory=dict)  # per category
    flag_threshold: float = 0.85
    block_threshold: float = 0.98
    output_check: OutputCheck = OutputCheck.STREAMING
    use_classifier: bool = True  # the built-in classifier (alt-profanity-check)
    # Catalog models (task "moderation") that also classify, by name; they run on the
    # worker, instead of or in addition to the built-in classifier.
    model_classifiers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "actions", {str(k): Action(v) for k, v in dict(self.actions).items()}
        )
        object.__setattr__(self, "output_check", OutputCheck(self.output_check))
        object.__setattr__(
            self, "model_classifiers", tuple(dict.fromkeys(map(str, self.model_classifiers)))
        )
        if not 0.0 <= self.flag_threshold <= self.block_threshold <= 1.0:
            raise ValueError(
                "thresholds must satisfy 0 <= flag_threshold <= block_threshold <= 1 "
                f"(got {self.flag_threshold} and {self.block_threshold})"
            )

    def rule_action(self, category: str, hint: Action) -> Action:
        return self.actions.get(category, hint)

    def classifier_action(self, category: str, score: float) -> Action:
        if score >= self.block_threshold:
            action = Action.BLOCK
        elif score >= self.flag_threshold:
            action = Action.FLAG
        else:
            action = Action.ALLOW
        ceiling = self.actions.get(category)
        if ceiling is not None and ceiling.severity < action.severity:
            return ceiling
        return action

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """From JSON (a group's policy row); unknown keys are an error."""
        unknown = set(data) - _POLICY_FIELDS
        if unknown:
            raise ValueError(f"unknown policy fields: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "actions": {k: str(v) for k, v in self.actions.items()},
            "flag_threshold": self.flag_threshold,
            "block_threshold": self.block_threshold,
            "output_check": str(self.output_check),
            "use_classifier": self.use_classifier,
            "model_classifiers": list(self.model_classifiers),
        }


DEFAULT_POLICY = Policy()


class SafetyFilter:
    """Checks texts against a rule set and classifiers; safe to share between threads.

    Build it once per process (the classifier loads on first use) and pass the policy of
    the user's group to each check. `classifiers` are the built-in ones, run when the
    policy's `use_classifier` is set; `models` are catalog models, each run when the
    policy names it in `model_classifiers` (`with_models` adds them where they are loaded,
    on a worker).
    """

    def __init__(
        self,
        rules: RuleSet | None = None,
        classifiers: Sequence[TextClassifier] = (),
        models: Sequence[TextClassifier] = (),
    ) -> None:
        self._rules = rules if rules is not None else RuleSet()
        self.classifiers = tuple(classifiers)
        self.models = tuple(models)

    def with_models(self, models: Sequence[TextClassifier]) -> SafetyFilter:
        """The same rules and built-in classifiers, with these catalog models as well."""
        return SafetyFilter(self._rules, self.classifiers, models)

    @classmethod
    def default(cls) -> SafetyFilter:
        """The shipped rules and allow-list with the offline offensive-language classifier."""
        rules, allow = load_default_rules()
        return cls(RuleSet(rules, allow), [ProfanityCheckClassifier()])

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def set_rules(self, rules: Iterable[Rule], allow: Iterable[str] = ()) -> None:
        """Replace the rules and allow-list. They are compiled first, so a bad rule raises
        RuleError and leaves the current ones in force; checks already running finish
        with the set they started with."""
        self._rules = RuleSet(rules, allow)

    def check(self, text: str, policy: Policy = DEFAULT_POLICY) -> Verdict:
        return self.check_normalized(normalize(text), policy)

    def check_normalized(self, text: NormalizedText, policy: Policy = DEFAULT_POLICY) -> Verdict:
        rules = self._rules  # one set for the whole check, even if swapped meanwhile
        scan = rules.scan(text)
        findings = [self._rule_finding(match, policy) for match in scan.matches]
        classifiers = [
            *(self.classifiers if policy.use_classifier else ()),
            *(model for model in self.models if model.name in policy.model_classifiers),
        ]
        if classifiers:
            readable = _without_spans(text, scan.allowed_spans) if scan.allowed_spans else text
            findings.extend(self._classify(readable, policy, classifiers))
        return Verdict.from_findings(findings)

    @staticmethod
    def _rule_finding(match: RuleMatch, policy: Policy) -> Finding:
        rule = match.rule
        read_as = "" if match.matched == match.original.lower() else f' (read as "{match.matched}")'
        return Finding(
            layer=Layer.RULES,
            action=policy.rule_action(rule.category, rule.action),
            category=rule.category,
            score=1.0,
            explanation=f'rule "{rule.id}" ({rule.category}) matched "{match.original}"{read_as}',
            rule_id=rule.id,
            words=(match.original,),
            span=match.span,
        )

    @staticmethod
    def _classify(
        text: NormalizedText, policy: Policy, classifiers: Sequence[TextClassifier]
    ) -> list[Finding]:
        # Obfuscation must never lower the score: score every reading, keep the worst. The
        # raw text goes in without its invisible characters, which only cut words apart.
        raw = without_invisibles(text.original)
        readings = list(dict.fromkeys([raw, text.text, *text.readings, *text.split_readings]))
        findings = []
        for classifier in classifiers:
            scores = classifier.score_many(readings)
            best = max(range(len(readings)), key=lambda i: scores[i].score)
            result = scores[best]
            category = result.category or classifier.category
            action = policy.classifier_action(category, result.score)
            words = tuple(word for word, _ in result.words)
            drivers = ", ".join(f'"{w}" +{share:.2f}' for w, share in result.words)
            explanation = f"{classifier.name} scored {result.score:.2f} ({category})"
            if result.note:
                explanation += f"; {result.note}"
            if drivers:
                explanation += f"; words: {drivers}"
            if best > 0:
                explanation += f'; read as "{_clip(readings[best])}"'
            findings.append(
                Finding(
                    layer=Layer.CLASSIFIER,
                    action=action,
                    category=category,
                    score=result.score,
                    explanation=explanation,
                    classifier=classifier.name,
                    words=words,
                )
            )
        return findings


def _without_spans(text: NormalizedText, spans: Sequence[tuple[int, int]]) -> NormalizedText:
    """The text with allow-listed phrases blanked out, so classifiers do not score them."""
    chars = list(text.original)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return normalize("".join(chars))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
