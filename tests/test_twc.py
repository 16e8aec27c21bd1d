"""The twc household environment as a skill pack, driven by the loop with a scripted model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from trellis_twc import TwcConfig, TwcEnvironment
from trellis_twc._datasets import twc_configs, twc_homes
from trellis_twc._places import (
    PlaceScorer,
    condition_of,
    neighbour_rooms,
    shipped_home_rooms,
    shipped_homes,
)

from trellis.adapters import CachedEmbedder, FunctionBackend, LLMRequest
from trellis.adapters._embeddings import normalize_rows
from trellis.agent import Agent, AgentConfig, ForbiddenFoldError
from trellis.agent.errors import EnvironmentFailure
from trellis.memory import NodeStatus
from trellis.planners import ScriptedPlanner

# Every container offered: the scripted gold player's puts are always on offer (the place
# shortlist, which can leave a gold put out until a likelier place proved wrong, has its own tests).
CONFIG = TwcConfig(seed=3, fold="dev", place_shortlist=0)


@pytest.fixture(scope="module")
def gold() -> list[str]:
    env = TwcEnvironment(CONFIG)
    try:
        return env.gold_actions()
    finally:
        env.close()


def test_test_fold_is_refused() -> None:
    with pytest.raises(ForbiddenFoldError, match="held-out"):
        TwcConfig(seed=1, fold="test")
    with pytest.raises(ValueError, match="held-out"):
        TwcConfig.model_validate({"seed": 1, "fold": "test"})


def test_replay_rebuilds_the_same_state(gold: list[str]) -> None:
    env = TwcEnvironment(CONFIG)
    other = TwcEnvironment(CONFIG)
    try:
        env.reset()
        for action in gold[:2]:
            state = env.step(action)
        again = other.replay(gold[:2])
        assert again == state
        with pytest.raises(EnvironmentFailure, match="not a valid action"):
            env.step("fly to the moon")
        for action in gold[2:]:
            state = env.step(action)
        assert state.success and state.done and state.score == 1.0
    finally:
        env.close()
        other.close()


def test_load_switches_game_and_keeps_the_engine() -> None:
    other_config = TwcConfig(seed=7, fold="dev", num_locations=2, num_items=2)
    env = TwcEnvironment(CONFIG)
    fresh = TwcEnvironment(other_config)
    try:
        env.reset()
        engine = env._env
        assert env.load(other_config) == fresh.reset()
        assert env._env is engine and env.config == other_config and env.actions == []
        env.load(other_config.model_copy(update={"step_limit": 20}))
        assert env._env is not engine  # another move limit needs another engine
    finally:
        env.close()
        fresh.close()


def test_a_finished_games_engine_serves_the_next_game_exactly_as_a_fresh_one() -> None:
    from trellis_twc import _env as twc_env

    twc_env._close_idle()
    first = TwcEnvironment(CONFIG.model_copy(update={"seed": 11}))
    first.reset()
    engine = first._env
    first.close()  # kept for the next game, not stopped
    assert first._env is None and engine in twc_env._IDLE[CONFIG.step_limit]
    reused = TwcEnvironment(CONFIG.model_copy(update={"seed": 12}))
    bigger = TwcEnvironment(CONFIG.model_copy(update={"seed": 12, "num_locations": 2}))
    try:
        game = reused.reset()
        assert reused._env is engine
        assert game == TwcEnvironment(CONFIG.model_copy(update={"seed": 12})).state
        assert reused.gold_actions()
        # Other parameters on a kept engine: the generator is loaded for them.
        reused.close()
        assert bigger.reset() == bigger.load(bigger.config)
        assert bigger._env is engine and "2" in str(engine.gameParams)
        # A kept engine that died is replaced by a fresh one.
        bigger.close()
        engine.close()
        revived = TwcEnvironment(CONFIG.model_copy(update={"seed": 12}))
        assert revived.reset() == game and revived._env is not engine
        revived.close()
    finally:
        twc_env._close_idle()


def test_state_notes_show_room_inventory_and_score_trend() -> None:
    env = TwcEnvironment(TwcConfig(seed=4, fold="dev", num_locations=2, num_items=2))
    try:
        start = env.reset()
        assert start.prompt_notes() == ["Carrying: nothing", "Score: 0%"]
        gold = env.gold_actions()
        state = start
        for action in gold[: gold.index(next(a for a in gold if a.startswith("take "))) + 1]:
            state = env.step(action)
        thing = gold[len(env.actions) - 1].removeprefix("take ")
        notes = state.prompt_notes()
        assert notes[0].startswith("Room: You are in the ")  # the observation is only "You take"
        assert notes[1] == f"Carrying: {thing}"
        assert notes[2].startswith("Score: ") and "(up from 0%)" in notes[2]
        wrong = next(a for a in state.valid_actions if a.startswith(f"put {thing} in "))
        correct = next(a for a in gold if a.startswith(f"put {thing} in "))
        if wrong != correct:
            after = env.step(wrong)
            assert "the last action was wrong" in after.prompt_notes()[-1]
            assert after.prompt_notes()[1] == "Carrying: nothing"
    finally:
        env.close()


def _detour(config: TwcConfig) -> tuple[list[str], str, list[str]]:
    """The gold moves up to the first take, then a wrong put of that object and its take-back;
    the wrong put; the rest of the gold path."""
    env = TwcEnvironment(config)
    try:
        env.reset()
        gold = env.gold_actions()
        first_take = next(i for i, a in enumerate(gold) if a.startswith("take "))
        thing = gold[first_take].removeprefix("take ")
        correct = next(a for a in gold if a.startswith(f"put {thing} in "))
        state = env.replay(gold[: first_take + 1])
        wrong = next(
            a for a in state.valid_actions if a.startswith(f"put {thing} in ") and a != correct
        )
        return [*gold[: first_take + 1], wrong, f"take {thing}"], wrong, gold[first_take + 1 :]
    finally:
        env.close()


# Without the place shortlist, so that every container stays on offer.
DETOUR_CONFIG = TwcConfig(seed=4, fold="dev", num_locations=2, num_items=2, place_shortlist=0)


def test_a_move_that_lowered_the_score_is_not_offered_again_from_the_same_state() -> None:
    moves, wrong, rest = _detour(DETOUR_CONFIG)
    env = TwcEnvironment(DETOUR_CONFIG)
    other = TwcEnvironment(DETOUR_CONFIG)
    try:
        before = env.replay(moves[:-2])
        assert before.regressed_actions == [] and before.offered_actions == before.valid_actions
        lowered = env.step(wrong)
        assert lowered.score < before.score
        back = env.step(moves[-1])
        assert back.situation() == before.situation()  # the same room, inventory and score
        assert back.regressed_actions == [wrong]
        assert back.offered_actions == [a for a in back.valid_actions if a != wrong]
        assert other.replay(moves) == back  # a resumed or replayed task sees the same offer
        state = back
        for action in rest:  # the gold path still wins from here
            if not state.done:
                state = env.step(action)
        assert state.success
        plain = other.config.model_copy(update={"avoid_regressions": False})
        other.close()
        other = TwcEnvironment(plain)
        assert other.replay(moves).offered_actions == back.valid_actions
    finally:
        env.close()
        other.close()


def test_a_wrong_put_and_taking_back_a_placed_object_are_not_offered_in_any_state() -> None:
    config = TwcConfig(seed=3, fold="dev", num_locations=1, num_items=2, place_shortlist=0)
    env = TwcEnvironment(config)
    other = TwcEnvironment(config)
    try:
        gold = env.gold_actions()
        first, second = [a.removeprefix("take ") for a in gold if a.startswith("take ")][:2]
        home = next(a for a in gold if a.startswith(f"put {first} in "))
        state = env.step(f"take {first}")
        wrong = next(
            a for a in state.valid_actions if a.startswith(f"put {first} in ") and a != home
        )
        lowered = env.step(wrong)
        assert lowered.score < state.score
        env.step(f"take {first}")
        # Another situation (both objects carried): the wrong put is still left out.
        both = env.step(f"take {second}")
        assert wrong in both.valid_actions and wrong in both.regressed_actions
        assert wrong not in both.offered_actions and home in both.offered_actions
        placed = env.step(home)
        assert placed.score > both.score
        # The object is home: taking it back would lower the score, so it is not offered.
        assert f"take {first}" in placed.valid_actions
        assert f"take {first}" not in placed.offered_actions
        moves = [*env.actions]
        assert other.replay(moves) == placed  # a resumed or replayed task sees the same offer
        final = env.step(next(a for a in gold if a.startswith(f"put {second} in ")))
        assert final.success
    finally:
        env.close()
        other.close()


class PreferenceEmbedder:
    """Scripted vectors at the embedding boundary: "It goes in the <place>." is the closer to
    every "Where does ... go?" question the earlier the place comes in ``preference``."""

    name = "preference"
    dim = 2

    def __init__(self, preference: list[str]) -> None:
        self.preference = preference
        self.calls: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.extend(texts)
        rows = []
        for text in texts:
            place = text.removeprefix("It goes in the ").removesuffix(".")
            if text.startswith("Where does"):
                rows.append((1.0, 0.0))
            else:
                rank = self.preference.index(place) if place in self.preference else 99
                rows.append((1.0, 0.1 * (rank + 1)))
        return normalize_rows(np.array(rows, dtype=np.float32))


def test_only_the_likeliest_places_are_offered_and_a_wrong_one_gives_way() -> None:
    # Seed 3: two shirts that belong in the laundry basket; the scripted commonsense puts
    # the bench first and the laundry basket second.
    embedder = PreferenceEmbedder(["bench", "laundry basket", "work table"])
    config = TwcConfig(seed=3, fold="dev", num_locations=1, num_items=2, place_shortlist=1)
    env = TwcEnvironment(config, places=PlaceScorer(embedder))
    try:
        gold = env.gold_actions()
        thing = next(a for a in gold if a.startswith("take ")).removeprefix("take ")
        start = env.state
        assert start.unlikely_actions == [] and start.offered_actions == start.valid_actions
        carrying = env.step(f"take {thing}")
        containers = [a for a in carrying.offered_actions if a.startswith(("put ", "open "))]
        assert containers == [f"put {thing} in bench"]
        assert f"put {thing} in laundry basket" in carrying.unlikely_actions
        assert any(a.startswith("open ") for a in carrying.unlikely_actions)
        wrong = env.step(f"put {thing} in bench")
        assert wrong.score < carrying.score and wrong.unlikely_actions == []  # nothing carried
        again = env.step(f"take {thing}")
        containers = [a for a in again.offered_actions if a.startswith(("put ", "open "))]
        assert containers == [f"put {thing} in laundry basket"]  # the next place moved up
        assert env.step(f"put {thing} in laundry basket").score > again.score
        # Each name is embedded once per scorer, however often it is ranked.
        assert len(embedder.calls) == len(set(embedder.calls))
    finally:
        env.close()


def test_an_object_whose_home_is_likelier_next_door_is_carried_there() -> None:
    # Dev seed 1: the duvet lies in the bathroom and belongs in the chest of drawers of the
    # bedroom to the south. The scripted commonsense knows the chest of drawers only.
    embedder = PreferenceEmbedder(["chest of drawers"])
    home_rooms = {"chest of drawers": frozenset({"bedroom"}), "shelf": frozenset({"pantry"})}

    def carrying_the_duvet(**rules: bool) -> tuple[TwcEnvironment, list[str]]:
        config = TwcConfig(seed=1, fold="dev", num_locations=2, num_items=1, **rules)
        env = TwcEnvironment(config, places=PlaceScorer(embedder), home_rooms=home_rooms)
        env.step("move north")
        state = env.step("take checkered duvet")
        assert neighbour_rooms(state.look) == {"bedroom"}
        return env, [a for a in state.offered_actions if a.startswith(("put ", "open "))]

    env, containers = carrying_the_duvet()
    try:
        assert containers == []  # nothing here is offered: the bedroom is the likelier room
        assert "move south" in env.state.offered_actions
        bedroom = env.step("move south")
        assert [a for a in bedroom.offered_actions if a.startswith(("put ", "open "))] == [
            "open chest of drawers"
        ]
        env.step("open chest of drawers")
        assert env.step("put checkered duvet in chest of drawers").success
    finally:
        env.close()
    env, containers = carrying_the_duvet(place_rooms=False)
    try:
        assert len(containers) == 1  # without the rule, the likeliest place here
    finally:
        env.close()


class NamedEmbedder:
    """Scripted vectors at the embedding boundary, one fixed vector per text."""

    name = "named"
    dim = 3

    def __init__(self, vectors: dict[str, tuple[float, float, float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return normalize_rows(np.array([self.vectors[t] for t in texts], dtype=np.float32))


def test_known_homes_of_similar_objects_lift_their_place() -> None:
    # The question alone prefers the bench; the dishwasher holds a dirty spoon, which the
    # scripted embedder makes close to a dirty whisk, so with the homes it comes first.
    embedder = NamedEmbedder(
        {
            "Where does the dirty whisk go?": (1.0, 0.0, 0.0),
            "It goes in the bench.": (1.0, 0.1, 0.0),
            "It goes in the dishwasher.": (1.0, 0.5, 0.0),
            "dirty whisk": (0.0, 0.0, 1.0),
            "dirty spoon": (0.0, 0.1, 1.0),
            "pen": (0.0, 1.0, 0.0),
        }
    )
    places = ["bench", "dishwasher"]
    assert PlaceScorer(embedder).rank("dirty whisk", places) == ["bench", "dishwasher"]
    homes = [("dirty spoon", "dishwasher"), ("pen", "bench")]
    assert PlaceScorer(embedder, homes).rank("dirty whisk", places) == ["dishwasher", "bench"]
    # Homes of objects unlike this one leave the question's order as it was.
    assert PlaceScorer(embedder, [("pen", "dishwasher")]).rank("dirty whisk", places) == places


def test_an_object_is_compared_only_with_known_objects_in_the_same_condition() -> None:
    # The embedder puts a clean fork next to a dirty spoon (as the real one nearly does),
    # and the question alone prefers the dishwasher: only matching conditions finds the drawer.
    embedder = NamedEmbedder(
        {
            "Where does the clean fork go?": (1.0, 0.0, 0.0),
            "It goes in the dishwasher.": (1.0, 0.2, 0.0),
            "It goes in the cutlery drawer.": (1.0, 0.0, 0.2),
            "clean fork": (0.0, 1.0, 0.0),
            "dirty spoon": (0.0, 1.0, 0.05),
            "clean knife": (0.0, 1.0, 0.6),
        }
    )
    places = ["dishwasher", "cutlery drawer"]
    homes = [("dirty spoon", "dishwasher"), ("clean knife", "cutlery drawer")]
    any_condition = PlaceScorer(embedder, homes, match_condition=False)
    assert any_condition.rank("clean fork", places) == ["dishwasher", "cutlery drawer"]
    assert PlaceScorer(embedder, homes).rank("clean fork", places) == [
        "cutlery drawer",
        "dishwasher",
    ]
    # No known object in its condition: the question's order stands.
    assert PlaceScorer(embedder, homes[:1]).rank("clean fork", places) == places
    assert [condition_of(t) for t in ("Dirty whisk", "wet sweater", "pen", " ")] == [
        "dirty",
        "wet",
        None,
        None,
    ]


def test_the_shipped_homes_come_from_train_fold_gold_paths() -> None:
    homes = shipped_homes()
    assert len(homes) == len(set(homes)) > 100
    games = twc_configs(range(3), fold="train")
    built = twc_homes(games)
    assert built.pairs and set(built.pairs) <= set(homes)
    # Every home container's rooms ship too, and the rooms these games found are among them.
    rooms = shipped_home_rooms()
    assert set(rooms) == {home for _, home in homes}
    assert built.rooms and all(set(found) <= rooms[c] for c, found in built.rooms.items())
    gold_puts = set()
    for game in games:
        env = TwcEnvironment(game)
        try:
            gold_puts |= {a for a in env.gold_actions() if a.startswith("put ")}
        finally:
            env.close()
    assert {f"put {thing} in {place}" for thing, place in built.pairs} == gold_puts


def test_idle_moves_the_way_back_and_looking_again_are_not_offered() -> None:
    # Seed 19, two rooms: the cleaver is in the kitchen, the pantry lies to the west.
    config = TwcConfig(seed=19, fold="dev", num_locations=2, num_items=1, place_shortlist=0)
    env = TwcEnvironment(config)
    try:
        thing = next(a for a in env.gold_actions() if a.startswith("take ")).removeprefix("take ")
        # Carrying nothing into a room with nothing to do: going back stays on offer.
        empty_handed = env.step("move west")
        assert empty_handed.idle_actions == [] and "move east" in empty_handed.offered_actions
        env.step("move east")
        env.step(f"take {thing}")
        arrived = env.step("move west")
        assert arrived.idle_actions == ["move east"]
        assert "move east" in arrived.valid_actions and "move east" not in arrived.offered_actions
        looked = env.step("look around")  # looking is not doing
        assert "move east" not in looked.offered_actions
        # Looking again changes nothing either.
        assert {"look around", "inventory"} <= set(looked.idle_actions)
        assert "look around" not in looked.offered_actions
        put = next(a for a in arrived.valid_actions if a.startswith(f"put {thing} in "))
        assert "move east" in env.step(put).offered_actions  # something was done here
        plain = TwcEnvironment(config.model_copy(update={"avoid_idle": False}))
        try:
            replayed = plain.replay(env.actions[:4])
            assert replayed.idle_actions == [] and "move east" in replayed.offered_actions
        finally:
            plain.close()
    finally:
        env.close()


def test_opening_a_container_does_not_reopen_the_way_back_and_closing_is_not_offered() -> None:
    # Dev seed 1: the duvet lies north; its home, the chest of drawers, stands closed south.
    config = TwcConfig(seed=1, fold="dev", num_locations=2, num_items=1, place_shortlist=0)
    moves = ["look around", "move north", "take checkered duvet", "move south"]
    env = TwcEnvironment(config)
    try:
        assert env.gold_actions()[:5] == [*moves, "open chest of drawers"]
        env.replay(moves)
        opened = env.step("open chest of drawers")
        assert "move north" in opened.valid_actions and "move north" in opened.idle_actions
        assert "close chest of drawers" in opened.idle_actions
        assert "put checkered duvet in chest of drawers" in opened.offered_actions
    finally:
        env.close()
    # Recorded before the rule existed: opening counts as doing something, closing is offered.
    spec = {k: v for k, v in config.model_dump().items() if k != "idle_containers"}
    assert not TwcConfig.from_recorded(spec).idle_containers
    plain = TwcEnvironment(config.model_copy(update={"idle_containers": False}))
    try:
        opened = plain.replay([*moves, "open chest of drawers"])
        assert {"move north", "close chest of drawers"} <= set(opened.offered_actions)
    finally:
        plain.close()


def test_the_agent_does_not_offer_a_move_that_lowered_the_score(tmp_path: Path) -> None:
    moves, wrong, rest = _detour(DETOUR_CONFIG)
    script = [*moves, wrong, *rest]  # the model would repeat the wrong put if it could
    offers: list[list[str]] = []

    def answer(request: LLMRequest) -> str:
        lines = (request.prompt or "").splitlines()
        offered = next(ln for ln in lines if ln.startswith("Actions: "))[9:].split("; ")
        offers.append(offered)
        wanted = script[min(len(offers), len(script)) - 1]
        if wanted not in offered:  # as constrained decoding would: the next scripted move
            script.remove(wanted)
            wanted = script[len(offers) - 1]
        return f'{{"action": "{wanted}"}}'

    agent = _agent(f"sqlite:///{tmp_path}/t.db", answer, max_steps=len(script))
    try:
        result = agent.run(env=DETOUR_CONFIG)
        assert wrong in offers[len(moves) - 2]  # offered the first time
        assert wrong not in offers[len(moves)]  # not after it lowered the score
        view = agent.tree(result.task_id)
        done = [n.output["result"]["action"] for n in view.nodes if n.kind == "env" and n.output]
        assert done[: len(moves)] == moves and wrong not in done[len(moves) :]
        assert result.success
    finally:
        agent.close()


class SimulatedCrash(BaseException):
    """The process dying mid-task: nothing in the runtime catches it."""


def _gold_player(
    gold: list[str],
    *,
    bad_first: int = 0,
    crash_at: int | None = None,
    prompts: list[str] | None = None,
):
    calls = {"n": 0}

    def answer(request: LLMRequest) -> str:
        calls["n"] += 1
        prompt = request.prompt or ""
        if prompts is not None:
            prompts.append(prompt)
        done = next((ln for ln in prompt.splitlines() if ln.startswith("Done so far: ")), "")
        moves = len(done[len("Done so far: ") :].split("; ")) if done else 0
        if crash_at is not None and moves == crash_at:
            raise SimulatedCrash("simulated crash of the process")
        if calls["n"] <= bad_first:
            return '{"action": "fly to the moon"}'
        return f'{{"action": "{gold[moves]}"}}'

    return answer


def _agent(url: str, answer, max_steps: int = 12) -> Agent:
    return Agent(
        config=AgentConfig(database_url=url, max_steps=max_steps),
        backend=FunctionBackend(answer),
        planner=ScriptedPlanner({}),
    )


def test_twc_run_is_judged_by_the_environment(tmp_path: Path, gold: list[str]) -> None:
    prompts: list[str] = []
    agent = _agent(f"sqlite:///{tmp_path}/t.db", _gold_player(gold, bad_first=2, prompts=prompts))
    try:
        result = agent.run(env=CONFIG)
        assert result.success and result.outcome == "success"
        assert "score 1" in result.reason
        view = agent.tree(result.task_id)
        assert view.task.goal.startswith("Your task is to")  # the game's own description
        moves = [n for n in view.nodes if n.kind == "env"]
        # The first move failed (an action the game does not accept), then the gold path.
        assert moves[0].status is NodeStatus.FAILED
        assert "fly to the moon" in (moves[0].error or "")
        done = [n.output["result"]["action"] for n in moves if n.status is NodeStatus.DONE]
        assert done == gold
        assert result.steps == len(gold) + 1
        # Every move's prompt carries the game state's notes, as the training rows do.
        moves_asked = [p for p in prompts if p.startswith("Goal: ") and "Actions: " in p]
        assert moves_asked and all("\nCarrying: " in p and "\nScore: " in p for p in moves_asked)
        assert any("(up from 0%)" in p for p in moves_asked)  # after the first take
    finally:
        agent.close()


def test_twc_budget(tmp_path: Path, gold: list[str]) -> None:
    agent = _agent(f"sqlite:///{tmp_path}/t.db", _gold_player(gold), max_steps=2)
    try:
        result = agent.run(env=CONFIG)
        assert result.outcome == "budget_exhausted" and result.steps == 2
    finally:
        agent.close()


def test_resume_rebuilds_the_game_from_recorded_calls(tmp_path: Path, gold: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    first = _agent(url, _gold_player(gold, crash_at=2))
    with pytest.raises(SimulatedCrash, match="simulated crash"):
        first.run(env=CONFIG)
    task_id = first.tasks()[0].id
    first.close()
    # A new agent (a new process, in effect) knows nothing of the game but the database.
    second = _agent(url, _gold_player(gold))
    try:
        result = second.resume(task_id)
        assert result.success and result.steps == len(gold)
        calls = second.deps.calls.calls(task_id)
        assert [c.args["action"] for c in calls] == gold  # no action was sent twice
    finally:
        second.close()


def test_a_recorded_config_keeps_the_offer_it_was_made_with() -> None:
    # Recorded before the offer rules existed: they are off, so the old run replays exactly.
    old = TwcConfig.from_recorded({"kind": "twc", "seed": 5, "fold": "dev", "num_items": 2})
    assert (old.seed, old.num_items) == (5, 2)
    assert (old.avoid_regressions, old.avoid_idle, old.place_shortlist) == (False, False, 0)
    assert not old.place_homes and not old.place_conditions and not old.place_rooms
    # Recorded now: every field is in the record and comes back as it was.
    current = TwcConfig(seed=5, place_shortlist=2)
    again = TwcConfig.from_recorded({"kind": "twc", **current.model_dump()})
    assert again == current and again.avoid_idle
    with pytest.raises(ForbiddenFoldError):
        TwcConfig.from_recorded({"kind": "twc", "fold": "test"})


def test_a_dev_game_is_ranked_from_the_shipped_vectors_without_the_model() -> None:
    from trellis_twc._places import _default_embedder, shipped_homes

    embedder = _default_embedder()
    assert isinstance(embedder, CachedEmbedder)
    asked: list[str] = []

    class Counting:
        name, dim = embedder.name, embedder.dim

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            asked.extend(texts)
            return embedder.embed(texts)

    config = TwcConfig(seed=57, fold="dev", num_locations=3, num_items=3, include_doors=True)
    env = TwcEnvironment(config, places=PlaceScorer(Counting(), shipped_homes()))
    try:
        state = env.reset()
        for action in env.gold_actions():
            if state.done:
                break
            state = env.step(action)
        assert state.success
    finally:
        env.close()
    assert asked and embedder.misses == 0  # every name the game ranked was in the table


@pytest.mark.slow
def test_the_shipped_vectors_are_the_sentence_models_own() -> None:
    from trellis_twc._places import _shipped_vectors

    from trellis.adapters import SentenceEmbedder

    table = _shipped_vectors()
    texts = sorted(table)[:: max(1, len(table) // 25)]
    fresh = SentenceEmbedder().embed(texts)
    assert np.allclose(np.stack([table[t] for t in texts]), fresh, atol=1e-4)


def test_a_game_the_generator_cannot_make_is_named() -> None:
    env = TwcEnvironment(TwcConfig(seed=9, fold="dev", num_locations=1, num_items=4))
    try:
        with pytest.raises(EnvironmentFailure, match=r"could not make twc game seed 9 .*1 room"):
            env.reset()
    finally:
        env.close()
