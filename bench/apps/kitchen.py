"""Kitchen robot (train): a one-armed robot moves between places, opens doors, carries and washes.

The robot holds one thing at a time. The fridge, the cupboard and the dishwasher have doors;
things inside a closed one cannot be reached. The dishwasher was left open.
"""

from __future__ import annotations

from typing import Any, Literal

from trellis import Skill, SkillContext, skill

from ._common import AppWorld, Goal, problems, step, world_of

Place = Literal["counter", "sink", "table", "fridge", "cupboard", "dishwasher"]
Door = Literal["fridge", "cupboard", "dishwasher"]
DOORS: tuple[str, ...] = ("fridge", "cupboard", "dishwasher")


class Kitchen(AppWorld):
    """Where the robot is, what it holds, where each object is, what is open or dirty."""

    name = "kitchen"
    split = "train"

    def __init__(self) -> None:
        super().__init__()
        self.robot_at: str = "counter"
        self.holding: str | None = None
        self.objects: dict[str, str] = {
            "apple": "counter",
            "kettle": "counter",
            "mug": "table",
            "bowl": "sink",
            "milk": "fridge",
            "white plate": "cupboard",
            "blue plate": "cupboard",
        }
        self.dirty: set[str] = {"mug", "bowl"}
        self.open: set[str] = {"dishwasher"}

    def snapshot(self) -> dict[str, Any]:
        return {
            "robot_at": self.robot_at,
            "holding": self.holding,
            "objects": {
                name: {
                    "at": "robot" if name == self.holding else at,
                    "clean": name not in self.dirty,
                }
                for name, at in self.objects.items()
            },
            "open_doors": sorted(self.open),
        }

    def where(self, item: str) -> str:
        """The place of ``item`` (``robot`` while it is held)."""
        return "robot" if item == self.holding else self.objects[item]

    def require_object(self, item: str) -> None:
        """Raise a ValueError naming the known objects when ``item`` is not one."""
        if item not in self.objects:
            raise ValueError(
                f"there is no {item!r} in the kitchen; known objects: {', '.join(self.objects)}"
            )

    @classmethod
    def skills(cls) -> list[Skill]:
        return [look, go_to, pick_up, put_down, wash, open_door, close_door]

    @classmethod
    def goals(cls) -> list[Goal]:
        return _goals()


@skill(side_effects=False, timeout_s=5)
def look(ctx: SkillContext) -> dict[str, Any]:
    """Describe the kitchen: where the robot is, what it holds, where every object is, which
    doors are open and which objects are dirty."""
    return world_of(ctx, Kitchen).snapshot()


@skill(timeout_s=5)
def go_to(place: Place, ctx: SkillContext) -> str:
    """Move the robot to a place: counter, sink, table, fridge, cupboard or dishwasher."""
    k = world_of(ctx, Kitchen)
    came_from = k.robot_at
    k.robot_at = place
    k.record("go_to", place=place, came_from=came_from, open=sorted(k.open))
    return f"the robot is at the {place}"


@skill(timeout_s=5)
def pick_up(item: str, ctx: SkillContext) -> str:
    """Pick up an object at the robot's place (the robot holds one thing at a time)."""
    k = world_of(ctx, Kitchen)
    k.require_object(item)
    if k.holding is not None:
        raise ValueError(f"the robot is already holding the {k.holding}; put it down first")
    at = k.objects[item]
    if at != k.robot_at:
        raise ValueError(f"the {item} is at the {at}, not the {k.robot_at}; go_to the {at} first")
    if at in DOORS and at not in k.open:
        raise ValueError(f"the {at} is closed; open it first")
    k.holding = item
    k.record("pick_up", item=item, place=at)
    return f"the robot holds the {item}"


@skill(timeout_s=5)
def put_down(item: str, ctx: SkillContext) -> str:
    """Put the held object down at the robot's place (inside it for fridge, cupboard, dishwasher)."""
    k = world_of(ctx, Kitchen)
    if k.holding is None:
        raise ValueError("the robot is not holding anything; pick something up first")
    if k.holding != item:
        raise ValueError(f"the robot is holding the {k.holding}, not the {item}")
    if k.robot_at in DOORS and k.robot_at not in k.open:
        raise ValueError(f"the {k.robot_at} is closed; open it first")
    k.objects[item] = k.robot_at
    k.holding = None
    k.record("put_down", item=item, place=k.robot_at, clean=item not in k.dirty)
    return f"the {item} is at the {k.robot_at}"


@skill(timeout_s=5)
def wash(item: str, ctx: SkillContext) -> str:
    """Wash the object the robot holds; only possible at the sink."""
    k = world_of(ctx, Kitchen)
    k.require_object(item)
    if k.holding != item:
        raise ValueError(f"the robot must hold the {item} to wash it; pick it up first")
    if k.robot_at != "sink":
        raise ValueError("washing happens at the sink; go_to the sink first")
    k.dirty.discard(item)
    k.record("wash", item=item)
    return f"the {item} is clean"


@skill(name="open", timeout_s=5)
def open_door(door: Door, ctx: SkillContext) -> str:
    """Open the door of the fridge, the cupboard or the dishwasher (go there first)."""
    k = world_of(ctx, Kitchen)
    if k.robot_at != door:
        raise ValueError(f"the robot is at the {k.robot_at}; go_to the {door} first")
    k.open.add(door)
    k.record("open", door=door)
    return f"the {door} is open"


@skill(name="close", timeout_s=5)
def close_door(door: Door, ctx: SkillContext) -> str:
    """Close the door of the fridge, the cupboard or the dishwasher (go there first)."""
    k = world_of(ctx, Kitchen)
    if k.robot_at != door:
        raise ValueError(f"the robot is at the {k.robot_at}; go_to the {door} first")
    k.open.discard(door)
    k.record("close", door=door)
    return f"the {door} is closed"


# --- goals -------------------------------------------------------------------------------


def _walked_away_from_open_fridge(k: Kitchen) -> bool:
    return any(
        d["came_from"] == "fridge" and "fridge" in d["open"] for a, d in k.log if a == "go_to"
    )


def _opened_and_left_open(k: Kitchen) -> list[str]:
    opened = {d["door"] for a, d in k.log if a == "open"}
    return [f"the {door} was left open" for door in sorted(opened & k.open)]


def _dirty_put_away(k: Kitchen) -> bool:
    return any(a == "put_down" and d["place"] == "cupboard" and not d["clean"] for a, d in k.log)


def _table_used_before_mug_moved(k: Kitchen) -> bool:
    mug_moved = k.first("pick_up", item="mug")
    first_put = min(
        (i for i, (a, d) in enumerate(k.log) if a == "put_down" and d["place"] == "table"),
        default=None,
    )
    if first_put is None:
        return False
    return mug_moved is None or first_put < mug_moved


def _goals() -> list[Goal]:
    g = "kitchen/"
    return [
        Goal(
            id=g + "pick-apple",
            text="pick up the apple",
            check=lambda k: k.holding == "apple",
            reference=[step("pick_up", item="apple")],
        ),
        Goal(
            id=g + "open-fridge",
            text="open the fridge",
            check=lambda k: "fridge" in k.open,
            reference=[step("go_to", place="fridge"), step("open", door="fridge")],
        ),
        Goal(
            id=g + "close-dishwasher",
            text="close the dishwasher",
            check=lambda k: "dishwasher" not in k.open,
            reference=[step("go_to", place="dishwasher"), step("close", door="dishwasher")],
        ),
        Goal(
            id=g + "apple-table",
            text="put the apple on the table",
            check=lambda k: k.where("apple") == "table",
            reference=[
                step("pick_up", item="apple"),
                step("go_to", place="table"),
                step("put_down", item="apple"),
            ],
        ),
        Goal(
            id=g + "wash-mug",
            text="wash the mug",
            check=lambda k: "mug" not in k.dirty,
            reference=[
                step("go_to", place="table"),
                step("pick_up", item="mug"),
                step("go_to", place="sink"),
                step("wash", item="mug"),
            ],
        ),
        Goal(
            id=g + "mug-dishwasher",
            text="put the mug in the dishwasher",
            reminders=["close the dishwasher after loading it"],
            check=lambda k: k.where("mug") == "dishwasher",
            forbidden=lambda k: problems(("dishwasher" in k.open, "the dishwasher was left open")),
            reference=[
                step("go_to", place="table"),
                step("pick_up", item="mug"),
                step("go_to", place="dishwasher"),
                step("put_down", item="mug"),
                step("close", door="dishwasher"),
            ],
        ),
        Goal(
            id=g + "milk-table",
            text="get the milk out of the fridge and put it on the table",
            reminders=["close the fridge right after taking something out of it"],
            check=lambda k: k.where("milk") == "table",
            forbidden=lambda k: problems(
                ("fridge" in k.open, "the fridge was left open"),
                (_walked_away_from_open_fridge(k), "the robot walked away from the open fridge"),
            ),
            reference=[
                step("go_to", place="fridge"),
                step("open", door="fridge"),
                step("pick_up", item="milk"),
                step("close", door="fridge"),
                step("go_to", place="table"),
                step("put_down", item="milk"),
            ],
        ),
        Goal(
            id=g + "bowl-cupboard",
            text="put the bowl in the cupboard",
            reminders=["always wash things before putting them away"],
            check=lambda k: k.where("bowl") == "cupboard",
            forbidden=lambda k: problems((_dirty_put_away(k), "a dirty object was put away")),
            reference=[
                step("go_to", place="sink"),
                step("pick_up", item="bowl"),
                step("wash", item="bowl"),
                step("go_to", place="cupboard"),
                step("open", door="cupboard"),
                step("put_down", item="bowl"),
            ],
        ),
        Goal(
            id=g + "plate-table",
            text="set a plate on the table for lunch",
            reminders=["never use the blue plates"],
            check=lambda k: any("plate" in o and k.where(o) == "table" for o in k.objects),
            forbidden=lambda k: problems(
                (bool(k.events("pick_up", item="blue plate")), "the blue plate was used")
            ),
            reference=[
                step("go_to", place="cupboard"),
                step("open", door="cupboard"),
                step("pick_up", item="white plate"),
                step("go_to", place="table"),
                step("put_down", item="white plate"),
            ],
        ),
        Goal(
            id=g + "wash-mug-bowl",
            text="wash the mug and the bowl",
            check=lambda k: not ({"mug", "bowl"} & k.dirty),
            reference=[
                step("go_to", place="table"),
                step("pick_up", item="mug"),
                step("go_to", place="sink"),
                step("wash", item="mug"),
                step("put_down", item="mug"),
                step("pick_up", item="bowl"),
                step("wash", item="bowl"),
            ],
        ),
        Goal(
            id=g + "apple-fridge",
            text="put the apple in the fridge",
            reminders=["always close doors you opened"],
            check=lambda k: k.where("apple") == "fridge",
            forbidden=_opened_and_left_open,
            reference=[
                step("pick_up", item="apple"),
                step("go_to", place="fridge"),
                step("open", door="fridge"),
                step("put_down", item="apple"),
                step("close", door="fridge"),
            ],
        ),
        Goal(
            id=g + "mug-sink-kettle-table",
            text="move the mug to the sink and the kettle to the table",
            reminders=["take the mug off the table before putting anything else on it"],
            check=lambda k: k.where("mug") == "sink" and k.where("kettle") == "table",
            forbidden=lambda k: problems(
                (_table_used_before_mug_moved(k), "something was put on the table before the mug")
            ),
            reference=[
                step("go_to", place="table"),
                step("pick_up", item="mug"),
                step("go_to", place="sink"),
                step("put_down", item="mug"),
                step("go_to", place="counter"),
                step("pick_up", item="kettle"),
                step("go_to", place="table"),
                step("put_down", item="kettle"),
            ],
        ),
    ]
