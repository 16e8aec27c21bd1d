"""The twc expert: plays any game it has read, recovers from others' moves, labels rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from trellis_twc import TwcEnvironment, TwcExpert, room_of
from trellis_twc._datasets import (
    twc_configs,
    twc_expert_examples,
    twc_model_plays,
    twc_trajectory_examples,
)

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent import Agent, AgentConfig
from trellis.planners import ScriptedPlanner

# Held-out train seeds (the shipped rows use 0:300), 1-3 rooms and 1-3 objects.
GAMES = twc_configs(range(300, 318), fold="train")


def _play(env: TwcEnvironment, expert: TwcExpert, limit: int = 30) -> bool:
    state = env.state
    for _ in range(limit):
        if state.done:
            break
        action = expert.next_action(state)
        assert action is not None and action in state.valid_actions
        before, state = state, env.step(action)
        expert.observe(action, before, state)
    return state.success


def test_the_expert_wins_every_game_from_the_start() -> None:
    env = TwcEnvironment()
    try:
        for config in GAMES:
            env.load(config)
            expert = TwcExpert.from_gold(env)
            assert env.actions == []  # the gold walk left the game at its start
            assert _play(env, expert), f"seed {config.seed}: {env.actions}"
            assert len(env.actions) <= len(env.gold_actions())
    finally:
        env.close()


def test_the_expert_recovers_from_a_wrong_put_and_a_wrong_room() -> None:
    # A game with two rooms: put the object somewhere wrong, walk away, then let the expert on.
    config = next(c for c in GAMES if c.num_locations == 2 and c.num_items == 1)
    env = TwcEnvironment(config.model_copy(update={"place_shortlist": 0, "avoid_idle": False}))
    try:
        expert = TwcExpert.from_gold(env)
        state = env.state
        thing = next(a for a in env.gold_actions() if a.startswith("take ")).removeprefix("take ")
        while f"take {thing}" not in state.valid_actions:  # go where the object lies
            move = expert.next_action(state)
            assert move is not None
            before, state = state, env.step(move)
            expert.observe(move, before, state)
        before, state = state, env.step(f"take {thing}")
        expert.observe(f"take {thing}", before, state)
        wrong = next(
            a
            for a in state.valid_actions
            if a.startswith(f"put {thing} in ") and a != f"put {thing} in {expert.home[thing]}"
        )
        before, state = state, env.step(wrong)
        expert.observe(wrong, before, state)
        assert state.score < before.score
        assert expert.next_action(state) == f"take {thing}"  # take it back first
        room = room_of(state)
        away = next(a for a in state.valid_actions if a.startswith("move "))
        before, state = state, env.step(away)
        expert.observe(away, before, state)
        assert room_of(state) != room and expert.exits[room_of(state)]  # the way is known
        assert _play(env, expert)
    finally:
        env.close()


def test_noisy_rows_are_labelled_with_offered_expert_moves() -> None:
    rows = list(twc_expert_examples(GAMES[:6], noise=0.3))
    quiet = list(twc_expert_examples(GAMES[:6], noise=0.0))
    assert len(rows) > len(quiet) > 0  # noise visits more states than the expert's own path
    for row in rows:
        action = json.loads(row["completion"])["action"]
        offered = next(ln for ln in row["prompt"].splitlines() if ln.startswith("Actions: "))
        assert action in offered.removeprefix("Actions: ").split("; ")
    with pytest.raises(ValueError, match="noise"):
        list(twc_expert_examples(GAMES[:1], noise=1.5))


def test_offered_actions_of_a_fresh_game_include_the_experts_first_move() -> None:
    env = TwcEnvironment(GAMES[0])
    try:
        expert = TwcExpert.from_gold(env)
        state = env.state
        assert expert.next_action(state) in env.offered_actions(state)
    finally:
        env.close()


def _history(row: dict[str, str]) -> list[str]:
    done = next((ln for ln in row["prompt"].splitlines() if ln.startswith("Done so far: ")), "")
    return done.removeprefix("Done so far: ").split("; ") if done else []


def test_rows_along_a_recorded_play_label_its_mistakes_with_the_expert_move() -> None:
    config = next(c for c in GAMES if c.num_locations == 1 and c.num_items == 1)
    config = config.model_copy(update={"place_shortlist": 0})
    env = TwcEnvironment(config)
    try:
        expert = TwcExpert.from_gold(env)
        thing = next(iter(expert.home))
        wrong = next(
            a
            for a in env.step(f"take {thing}").valid_actions
            if a.startswith(f"put {thing} in ") and a != f"put {thing} in {expert.home[thing]}"
        )
    finally:
        env.close()
    play = [f"take {thing}", wrong, "look around"]
    rows = list(twc_trajectory_examples([config], {config.seed: play}))
    assert [_history(r) for r in rows] == [play[:i] for i in range(len(rows))]
    labels = [json.loads(r["completion"])["action"] for r in rows]
    assert labels[0] == f"take {thing}"
    assert labels[2] == f"take {thing}"  # after the wrong put: take it back
    assert labels[3] == f"take {thing}"  # still, after an idle look
    # A move the game refuses ends the rows; a game without a play has none.
    assert len(list(twc_trajectory_examples([config], {config.seed: ["fly away"]}))) == 1
    assert list(twc_trajectory_examples([config], {})) == []


def test_model_plays_are_the_moves_the_agent_made(tmp_path: Path) -> None:
    def first_offered(request: LLMRequest) -> str:
        actions = (request.json_schema or {})["properties"]["action"]["enum"]
        return json.dumps({"action": actions[0]})

    configs = GAMES[:3]
    agent = Agent(
        # A file database: games run at once, each on its own connection.
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/plays.db", max_steps=5),
        backend=FunctionBackend(first_offered),
        planner=ScriptedPlanner({}),
    )
    try:
        plays = asyncio.run(twc_model_plays(agent, configs, concurrency=2))
    finally:
        agent.close()
    assert sorted(plays) == [c.seed for c in configs]
    for config in configs:
        play = plays[config.seed]
        assert 0 < len(play) <= 5
        env = TwcEnvironment(config)
        try:
            state = env.state
            for action in play:  # the play replays in a fresh game, move by move
                assert action in env.offered_actions(state)
                state = env.step(action)
        finally:
            env.close()
        rows = list(twc_trajectory_examples([config], plays))
        assert rows and all(play[: len(_history(r))] == _history(r) for r in rows)
