"""`trellis cues add|list|history` against a real SQLite database."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trellis.agent.cli import app


def test_cues_commands_record_supersede_and_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    runner = CliRunner()
    first = runner.invoke(app, ["cues", "add", "ann", "Never use the blue plates", "--url", url])
    assert first.exit_code == 0, first.output
    assert "[forbid] blue plates (correction, via rules)" in first.output
    runner.invoke(app, ["cues", "add", "ann", "close the fridge afterwards", "--url", url])
    runner.invoke(app, ["cues", "add", "ann", "please use the blue plates", "--url", url])
    listed = runner.invoke(app, ["cues", "list", "ann", "--json", "--url", url])
    assert listed.exit_code == 0, listed.output
    assert sorted(c["polarity"] for c in json.loads(listed.output)) == ["prefer", "require"]
    history = runner.invoke(app, ["cues", "history", "ann", "--url", url])
    assert "Never use the blue plates" in history.output
    empty = runner.invoke(app, ["cues", "add", "ann", "   ", "--url", url])
    assert empty.exit_code == 1 and "the reminder is empty" in empty.output
