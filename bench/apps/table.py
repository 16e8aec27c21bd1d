"""Setting the dining table (dev): a robot carries a tray between the cabinet, the drawer, the
sideboard and the dining table, and sets things at seats or in the centre.

The tray holds up to four things and starts with a salt shaker on it. The cabinet is closed,
the drawer is open. An unlit candle stands in the centre of the table.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from trellis import Skill, SkillContext, skill

from ._common import AppWorld, Goal, problems, step, world_of

Place = Literal["dining table", "cabinet", "drawer", "sideboard"]
Furniture = Literal["cabinet", "drawer"]
Spot = Literal["seat 1", "seat 2", "seat 3", "seat 4", "centre"]
SPOTS: tuple[str, ...] = ("seat 1", "seat 2", "seat 3", "seat 4", "centre")
TRAY_SIZE = 4
CUTLERY = ("fork", "knife", "spoon")


class Table(AppWorld):
    """What is stored where, what is on the tray and on the table, and the candle."""

    name = "table"
    split = "dev"

    def __init__(self) -> None:
        super().__init__()
        self.robot_at: str = "dining table"
        self.storage: dict[str, Counter[str]] = {
            "cabinet": Counter({"white plate": 4, "blue plate": 4, "glass": 4}),
            "drawer": Counter({"fork": 4, "knife": 4, "spoon": 4, "napkin": 4}),
            "sideboard": Counter({"vase": 1}),
        }
        self.open: set[str] = {"drawer"}
        self.tray: Counter[str] = Counter({"salt shaker": 1})
        self.table: dict[str, list[str]] = {spot: [] for spot in SPOTS}
        self.table["centre"].append("candle")
        self.candle_lit: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "robot_at": self.robot_at,
            "tray": dict(self.tray),
            "stored": {place: dict(items) for place, items in self.storage.items()},
            "open": sorted(self.open),
            "table": {spot: list(items) for spot, items in self.table.items()},
            "candle_lit": self.candle_lit,
        }

    def at(self, spot: str) -> list[str]:
        """What stands at ``spot`` on the table."""
        return self.table[spot]

    @classmethod
    def skills(cls) -> list[Skill]:
        return [look, walk_to, open_furniture, close_furniture, take, place, light_candle]

    @classmethod
    def goals(cls) -> list[Goal]:
        return _goals()


@skill(side_effects=False, timeout_s=5)
def look(ctx: SkillContext) -> dict[str, Any]:
    """Describe the room: where the robot is, the tray, what is stored where and open, and
    what stands at each seat and in the centre of the table."""
    return world_of(ctx, Table).snapshot()


@skill(timeout_s=5)
def walk_to(place: Place, ctx: SkillContext) -> str:
    """Walk to the dining table, the cabinet, the drawer or the sideboard."""
    t = world_of(ctx, Table)
    t.robot_at = place
    t.record("walk_to", place=place)
    return f"the robot is at the {place}"


@skill(name="open", timeout_s=5)
def open_furniture(furniture: Furniture, ctx: SkillContext) -> str:
    """Open the cabinet or the drawer (walk to it first)."""
    t = world_of(ctx, Table)
    if t.robot_at != furniture:
        raise ValueError(f"the robot is at the {t.robot_at}; walk_to the {furniture} first")
    t.open.add(furniture)
    t.record("open", furniture=furniture)
    return f"the {furniture} is open"


@skill(name="close", timeout_s=5)
def close_furniture(furniture: Furniture, ctx: SkillContext) -> str:
    """Close the cabinet or the drawer (walk to it first)."""
    t = world_of(ctx, Table)
    if t.robot_at != furniture:
        raise ValueError(f"the robot is at the {t.robot_at}; walk_to the {furniture} first")
    t.open.discard(furniture)
    t.record("close", furniture=furniture)
    return f"the {furniture} is closed"


@skill(timeout_s=5)
def take(item: str, ctx: SkillContext) -> str:
    """Take one item from where the robot stands (cabinet, drawer or sideboard) onto the tray."""
    t = world_of(ctx, Table)
    stored = t.storage.get(t.robot_at)
    if stored is None:
        raise ValueError("take works at the cabinet, the drawer or the sideboard; walk_to one")
    if t.robot_at in ("cabinet", "drawer") and t.robot_at not in t.open:
        raise ValueError(f"the {t.robot_at} is closed; open it first")
    if stored[item] < 1:
        homes = [p for p, items in t.storage.items() if items[item] > 0]
        where = f"; it is in the {homes[0]}" if homes else ""
        raise ValueError(f"there is no {item} in the {t.robot_at}{where}")
    if t.tray.total() >= TRAY_SIZE:
        raise ValueError(f"the tray is full ({TRAY_SIZE} things); place something first")
    stored[item] -= 1
    t.tray[item] += 1
    t.record("take", item=item, place=t.robot_at)
    return f"on the tray: {dict(t.tray)}"


@skill(timeout_s=5)
def place(item: str, spot: Spot, ctx: SkillContext) -> str:
    """Set an item from the tray at a seat (seat 1 to seat 4) or in the centre of the table."""
    t = world_of(ctx, Table)
    if t.tray[item] < 1:
        raise ValueError(f"there is no {item} on the tray; take one first")
    if t.robot_at != "dining table":
        raise ValueError("things are placed at the dining table; walk_to the dining table first")
    t.tray[item] -= 1
    t.tray += Counter()  # drop zero counts
    had = list(t.table[spot])
    t.table[spot].append(item)
    t.record("place", item=item, spot=spot, spot_had=had)
    return f"{spot} has: {', '.join(t.table[spot])}"


@skill(timeout_s=5)
def light_candle(ctx: SkillContext) -> str:
    """Light the candle in the centre of the table (stand at the dining table)."""
    t = world_of(ctx, Table)
    if t.robot_at != "dining table":
        raise ValueError("the candle is on the dining table; walk_to the dining table first")
    if "candle" not in t.table["centre"]:
        raise ValueError("there is no candle in the centre of the table")
    t.candle_lit = True
    t.record("light_candle")
    return "the candle is lit"


# --- goals -------------------------------------------------------------------------------

NO_BLUE = "never use the blue plates"


def _plate_at(t: Table, spot: str) -> bool:
    return any("plate" in item for item in t.at(spot))


def _blue_used(t: Table) -> bool:
    return bool(t.events("take", item="blue plate"))


def _cutlery_before_plate(t: Table) -> bool:
    return any(
        a == "place" and d["item"] in CUTLERY and not any("plate" in i for i in d["spot_had"])
        for a, d in t.log
    )


def _candle_not_last(t: Table) -> bool:
    lit = t.first("light_candle")
    return lit is not None and any(i > lit for i in t.events("place"))


def _goals() -> list[Goal]:
    g = "table/"
    return [
        Goal(
            id=g + "salt-centre",
            text="put the salt shaker in the centre of the table",
            check=lambda t: "salt shaker" in t.at("centre"),
            reference=[step("place", item="salt shaker", spot="centre")],
        ),
        Goal(
            id=g + "light-candle",
            text="light the candle",
            check=lambda t: t.candle_lit,
            reference=[step("light_candle")],
        ),
        Goal(
            id=g + "open-cabinet",
            text="open the cabinet",
            check=lambda t: "cabinet" in t.open,
            reference=[step("walk_to", place="cabinet"), step("open", furniture="cabinet")],
        ),
        Goal(
            id=g + "close-drawer",
            text="close the drawer",
            check=lambda t: "drawer" not in t.open,
            reference=[step("walk_to", place="drawer"), step("close", furniture="drawer")],
        ),
        Goal(
            id=g + "take-spoon",
            text="take a spoon from the drawer",
            check=lambda t: t.tray["spoon"] >= 1,
            reference=[step("walk_to", place="drawer"), step("take", item="spoon")],
        ),
        Goal(
            id=g + "vase-centre",
            text="put the vase in the centre of the table",
            check=lambda t: "vase" in t.at("centre"),
            reference=[
                step("walk_to", place="sideboard"),
                step("take", item="vase"),
                step("walk_to", place="dining table"),
                step("place", item="vase", spot="centre"),
            ],
        ),
        Goal(
            id=g + "napkin-seat-2",
            text="put a napkin at seat 2",
            check=lambda t: "napkin" in t.at("seat 2"),
            reference=[
                step("walk_to", place="drawer"),
                step("take", item="napkin"),
                step("walk_to", place="dining table"),
                step("place", item="napkin", spot="seat 2"),
            ],
        ),
        Goal(
            id=g + "glass-seat-1",
            text="put a glass at seat 1",
            check=lambda t: "glass" in t.at("seat 1"),
            reference=[
                step("walk_to", place="cabinet"),
                step("open", furniture="cabinet"),
                step("take", item="glass"),
                step("walk_to", place="dining table"),
                step("place", item="glass", spot="seat 1"),
            ],
        ),
        Goal(
            id=g + "plate-seat-3",
            text="put a plate at seat 3",
            reminders=[NO_BLUE, "close the cabinet after taking things out of it"],
            check=lambda t: _plate_at(t, "seat 3"),
            forbidden=lambda t: problems(
                (_blue_used(t), "a blue plate was used"),
                ("cabinet" in t.open, "the cabinet was left open"),
            ),
            reference=[
                step("walk_to", place="cabinet"),
                step("open", furniture="cabinet"),
                step("take", item="white plate"),
                step("close", furniture="cabinet"),
                step("walk_to", place="dining table"),
                step("place", item="white plate", spot="seat 3"),
            ],
        ),
        Goal(
            id=g + "forks-seats-1-2",
            text="put a fork at seat 1 and a fork at seat 2",
            check=lambda t: "fork" in t.at("seat 1") and "fork" in t.at("seat 2"),
            reference=[
                step("walk_to", place="drawer"),
                step("take", item="fork"),
                step("take", item="fork"),
                step("walk_to", place="dining table"),
                step("place", item="fork", spot="seat 1"),
                step("place", item="fork", spot="seat 2"),
            ],
        ),
        Goal(
            id=g + "napkins-candle",
            text="put a napkin at seat 1 and at seat 2 and light the candle",
            reminders=["light the candle last, when everything else is on the table"],
            check=lambda t: (
                "napkin" in t.at("seat 1") and "napkin" in t.at("seat 2") and t.candle_lit
            ),
            forbidden=lambda t: problems((_candle_not_last(t), "the candle was lit too early")),
            reference=[
                step("walk_to", place="drawer"),
                step("take", item="napkin"),
                step("take", item="napkin"),
                step("walk_to", place="dining table"),
                step("place", item="napkin", spot="seat 1"),
                step("place", item="napkin", spot="seat 2"),
                step("light_candle"),
            ],
        ),
        Goal(
            id=g + "seat-1-plate-fork",
            text="set seat 1 with a plate and a fork",
            reminders=[NO_BLUE, "put the plate down before the cutlery"],
            check=lambda t: _plate_at(t, "seat 1") and "fork" in t.at("seat 1"),
            forbidden=lambda t: problems(
                (_blue_used(t), "a blue plate was used"),
                (_cutlery_before_plate(t), "cutlery was set before the plate"),
            ),
            reference=[
                step("walk_to", place="cabinet"),
                step("open", furniture="cabinet"),
                step("take", item="white plate"),
                step("walk_to", place="drawer"),
                step("take", item="fork"),
                step("walk_to", place="dining table"),
                step("place", item="white plate", spot="seat 1"),
                step("place", item="fork", spot="seat 1"),
            ],
        ),
    ]
