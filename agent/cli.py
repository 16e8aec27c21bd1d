"""The ``trellis`` command line. Each package contributes its commands through ``register``."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="trellis",
    help="Trellis: agentic task planning with a durable Task Memory Tree and adapter-routed LLMs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Modules that add commands to `app`; each defines `register(app: typer.Typer) -> None`.
_COMMAND_MODULES = (
    "trellis.memory._cli",
    "trellis.adapters._cli",
    "trellis.planners._cli",
    "trellis.agent._cli",
    "trellis.agent.service._cli",
    "trellis.agent.traces._trace_cli",
    "trellis.agent._data_cli",
)


def _register_all() -> None:
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point: a Trellis error prints its message (it names the fix)
    instead of a traceback; a usage error exits 2, a run-time failure 1."""
    from rich.console import Console

    from trellis.memory.errors import TrellisError, UsageError

    try:
        app()
    except TrellisError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False)
        _leave(2 if isinstance(exc, UsageError) else 1)
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: int | str | None) -> None:
    """End the process once the command is over, without the interpreter's teardown.

    By then every durable write is committed and every resource the command opened is
    closed (atexit handlers still run: child processes such as a game engine are stopped).
    What the teardown would add is freeing the model and the tokenizers object by object:
    about 2 s after every command that loaded them. When a thread the command started is
    still running, the normal exit waits for it as usual.
    """
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        status = 1
    os._exit(status)
