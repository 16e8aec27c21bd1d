"""Skills: typed Python callables that the agent may run, and the registry that gates them.

``@skill`` turns a sync or async function into a :class:`Skill`. Its arguments become a
pydantic model (from the signature, or an explicit ``args_model``), so every call is
validated before it runs; the planner sees the :class:`planners.SkillSpec`. Only skills in
a :class:`SkillRegistry` can ever run: a name the model invents is an
:class:`~agent.errors.UnknownSkillError`. :meth:`Skill.invoke` never raises for a failing
skill: errors (raised, timed out, unstorable result, bad arguments) come back as data in a
:class:`SkillOutcome` so that they are recorded on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import queue
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from trellis.agent.errors import (
    SkillFailedError,
    SkillResultNotSerializableError,
    SkillTimeoutError,
    UnknownSkillError,
)
from trellis.memory.errors import TrellisError, UsageError
from trellis.planners import SkillDefinitionError, SkillSpec

__all__ = [
    "Skill",
    "SkillContext",
    "SkillOutcome",
    "SkillRegistry",
    "skill",
    "skills_from_module",
    "to_json_value",
]


@dataclass
class SkillContext:
    """What a skill may ask for by declaring a parameter annotated ``SkillContext``."""

    task_id: str
    """The task this call belongs to."""
    node_id: int | None = None
    """The tree node this call executes."""
    env: Any = None
    """The task's environment object (for environment skill packs), if any."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Application data passed to ``Agent(skill_context=...)``."""
    idempotency_key: str = ""
    """Stable key of this call, ``task:node:attempt``: the same for every run of this attempt
    (also after a crash or a resume), different for a retry or a replanned step. Pass it to
    an outside system (a payment API's idempotency key, a unique column) so the effect
    happens once, and so ``Agent(effect_check=...)`` can later ask whether it did."""
    attempt: int = 0
    """Which attempt of the step this is (1 for the first run of a step)."""


class SkillOutcome(BaseModel):
    """The result of one skill call, success or failure, as stored on the node."""

    model_config = ConfigDict(frozen=True)

    skill: str
    """The skill that was called."""
    ok: bool
    """True when the skill returned a storable value."""
    result: Any = None
    """The JSON value it returned (None on failure)."""
    error_type: str | None = None
    """Trellis error class of the failure (e.g. ``SkillTimeoutError``)."""
    error: str | None = None
    """Message naming the problem and the fix."""
    duration_s: float = 0.0
    """Wall-clock seconds the call took."""

    def error_record(self) -> dict[str, Any]:
        """The error as stored on a failed node."""
        return {"type": self.error_type, "message": self.error, "skill": self.skill}


class SkillRun:
    """One sync skill call on a worker thread: ``join`` waits for it, ``is_alive`` says
    whether it still runs (the handle of a call that timed out; it may still act)."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.target = target
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def _run(self) -> None:
        try:
            self.target()
        finally:
            self._done.set()


class _Worker:
    """A daemon thread that runs one call at a time and then waits for the next: starting a
    thread per call cost a context switch on every step. A worker serves the next call only
    after its call returned, so a call that timed out never delays another."""

    _idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[SkillRun] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="trellis-skill", daemon=True).start()

    def _serve(self) -> None:
        while True:
            run = self._jobs.get()
            run._run()
            _Worker._idle.put(self)

    @classmethod
    def start(cls, target: Callable[[], None]) -> SkillRun:
        try:
            worker = cls._idle.get_nowait()
        except queue.Empty:
            worker = cls()
        run = SkillRun(target)
        worker._jobs.put(run)
        return run


_LINGERING: dict[str, SkillRun] = {}
_LINGERING_LOCK = threading.Lock()


def lingering_thread(idempotency_key: str) -> SkillRun | None:
    """The run of the call with this key if it timed out while still running (a sync
    function cannot be stopped); forgotten once asked for."""
    with _LINGERING_LOCK:
        return _LINGERING.pop(idempotency_key, None)


def to_json_value(value: Any, *, what: str) -> Any:
    """``value`` as plain JSON data; raises ``TypeError``/``ValueError`` naming what fails."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    # Round trip: rejects sets, objects, NaN/inf, non-string keys the same way storage would.
    text = json.dumps(value, allow_nan=False, default=_refuse)
    del what
    return json.loads(text)


def _refuse(value: Any) -> Any:
    raise TypeError(f"object of type {type(value).__name__} is not JSON data")


class Skill:
    """A registered-able skill: the callable plus its :class:`SkillSpec`."""

    def __init__(
        self,
        function: Callable[..., Any],
        spec: SkillSpec,
        *,
        context_param: str | None,
        model_param: str | None,
    ) -> None:
        self.function = function
        self.spec = spec
        self._context_param = context_param
        self._model_param = model_param
        self._is_async = inspect.iscoroutinefunction(function)

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Skill({self.spec.signature()!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (unit tests, reuse in plain code)."""
        return self.function(*args, **kwargs)

    def _kwargs(self, model: BaseModel, context: SkillContext) -> dict[str, Any]:
        if self._model_param is not None:
            kwargs: dict[str, Any] = {self._model_param: model}
        else:
            kwargs = {name: getattr(model, name) for name in type(model).model_fields}
        if self._context_param is not None:
            kwargs[self._context_param] = context
        return kwargs

    async def invoke(self, args: Mapping[str, Any] | None, context: SkillContext) -> SkillOutcome:
        """Validate ``args``, run with the timeout, check the result; failures come back as data."""
        started = time.perf_counter()

        def failed(error: TrellisError) -> SkillOutcome:
            return self._failed(error, started)

        try:
            model = self.spec.validate_args(args)
        except TrellisError as exc:
            return failed(exc)
        kwargs = self._kwargs(model, context)
        try:
            if self._is_async:
                value = await asyncio.wait_for(self.function(**kwargs), self.spec.timeout_s)
            else:
                value = await _run_in_daemon_thread(self.function, kwargs, self.spec.timeout_s)
        except TimeoutError:
            return failed(SkillTimeoutError(self.name, self.spec.timeout_s))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failed(SkillFailedError(self.name, type(exc).__name__, str(exc) or repr(exc)))
        return self._checked(value, started)

    def invoke_sync(self, args: Mapping[str, Any] | None, context: SkillContext) -> SkillOutcome:
        """Blocking :meth:`invoke`. A sync skill runs on a worker thread of its own while it
        runs, joined with the timeout, without a trip through an event loop (the loop's
        per-step path). A call still running after its timeout is kept for
        :func:`lingering_thread`."""
        outcome, thread = self.call_sync(args, context)
        if thread is not None and context.idempotency_key:
            with _LINGERING_LOCK:
                _LINGERING[context.idempotency_key] = thread
        return outcome

    def call_sync(
        self, args: Mapping[str, Any] | None, context: SkillContext
    ) -> tuple[SkillOutcome, SkillRun | None]:
        """:meth:`invoke_sync`, and the skill's thread when it is still running: a sync
        function cannot be stopped, so one that timed out goes on (and may still act). An
        async skill that times out is cancelled (``asyncio.wait_for``) and never goes on."""
        if self._is_async:
            from trellis.memory import run_sync

            return run_sync(self.invoke(args, context)), None
        started = time.perf_counter()
        try:
            model = self.spec.validate_args(args)
        except TrellisError as exc:
            return self._failed(exc, started), None
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self.function(**self._kwargs(model, context))
            except BaseException as exc:
                box["error"] = exc

        run = _Worker.start(target)
        run.join(self.spec.timeout_s)
        if run.is_alive():
            return self._failed(SkillTimeoutError(self.name, self.spec.timeout_s), started), run
        if "error" in box:
            raised: BaseException = box["error"]
            if not isinstance(raised, Exception):
                raise raised
            detail = str(raised) or repr(raised)
            kind = type(raised).__name__
            return self._failed(SkillFailedError(self.name, kind, detail), started), None
        return self._checked(box.get("value"), started), None

    def _failed(self, error: TrellisError, started: float) -> SkillOutcome:
        return SkillOutcome(
            skill=self.name,
            ok=False,
            error_type=type(error).__name__,
            error=str(error),
            duration_s=time.perf_counter() - started,
        )

    def _checked(self, value: Any, started: float) -> SkillOutcome:
        try:
            result = to_json_value(value, what=f"result of {self.name}")
        except (TypeError, ValueError) as exc:
            return self._failed(SkillResultNotSerializableError(self.name, str(exc)), started)
        return SkillOutcome(
            skill=self.name, ok=True, result=result, duration_s=time.perf_counter() - started
        )


async def _run_in_daemon_thread(
    function: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float
) -> Any:
    # A daemon thread rather than the loop's executor: a hung sync skill cannot be killed,
    # and an executor thread would also block interpreter exit.
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, payload: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(payload)
        else:
            future.set_exception(payload)

    def target() -> None:
        try:
            value = function(**kwargs)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        # A call that outlived its timeout may find its loop gone: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    thread = threading.Thread(target=target, name=f"skill-{function.__name__}", daemon=True)
    thread.start()
    return await asyncio.wait_for(future, timeout_s)


def _build_skill(
    function: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    args_model: type[BaseModel] | None,
    side_effects: bool,
    needs_approval: bool,
    timeout_s: float,
    examples: Iterable[Mapping[str, Any]],
) -> Skill:
    if not callable(function):
        raise SkillDefinitionError(f"@skill needs a function, got {function!r}")
    skill_name: str = name or str(getattr(function, "__name__", ""))
    text = description or inspect.getdoc(function) or ""
    summary = text.strip().split("\n\n")[0].replace("\n", " ").strip()
    try:
        # Only the parameters matter: a return annotation naming a local class must not fail.
        target = function.__func__ if inspect.ismethod(function) else function
        params_only = types.SimpleNamespace(
            __annotations__={
                k: v for k, v in getattr(target, "__annotations__", {}).items() if k != "return"
            },
            __module__=getattr(target, "__module__", None),
        )
        hints = get_type_hints(params_only, globalns=getattr(target, "__globals__", None))
    except Exception as exc:
        raise SkillDefinitionError(
            f"skill {skill_name!r}: cannot resolve its type hints ({exc}); import the annotated "
            "types at module level"
        ) from exc
    signature = inspect.signature(function)
    context_param: str | None = None
    model_param: str | None = None
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SkillDefinitionError(
                f"skill {skill_name!r}: *args/**kwargs cannot be described to a model; "
                "declare each argument with a type"
            )
        annotation = hints.get(param.name, inspect.Parameter.empty)
        if annotation is SkillContext:
            context_param = param.name
            continue
        if annotation is inspect.Parameter.empty:
            raise SkillDefinitionError(
                f"skill {skill_name!r}: argument {param.name!r} has no type annotation; every "
                "skill argument needs one so that calls can be validated"
            )
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if args_model is not None and annotation is not args_model:
                raise SkillDefinitionError(
                    f"skill {skill_name!r}: argument {param.name!r} is a {annotation.__name__} "
                    f"but args_model is {args_model.__name__}"
                )
            model_param = param.name
            args_model = annotation
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default=default))
    if model_param is not None and fields:
        raise SkillDefinitionError(
            f"skill {skill_name!r}: take either one pydantic model argument or plain typed "
            "arguments, not both"
        )
    if args_model is None:
        model_name = "".join(part.title() for part in skill_name.split("_")) + "Args"
        args_model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    elif model_param is None and fields:
        missing = sorted(set(fields) - set(args_model.model_fields))
        if missing:
            raise SkillDefinitionError(
                f"skill {skill_name!r}: arguments {missing} are not fields of {args_model.__name__}"
            )
    spec = SkillSpec(
        name=skill_name,
        description=summary,
        args_model=args_model,
        side_effects=side_effects,
        needs_approval=needs_approval,
        timeout_s=timeout_s,
        examples=tuple(examples),
    )
    return Skill(function, spec, context_param=context_param, model_param=model_param)


@overload
def skill(function: Callable[..., Any], /) -> Skill: ...


@overload
def skill(
    *,
    name: str | None = None,
    description: str | None = None,
    args_model: type[BaseModel] | None = None,
    side_effects: bool = True,
    needs_approval: bool = False,
    timeout_s: float = 60.0,
    examples: Iterable[Mapping[str, Any]] = (),
) -> Callable[[Callable[..., Any]], Skill]: ...


def skill(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    args_model: type[BaseModel] | None = None,
    side_effects: bool = True,
    needs_approval: bool = False,
    timeout_s: float = 60.0,
    examples: Iterable[Mapping[str, Any]] = (),
) -> Skill | Callable[[Callable[..., Any]], Skill]:
    """Declare a skill. Use bare (``@skill``) or with options::

        @skill(side_effects=False, timeout_s=5)
        def look(room: str) -> dict:
            \"\"\"Describe what is visible in a room.\"\"\"

    ``side_effects`` (default True: assume the call changes the world) enables the
    exactly-once record; ``needs_approval`` makes every call wait for a human.
    A parameter annotated :class:`SkillContext` receives the task context and is not an
    argument the model fills in.
    """

    def decorate(target: Callable[..., Any]) -> Skill:
        return _build_skill(
            target,
            name=name,
            description=description,
            args_model=args_model,
            side_effects=side_effects,
            needs_approval=needs_approval,
            timeout_s=timeout_s,
            examples=examples,
        )

    if function is not None:
        return decorate(function)
    return decorate


SkillLike = Skill | Callable[..., Any]


class SkillRegistry:
    """The skills an agent may run. Nothing outside the registry is ever called."""

    def __init__(self, skills: Iterable[SkillLike] = ()) -> None:
        self._skills: dict[str, Skill] = {}
        for item in skills:
            self.register(item)

    def register(self, item: SkillLike, *, replace: bool = False) -> Skill:
        """Add a skill (a plain function is wrapped with default ``@skill`` options)."""
        registered = item if isinstance(item, Skill) else skill(item)
        if registered.name in self._skills and not replace:
            raise SkillDefinitionError(
                f"a skill named {registered.name!r} is already registered; pass replace=True "
                "or give it another name"
            )
        self._skills[registered.name] = registered
        return registered

    def extend(self, items: Iterable[SkillLike]) -> None:
        """Register several skills (a skill pack)."""
        for item in items:
            self.register(item)

    def get(self, name: str) -> Skill:
        """The skill called ``name``; :class:`UnknownSkillError` lists the registered ones."""
        if not isinstance(name, str):
            raise UsageError(f"skill names are strings, got {type(name).__name__}")
        found = self._skills.get(name)
        if found is None:
            raise UnknownSkillError(name, list(self._skills))
        return found

    def specs(self) -> list[SkillSpec]:
        """The catalogue the planner sees, in registration order."""
        return [s.spec for s in self._skills.values()]

    def names(self) -> list[str]:
        return list(self._skills)

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def skills_from_module(module_name: str) -> list[Skill]:
    """Every :class:`Skill` defined in an importable module, named by its dotted name.

    The name is checked before anything is imported: a dotted Python module name such as
    ``myapp.skills``, never a path; the module must define at least one ``@skill``.
    """
    import importlib

    if not _MODULE_NAME.match(module_name):
        raise UsageError(
            f"{module_name[:200]!r} is not a module name: give a dotted Python module such as "
            "myapp.skills"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    found = [value for value in vars(module).values() if isinstance(value, Skill)]
    if not found:
        raise UsageError(f"module {module_name!r} defines no @skill functions")
    return found
