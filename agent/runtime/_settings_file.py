"""Settings files (TOML or JSON) as a pydantic-settings source, shared by the run and the
service settings: flags beat environment variables, which beat the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic_settings import PydanticBaseSettingsSource

__all__ = ["FileSettingsSource", "read_settings_file"]


class FileSettingsSource(PydanticBaseSettingsSource):
    """The file's table, set by the settings class's ``load`` for the time of one build.

    Subclass it once per settings class, so that two classes never share ``data``.
    """

    data: ClassVar[dict[str, Any]] = {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_settings_file(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The table in a TOML (``.toml``) or JSON file; ``error`` names ``what`` file and the fix."""
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the {what} file {path}: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise error(f"the {what} file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"the {what} file {path} must hold a table of settings")
    return data
