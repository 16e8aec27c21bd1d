"""Model folder verification (fast: a fake prepared folder, no real model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from trellis.adapters import ModelPreparationError, resolve_model_dir, verify_model
from trellis.adapters._cli import register
from trellis.adapters._model import MANIFEST_NAME, model_problems


def fake_model(folder: Path) -> Path:
    """A folder laid out like `trellis model prepare` output, with a correct manifest."""
    folder.mkdir(parents=True)
    contents = {"config.json": b'{"model_type": "gemma3_text"}', "model.safetensors": b"x" * 4096}
    files = {}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"name": "gemma-3-270m", "digest": "d", "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_intact_folder_verifies(tmp_path: Path) -> None:
    folder = fake_model(tmp_path / "m")
    assert verify_model(folder) and verify_model(folder, full=False)
    assert model_problems(folder) == []
    assert resolve_model_dir(folder) == folder


def test_tampered_file_fails_the_full_check_only(tmp_path: Path) -> None:
    folder = fake_model(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    assert verify_model(folder, full=False)  # sizes still match
    assert not verify_model(folder)
    assert model_problems(folder) == [
        "model.safetensors does not match its recorded SHA-256 (modified or corrupt)"
    ]


def test_missing_truncated_and_unmanifested_folders(tmp_path: Path) -> None:
    folder = fake_model(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "config.json").unlink()
    problems = model_problems(folder, full=False)
    assert "config.json is missing" in problems
    assert any("model.safetensors has 10 bytes" in p for p in problems)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not verify_model(empty)
    (empty / MANIFEST_NAME).write_text("{broken")
    assert "unreadable" in model_problems(empty)[0]
    try:
        resolve_model_dir(empty)
    except ModelPreparationError as exc:
        assert "no config.json" in str(exc)
    else:
        raise AssertionError("a folder without config.json was accepted")


def test_verify_command_names_the_bad_file(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    folder = fake_model(tmp_path / "m")
    runner = CliRunner()
    ok = runner.invoke(app, ["model", "verify", "--path", str(folder)])
    assert ok.exit_code == 0, ok.output
    (folder / "config.json").write_bytes(b'{"model_type": "llama"}')
    bad = runner.invoke(app, ["model", "verify", "--path", str(folder), "--quick"])
    assert bad.exit_code == 1
    assert "config.json has" in bad.output and "prepare --force" in bad.output
