"""The reminder adapter: user reminders become structured, checkable cues (AlignBot-style).

A reminder is free text from a user ("never use the blue plates", "close the fridge
afterwards", "remember that the keys are in the drawer"). It becomes one or more
:class:`Cue`: kind (preference, correction, context), what it is about, whether it forbids,
requires, prefers or only informs, and when it applies. Planners put cues into their prompt,
and the plan validator enforces forbid and require cues on every proposed plan.

Extraction runs through the model (the registered ``reminder`` LoRA when there is one, else
the base model with a constrained prompt). The small default model is unreliable, so a
deterministic extractor for the common English forms is both the fallback and a cross-check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trellis.adapters._backend import LLMBackend, LLMRequest, LLMResult, SamplingParams
from trellis.memory.errors import ModelRetry, NotFoundError, TrellisError, UsageError

__all__ = [
    "Cue",
    "CueDraft",
    "ExtractionResult",
    "ReminderAdapter",
    "ReminderConfig",
    "build_cue_prompt",
    "cue_json_schema",
    "rule_extract",
]

CueKind = Literal["preference", "correction", "context"]
Polarity = Literal["forbid", "require", "prefer", "inform"]
Scope = Literal["task", "user", "always"]
Order = Literal["any", "after", "before"]

_DEFAULT_PRIORITY: dict[str, int] = {"correction": 3, "preference": 2, "context": 1}


class CueDraft(BaseModel):
    """What the model is asked to produce for one reminder (kept tiny for a small model)."""

    model_config = ConfigDict(extra="forbid")

    kind: CueKind
    """preference, correction or context."""
    polarity: Polarity
    """forbid, require, prefer or inform."""
    action: str = Field(default="", max_length=40)
    """The verb the rule is about ("close", "use"); empty when none."""
    subject: str = Field(min_length=1, max_length=60)
    """The object the rule is about ("blue plates", "fridge")."""


class Cue(BaseModel):
    """One structured rule derived from a reminder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CueKind
    """preference (what the user likes), correction (a rule), context (a fact)."""
    subject: str = Field(min_length=1, max_length=100)
    """What the rule is about, as a short noun phrase ("blue plates")."""
    constraint: str = Field(min_length=1, max_length=500)
    """The rule in words, as shown to planners."""
    polarity: Polarity
    """forbid and require are enforced by the plan validator; prefer and inform are advice."""
    action: str | None = Field(default=None, max_length=40)
    """The verb the rule is about ("close"); None when any use of the subject counts."""
    trigger: str | None = Field(default=None, max_length=100)
    """A require cue applies only to plans that mention this; None: to every plan."""
    order: Order = "any"
    """For require cues with a trigger: the required step comes after/before the trigger's steps."""
    scope: Scope = "user"
    """task: this task only; user: every task of this user; always: every user."""
    priority: int = Field(default=2, ge=0, le=100)
    """Higher wins when cues conflict; corrections default above preferences and context."""
    source: str = Field(default="", max_length=2000)
    """The reminder text the cue came from."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the reminder was given (later reminders override earlier conflicting ones)."""
    id: int | None = None
    """Storage id once recorded by a cue store."""
    user_id: str | None = None
    """Owner, once recorded."""
    task_id: str | None = None
    """The task a task-scoped cue belongs to."""

    def render(self) -> str:
        """One prompt line: ``[forbid] never use the blue plates``."""
        return f"[{self.polarity}] {self.constraint}"


class ReminderConfig(BaseModel):
    """How reminders are turned into cues."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["hybrid", "model", "rules"] = "hybrid"
    """hybrid: rules for the forms they know, the model otherwise; model or rules: only that."""
    max_attempts: int = Field(default=2, ge=1, le=5)
    """Model calls per reminder (the first plus repair rounds with the error fed back)."""
    max_tokens: int = Field(default=48, ge=8, le=512)
    """Token limit of one extraction answer."""
    max_reminder_chars: int = Field(default=500, ge=10)
    """Longer reminders are refused: they are rarely one rule, and prompts must stay small."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Wall-clock limit of one model call."""
    strict_forbids: bool = True
    """A model's misreading never lets a forbidden call through: words of the rule's own
    form that the model copies into a subject or action ("never ping") are dropped, and a
    forbid cue the rules read that no model cue matches is kept beside the model's cues."""


class ExtractionResult(BaseModel):
    """The cues from one reminder and how they were obtained (for traces and benchmarks)."""

    model_config = ConfigDict(extra="forbid")

    reminder: str
    """The reminder as given."""
    cues: list[Cue] = Field(default_factory=list)
    """The cues, in reminder order."""
    method: Literal["rules", "model", "fallback"] = "rules"
    """rules, model, or fallback (nothing usable: the text is kept as an inform cue)."""
    rule_cues: list[Cue] = Field(default_factory=list)
    """What the rule extractor found (the cross-check), whatever the method."""
    model_cues: list[Cue] = Field(default_factory=list)
    """What the model produced, when it was asked."""
    agreement: bool | None = None
    """Whether model and rules agree on polarity and subject (None: not both available)."""
    errors: list[str] = Field(default_factory=list)
    """Every problem met on the way (invalid model output, model failures)."""
    prompts: list[str] = Field(default_factory=list)
    """Prompts sent to the model."""
    raw_outputs: list[str] = Field(default_factory=list)
    """What the model answered, verbatim."""
    llm_results: list[LLMResult] = Field(default_factory=list)
    """Full backend results (tokens, latency, adapter)."""


# --- rule-based extraction -----------------------------------------------------------------

_DETERMINERS = {
    "the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that",
    "these", "those", "some", "any", "all", "every", "each",
}  # fmt: skip
_PRONOUNS = {"it", "them", "anything", "something", "everything", "things", "stuff", "one"}
_PREPOSITIONS = {"in", "into", "on", "onto", "with", "from", "to", "at", "inside", "under", "for"}
_PARTICLES = {"off", "on", "up", "down", "out", "away", "back"}
_FORBID = re.compile(
    r"^(?:please\s+)?(?:never(?:\s+ever)?|don'?t|do\s+not|dont|avoid|stop|no\s+more)\s+(.+)$"
)
_PREFER = re.compile(
    r"^(?:i\s+(?:would\s+|'d\s+)?(?:prefer|like|love|want)(?:\s+to)?|i'd\s+(?:prefer|like|rather)|"
    r"i\s+would\s+rather|please\s+use|use)\s+(.+)$"
)
_DISLIKE = re.compile(r"^i\s+(?:don'?t|do\s+not|dont)\s+(?:like|want)(?:\s+to)?\s+(.+)$")
_CONTEXT = re.compile(
    r"^(?:remember|note|keep\s+in\s+mind|fyi|be\s+aware)(?:\s+that)?[,:]?\s+(.+)$"
)
_ALWAYS = re.compile(r"^(?:please\s+)?(?:always|make\s+sure\s+(?:to|you)|remember\s+to)\s+(.+)$")
_AFTER_TAIL = re.compile(
    r"^(.+?)\s+(?:afterwards|afterward|after\s+that|when\s+(?:you\s+are|you're)\s+done|at\s+the\s+end)$"
)
_AFTER_CLAUSE = re.compile(r"^(.+?)\s+after\s+(.+)$")
_BEFORE_CLAUSE = re.compile(r"^(.+?)\s+before\s+(.+)$")
_FACT = re.compile(r"^(?:the\s+)?(.+?)\s+(?:is|are)\s+(?:in|on|under|inside|at|broken|dirty)\b.*$")


_FORM_WORDS = frozenset(
    {"never", "not", "don't", "dont", "do", "no", "always", "avoid", "please", "must", "should"}
)
"""Words that give a reminder its form (polarity, insistence), never its subject."""


def _clean(text: str) -> str:
    text = text.strip().lower().replace("\u2019", "'")
    return re.sub(r"\s+", " ", text).strip(" .!;,")


def _noun_phrase(words: list[str]) -> str:
    """The object of a verb phrase: drop determiners; prefer what follows a preposition
    when the direct object is a pronoun ("put anything in the oven" -> "oven")."""
    for index, word in enumerate(words):
        if word in _PREPOSITIONS:
            head = [w for w in words[:index] if w not in _DETERMINERS and w not in _PRONOUNS]
            words = words[:index] if head else words[index + 1 :]
            break
    kept = [w for w in words if w not in _DETERMINERS and w not in _PRONOUNS]
    return " ".join(kept).strip(" ,")


def _verb_phrase(text: str) -> tuple[str | None, str]:
    words = [w for w in re.split(r"[\s,]+", text) if w]
    if not words:
        return None, ""
    verb = words[0]
    rest = words[1:]
    if verb in ("to",) and rest:
        verb, rest = rest[0], rest[1:]
    if rest and rest[0] in _PARTICLES:
        # Phrasal verbs: "turn off the light" is about turning off, and the light.
        verb, rest = f"{verb} {rest[0]}", rest[1:]
    subject = _noun_phrase(rest)
    if not subject:
        # "never cook" -> the action itself is the subject.
        return None, verb
    return verb, subject


def rule_extract(reminder: str, *, now: datetime | None = None) -> list[Cue]:
    """Cues for the common English reminder forms; empty when no form matches.

    Deterministic and cheap: used as the fallback and the cross-check of model extraction.
    """
    created = now or datetime.now(UTC)
    cues: list[Cue] = []
    for sentence in re.split(r"[.;!?\n]+", reminder):
        cue = _rule_sentence(sentence, reminder.strip(), created)
        if cue is not None:
            cues.append(cue)
    return cues


def _rule_sentence(sentence: str, source: str, created: datetime) -> Cue | None:
    text = _clean(sentence)
    if not text:
        return None
    constraint = sentence.strip().rstrip(".!;")

    def make(kind: CueKind, polarity: Polarity, body: str, **extra: Any) -> Cue | None:
        action, subject = _verb_phrase(body)
        if not subject:
            return None
        return Cue(
            kind=kind,
            polarity=polarity,
            action=action,
            subject=subject[:100],
            constraint=constraint[:500],
            priority=_DEFAULT_PRIORITY[kind],
            source=source[:2000],
            created_at=created,
            **extra,
        )

    if match := _DISLIKE.match(text):
        return make("preference", "forbid", match.group(1))
    if match := _FORBID.match(text):
        return make("correction", "forbid", match.group(1))
    if match := _CONTEXT.match(text):
        body = match.group(1)
        if inner := _ALWAYS.match("always " + body[3:] if body.startswith("to ") else ""):
            return _require(make, inner.group(1))
        fact = _FACT.match(body)
        subject = _noun_phrase(fact.group(1).split()) if fact else _noun_phrase(body.split()[:3])
        if not subject:
            return None
        return Cue(
            kind="context",
            polarity="inform",
            subject=subject[:100],
            constraint=constraint[:500],
            priority=_DEFAULT_PRIORITY["context"],
            source=source[:2000],
            created_at=created,
        )
    if match := _ALWAYS.match(text):
        return _require(make, match.group(1))
    if _AFTER_TAIL.match(text) or _BEFORE_CLAUSE.match(text) or _AFTER_CLAUSE.match(text):
        return _require(make, text)
    if match := _PREFER.match(text):
        return make("preference", "prefer", "use " + match.group(1))
    if fact := _FACT.match(text):
        subject = _noun_phrase(fact.group(1).split())
        if subject:
            return Cue(
                kind="context",
                polarity="inform",
                subject=subject[:100],
                constraint=constraint[:500],
                priority=_DEFAULT_PRIORITY["context"],
                source=source[:2000],
                created_at=created,
            )
    return None


def _require(make: Callable[..., Cue | None], body: str) -> Cue | None:
    if match := _AFTER_TAIL.match(body):
        cue: Cue | None = make("correction", "require", match.group(1), order="after")
        return cue.model_copy(update={"trigger": cue.subject}) if cue else None
    if match := _BEFORE_CLAUSE.match(body):
        trigger = _noun_phrase(match.group(2).split()) or match.group(2)
        return make("correction", "require", match.group(1), order="before", trigger=trigger)
    if match := _AFTER_CLAUSE.match(body):
        cue = make("correction", "require", match.group(1), order="after")
        if cue is None:
            return None
        trigger = _noun_phrase(match.group(2).split()[1:]) or cue.subject
        return cue.model_copy(update={"trigger": trigger})
    return make("correction", "require", body)


# --- model extraction ----------------------------------------------------------------------

_EXAMPLES = (
    ("never use the blue plates", "correction", "forbid", "use", "blue plates"),
    ("close the fridge afterwards", "correction", "require", "close", "fridge"),
    ("I prefer green tea", "preference", "prefer", "", "green tea"),
    ("the keys are in the drawer", "context", "inform", "", "keys"),
)


def build_cue_prompt(reminder: str, *, few_shot: bool = True) -> str:
    """The extraction prompt for one reminder (pure; training data uses exactly this).

    The base model needs worked examples; a trained ``reminder`` adapter does not
    (``few_shot=False``), which makes its prompts several times shorter.
    """
    lines = ["Turn the reminder into a JSON rule.", ""]
    for text, kind, polarity, action, subject in _EXAMPLES if few_shot else ():
        answer = json.dumps(
            {"kind": kind, "polarity": polarity, "action": action, "subject": subject},
            separators=(",", ":"),
        )
        lines += [f"Reminder: {text}", f"JSON: {answer}", ""]
    lines += [f"Reminder: {' '.join(reminder.split())}", "JSON:"]
    return "\n".join(lines)


def cue_json_schema() -> dict[str, Any]:
    """The constrained-decoding schema of one :class:`CueDraft`."""
    return {
        "type": "object",
        "properties": {
            "kind": {"enum": ["preference", "correction", "context"]},
            "polarity": {"enum": ["forbid", "require", "prefer", "inform"]},
            "action": {"type": "string", "maxLength": 20},
            "subject": {"type": "string", "minLength": 1, "maxLength": 40},
        },
        "required": ["kind", "polarity", "action", "subject"],
        "additionalProperties": False,
    }


class ReminderAdapter:
    """Turns reminders into cues through a backend, with the rule extractor as a safety net."""

    ADAPTER_NAME = "reminder"

    def __init__(
        self,
        backend: LLMBackend | None,
        *,
        adapter: str | None = None,
        config: ReminderConfig | None = None,
    ) -> None:
        self.backend = backend
        self.adapter = adapter
        self.config = config or ReminderConfig()
        if backend is None and self.config.mode != "rules":
            raise UsageError(
                f"ReminderAdapter mode {self.config.mode!r} needs a backend; pass one or use "
                "ReminderConfig(mode='rules')"
            )

    @classmethod
    def from_registry(
        cls, backend: LLMBackend, registry: Any, *, config: ReminderConfig | None = None
    ) -> ReminderAdapter:
        """Use the registered ``reminder`` LoRA when the registry has one, else the base model."""
        adapter: str | None = None
        try:
            if registry is not None and registry.get(cls.ADAPTER_NAME) is not None:
                adapter = cls.ADAPTER_NAME
        except NotFoundError:
            adapter = None
        return cls(backend, adapter=adapter, config=config)

    async def extract(
        self, reminder: str, *, scope: Scope = "user", now: datetime | None = None
    ) -> ExtractionResult:
        """Cues for one reminder. Bad model output is repaired or recorded, never raised.

        An empty or over-long reminder is a :class:`UsageError` (the user must fix it).
        """
        text = reminder.strip() if isinstance(reminder, str) else ""
        if not text:
            raise UsageError(
                "the reminder is empty; give one rule such as 'never use the blue plates'"
            )
        if len(text) > self.config.max_reminder_chars:
            raise UsageError(
                f"the reminder is {len(text)} characters, over the limit of "
                f"{self.config.max_reminder_chars}; split it into one reminder per rule"
            )
        created = now or datetime.now(UTC)
        result = ExtractionResult(reminder=text)
        result.rule_cues = rule_extract(text, now=created)
        use_model = self.config.mode == "model" or (
            self.config.mode == "hybrid" and not result.rule_cues
        )
        # In hybrid mode the model is only consulted for forms the rules do not know; the
        # benchmark measures model-vs-rules agreement with mode="model".
        strict = self.config.strict_forbids
        if use_model and self.backend is not None:
            draft = await self._model_draft(text, result)
            if draft is not None:
                result.model_cues = [_draft_to_cue(draft, text, created, strict=strict)]
        if result.rule_cues and result.model_cues:
            result.agreement = _agree(result.rule_cues[0], result.model_cues[0])
            result.model_cues = [_with_order(c, result.rule_cues) for c in result.model_cues]
        if self.config.mode == "model" and result.model_cues:
            result.cues, result.method = result.model_cues, "model"
            if strict:
                result.cues = result.cues + [
                    rule
                    for rule in result.rule_cues
                    if rule.polarity == "forbid"
                    and not any(_agree(rule, model) for model in result.model_cues)
                ]
        elif result.rule_cues and self.config.mode != "model":
            result.cues, result.method = result.rule_cues, "rules"
        elif result.model_cues:
            result.cues, result.method = result.model_cues, "model"
        elif result.rule_cues:
            result.cues, result.method = result.rule_cues, "rules"
        else:
            # Nothing checkable: keep the reminder as advice so the planner still sees it.
            result.method = "fallback"
            result.errors.append("no rule could be extracted; the reminder is kept as context")
            result.cues = [
                Cue(
                    kind="context",
                    polarity="inform",
                    subject=" ".join(text.split()[:6])[:100],
                    constraint=text[:500],
                    priority=_DEFAULT_PRIORITY["context"],
                    source=text,
                    created_at=created,
                )
            ]
        result.cues = [c.model_copy(update={"scope": scope}) for c in result.cues]
        return result

    def extract_sync(
        self, reminder: str, *, scope: Scope = "user", now: datetime | None = None
    ) -> ExtractionResult:
        """Blocking :meth:`extract`."""
        from trellis.memory import run_sync

        return run_sync(self.extract(reminder, scope=scope, now=now))

    async def _model_draft(self, reminder: str, result: ExtractionResult) -> CueDraft | None:
        if self.backend is None:
            return None
        few_shot = self.adapter is None  # a trained adapter knows the format
        prompt = build_cue_prompt(reminder, few_shot=few_shot)
        for _attempt in range(self.config.max_attempts):
            result.prompts.append(prompt)
            request = LLMRequest(
                prompt=prompt,
                adapter=self.adapter,
                json_schema=cue_json_schema(),
                sampling=SamplingParams(max_tokens=self.config.max_tokens, stop=("\n",)),
                timeout_s=self.config.timeout_s,
            )
            try:
                llm = await self.backend.generate(request)
            except TrellisError as exc:
                result.errors.append(f"model call failed: {exc}")
                return None
            except Exception as exc:  # an external backend must not crash extraction
                result.errors.append(f"model call failed: {type(exc).__name__}: {exc}")
                return None
            result.llm_results.append(llm)
            result.raw_outputs.append(llm.text)
            problem = _draft_problem(llm)
            if isinstance(problem, CueDraft):
                return problem
            result.errors.append(problem)
            prompt = (
                f"{build_cue_prompt(reminder, few_shot=few_shot)} {llm.text.strip()}\n"
                f"Error: {problem}\nJSON:"
            )
        return None


def _draft_problem(llm: LLMResult) -> CueDraft | str:
    from trellis.adapters._backend import check_model_value, parse_json_text

    value = llm.parsed
    if value is None:
        value, error = parse_json_text(llm.text.strip())
        if error is not None:
            return f"the answer is not JSON ({error}); answer with one JSON object"
    try:  # the guard every model answer passes (size, depth, numbers, NUL)
        check_model_value(value)
    except ModelRetry as exc:
        return f"{exc}; answer with one JSON object"
    try:
        draft = CueDraft.model_validate(value)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )
        return f"the JSON is not a rule ({details})"
    if not draft.subject.strip():
        return "the subject is empty; name the object the reminder is about"
    return draft


def _draft_to_cue(draft: CueDraft, reminder: str, created: datetime, *, strict: bool = True) -> Cue:
    subject_words = _clean(draft.subject).split()
    action_words = _clean(draft.action).split()
    if strict:
        # "never ping" as a subject: the rule's form is the polarity, not what it is about.
        subject_words = [w for w in subject_words if w not in _FORM_WORDS] or subject_words
        action_words = [w for w in action_words if w not in _FORM_WORDS]
    subject = _noun_phrase(subject_words) or " ".join(subject_words)
    action = " ".join(action_words) or None
    return Cue(
        kind=draft.kind,
        polarity=draft.polarity,
        action=action,
        subject=subject[:100] or "reminder",
        constraint=reminder[:500],
        trigger=subject[:100] if draft.polarity == "require" else None,
        priority=_DEFAULT_PRIORITY[draft.kind],
        source=reminder[:2000],
        created_at=created,
    )


def _with_order(model: Cue, rule_cues: Sequence[Cue]) -> Cue:
    """The model's cue with the ordering the rules read ("wash the cup after using it",
    "before serving, wipe the table"): the model's one-object answer has no place for the
    trigger or the order, and the rules parse those sentence forms exactly."""
    if model.polarity != "require":
        return model
    for rule in rule_cues:
        if rule.polarity == "require" and rule.order != "any" and rule.trigger:
            return model.model_copy(update={"order": rule.order, "trigger": rule.trigger})
    return model


def _agree(rule: Cue, model: Cue) -> bool:
    return rule.polarity == model.polarity and _clean(rule.subject) == _clean(model.subject)
