"""Rewrite ``agent/trace_schema.json`` from the trace models: ``python -m trellis.agent.traces._trace_schema``."""

from __future__ import annotations

from trellis.agent.traces._trace import render_schema, schema_path


def main() -> None:
    """Write the schema file next to the trace module."""
    schema_path().write_text(render_schema())


if __name__ == "__main__":
    main()
