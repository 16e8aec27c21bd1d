"""An app's own skills behind the service: ``trellis serve --skills MODULE`` runs them with
the LLM planner and the real embedded model, over real HTTP on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_service_http import ANN, _reset, client, start_server, stop_server, wait_state

from trellis.agent.service._cli import _settings
from trellis.agent.service._profiles import get_profile, skills_profile

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MODULE = "examples.kitchen_robot"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server subprocess gets the checkout on PYTHONPATH; this process needs it too.
    monkeypatch.syspath_prepend(str(ROOT))


def test_a_skills_profile_names_the_module_and_its_skills() -> None:
    profile = skills_profile(MODULE)
    assert profile.name == MODULE
    assert all(name in profile.description for name in ("go_to", "pick_up", "put_down", "wash"))
    tokens = {ANN: "ann"}
    settings = _settings(None, [MODULE], database_url="sqlite://", tokens=tokens)
    assert settings.default_profile == MODULE and MODULE in settings.profiles
    assert get_profile(MODULE, settings).name == MODULE


def test_a_bad_skills_module_stops_the_service_at_start_up() -> None:
    import typer

    for bad in ("../etc/passwd", "no_such_module_here", "json"):
        with pytest.raises(typer.Exit):
            _settings(None, [bad], database_url="sqlite://", tokens={ANN: "ann"})


def test_the_service_runs_an_apps_skills_with_the_real_model(
    postgres_database_url: str, tmp_path: Path
) -> None:
    _reset(postgres_database_url)
    (tmp_path / "adapters").mkdir()
    process, base = start_server(
        postgres_database_url, tmp_path, workers=1, args=("--skills", MODULE)
    )
    try:
        with client(base, ANN) as ann:
            listed = ann.get("/v1/profiles")
            if listed.status_code == 200:
                assert MODULE in str(listed.json())
            created = ann.post("/v1/tasks", json={"goal": "put the mug in the dishwasher"})
            assert created.status_code == 201, created.text
            task = wait_state(ann, created.json()["id"], {"done", "failed"}, timeout=900)
            tree = ann.get(f"/v1/tasks/{task['id']}/tree").json()
    finally:
        stop_server(process)
    # The model planned over the module's skills: every planned step names one of them.
    skills = {(n.get("input") or {}).get("skill") for n in tree["nodes"][1:]} - {None}
    assert skills and skills <= {"go_to", "pick_up", "put_down", "wash"}, tree["nodes"]
    assert task["result"]["outcome"] in ("success", "failed", "budget_exhausted")
