"""A kitchen robot: four skills over a small world, a goal and a reminder.

Run it with ``python examples/kitchen_robot.py`` (the embedded model, shipped adapters).
The world's own state says whether the goal was achieved, not the agent's outcome.
"""

from typing import Literal

from trellis import Agent, skill

Place = Literal["counter", "sink", "dishwasher", "cupboard"]

kitchen: dict[str, str | None] = {
    "robot": "counter",  # where the robot stands
    "holding": None,  # what it holds
    "mug": "counter",  # where each thing is
    "plate": "sink",
}


@skill(side_effects=True)
def go_to(place: Place) -> str:
    """Move the robot to a place in the kitchen."""
    kitchen["robot"] = place
    return f"at the {place}"


@skill(side_effects=True)
def pick_up(item: str) -> str:
    """Pick up an item at the robot's place (one at a time)."""
    if item not in kitchen or item in ("robot", "holding"):
        raise ValueError(f"there is no {item!r} in this kitchen; items: mug, plate")
    if kitchen["holding"] is not None:
        raise ValueError(f"the robot already holds the {kitchen['holding']}; put it down first")
    if kitchen[item] != kitchen["robot"]:
        raise ValueError(f"the {item} is at the {kitchen[item]}; go_to that place first")
    kitchen["holding"], kitchen[item] = item, "robot"
    return f"holding the {item}"


@skill(side_effects=True)
def put_down(place: Place) -> str:
    """Put what the robot holds at a place (the robot must be there)."""
    item = kitchen["holding"]
    if item is None:
        raise ValueError("the robot holds nothing; pick_up an item first")
    if kitchen["robot"] != place:
        raise ValueError(f"the robot is at the {kitchen['robot']}; go_to the {place} first")
    kitchen[item], kitchen["holding"] = place, None
    return f"the {item} is in the {place}"


@skill(side_effects=True)
def wash(item: str) -> str:
    """Wash an item at the sink."""
    if kitchen["robot"] != "sink" or kitchen.get(item) not in ("sink", "robot"):
        raise ValueError(f"wash at the sink with the {item} there; go_to the sink first")
    return f"washed the {item}"


if __name__ == "__main__":
    agent = Agent(skills=[go_to, pick_up, put_down, wash])
    result = agent.run("put the mug in the dishwasher", reminders=["never wash the plate"])
    print(result.outcome, result.steps, "steps")
    print("mug is in the", kitchen["mug"])  # the world's own state is the judge
