"""Laundry room (train): a washer, a dryer, a drying rack and a wardrobe.

Clothes start in the laundry basket. A wash makes the load clean and wet and leaves it in the
washer until it is unloaded. A white item washed together with a coloured one turns pink; wool
shrinks in the dryer. Things are folded once dry and put away once folded and clean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from trellis import Skill, SkillContext, skill

from ._common import AppWorld, Goal, problems, step, world_of

Program = Literal["cold", "warm", "hot", "wool"]


@dataclass
class Garment:
    """One piece of laundry."""

    colour: str
    fabric: str
    at: str = "basket"
    clean: bool = False
    wet: bool = False
    folded: bool = False
    shrunk: bool = False


class Laundry(AppWorld):
    """Every garment's state, what is in the washer, and whether that load was washed."""

    name = "laundry"
    split = "train"

    def __init__(self) -> None:
        super().__init__()
        self.clothes: dict[str, Garment] = {
            "white shirt": Garment("white", "cotton"),
            "red sock": Garment("red", "cotton"),
            "blue jeans": Garment("blue", "denim"),
            "wool sweater": Garment("grey", "wool"),
            "towel": Garment("white", "cotton", clean=True),
            "beach towel": Garment("striped", "cotton", clean=True, wet=True),
        }
        self.washed_load: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "clothes": {name: asdict(g) for name, g in self.clothes.items()},
            "washer": self.in_washer(),
            "washer_load_washed": self.washed_load,
        }

    def in_washer(self) -> list[str]:
        return [name for name, g in self.clothes.items() if g.at == "washer"]

    def garment(self, item: str) -> Garment:
        """The garment called ``item``; a ValueError names the known ones."""
        if item not in self.clothes:
            raise ValueError(f"there is no {item!r}; the laundry is: {', '.join(self.clothes)}")
        return self.clothes[item]

    def out_of_washer(self, item: str) -> Garment:
        g = self.garment(item)
        if g.at == "washer":
            raise ValueError(f"the {item} is still in the washer; unload_washer first")
        return g

    @classmethod
    def skills(cls) -> list[Skill]:
        return [
            laundry_status,
            load_washer,
            start_washer,
            unload_washer,
            hang_to_dry,
            tumble_dry,
            fold,
            put_away,
        ]

    @classmethod
    def goals(cls) -> list[Goal]:
        return _goals()


@skill(side_effects=False, timeout_s=5)
def laundry_status(ctx: SkillContext) -> dict[str, Any]:
    """Show every garment (where it is, clean, wet, folded) and what is in the washer."""
    return world_of(ctx, Laundry).snapshot()


@skill(timeout_s=5)
def load_washer(item: str, ctx: SkillContext) -> str:
    """Put one garment into the washing machine."""
    w = world_of(ctx, Laundry)
    g = w.garment(item)
    if w.washed_load:
        raise ValueError("the washer still holds the washed load; unload_washer first")
    if g.at == "washer":
        return f"the {item} is already in the washer"
    if g.at == "wardrobe":
        raise ValueError(f"the {item} is put away in the wardrobe")
    g.at = "washer"
    g.folded = False
    w.record("load_washer", item=item)
    return f"the washer holds: {', '.join(w.in_washer())}"


@skill(timeout_s=5)
def start_washer(program: Program, ctx: SkillContext) -> str:
    """Run a wash with a program (cold, warm, hot or wool); the load ends clean and wet."""
    w = world_of(ctx, Laundry)
    load = w.in_washer()
    if not load:
        raise ValueError("the washer is empty; load_washer first")
    if w.washed_load:
        raise ValueError("this load is already washed; unload_washer first")
    colours = {w.clothes[i].colour for i in load}
    for item in load:
        g = w.clothes[item]
        g.clean, g.wet = True, True
        if g.colour == "white" and colours - {"white"}:
            g.colour = "pink"
    w.washed_load = True
    w.record("start_washer", program=program, items=load, colours=sorted(colours))
    return f"washed on {program}: {', '.join(load)} (clean and wet, still in the washer)"


@skill(timeout_s=5)
def unload_washer(ctx: SkillContext) -> str:
    """Take everything out of the washer into the laundry basket."""
    w = world_of(ctx, Laundry)
    load = w.in_washer()
    if not load:
        raise ValueError("the washer is empty; there is nothing to unload")
    for item in load:
        w.clothes[item].at = "basket"
    w.washed_load = False
    w.record("unload_washer", items=load)
    return f"in the basket: {', '.join(load)}"


@skill(timeout_s=5)
def hang_to_dry(item: str, ctx: SkillContext) -> str:
    """Hang a wet garment on the drying rack; it ends dry on the rack."""
    w = world_of(ctx, Laundry)
    g = w.out_of_washer(item)
    if not g.wet:
        raise ValueError(f"the {item} is already dry")
    g.at, g.wet = "rack", False
    w.record("hang_to_dry", item=item)
    return f"the {item} is dry on the rack"


@skill(timeout_s=5)
def tumble_dry(item: str, ctx: SkillContext) -> str:
    """Dry a wet garment in the tumble dryer; it ends dry in the basket."""
    w = world_of(ctx, Laundry)
    g = w.out_of_washer(item)
    if not g.wet:
        raise ValueError(f"the {item} is already dry")
    g.at, g.wet = "basket", False
    if g.fabric == "wool":
        g.shrunk = True
    w.record("tumble_dry", item=item, fabric=g.fabric)
    return f"the {item} is dry" + (" but it shrank" if g.shrunk else "")


@skill(timeout_s=5)
def fold(item: str, ctx: SkillContext) -> str:
    """Fold a dry garment."""
    w = world_of(ctx, Laundry)
    g = w.out_of_washer(item)
    if g.wet:
        raise ValueError(f"the {item} is still wet; dry it first (hang_to_dry or tumble_dry)")
    g.folded = True
    w.record("fold", item=item)
    return f"the {item} is folded"


@skill(timeout_s=5)
def put_away(item: str, ctx: SkillContext) -> str:
    """Put a clean, folded garment away in the wardrobe."""
    w = world_of(ctx, Laundry)
    g = w.out_of_washer(item)
    if not g.clean:
        raise ValueError(f"the {item} is dirty; wash it before putting it away")
    if not g.folded:
        raise ValueError(f"the {item} is not folded; fold it first")
    g.at = "wardrobe"
    w.record("put_away", item=item)
    return f"the {item} is in the wardrobe"


# --- goals -------------------------------------------------------------------------------


def _mixed_washes(w: Laundry) -> bool:
    return any(
        a == "start_washer" and "white" in d["colours"] and len(d["colours"]) > 1 for a, d in w.log
    )


def _washed(w: Laundry, item: str) -> list[int]:
    return [i for i, (a, d) in enumerate(w.log) if a == "start_washer" and item in d["items"]]


def _washed_together(w: Laundry, one: str, other: str) -> bool:
    return any(other in w.log[i][1]["items"] for i in _washed(w, one))


def _wool_off_program(w: Laundry) -> bool:
    return any(
        a == "start_washer" and "wool sweater" in d["items"] and d["program"] != "wool"
        for a, d in w.log
    )


def _colours_before_whites(w: Laundry) -> bool:
    shirt, sock = _washed(w, "white shirt"), _washed(w, "red sock")
    return bool(sock) and (not shirt or sock[0] < shirt[0])


def _goals() -> list[Goal]:
    g = "laundry/"

    def clothes(w: Laundry, item: str) -> Garment:
        return w.clothes[item]

    return [
        Goal(
            id=g + "fold-towel",
            text="fold the towel",
            check=lambda w: clothes(w, "towel").folded,
            reference=[step("fold", item="towel")],
        ),
        Goal(
            id=g + "towel-away",
            text="put the towel away",
            check=lambda w: clothes(w, "towel").at == "wardrobe",
            reference=[step("fold", item="towel"), step("put_away", item="towel")],
        ),
        Goal(
            id=g + "hang-beach-towel",
            text="hang the beach towel to dry",
            check=lambda w: clothes(w, "beach towel").at == "rack",
            reference=[step("hang_to_dry", item="beach towel")],
        ),
        Goal(
            id=g + "wash-sock",
            text="wash the red sock",
            check=lambda w: clothes(w, "red sock").clean,
            reference=[step("load_washer", item="red sock"), step("start_washer", program="warm")],
        ),
        Goal(
            id=g + "wash-sweater-wool",
            text="wash the wool sweater on the wool program",
            check=lambda w: clothes(w, "wool sweater").clean and not _wool_off_program(w),
            reference=[
                step("load_washer", item="wool sweater"),
                step("start_washer", program="wool"),
            ],
        ),
        Goal(
            id=g + "wash-dry-jeans",
            text="wash and dry the blue jeans",
            check=lambda w: clothes(w, "blue jeans").clean and not clothes(w, "blue jeans").wet,
            reference=[
                step("load_washer", item="blue jeans"),
                step("start_washer", program="warm"),
                step("unload_washer"),
                step("tumble_dry", item="blue jeans"),
            ],
        ),
        Goal(
            id=g + "wash-shirt-sock",
            text="wash the white shirt and the red sock",
            reminders=["never wash whites together with colours", "wash the whites first"],
            check=lambda w: clothes(w, "white shirt").clean and clothes(w, "red sock").clean,
            forbidden=lambda w: problems(
                (_mixed_washes(w), "whites were washed together with colours"),
                (_colours_before_whites(w), "the red sock was washed before the white shirt"),
            ),
            reference=[
                step("load_washer", item="white shirt"),
                step("start_washer", program="hot"),
                step("unload_washer"),
                step("load_washer", item="red sock"),
                step("start_washer", program="cold"),
            ],
        ),
        Goal(
            id=g + "wash-dry-sweater",
            text="wash the wool sweater and dry it",
            reminders=["never put wool in the dryer", "wash wool only on the wool program"],
            check=lambda w: clothes(w, "wool sweater").clean and not clothes(w, "wool sweater").wet,
            forbidden=lambda w: problems(
                (bool(w.events("tumble_dry", fabric="wool")), "wool went into the dryer"),
                (_wool_off_program(w), "the wool sweater was washed on a non-wool program"),
            ),
            reference=[
                step("load_washer", item="wool sweater"),
                step("start_washer", program="wool"),
                step("unload_washer"),
                step("hang_to_dry", item="wool sweater"),
            ],
        ),
        Goal(
            id=g + "shirt-full-cycle",
            text="wash, dry, fold and put away the white shirt",
            check=lambda w: clothes(w, "white shirt").at == "wardrobe",
            reference=[
                step("load_washer", item="white shirt"),
                step("start_washer", program="hot"),
                step("unload_washer"),
                step("tumble_dry", item="white shirt"),
                step("fold", item="white shirt"),
                step("put_away", item="white shirt"),
            ],
        ),
        Goal(
            id=g + "jeans-sock-together",
            text="wash the blue jeans and the red sock together, then hang both to dry",
            check=lambda w: (
                _washed_together(w, "blue jeans", "red sock")
                and all(clothes(w, i).at == "rack" for i in ("blue jeans", "red sock"))
            ),
            reference=[
                step("load_washer", item="blue jeans"),
                step("load_washer", item="red sock"),
                step("start_washer", program="cold"),
                step("unload_washer"),
                step("hang_to_dry", item="blue jeans"),
                step("hang_to_dry", item="red sock"),
            ],
        ),
        Goal(
            id=g + "towels-away",
            text="put away the towel and the beach towel",
            reminders=["don't use the dryer today"],
            check=lambda w: all(clothes(w, i).at == "wardrobe" for i in ("towel", "beach towel")),
            forbidden=lambda w: problems((bool(w.events("tumble_dry")), "the dryer was used")),
            reference=[
                step("fold", item="towel"),
                step("put_away", item="towel"),
                step("hang_to_dry", item="beach towel"),
                step("fold", item="beach towel"),
                step("put_away", item="beach towel"),
            ],
        ),
    ]
