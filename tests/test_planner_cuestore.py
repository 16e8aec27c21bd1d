"""Cue storage per user: later conflicting reminders win, history keeps both (every database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from trellis.adapters import Cue, FunctionBackend, ReminderAdapter, ReminderConfig, rule_extract
from trellis.memory import UsageError, make_engine, upgrade
from trellis.planners import CueStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    return engine


def cues(text: str, minutes: int = 0, **update: object) -> list[Cue]:
    found = rule_extract(text, now=T0 + timedelta(minutes=minutes))
    return [c.model_copy(update=update) for c in found]


def test_later_conflicting_cue_supersedes_and_history_keeps_both(engine: Engine) -> None:
    store = CueStore(engine)
    first = store.add("ann", cues("never use the blue plates"))
    store.add("ann", cues("close the fridge afterwards", 1))
    later = store.add("ann", cues("please use the blue plates", 2))
    active = store.active_cues("ann")
    assert {c.constraint for c in active} == {
        "please use the blue plates",
        "close the fridge afterwards",
    }
    history = store.history("ann")
    assert [h["cue"].constraint for h in history] == [
        "never use the blue plates", "close the fridge afterwards", "please use the blue plates"
    ]  # fmt: skip
    assert history[0]["superseded_by"] == later[0].id == history[2]["cue"].id
    assert history[1]["superseded_by"] is None and first[0].id == history[0]["cue"].id
    assert active[0].created_at.tzinfo is not None


def test_non_conflicting_actions_on_one_subject_coexist(engine: Engine) -> None:
    store = CueStore(engine)
    store.add("ann", cues("don't open the window"))
    store.add("ann", cues("always close the window", 1))
    assert {c.polarity for c in store.active_cues("ann")} == {"forbid", "require"}


def test_users_are_separate_and_always_scope_is_shared(engine: Engine) -> None:
    store = CueStore(engine)
    store.add("ann", cues("never use the blue plates"))
    store.add("admin", cues("never touch the stove", scope="always"))
    assert [c.subject for c in store.active_cues("bob")] == ["stove"]
    assert {c.subject for c in store.active_cues("ann")} == {"blue plates", "stove"}
    with pytest.raises(UsageError, match="invalid user id"):
        store.active_cues("")


def test_task_scoped_cue_overrides_only_inside_its_task(engine: Engine) -> None:
    store = CueStore(engine)
    store.add("ann", cues("never use the blue plates"))
    store.add("ann", cues("use the blue plates", 1, scope="task"), task_id="party")
    in_task = store.active_cues("ann", task_id="party")
    assert [c.polarity for c in in_task] == ["prefer"] and in_task[0].task_id == "party"
    assert [c.polarity for c in store.active_cues("ann")] == ["forbid"]
    assert [c.polarity for c in store.active_cues("ann", task_id="other")] == ["forbid"]
    with pytest.raises(UsageError, match="task-scoped but no task_id"):
        store.add("ann", cues("never use the mugs", scope="task"))


def test_retire_and_priority_order(engine: Engine) -> None:
    store = CueStore(engine)
    stored = store.add("ann", cues("I prefer green tea. Never use the blue plates."))
    assert [c.kind for c in store.active_cues("ann")] == ["correction", "preference"]
    store.retire(stored[1].id or 0)
    assert [c.kind for c in store.active_cues("ann")] == ["preference"]
    with pytest.raises(UsageError, match="no active cue"):
        store.retire(stored[1].id or 0)


async def test_add_reminder_through_the_adapter(engine: Engine) -> None:
    store = CueStore(engine)
    backend = FunctionBackend(
        lambda r: '{"kind":"correction","polarity":"forbid","action":"","subject":"red cup"}'
    )
    adapter = ReminderAdapter(backend, config=ReminderConfig(mode="hybrid"))
    result = await store.add_reminder("ann", "the red cup is cracked, leave it alone", adapter)
    assert result.method == "model" and result.cues[0].id is not None
    assert [c.subject for c in store.active_cues("ann")] == ["red cup"]
    # Contradicting it later: the later reminder wins, both stay recorded.
    store.add_reminder_sync("ann", "please use the red cup", adapter)
    assert [c.polarity for c in store.active_cues("ann")] == ["prefer"]
    assert len(store.history("ann")) == 2


def test_migration_is_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    assert CueStore(engine).active_cues("nobody") == []
