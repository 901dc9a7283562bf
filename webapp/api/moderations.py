"""/v1/moderations answered by the content policy in force for the key's user: the rules
and the built-in classifier here, in the web process (as the front door checks), and the
policy's moderation models on their workers (their scores arrive as a generation's result).
Atelier's categories are mapped onto OpenAI's (docs/api.md has the table); every finding
is also given under its own name in the `atelier` field.

Asking is not sending a text to a model, so nothing is recorded for review."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from generation.safety import Action, Policy, Verdict
from webapp.accounts.models import User
from webapp.moderation import config

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# Atelier's categories (shipped rules, the built-in classifier, moderation models' labels,
# Llama Guard 3's hazards) in OpenAI's names. Others (pii, spam, ...) have none: they show
# under `atelier` and still make a text flagged.
TO_OPENAI = {
    "harassment": "harassment",
    "profanity": "harassment",
    "offensive": "harassment",
    "insult": "harassment",
    "toxic": "harassment",
    "threat": "harassment/threatening",
    "hate": "hate",
    "self_harm": "self-harm",
    "sexual": "sexual",
    "sexual_content": "sexual",
    "sex_crimes": "sexual",
    "child_exploitation": "sexual/minors",
    "violence": "violence",
    "violent_crimes": "violence",
    "non_violent_crimes": "illicit",
    "indiscriminate_weapons": "illicit/violent",
}


@dataclass
class Assessment:
    """One text's findings, from every layer of the policy."""

    findings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, *, category: str, score: float, action: Action, layer: str, note: str) -> None:
        self.findings.append(
            {
                "category": category,
                "score": round(float(score), 6),
                "action": str(action),
                "layer": layer,
                "explanation": note,
            }
        )

    def result(self) -> dict[str, Any]:
        scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
        hits = dict.fromkeys(OPENAI_CATEGORIES, False)
        worst = Action.ALLOW
        for finding in self.findings:
            action = Action(finding["action"])
            if action.severity > worst.severity:
                worst = action
            name = TO_OPENAI.get(finding["category"])
            if name is None:
                continue
            scores[name] = max(scores[name], finding["score"])
            hits[name] = hits[name] or action is not Action.ALLOW
        return {
            "flagged": worst is not Action.ALLOW,
            "categories": hits,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
            "atelier": {"action": str(worst), "findings": self.findings},
        }


@dataclass(frozen=True)
class PolicyInForce:
    name: str
    policy: Policy
    models: tuple[str, ...]  # the moderation models it names, run on workers


def policy_of(user: User) -> PolicyInForce:
    named = config.policy_for(user)
    return PolicyInForce(named.name, named.policy, tuple(named.policy.model_classifiers))


def check_here(user: User, texts: list[str]) -> list[Assessment]:
    """The rules and the built-in classifier on each text, under the user's policy."""
    in_force = config.current()
    named = config.policy_for(user, in_force)
    assessments = []
    for text in texts:
        verdict: Verdict = in_force.safety.check(text, named.policy)
        assessment = Assessment()
        for finding in verdict.findings:
            assessment.add(
                category=finding.category,
                score=finding.score,
                action=finding.action,
                layer=str(finding.layer),
                note=finding.explanation,
            )
        assessments.append(assessment)
    return assessments


def add_model_scores(
    assessments: list[Assessment], policy: Policy, model: str, result: dict[str, Any]
) -> None:
    """A moderation model's result ({"scores": [{"score", "category", ...}]}) on the texts,
    judged by the policy's thresholds and actions."""
    for assessment, found in zip(assessments, result.get("scores", []), strict=False):
        category = str(found.get("category") or "unsafe")
        score = float(found.get("score") or 0.0)
        assessment.add(
            category=category,
            score=score,
            action=policy.classifier_action(category, score),
            layer=f"model:{model}",
            note=f"{model} scored {score:.2f} ({category})",
        )
