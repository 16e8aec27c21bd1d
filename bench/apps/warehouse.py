"""Warehouse picker (train): a robot with a cart picks order lines from shelves, packs and ships.

The robot starts at shelf A with a screwdriver left in its cart from the last shift. Orders are
packed at the packing station from what is in the cart, then shipped by post or courier.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from trellis import Skill, SkillContext, skill

from ._common import AppWorld, Goal, problems, step, world_of

Location = Literal["shelf A", "shelf B", "shelf C", "packing station"]
Carrier = Literal["post", "courier"]
CART_CAPACITY = 10


@dataclass
class Order:
    """One customer order."""

    lines: dict[str, int]
    express: bool = False
    status: str = "open"
    carrier: str | None = None
    contents: dict[str, int] = field(default_factory=dict)


class Warehouse(AppWorld):
    """Stock per shelf, the robot's place and cart, and the orders."""

    name = "warehouse"
    split = "train"

    def __init__(self) -> None:
        super().__init__()
        self.robot_at: str = "shelf A"
        self.shelves: dict[str, Counter[str]] = {
            "shelf A": Counter({"bolt": 5, "nail": 20}),
            "shelf B": Counter({"hammer": 2, "wrench": 1, "screwdriver": 4}),
            "shelf C": Counter({"drill": 1, "saw": 2, "tape": 6}),
        }
        self.cart: Counter[str] = Counter({"screwdriver": 1})
        self.orders: dict[str, Order] = {
            "101": Order({"bolt": 2}),
            "102": Order({"hammer": 1, "nail": 3}),
            "103": Order({"drill": 1}, express=True),
            "104": Order({"wrench": 1}),
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "robot_at": self.robot_at,
            "cart": dict(self.cart),
            "shelves": {shelf: dict(stock) for shelf, stock in self.shelves.items()},
            "orders": {
                oid: {
                    "lines": o.lines,
                    "express": o.express,
                    "status": o.status,
                    "carrier": o.carrier,
                }
                for oid, o in self.orders.items()
            },
        }

    def shelf_of(self, item: str) -> str:
        """The shelf that stocks ``item``; a ValueError lists what the warehouse stocks."""
        for shelf, stock in self.shelves.items():
            if item in stock:
                return shelf
        known = sorted(i for stock in self.shelves.values() for i in stock)
        raise ValueError(f"the warehouse does not stock {item!r}; it stocks: {', '.join(known)}")

    def order(self, order_id: str) -> Order:
        if order_id not in self.orders:
            raise ValueError(f"there is no order {order_id!r}; orders: {', '.join(self.orders)}")
        return self.orders[order_id]

    def at_packing(self) -> None:
        if self.robot_at != "packing station":
            raise ValueError("packing and shipping happen at the packing station; move_to it first")

    @classmethod
    def skills(cls) -> list[Skill]:
        return [look, move_to, pick, put_back, pack, ship]

    @classmethod
    def goals(cls) -> list[Goal]:
        return _goals()


@skill(side_effects=False, timeout_s=5)
def look(ctx: SkillContext) -> dict[str, Any]:
    """Show where the robot is, what is in the cart, the stock of every shelf and every order."""
    return world_of(ctx, Warehouse).snapshot()


@skill(timeout_s=5)
def move_to(location: Location, ctx: SkillContext) -> str:
    """Drive the robot and its cart to shelf A, shelf B, shelf C or the packing station."""
    w = world_of(ctx, Warehouse)
    w.robot_at = location
    w.record("move_to", location=location)
    return f"the robot is at {location}"


@skill(timeout_s=5)
def pick(item: str, ctx: SkillContext, quantity: int = 1) -> str:
    """Take a quantity of an item from the shelf the robot is at into the cart."""
    w = world_of(ctx, Warehouse)
    shelf = w.shelf_of(item)
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    if w.robot_at != shelf:
        raise ValueError(f"the {item} is on {shelf}, not at {w.robot_at}; move_to {shelf} first")
    if w.shelves[shelf][item] < quantity:
        raise ValueError(f"{shelf} has only {w.shelves[shelf][item]} {item} left")
    if w.cart.total() + quantity > CART_CAPACITY:
        raise ValueError(f"the cart holds at most {CART_CAPACITY} things; it has {w.cart.total()}")
    w.shelves[shelf][item] -= quantity
    w.cart[item] += quantity
    w.record("pick", item=item, quantity=quantity)
    return f"the cart holds {dict(w.cart)}"


@skill(timeout_s=5)
def put_back(item: str, ctx: SkillContext, quantity: int = 1) -> str:
    """Return a quantity of an item from the cart to its own shelf (be at that shelf)."""
    w = world_of(ctx, Warehouse)
    shelf = w.shelf_of(item)
    if w.cart[item] < quantity or quantity < 1:
        raise ValueError(f"the cart has {w.cart[item]} {item}; cannot put back {quantity}")
    if w.robot_at != shelf:
        raise ValueError(f"the {item} belongs on {shelf}; move_to {shelf} first")
    w.cart[item] -= quantity
    w.cart += Counter()  # drop items with a zero count
    w.shelves[shelf][item] += quantity
    w.record("put_back", item=item, quantity=quantity)
    return f"the cart holds {dict(w.cart)}"


@skill(timeout_s=5)
def pack(order_id: str, ctx: SkillContext) -> str:
    """Pack an order's items from the cart into a box (at the packing station)."""
    w = world_of(ctx, Warehouse)
    order = w.order(order_id)
    w.at_packing()
    if order.status != "open":
        raise ValueError(f"order {order_id} is already {order.status}")
    for item, count in order.lines.items():
        if w.cart[item] < count:
            missing = count - w.cart[item]
            raise ValueError(
                f"the cart is missing {missing} {item} for order {order_id}; "
                f"pick it from {w.shelf_of(item)} first"
            )
    w.cart -= Counter(order.lines)
    order.status, order.contents = "packed", dict(order.lines)
    w.record("pack", order_id=order_id)
    return f"order {order_id} is packed"


@skill(timeout_s=5)
def ship(order_id: str, carrier: Carrier, ctx: SkillContext) -> str:
    """Label a packed order for the post or a courier and send it to the loading dock."""
    w = world_of(ctx, Warehouse)
    order = w.order(order_id)
    w.at_packing()
    if order.status == "open":
        raise ValueError(f"order {order_id} is not packed yet; pack it first")
    if order.status == "shipped":
        raise ValueError(f"order {order_id} has already shipped")
    order.status, order.carrier = "shipped", carrier
    w.record("ship", order_id=order_id, carrier=carrier)
    return f"order {order_id} shipped by {carrier}"


# --- goals -------------------------------------------------------------------------------


def _status(w: Warehouse, order_id: str) -> str:
    return w.orders[order_id].status


def _courier_for_standard(w: Warehouse) -> bool:
    return any(o.carrier == "courier" and not o.express for o in w.orders.values())


def _shipped_before(w: Warehouse, first: str, then: str) -> bool:
    one, other = w.first("ship", order_id=first), w.first("ship", order_id=then)
    return one is not None and (other is None or one < other)


def _goals() -> list[Goal]:
    g = "warehouse/"
    standard_post = "only express orders go by courier"
    return [
        Goal(
            id=g + "pick-bolts",
            text="pick 2 bolts",
            check=lambda w: w.cart["bolt"] >= 2,
            reference=[step("pick", item="bolt", quantity=2)],
        ),
        Goal(
            id=g + "get-hammer",
            text="get a hammer from shelf B",
            check=lambda w: w.cart["hammer"] >= 1,
            reference=[
                step("move_to", location="shelf B"),
                step("pick", item="hammer", quantity=1),
            ],
        ),
        Goal(
            id=g + "return-screwdriver",
            text="put the screwdriver from the cart back on its shelf",
            check=lambda w: w.cart["screwdriver"] == 0 and w.shelves["shelf B"]["screwdriver"] == 5,
            reference=[
                step("move_to", location="shelf B"),
                step("put_back", item="screwdriver", quantity=1),
            ],
        ),
        Goal(
            id=g + "pack-101",
            text="pack order 101",
            check=lambda w: _status(w, "101") == "packed",
            reference=[
                step("pick", item="bolt", quantity=2),
                step("move_to", location="packing station"),
                step("pack", order_id="101"),
            ],
        ),
        Goal(
            id=g + "saws-to-packing",
            text="bring 2 saws to the packing station",
            check=lambda w: w.robot_at == "packing station" and w.cart["saw"] >= 2,
            reference=[
                step("move_to", location="shelf C"),
                step("pick", item="saw", quantity=2),
                step("move_to", location="packing station"),
            ],
        ),
        Goal(
            id=g + "ship-101-post",
            text="ship order 101 by post",
            check=lambda w: _status(w, "101") == "shipped" and w.orders["101"].carrier == "post",
            reference=[
                step("pick", item="bolt", quantity=2),
                step("move_to", location="packing station"),
                step("pack", order_id="101"),
                step("ship", order_id="101", carrier="post"),
            ],
        ),
        Goal(
            id=g + "pack-102",
            text="pack order 102",
            check=lambda w: _status(w, "102") == "packed",
            reference=[
                step("pick", item="nail", quantity=3),
                step("move_to", location="shelf B"),
                step("pick", item="hammer", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="102"),
            ],
        ),
        Goal(
            id=g + "ship-103",
            text="ship order 103",
            reminders=["express orders always go by courier"],
            check=lambda w: _status(w, "103") == "shipped",
            forbidden=lambda w: problems(
                (w.orders["103"].carrier == "post", "express order 103 went by post")
            ),
            reference=[
                step("move_to", location="shelf C"),
                step("pick", item="drill", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="103"),
                step("ship", order_id="103", carrier="courier"),
            ],
        ),
        Goal(
            id=g + "ship-104",
            text="ship order 104",
            reminders=[standard_post],
            check=lambda w: _status(w, "104") == "shipped",
            forbidden=lambda w: problems(
                (_courier_for_standard(w), "a standard order went by courier")
            ),
            reference=[
                step("move_to", location="shelf B"),
                step("pick", item="wrench", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="104"),
                step("ship", order_id="104", carrier="post"),
            ],
        ),
        Goal(
            id=g + "pack-101-104",
            text="pack orders 101 and 104",
            check=lambda w: _status(w, "101") == "packed" and _status(w, "104") == "packed",
            reference=[
                step("pick", item="bolt", quantity=2),
                step("move_to", location="shelf B"),
                step("pick", item="wrench", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="101"),
                step("pack", order_id="104"),
            ],
        ),
        Goal(
            id=g + "ship-102-clean-cart",
            text="ship order 102",
            reminders=[
                "put anything in the cart that no order needs back on its shelf",
                standard_post,
            ],
            check=lambda w: _status(w, "102") == "shipped",
            forbidden=lambda w: problems(
                (w.cart["screwdriver"] > 0, "the screwdriver was left in the cart"),
                (_courier_for_standard(w), "a standard order went by courier"),
            ),
            reference=[
                step("pick", item="nail", quantity=3),
                step("move_to", location="shelf B"),
                step("put_back", item="screwdriver", quantity=1),
                step("pick", item="hammer", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="102"),
                step("ship", order_id="102", carrier="post"),
            ],
        ),
        Goal(
            id=g + "ship-104-then-101",
            text="ship orders 101 and 104 by post",
            reminders=["ship order 104 before order 101"],
            check=lambda w: all(
                _status(w, o) == "shipped" and w.orders[o].carrier == "post" for o in ("101", "104")
            ),
            forbidden=lambda w: problems(
                (_shipped_before(w, "101", "104"), "order 101 shipped before order 104")
            ),
            reference=[
                step("pick", item="bolt", quantity=2),
                step("move_to", location="shelf B"),
                step("pick", item="wrench", quantity=1),
                step("move_to", location="packing station"),
                step("pack", order_id="104"),
                step("ship", order_id="104", carrier="post"),
                step("pack", order_id="101"),
                step("ship", order_id="101", carrier="post"),
            ],
        ),
    ]
