"""`trellis adapters ...` against a real SQLite database and real adapter folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from test_registry import write_adapter
from typer.testing import CliRunner

from trellis.adapters._cli import register

app = typer.Typer()
register(app)
runner = CliRunner()


def test_add_list_show_remove(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    root = tmp_path / "adapters"
    folder = write_adapter(root / "kitchen", rank=4)
    added = runner.invoke(
        app,
        [
            "adapters", "add", "kitchen", str(folder), "--root", str(root),
            "-d", "puts dishes away", "-e", "put the plate in the cupboard",
            "-e", "stack the bowls", "-t", "household", "--db", db,
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "registered" in added.output

    listed = runner.invoke(app, ["adapters", "list", "--json", "--db", db])
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)
    assert [r["name"] for r in records] == ["kitchen"]
    assert records[0]["examples"] == ["put the plate in the cupboard", "stack the bowls"]
    assert records[0]["rank"] == 4

    shown = runner.invoke(app, ["adapters", "show", "kitchen", "--json", "--db", db])
    assert json.loads(shown.output)["description"] == "puts dishes away"

    removed = runner.invoke(app, ["adapters", "remove", "kitchen", "--db", db])
    assert removed.exit_code == 0
    assert json.loads(runner.invoke(app, ["adapters", "list", "--json", "--db", db]).output) == []


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    outside = write_adapter(tmp_path / "elsewhere")
    result = runner.invoke(
        app,
        ["adapters", "add", "x", str(outside), "--root", str(tmp_path / "adapters"),
         "-d", "desc", "-e", "example", "--db", db],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "outside the allowed adapter roots" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["adapters", "show", "nope", "--db", db])
    assert missing.exit_code == 1 and "unknown adapter 'nope'" in missing.output
