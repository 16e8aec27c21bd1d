"""Calendar and mail assistant (dev): one working week of meetings, an inbox, and contacts.

Times are ``HH:MM`` on a working day from 09:00 to 18:00; a new event may not overlap another
one. Mail goes to a contact by name (alice, bob, carol, team) or by address.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from trellis import Skill, SkillContext, skill

from ._common import AppWorld, Call, Goal, problems, step, world_of

Day = Literal["monday", "tuesday", "wednesday", "thursday", "friday"]
DAY_START, DAY_END = 9 * 60, 18 * 60
CONTACTS = {
    "alice": "alice@example.com",
    "bob": "bob@example.com",
    "carol": "carol@example.com",
    "team": "team@example.com",
}


def minutes(hhmm: str) -> int:
    """``"14:30"`` as minutes after midnight; a ValueError shows the expected form."""
    found = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", hhmm.strip())
    if not found:
        raise ValueError(f"{hhmm!r} is not a time; write it like '14:30'")
    return int(found[1]) * 60 + int(found[2])


def hhmm(value: int) -> str:
    return f"{value // 60:02d}:{value % 60:02d}"


@dataclass
class Event:
    """One calendar entry."""

    title: str
    day: str
    start: int
    duration_min: int
    attendees: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.duration_min

    def view(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "day": self.day,
            "start": hhmm(self.start),
            "end": hhmm(self.end),
            "attendees": self.attendees,
        }


@dataclass
class Mail:
    """One mail, received or sent."""

    sender: str
    to: str
    subject: str
    body: str


class Assistant(AppWorld):
    """The calendar, the inbox, the archive and the sent mail."""

    name = "assistant"
    split = "dev"

    def __init__(self) -> None:
        super().__init__()
        self.calendar: list[Event] = [
            Event("Standup", day, 9 * 60, 30, ["team"])
            for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
        ]
        self.calendar += [
            Event("Lunch with Bob", "monday", 13 * 60, 60, ["bob"]),
            Event("Design review", "tuesday", 10 * 60, 120, ["alice", "carol"]),
            Event("Lunch", "tuesday", 12 * 60, 60),
            Event("Sales sync", "thursday", 14 * 60, 60, ["bob"]),
            Event("1:1 with Carol", "friday", 14 * 60, 30, ["carol"]),
            Event("Demo prep", "friday", 16 * 60, 60, ["team"]),
        ]
        me = "me@example.com"
        self.inbox: list[Mail] = [
            Mail(
                "alice",
                me,
                "Quarterly report",
                "Here is the quarterly report. Could you share it with the team?",
            ),
            Mail("bob", me, "Lunch on Friday?", "Are you free for lunch on Friday at 12:30?"),
            Mail(
                "deals@shop.example", me, "Weekly deals", "This week only: 20% off garden chairs."
            ),
        ]
        self.archive: list[Mail] = []
        self.sent: list[Mail] = []

    def snapshot(self) -> dict[str, Any]:
        return {
            "calendar": [e.view() for e in self.calendar],
            "inbox": [asdict(m) for m in self.inbox],
            "archive": [asdict(m) for m in self.archive],
            "sent": [asdict(m) for m in self.sent],
        }

    def on(self, day: str) -> list[Event]:
        """The events of ``day``, by start time."""
        return sorted((e for e in self.calendar if e.day == day), key=lambda e: e.start)

    def find(self, title: str, day: str | None = None) -> list[Event]:
        """Events whose title is ``title`` (any case), on ``day`` if given."""
        return [
            e
            for e in self.calendar
            if e.title.lower() == title.strip().lower() and (day is None or e.day == day)
        ]

    def mails_to(self, who: str, about: str = "") -> list[int]:
        """Log indices of mails sent to ``who`` whose subject or body mentions ``about``."""
        return [
            i
            for i in self.events("send_mail", to=who)
            if about.lower() in self.log[i][1]["text"].lower()
        ]

    @classmethod
    def skills(cls) -> list[Skill]:
        return [
            list_events,
            find_free_slot,
            create_event,
            cancel_event,
            read_inbox,
            send_mail,
            archive_mail,
        ]

    @classmethod
    def goals(cls) -> list[Goal]:
        return _goals()


@skill(side_effects=False, timeout_s=5)
def list_events(day: Day, ctx: SkillContext) -> list[dict[str, Any]]:
    """List the calendar events of a day with their times and attendees."""
    return [e.view() for e in world_of(ctx, Assistant).on(day)]


@skill(side_effects=False, timeout_s=5)
def find_free_slot(day: Day, duration_min: int, ctx: SkillContext, after: str = "09:00") -> str:
    """Find the earliest free start time (HH:MM) on a day for a meeting of that many minutes,
    at or after a given time."""
    a = world_of(ctx, Assistant)
    start = max(minutes(after), DAY_START)
    for event in a.on(day):
        if event.start >= start + duration_min:
            break
        start = max(start, event.end)
    if start + duration_min > DAY_END:
        raise ValueError(
            f"no free {duration_min} minute slot on {day} after {after}; try another day"
        )
    return hhmm(start)


@skill(timeout_s=5)
def create_event(title: str, day: Day, start: str, duration_min: int, ctx: SkillContext) -> str:
    """Add an event to the calendar at a start time (HH:MM) for a number of minutes."""
    a = world_of(ctx, Assistant)
    begin = minutes(start)
    if not title.strip():
        raise ValueError("the event needs a title")
    if duration_min < 5:
        raise ValueError("an event lasts at least 5 minutes")
    if begin < DAY_START or begin + duration_min > DAY_END:
        raise ValueError("events must fit in the working day, 09:00 to 18:00")
    for other in a.on(day):
        if begin < other.end and other.start < begin + duration_min:
            raise ValueError(
                f"{day} {start} overlaps {other.title!r} ({hhmm(other.start)}-{hhmm(other.end)}); "
                "use find_free_slot to pick a free time"
            )
    a.calendar.append(Event(title.strip(), day, begin, duration_min))
    a.record("create_event", title=title.strip(), day=day, start=begin, duration_min=duration_min)
    return f"created {title.strip()!r} on {day} {hhmm(begin)}-{hhmm(begin + duration_min)}"


@skill(timeout_s=5)
def cancel_event(title: str, day: Day, ctx: SkillContext) -> str:
    """Remove an event, named by its title, from a day of the calendar."""
    a = world_of(ctx, Assistant)
    found = a.find(title, day)
    if not found:
        titles = ", ".join(repr(e.title) for e in a.on(day)) or "nothing"
        raise ValueError(f"no event {title!r} on {day}; that day has: {titles}")
    a.calendar.remove(found[0])
    a.record("cancel_event", title=found[0].title, day=day, start=found[0].start)
    return f"cancelled {found[0].title!r} on {day}"


@skill(side_effects=False, timeout_s=5)
def read_inbox(ctx: SkillContext) -> list[dict[str, Any]]:
    """List the mails in the inbox: sender, subject and text."""
    return [
        {"from": m.sender, "subject": m.subject, "body": m.body}
        for m in world_of(ctx, Assistant).inbox
    ]


@skill(timeout_s=5)
def send_mail(to: str, subject: str, body: str, ctx: SkillContext) -> str:
    """Send a mail to a contact (alice, bob, carol or team) or an email address."""
    a = world_of(ctx, Assistant)
    who = to.strip().lower()
    by_address = {address: name for name, address in CONTACTS.items()}
    who = by_address.get(who, who)
    if who not in CONTACTS:
        raise ValueError(f"unknown contact {to!r}; contacts: {', '.join(CONTACTS)}")
    if not subject.strip() and not body.strip():
        raise ValueError("the mail is empty; give it a subject and a body")
    a.sent.append(Mail("me", who, subject, body))
    a.record("send_mail", to=who, text=f"{subject}\n{body}")
    return f"sent {subject!r} to {who}"


@skill(timeout_s=5)
def archive_mail(subject: str, ctx: SkillContext) -> str:
    """Move the inbox mail with this subject to the archive."""
    a = world_of(ctx, Assistant)
    for mail in a.inbox:
        if mail.subject.lower() == subject.strip().lower():
            a.inbox.remove(mail)
            a.archive.append(mail)
            a.record("archive_mail", subject=mail.subject, sender=mail.sender)
            return f"archived {mail.subject!r}"
    subjects = ", ".join(repr(m.subject) for m in a.inbox) or "nothing"
    raise ValueError(f"no mail {subject!r} in the inbox; it holds: {subjects}")


# --- goals -------------------------------------------------------------------------------


def _event(a: Assistant, title: str, day: str) -> Event | None:
    found = a.find(title, day)
    return found[0] if found else None


def _new_on(a: Assistant, day: str) -> list[dict[str, Any]]:
    return [d for act, d in a.log if act == "create_event" and d["day"] == day]


def _in_inbox(a: Assistant, subject: str) -> bool:
    return any(m.subject == subject for m in a.inbox)


def _archived_before_reply(a: Assistant, subject: str, who: str) -> bool:
    archived, replies = a.first("archive_mail", subject=subject), a.mails_to(who)
    return archived is not None and (not replies or archived < replies[0])


def _mailed_before_created(a: Assistant, who: str, title: str) -> bool:
    mails = a.mails_to(who)
    created = [i for i in a.events("create_event") if a.log[i][1]["title"].lower() == title.lower()]
    return bool(mails) and (not created or mails[0] < created[0])


def _book(title: str, day: str, start: str, minutes: int) -> Call:
    return step("create_event", title=title, day=day, start=start, duration_min=minutes)


def _mail(to: str, subject: str, body: str) -> Call:
    return step("send_mail", to=to, subject=subject, body=body)


def _goals() -> list[Goal]:
    g = "assistant/"
    answered = "archive a mail once you have answered it"
    return [
        Goal(
            id=g + "archive-newsletter",
            text="archive the 'Weekly deals' newsletter",
            check=lambda a: not _in_inbox(a, "Weekly deals"),
            reference=[step("archive_mail", subject="Weekly deals")],
        ),
        Goal(
            id=g + "mail-alice",
            text="mail Alice that the quarterly report looks good",
            check=lambda a: bool(a.mails_to("alice")),
            reference=[_mail("alice", "Quarterly report", "The report looks good.")],
        ),
        Goal(
            id=g + "cancel-review",
            text="cancel Tuesday's design review",
            check=lambda a: _event(a, "Design review", "tuesday") is None,
            reference=[step("cancel_event", title="Design review", day="tuesday")],
        ),
        Goal(
            id=g + "call-bob",
            text="book a 30 minute call with Bob on Wednesday at 15:00",
            check=lambda a: any(
                d["start"] == 15 * 60 and d["duration_min"] == 30 for d in _new_on(a, "wednesday")
            ),
            reference=[_book("Call with Bob", "wednesday", "15:00", 30)],
        ),
        Goal(
            id=g + "planning-monday",
            text="find a free hour on Monday afternoon and book 'Planning' in it",
            check=lambda a: any(
                e.start >= 12 * 60 and e.duration_min >= 60 for e in a.find("Planning", "monday")
            ),
            reference=[
                step("find_free_slot", day="monday", duration_min=60, after="12:00"),
                _book("Planning", "monday", "12:00", 60),
            ],
        ),
        Goal(
            id=g + "gym-wednesday",
            text="book a one hour 'Gym' session on Wednesday",
            reminders=["keep Wednesday mornings free"],
            check=lambda a: any(e.duration_min >= 60 for e in a.find("Gym", "wednesday")),
            forbidden=lambda a: problems(
                (
                    any(d["start"] < 12 * 60 for d in _new_on(a, "wednesday")),
                    "something was booked on Wednesday morning",
                )
            ),
            reference=[
                step("find_free_slot", day="wednesday", duration_min=60, after="12:00"),
                _book("Gym", "wednesday", "12:00", 60),
            ],
        ),
        Goal(
            id=g + "budget-carol",
            text="set up a one hour 'Budget' meeting with Carol on Thursday and invite her by mail",
            reminders=["send an invitation only after the event is in the calendar"],
            check=lambda a: (
                any(e.duration_min >= 60 for e in a.find("Budget", "thursday"))
                and bool(a.mails_to("carol", "budget"))
            ),
            forbidden=lambda a: problems(
                (
                    _mailed_before_created(a, "carol", "Budget"),
                    "Carol was invited before the event existed",
                )
            ),
            reference=[
                step("find_free_slot", day="thursday", duration_min=60),
                _book("Budget", "thursday", "09:30", 60),
                _mail("carol", "Budget meeting", "Thursday 09:30-10:30."),
            ],
        ),
        Goal(
            id=g + "lunch-bob",
            text="say yes to Bob's lunch invitation for Friday at 12:30 and put it in my calendar",
            reminders=[answered],
            check=lambda a: (
                any(d["start"] == 12 * 60 + 30 for d in _new_on(a, "friday"))
                and bool(a.mails_to("bob"))
            ),
            forbidden=lambda a: problems(
                (_in_inbox(a, "Lunch on Friday?"), "Bob's mail was answered but not archived"),
                (_archived_before_reply(a, "Lunch on Friday?", "bob"), "archived before the reply"),
            ),
            reference=[
                _book("Lunch with Bob", "friday", "12:30", 60),
                _mail("bob", "Re: Lunch on Friday?", "Yes, see you at 12:30!"),
                step("archive_mail", subject="Lunch on Friday?"),
            ],
        ),
        Goal(
            id=g + "interview-notes",
            text=(
                "book a 45 minute 'Interview' on Tuesday afternoon and block the 15 minutes "
                "right after it for notes"
            ),
            check=lambda a: any(
                e.start >= 12 * 60
                and e.duration_min == 45
                and any(o.start == e.end and o.duration_min == 15 for o in a.on("tuesday"))
                for e in a.find("Interview", "tuesday")
            ),
            reference=[
                step("find_free_slot", day="tuesday", duration_min=60, after="12:00"),
                _book("Interview", "tuesday", "13:00", 45),
                _book("Interview notes", "tuesday", "13:45", 15),
            ],
        ),
        Goal(
            id=g + "share-report",
            text="share the quarterly report with the team, then archive Alice's mail",
            reminders=["tell Alice whenever you pass her work on"],
            check=lambda a: (
                bool(a.mails_to("team", "report")) and not _in_inbox(a, "Quarterly report")
            ),
            forbidden=lambda a: problems((not a.mails_to("alice"), "Alice was not told")),
            reference=[
                _mail("team", "Quarterly report", "Alice's quarterly report is ready."),
                _mail("alice", "Quarterly report", "I shared your report with the team."),
                step("archive_mail", subject="Quarterly report"),
            ],
        ),
        Goal(
            id=g + "move-review",
            text="move the design review from Tuesday to Wednesday",
            reminders=["tell the team by mail whenever a meeting moves"],
            check=lambda a: (
                _event(a, "Design review", "tuesday") is None
                and any(e.duration_min == 120 for e in a.find("Design review", "wednesday"))
            ),
            forbidden=lambda a: problems(
                (not a.mails_to("team", "review"), "the team was not told that the review moved")
            ),
            reference=[
                step("cancel_event", title="Design review", day="tuesday"),
                step("find_free_slot", day="wednesday", duration_min=120),
                _book("Design review", "wednesday", "09:30", 120),
                _mail("team", "Design review moved", "Now Wednesday 09:30."),
            ],
        ),
        Goal(
            id=g + "clear-friday",
            text="clear my Friday afternoon and let the people in those meetings know",
            check=lambda a: (
                all(e.start < 12 * 60 for e in a.on("friday"))
                and bool(a.mails_to("carol"))
                and bool(a.mails_to("team"))
            ),
            reference=[
                step("list_events", day="friday"),
                step("cancel_event", title="1:1 with Carol", day="friday"),
                step("cancel_event", title="Demo prep", day="friday"),
                _mail("carol", "1:1 cancelled", "Sorry, our Friday 1:1 is off."),
                _mail("team", "Demo prep cancelled", "Friday's demo prep is off."),
            ],
        ),
    ]
