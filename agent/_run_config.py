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

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from trellis.adapters import LLMBackend, VLLMConfig
from trellis.agent.runtime import (
    Agent,
    AgentConfig,
    FileSettingsSource,
    read_settings_file,
)
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


class _FileSource(FileSettingsSource):
    """The run config file's table."""


def _read(path: Path) -> dict[str, Any]:
    return read_settings_file(path, "run config", UsageError)


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
