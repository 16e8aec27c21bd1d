"""Settings of ``trellis serve`` / ``trellis worker``: environment variables and a config file.

Every field reads ``TRELLIS_<FIELD>`` (``TRELLIS_TOKENS``, ``TRELLIS_LEASE_S``, ...; lists and
mappings as JSON). A config file (JSON or TOML, given with ``--config`` or
``TRELLIS_SERVICE_CONFIG``) supplies values that environment variables may override;
command-line flags override both. The service refuses to start without at least one token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from trellis.agent.runtime import FileSettingsSource, read_settings_file
from trellis.agent.service._errors import ServiceConfigError

__all__ = ["DemoProfileConfig", "ServiceSettings"]


class DemoProfileConfig(BaseModel):
    """The built-in ``demo`` profile: scripted planner, scripted model, small skills."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    llm_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Seconds the scripted model takes per answer (simulates a model server)."""
    steps: int = Field(default=3, ge=1, le=50)
    """Steps in each demo plan (the last one is the side-effecting ``demo_record``)."""
    step_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Seconds each non-side-effecting ``demo_wait`` step sleeps."""
    effects_dir: Path | None = None
    """Where ``demo_record`` appends its executions (``effects.jsonl``); None: TRELLIS_HOME/demo."""


class ServiceSettings(BaseSettings):
    """How the service runs. Read from ``TRELLIS_*`` variables and an optional config file."""

    model_config = SettingsConfigDict(
        env_prefix="TRELLIS_", extra="ignore", frozen=True, env_nested_delimiter="__"
    )

    database_url: str | None = None
    """Trellis database. PostgreSQL for several processes; None: SQLite in TRELLIS_HOME."""
    tokens: dict[str, str] = Field(default_factory=dict, repr=False)
    """Bearer tokens: a mapping token -> user id (JSON in ``TRELLIS_TOKENS``)."""
    tokens_file: Path | None = None
    """A file of more tokens: JSON ``{token: user}`` or lines ``token user``."""
    admin_users: list[str] = Field(default_factory=list)
    """Users allowed to add and remove adapters (everyone may list them)."""
    host: str = "127.0.0.1"
    """Interface the HTTP server binds to."""
    port: int = Field(default=8321, ge=0, le=65535)
    """TCP port of the HTTP server."""
    workers: int = Field(default=4, ge=0, le=256)
    """Concurrent task loops in this process (0: HTTP only)."""
    lease_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds a claimed task stays leased without a heartbeat; then another worker takes it."""
    heartbeat_s: float | None = Field(default=None, gt=0.0)
    """Seconds between heartbeats; None: a third of ``lease_s``."""
    poll_s: float = Field(default=0.2, gt=0.0, le=60.0)
    """Seconds an idle task loop waits before looking for work again."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Claims of one task (worker deaths) before it is failed as poison."""
    shutdown_grace_s: float = Field(default=20.0, ge=0.0, le=3600.0)
    """On SIGTERM, seconds to let running steps finish before leases are handed back."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest accepted request body; larger ones get 413."""
    max_goal_chars: int = Field(default=2000, ge=1, le=100_000)
    """Longest accepted goal."""
    max_reminders: int = Field(default=20, ge=0, le=1000)
    """Most reminders per task (request and stored ones together)."""
    max_reminder_chars: int = Field(default=500, ge=1, le=10_000)
    """Longest accepted reminder."""
    profiles: list[str] = Field(default_factory=lambda: ["demo"])
    """Skill/environment profiles this service runs (an allow-list of registered names)."""
    default_profile: str = "demo"
    """Profile used when a submission names none."""
    demo: DemoProfileConfig = DemoProfileConfig()
    """Parameters of the built-in ``demo`` profile."""
    sse_poll_s: float = Field(default=0.25, gt=0.0, le=10.0)
    """How often an event stream looks for new events."""
    sse_max_s: float = Field(default=300.0, gt=0.0)
    """Longest single event stream; clients reconnect with ``Last-Event-ID``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the JSON logs."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Prometheus port for a worker-only process (``trellis worker``); None: no endpoint."""
    migrate: bool = True
    """Apply pending schema migrations at start (under a lock, safe with many processes)."""
    db_retry_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    """Seconds a run rides out a dropped or unreachable database (resuming from its last
    checkpoint); a longer outage hands the task back once the database answers again."""

    @model_validator(mode="after")
    def _check_profiles(self) -> ServiceSettings:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not in profiles {self.profiles}"
            )
        if self.heartbeat_s is not None and self.heartbeat_s >= self.lease_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be shorter than lease_s ({self.lease_s}), "
                "or leases expire between heartbeats"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat environment variables, which beat the config file.
        return (init_settings, env_settings, _FileSource(settings_cls))

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from the file (or ``TRELLIS_SERVICE_CONFIG``), the environment and flags."""
        path = config_file or os.environ.get("TRELLIS_SERVICE_CONFIG")
        _FileSource.data = _read_config(Path(path)) if path else {}
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ServiceConfigError(f"invalid service settings: {exc}") from exc
        finally:
            _FileSource.data = {}

    def user_tokens(self) -> dict[str, str]:
        """Every token -> user mapping (settings and file); refuses to run with none."""
        tokens = dict(self.tokens)
        if self.tokens_file is not None:
            tokens.update(_read_tokens(self.tokens_file))
        for token, user in tokens.items():
            if len(token) < 16 or not user.strip():
                raise ServiceConfigError(
                    "every token must be at least 16 characters and map to a user id; "
                    "generate one with `python -c 'import secrets; print(secrets.token_urlsafe())'`"
                )
        if not tokens:
            raise ServiceConfigError(
                "no API tokens configured: the service refuses to run open. Set TRELLIS_TOKENS="
                '\'{"<token>": "<user>"}\' or TRELLIS_TOKENS_FILE'
            )
        return tokens

    def secret_tokens(self) -> dict[SecretStr, str]:
        """Tokens wrapped so that they never appear in logs or reprs."""
        return {SecretStr(t): u for t, u in self.user_tokens().items()}


class _FileSource(FileSettingsSource):
    """The service config file's table."""


def _read_config(path: Path) -> dict[str, Any]:
    return read_settings_file(path, "service config", ServiceConfigError)


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ServiceConfigError(f"cannot read the tokens file {path}: {exc}") from exc
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ServiceConfigError(f"the tokens file {path} is not valid JSON: {exc}") from exc
        return {str(k): str(v) for k, v in data.items()}
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ServiceConfigError(
                f"{path} line {number}: expected `<token> <user>`, got {len(parts)} fields"
            )
        tokens[parts[0]] = parts[1]
    return tokens
