"""How ``trellis run`` (and ``resume``, ``approve``, ``reject``, ``record``) builds its agent:
which model backend, which database, which agent settings.

Read, lowest first, from the defaults, a config file (``--config FILE``, TOML or JSON, or
``TRELLIS_RUN_CONFIG``), ``TRELLIS_*`` variables (nested with ``__``, e.g.
``TRELLIS_VLLM__SERVERS='["http://gpu:8000"]'``) and the command's flags::

    backend = "vllm"
    [vllm]
    servers = ["http://gpu-1:8000", "http://gpu-2:8000"]
    base_model = "gemma-3-270m"
    [agent]
    max_replans = 2
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from trellis.adapters import LLMBackend, VLLMConfig
from trellis.agent.runtime import Agent, AgentConfig
from trellis.memory.errors import UsageError

__all__ = ["RunSettings", "build_agent"]


class RunSettings(BaseSettings):
    """The command line's agent set-up (see the module docstring for where it is read)."""

    model_config = SettingsConfigDict(
        env_prefix="TRELLIS_", extra="ignore", frozen=True, env_nested_delimiter="__"
    )

    backend: Literal["embedded", "vllm"] = "embedded"
    """``embedded``: the prepared model in this process; ``vllm``: OpenAI-compatible vLLM
    servers (``vllm``), which hold the adapters."""
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    """The vLLM servers and client settings (with ``backend = "vllm"``)."""
    database_url: str | None = None
    """Trellis database; None: ``trellis.db`` in ``TRELLIS_HOME``."""
    agent: dict[str, Any] = Field(default_factory=dict)
    """``AgentConfig`` fields (``max_steps``, ``max_replans``, ...); flags override them."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    @classmethod
    def load(cls, config_file: Path | str | None = None, **flags: Any) -> RunSettings:
        """Settings from the file (or ``TRELLIS_RUN_CONFIG``), the environment and flags
        (a flag left as None does not override)."""
        path = config_file or os.environ.get("TRELLIS_RUN_CONFIG")
        _FileSource.data = _read(Path(path)) if path else {}
        try:
            return cls(**{key: value for key, value in flags.items() if value is not None})
        except ValidationError as exc:
            raise UsageError(f"invalid run settings: {exc}") from exc
        finally:
            _FileSource.data = {}


class _FileSource(PydanticBaseSettingsSource):
    data: dict[str, Any] = {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _read(path: Path) -> dict[str, Any]:
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.expanduser().read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except OSError as exc:
        raise UsageError(f"cannot read the run config file {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"the run config file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the run config file {path} must hold a table of settings")
    return data


def build_agent(settings: RunSettings, **agent_options: Any) -> Agent:
    """The agent the settings describe; ``agent_options`` (flags) override ``settings.agent``."""
    options = {**settings.agent, "database_url": settings.database_url}
    options.update({key: value for key, value in agent_options.items() if value is not None})
    try:
        config = AgentConfig(**options)
    except ValidationError as exc:
        raise UsageError(f"invalid agent settings: {exc}") from exc
    backend: LLMBackend | None = None
    if settings.backend == "vllm":
        from trellis.adapters import AdapterRegistry, VLLMBackend
        from trellis.memory import TaskStore

        store = TaskStore.open(config.database_url)
        # Adapters the servers lack are loaded at run time from the registry's folders.
        registry = AdapterRegistry(store.engine, migrate=False)
        backend = VLLMBackend(settings.vllm, resolve_adapter_path=registry.path_of)
        return Agent(config=config, backend=backend, store=store)
    return Agent(config=config)
