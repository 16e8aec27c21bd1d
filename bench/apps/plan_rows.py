"""Training rows for the ``plan`` adapter, from the TRAIN app worlds only.

    python bench/apps/plan_rows.py --out plan_rows.jsonl [--count 3000] [--seed 0]

Every row is ``trellis.planners.plan_row(request, plan, config=...)``: the prompt is what the
runtime's planner sends (``build_plan_prompt`` under ``default_planner``'s configuration) and
the completion is the plan as the constrained decoder writes it. A request is what the runtime
builds for a task root: the world's full skill catalogue, the goal text and the cues of the
goal's reminders. The cues come from the rule extractor (``ReminderConfig(mode="rules")``, what
the runtime uses without a reminder adapter): deterministic, so the rows are reproducible.
The plan is the goal's reference calls, each step depending on the one before (the calls of a
reference run in that order), with a short title made from the call: the skill's words and
its first argument value ("go to fridge", "pour water bottle"). Where a ``require`` cue wants
its words in a step (the validator matches cues by words), the step that does it is titled
with the cue's action and subject instead ("add acid"); a goal whose plan still breaks a cue
gives no row.

Augmentations, so that the adapter learns to read the catalogue and copy names and values
from the goal rather than to recall the train worlds:

- paraphrased goals ("please ...", "can you ...?", "I need you to ...");
- two goals of one world combined ("A, then B"), kept only when the combined calls, played on
  a fresh world, achieve both goals without breaking a reminder;
- reminder variants: a reminder of another goal of the world added as a distraction (kept only
  when the plan obeys its cues too);
- shuffled catalogue order, and sometimes a skill or two of another train world added;
- renamed skills (a synonym for the verb, or a namespace prefix), the plan using the new names;
- free-text argument values that occur in the goal replaced by another noun in both the goal
  and the plan.

Dev worlds are never read. Each row carries ``source`` (goal ids) and ``aug`` (augmentations),
which training ignores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.apps import AppWorld, Call, Goal, worlds  # noqa: E402
from bench.apps.reference import call_skill  # noqa: E402
from trellis.adapters import Cue, FunctionBackend, ReminderAdapter, ReminderConfig  # noqa: E402
from trellis.planners import (  # noqa: E402
    Plan,
    PlannerConfig,
    PlanRequest,
    PlanStep,
    PlanValidationError,
    SkillSpec,
    plan_row,
    step_words,
)

TITLE_CHARS = 40
"""Longest title a row teaches (the schema allows the planner's ``max_title_chars``)."""

PARAPHRASES = (
    "{g}",
    "please {g}",
    "can you {g}?",
    "I need you to {g}",
    "{g}, please",
    "could you {g} for me?",
    "{G}.",
    "go ahead and {g}",
)
COMBINE = ("{a}, then {b}", "{a} and then {b}", "first {a}, then {b}", "{a}; after that, {b}")
VERB_SYNONYMS = {
    "go": ("walk", "move", "head"),
    "move": ("drive", "go"),
    "pick": ("grab", "take"),
    "put": ("place", "set"),
    "wash": ("clean", "scrub"),
    "open": ("unlock", "open_up"),
    "close": ("shut",),
    "look": ("inspect", "survey"),
    "load": ("fill", "insert"),
    "start": ("run", "begin"),
    "unload": ("empty",),
    "hang": ("air",),
    "fold": ("crease",),
    "pour": ("transfer", "decant"),
    "mix": ("stir", "blend"),
    "heat": ("warm",),
    "label": ("tag", "mark"),
    "rinse": ("flush", "clean"),
    "measure": ("read", "check"),
    "pack": ("box",),
    "ship": ("send", "dispatch"),
    "tumble": ("machine",),
    "laundry": ("wash",),
}
PREFIXES = ("robot", "app", "do", "my")
NOUNS = (
    "pear", "lemon", "cup", "jar", "box", "book", "lamp", "bag", "key", "hat", "scarf",
    "glove", "pen", "brush", "sponge", "tray", "basket", "bucket", "ladder", "rope",
    "bolt", "nail", "towel", "shirt", "sock", "mug", "bowl", "apple", "kettle", "saw",
)  # fmt: skip


@dataclass
class Example:
    """A goal (single or combined) of a train world with the calls that achieve it."""

    world: type[AppWorld]
    ids: list[str]
    text: str
    reminders: list[str]
    calls: list[Call]
    aug: list[str] = field(default_factory=list)


def title_of(skill: str, args: dict[str, Any]) -> str:
    """A short title from a call: the skill's words and its first argument value."""
    words = skill.replace("_", " ")
    first = next(iter(args.values()), None)
    text = words if first is None else f"{words} {first}"
    return _clip(text)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= TITLE_CHARS:
        return text
    cut = text[:TITLE_CHARS].rsplit(" ", 1)[0]
    return cut or text[:TITLE_CHARS]


def chained_plan(calls: Sequence[Call], titles: Sequence[str] | None = None) -> Plan:
    """The calls as plan steps, each depending on the one before."""
    return Plan.model_validate(
        {
            "steps": [
                {
                    "id": str(i + 1),
                    "title": titles[i] if titles else title_of(name, args),
                    "skill": name,
                    "args": args,
                    "depends_on": [str(i)] if i else [],
                }
                for i, (name, args) in enumerate(calls)
            ]
        }
    )


_RULES = ReminderAdapter(None, config=ReminderConfig(mode="rules"))


def cues_of(reminders: Sequence[str]) -> tuple[Cue, ...]:
    """The cues the runtime derives from reminders with the rule extractor (task scope)."""
    return tuple(c for r in reminders for c in _RULES.extract_sync(r, scope="task").cues)


def _words(text: str) -> set[str]:
    """The validator's stemmed words of ``text`` (as it matches cues to steps)."""
    return step_words(PlanStep(id="w", title=text or "-", skill="w"))[0]


def fit_titles(plan: Plan, cues: Sequence[Cue]) -> Plan:
    """Retitle, for each require cue, the step closest to it with the cue's words."""
    steps = list(plan.steps)
    for cue in cues:
        if cue.polarity != "require":
            continue
        wanted = _words(f"{cue.action or ''} {cue.subject}")
        action = _words(cue.action or "")
        # The step whose skill is the cue's action comes first ("close" for "close doors you
        # opened"), then the one sharing most words with the cue.
        scores = [
            (
                bool(action) and action <= _words(s.skill.replace("_", " ")),
                len(wanted & step_words(s)[1]),
            )
            for s in steps
        ]
        best = max(range(len(steps)), key=lambda i: (scores[i], -i))
        if scores[best][1] == 0:
            continue
        title = _clip(f"{cue.action} {cue.subject}" if cue.action else cue.subject)
        steps[best] = steps[best].model_copy(update={"title": title})
    return Plan(steps=steps)


def make_row(
    specs: Sequence[SkillSpec],
    text: str,
    cues: tuple[Cue, ...],
    plan: Plan,
    config: PlannerConfig,
) -> dict[str, str] | None:
    """``plan_row`` for this request, retitling for require cues when needed; None if invalid."""
    request = PlanRequest(goal=text, skills=tuple(specs), cues=cues)
    try:
        return plan_row(request, plan, config=config)
    except PlanValidationError:
        pass
    try:
        return plan_row(request, fit_titles(plan, cues), config=config)
    except PlanValidationError:
        return None


def plays(world_cls: type[AppWorld], goals: Sequence[Goal], calls: Sequence[Call]) -> bool:
    """Whether the calls, on a fresh world, achieve every goal without breaking a reminder."""
    world = world_cls.fresh()
    skills = {s.name: s for s in world_cls.skills()}
    try:
        for name, args in calls:
            call_skill(skills[name], world, args)
    except Exception:
        return False
    return all(g.check(world) and not g.forbidden(world) for g in goals)


def examples(world_cls: type[AppWorld], max_steps: int) -> tuple[list[Example], list[Example]]:
    """(single goals, combined pairs that play correctly) of one train world."""
    if world_cls.split != "train":
        raise ValueError(f"{world_cls.name} is a {world_cls.split} world; rows use train only")
    goals = world_cls.goals()
    singles = [
        Example(world_cls, [g.id], g.text, list(g.reminders), list(g.reference)) for g in goals
    ]
    pairs: list[Example] = []
    for a in goals:
        for b in goals:
            calls = [*a.reference, *b.reference]
            if a is b or len(calls) > max_steps or not plays(world_cls, [a, b], calls):
                continue
            reminders = list(dict.fromkeys([*a.reminders, *b.reminders]))
            pairs.append(Example(world_cls, [a.id, b.id], "", reminders, calls))
            pairs[-1].text = f"{a.text}\t{b.text}"  # joined by a template when used
    return singles, pairs


def paraphrase(text: str, rng: random.Random) -> tuple[str, str | None]:
    template = rng.choice(PARAPHRASES)
    if template == "{g}":
        return text, None
    return template.format(g=text, G=text[:1].upper() + text[1:]), "paraphrase"


def rename_skills(specs: Sequence[SkillSpec], rng: random.Random) -> dict[str, str] | None:
    """New names for every skill (synonym of the first word, or a prefix), all distinct."""
    mapping: dict[str, str] = {}
    prefix = rng.choice(PREFIXES)
    use_prefix = rng.random() < 0.4
    for spec in specs:
        parts = spec.name.split("_")
        if use_prefix:
            new = f"{prefix}_{spec.name}"
        elif parts[0] in VERB_SYNONYMS:
            new = "_".join([rng.choice(VERB_SYNONYMS[parts[0]]), *parts[1:]])
        else:
            new = spec.name
        mapping[spec.name] = new
    if len(set(mapping.values())) != len(mapping) or all(k == v for k, v in mapping.items()):
        return None
    return mapping


def free_text_args(specs: Sequence[SkillSpec]) -> set[tuple[str, str]]:
    """(skill, argument) pairs whose schema is a plain string (no enum)."""
    found: set[tuple[str, str]] = set()
    for spec in specs:
        for arg, prop in spec.args_schema().get("properties", {}).items():
            if prop.get("type") == "string" and "enum" not in prop:
                found.add((spec.name, arg))
    return found


def substitute_values(
    ex_text: str,
    reminders: Sequence[str],
    calls: list[Call],
    specs: Sequence[SkillSpec],
    rng: random.Random,
) -> tuple[str, list[Call]] | None:
    """Replace one free-text value that occurs in the goal (not in a reminder) by another noun."""
    free = free_text_args(specs)
    values = sorted(
        {
            str(args[a])
            for name, args in calls
            for (s, a) in free
            if s == name and a in args and isinstance(args[a], str)
        }
    )
    values = [
        v
        for v in values
        if re.search(rf"\b{re.escape(v)}\b", ex_text)
        and not any(v.lower() in r.lower() for r in reminders)
    ]
    if not values:
        return None
    old = rng.choice(values)
    new = rng.choice([n for n in NOUNS if n != old and n not in ex_text])
    text = re.sub(rf"\b{re.escape(old)}\b", new, ex_text)
    out: list[Call] = []
    for name, args in calls:
        out.append(
            (name, {k: (new if (name, k) in free and v == old else v) for k, v in args.items()})
        )
    return text, out


def build_rows(
    count: int, seed: int, config: PlannerConfig, train: Sequence[type[AppWorld]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rng = random.Random(seed)
    stats: dict[str, int] = {"skipped_invalid": 0, "pairs": 0, "singles": 0}
    per_world: dict[str, tuple[list[Example], list[Example]]] = {}
    for world_cls in train:
        singles, pairs = examples(world_cls, config.max_steps)
        per_world[world_cls.name] = (singles, pairs)
        stats["singles"] += len(singles)
        stats["pairs"] += len(pairs)
    all_specs = {w.name: [s.spec for s in w.skills()] for w in train}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    def emit(ex: Example, *, plain: bool) -> None:
        specs = list(all_specs[ex.world.name])
        aug = list(ex.aug)
        calls = list(ex.calls)
        if "\t" in ex.text:
            a, b = ex.text.split("\t")
            text = rng.choice(COMBINE).format(a=a, b=b)
            aug.append("combined")
        else:
            text = ex.text
        reminders = list(ex.reminders)
        if not plain:
            text, used = paraphrase(text, rng)
            if used:
                aug.append(used)
            if rng.random() < 0.25:
                others = [
                    r
                    for other in per_world[ex.world.name][0]
                    for r in other.reminders
                    if r not in reminders
                ]
                if others:
                    reminders.append(rng.choice(others))
                    aug.append("extra_reminder")
            if rng.random() < 0.2:
                swapped = substitute_values(text, reminders, calls, specs, rng)
                if swapped is not None:
                    text, calls = swapped
                    aug.append("values")
            if rng.random() < 0.25:
                mapping = rename_skills(specs, rng)
                if mapping is not None:
                    specs = [dataclasses.replace(s, name=mapping[s.name]) for s in specs]
                    calls = [(mapping[n], a) for n, a in calls]
                    aug.append("renamed")
            if rng.random() < 0.2:
                names = {s.name for s in specs}
                pool = [
                    s
                    for w, other in all_specs.items()
                    if w != ex.world.name
                    for s in other
                    if s.name not in names
                ]
                extra = rng.sample(pool, k=min(len(pool), rng.randint(1, 2)))
                specs += extra
                aug.append("extra_skills")
            if rng.random() < 0.5:
                rng.shuffle(specs)
                aug.append("shuffled")
        row = make_row(specs, text, cues_of(reminders), chained_plan(calls), config)
        if row is None:
            stats["skipped_invalid"] += 1
            return
        if row["prompt"] in seen:
            return
        seen.add(row["prompt"])
        rows.append({**row, "source": ex.ids, "aug": aug})

    # Every single goal once as written, then augmented variants up to ``count``.
    for singles, _ in per_world.values():
        for ex in singles:
            emit(ex, plain=True)
    pool = [
        (ex, weight)
        for singles, pairs in per_world.values()
        for ex, weight in [*((s, 4.0) for s in singles), *((p, 1.0) for p in pairs)]
    ]
    examples_, weights = [e for e, _ in pool], [w for _, w in pool]
    # Singles weigh more so that short goals stay well represented next to the many pairs.
    tries = 0
    while len(rows) < count and tries < count * 5:
        tries += 1
        emit(rng.choices(examples_, weights)[0], plain=False)
    rng.shuffle(rows)
    return rows, stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="JSONL file to write.")
    parser.add_argument("--count", type=int, default=3000, help="Rows to write (about).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from trellis.agent.runtime._defaults import default_planner

    config = default_planner(FunctionBackend(lambda request: "")).config
    train = worlds("train")
    rows, stats = build_rows(args.count, args.seed, config, train)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    augs: dict[str, int] = {}
    for row in rows:
        for a in row["aug"]:
            augs[a] = augs.get(a, 0) + 1
    print(
        f"wrote {len(rows)} rows to {out} from {', '.join(w.name for w in train)} "
        f"(train worlds; {stats['singles']} goals, {stats['pairs']} playable pairs, "
        f"{stats['skipped_invalid']} variants skipped as invalid); augmentations: {augs}"
    )


if __name__ == "__main__":
    main()
