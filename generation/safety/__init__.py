"""Content safety: rules and an offline classifier that check text before and after a model.

`normalize` undoes obfuscation (confusable characters, zero-width characters, leetspeak,
s p a c e d letters) so that `rules` (word lists and regular expressions) and `classifier`
(the offensive-language model of alt-profanity-check, or any other `TextClassifier`) see
what a reader sees. `filter.SafetyFilter` combines them under a `Policy` into a `Verdict`;
`stream.StreamChecker` applies the same check to a reply as it streams.

No Django here: the web app passes its database rows in as plain data.
"""

from generation.safety.classifier import (
    ClassifierLoadError,
    ClassifierScore,
    ProfanityCheckClassifier,
    TextClassifier,
)
from generation.safety.filter import (
    DEFAULT_POLICY,
    Finding,
    Layer,
    OutputCheck,
    Policy,
    SafetyFilter,
    Verdict,
)
from generation.safety.normalize import NormalizedText, normalize
from generation.safety.rules import (
    CATEGORIES,
    Action,
    Rule,
    RuleError,
    RuleKind,
    RuleMatch,
    RuleSet,
    default_rule_data,
    load_default_rules,
)
from generation.safety.stream import StreamChecker, StreamUpdate

__all__ = [
    "CATEGORIES",
    "DEFAULT_POLICY",
    "Action",
    "ClassifierLoadError",
    "ClassifierScore",
    "Finding",
    "Layer",
    "NormalizedText",
    "OutputCheck",
    "Policy",
    "ProfanityCheckClassifier",
    "Rule",
    "RuleError",
    "RuleKind",
    "RuleMatch",
    "RuleSet",
    "SafetyFilter",
    "StreamChecker",
    "StreamUpdate",
    "TextClassifier",
    "Verdict",
    "default_rule_data",
    "load_default_rules",
    "normalize",
]
