"""``trellis run`` settings: backend, servers and agent options from a file, the environment
and flags, in that order of precedence; bad input names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from trellis.adapters import VLLMBackend
from trellis.agent._cli import _agent
from trellis.agent._run_config import RunSettings, build_agent
from trellis.memory.errors import UsageError


def test_a_toml_file_picks_the_vllm_backend_and_its_servers(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'backend = "vllm"\n[vllm]\nservers = ["http://gpu-1:8000", "http://gpu-2:8000"]\n'
        'base_model = "gemma-3-270m"\n[agent]\nmax_replans = 1\n'
    )
    settings = RunSettings.load(config, database_url=f"sqlite:///{tmp_path}/t.db")
    agent = build_agent(settings)
    try:
        assert isinstance(agent.deps.backend, VLLMBackend)
        assert agent.deps.backend.config.servers == ["http://gpu-1:8000", "http://gpu-2:8000"]
        assert agent.config.max_replans == 1
    finally:
        agent.close()


def test_flags_override_the_environment_which_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "run.json"
    config.write_text('{"backend": "vllm", "vllm": {"servers": ["http://file:8000"]}}')
    monkeypatch.setenv("TRELLIS_VLLM__SERVERS", '["http://env:8000"]')
    assert RunSettings.load(config).vllm.servers == ["http://env:8000"]
    assert RunSettings.load(config, backend="embedded").backend == "embedded"
    agent = _agent(
        f"sqlite:///{tmp_path}/t.db",
        None,
        backend="vllm",
        servers=["http://flag:8000"],
        config_file=config,
    )
    try:
        assert agent.deps.backend.config.servers == ["http://flag:8000"]
    finally:
        agent.close()


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "run.toml"
    broken.write_text("backend = \n")
    with pytest.raises(UsageError, match="not valid TOML"):
        RunSettings.load(broken)
    with pytest.raises(UsageError, match="cannot read"):
        RunSettings.load(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="backend"):
        RunSettings.load(None, backend="openai")
    with pytest.raises(UsageError, match="max_steps"):
        build_agent(RunSettings.load(None), max_steps=0)
    with pytest.raises(typer.BadParameter, match="--backend vllm"):
        _agent(f"sqlite:///{tmp_path}/t.db", None, servers=["http://x:8000"])
