"""The adapters that ship with Trellis, and how a database gets them.

Each folder under ``adapters/shipped/`` is a PEFT LoRA adapter trained by
``trellis adapters train`` (its model card, ``README.md`` and ``training.json``, sits beside
the weights) plus a ``trellis_adapter.json`` manifest: the description and examples the
router embeds, and the skills the adapter is pinned to. The folder is always an allowed
adapter root, so shipped adapters register without configuration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trellis.adapters._registry import SHIPPED_ADAPTERS_DIR, AdapterRegistry, shipped_folders
from trellis.adapters._router_policies import RouteRule
from trellis.adapters.errors import AdapterValidationError

__all__ = [
    "SHIPPED_ADAPTERS_DIR",
    "ShippedAdapter",
    "register_shipped_adapters",
    "shipped_adapters",
    "shipped_route_rules",
]

MANIFEST_NAME = "trellis_adapter.json"


class ShippedAdapter(BaseModel):
    """One shipped adapter's manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Registry name; the runtime asks for the adapter by it."""
    description: str = Field(min_length=1)
    """What the adapter is for (the router embeds it)."""
    examples: tuple[str, ...] = Field(min_length=1)
    """Requests it serves well (the router embeds them)."""
    tags: tuple[str, ...] = ()
    """Free-form labels."""
    pinned_skills: tuple[str, ...] = ()
    """Skills whose steps always use this adapter (router rules)."""
    path: Path = Path()
    """The adapter folder (filled in when read)."""


def shipped_adapters(folders: Sequence[Path] | None = None) -> list[ShippedAdapter]:
    """The manifests of every shipped adapter (in ``folders``, default every shipped folder),
    sorted by name."""
    found: list[ShippedAdapter] = []
    manifests = [
        manifest
        for folder in (shipped_folders() if folders is None else folders)
        if folder.is_dir()
        for manifest in folder.glob(f"*/{MANIFEST_NAME}")
    ]
    for manifest in manifests:
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            found.append(ShippedAdapter.model_validate({**data, "path": manifest.parent}))
        except (OSError, ValueError, ValidationError) as exc:
            raise AdapterValidationError(
                f"shipped adapter manifest {manifest.parent.name}/{MANIFEST_NAME} is invalid "
                f"({str(exc).splitlines()[0]}); reinstall the package that ships it"
            ) from exc
    return sorted(found, key=lambda adapter: adapter.name)


def register_shipped_adapters(registry: AdapterRegistry) -> list[str]:
    """Register the shipped adapters the registry lacks; returns the names added.

    A registered adapter with the same name is left alone: a user's own adapter of that
    name replaces the shipped one.
    """
    added: list[str] = []
    for adapter in shipped_adapters():
        if adapter.name in registry:
            continue
        registry.add(
            adapter.name,
            adapter.path,
            description=adapter.description,
            examples=adapter.examples,
            tags=adapter.tags,
        )
        added.append(adapter.name)
    return added


def shipped_route_rules(registry: AdapterRegistry) -> tuple[RouteRule, ...]:
    """Rules pinning skills to the shipped adapters that are registered."""
    return tuple(
        RouteRule(adapter=adapter.name, skill=skill)
        for adapter in shipped_adapters()
        if adapter.name in registry
        for skill in adapter.pinned_skills
    )
