"""The ``trellis`` command line. Each package contributes its commands through ``register``."""

from __future__ import annotations

import importlib

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
        raise SystemExit(2 if isinstance(exc, UsageError) else 1) from None
