"""Which worlds the runtime knows: installed packs (entry points) plus packs given in code."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from trellis.adapters import add_shipped_folder
from trellis.agent.env._contract import EnvironmentPack, EnvSpec
from trellis.agent.errors import (
    EnvironmentPackError,
    InvalidEnvSpecError,
    UnknownEnvironmentError,
)

__all__ = ["ENTRY_POINT_GROUP", "EnvironmentRegistry", "installed_packs", "load_installed_packs"]

_log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trellis.environments"
"""The entry-point group a pack's distribution registers its :class:`EnvironmentPack` in."""

_installed: dict[str, EntryPoint] | None = None
_loaded: dict[str, EnvironmentPack] = {}
_lock = threading.Lock()


def _entry_points() -> dict[str, EntryPoint]:
    global _installed
    if _installed is None:
        _installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _installed


def _load(name: str, entry: EntryPoint) -> EnvironmentPack:
    with _lock:
        if name in _loaded:
            return _loaded[name]
        try:
            pack: Any = entry.load()
        except Exception as exc:
            raise EnvironmentPackError(
                f"the environment pack {name!r} ({entry.value}) failed to import: "
                f"{type(exc).__name__}: {exc}. Reinstall it (pip install -e packs/{name} in a "
                "checkout of Trellis, or the distribution that provides it)"
            ) from exc
        if not isinstance(pack, EnvironmentPack):
            raise EnvironmentPackError(
                f"the entry point {name!r} ({entry.value}) in group {ENTRY_POINT_GROUP!r} is a "
                f"{type(pack).__name__}, not an EnvironmentPack; fix the pack's registration"
            )
        if pack.kind != name:
            raise EnvironmentPackError(
                f"the entry point {name!r} gives a pack of kind {pack.kind!r}; the names must "
                "match: fix the pack's registration"
            )
        _loaded[name] = pack
        _adopt_adapters(pack)
        return pack


def _adopt_adapters(pack: EnvironmentPack) -> None:
    if pack.adapters_dir is not None:
        add_shipped_folder(pack.adapters_dir)


def load_installed_packs() -> list[EnvironmentPack]:
    """Import every installed pack (their shipped adapters become known); a pack that fails
    to import is skipped here and named when a task uses it."""
    packs = []
    for name, entry in _entry_points().items():
        try:
            packs.append(_load(name, entry))
        except EnvironmentPackError as exc:
            _log.warning("%s", exc)
    return packs


def installed_packs() -> list[str]:
    """The kinds installed packs register (not imported until used)."""
    return sorted(_entry_points())


class EnvironmentRegistry:
    """The packs one agent can use: those given in code first, then the installed ones."""

    def __init__(self, packs: Iterable[EnvironmentPack] = ()) -> None:
        self._own: dict[str, EnvironmentPack] = {}
        for pack in packs:
            self.add(pack)

    def add(self, pack: EnvironmentPack) -> None:
        """Use ``pack`` for its kind (before any installed pack of that kind)."""
        if not isinstance(pack, EnvironmentPack):
            raise EnvironmentPackError(
                f"environments= takes EnvironmentPack objects, got {type(pack).__name__}"
            )
        if not pack.kind:
            raise EnvironmentPackError(
                f"{pack.spec.__name__} has no kind: set the class variable `kind` on it"
            )
        self._own[pack.kind] = pack
        _adopt_adapters(pack)

    def kinds(self) -> list[str]:
        """Every kind this registry can serve."""
        return sorted(set(self._own) | set(_entry_points()))

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and (kind in self._own or kind in _entry_points())

    def get(self, kind: str) -> EnvironmentPack:
        """The pack for ``kind``; :class:`UnknownEnvironmentError` names the known ones."""
        if kind in self._own:
            return self._own[kind]
        entry = _entry_points().get(kind)
        if entry is None:
            known = ", ".join(self.kinds()) or "none installed"
            raise UnknownEnvironmentError(
                f"unknown environment kind {kind!r} (known: {known}); install the pack that "
                "provides it or pass it as Agent(environments=[...])"
            )
        return _load(kind, entry)

    def for_spec(self, spec: Any) -> tuple[EnvironmentPack, EnvSpec]:
        """The pack and validated spec for what a caller passed as ``env=``: a spec
        instance, or a mapping with a ``kind`` (a recorded spec)."""
        if isinstance(spec, EnvSpec):
            pack = self.get(spec.kind)
            return pack, pack.validate_spec(spec)
        if isinstance(spec, Mapping):
            kind = spec.get("kind")
            if not isinstance(kind, str):
                raise UnknownEnvironmentError(
                    "an environment given as a mapping needs its 'kind' (one of: "
                    + (", ".join(self.kinds()) or "none installed")
                    + ")"
                )
            pack = self.get(kind)
            return pack, pack.from_record(spec)
        raise UnknownEnvironmentError(
            f"env must be an environment spec (an EnvSpec such as a pack's config) or a "
            f"recorded spec mapping with a 'kind', got {type(spec).__name__}"
        )

    def spec_from_options(
        self, kind: str, *, seed: int | None = None, fields: Sequence[str] = ()
    ) -> EnvSpec:
        """A spec from command-line options: ``--seed N`` and ``--set KEY=VALUE`` pairs (a
        value is read as JSON when it parses, else as text)."""
        pack = self.get(kind)
        data: dict[str, Any] = {}
        if seed is not None:
            data["seed"] = seed
        for item in fields:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise InvalidEnvSpecError(
                    f"--set takes KEY=VALUE (e.g. --set num_locations=2), got {item!r}"
                )
            try:
                value: Any = json.loads(text)
            except ValueError:
                value = text
            data[key.strip()] = value
        return pack.new_spec(data)  # a new task: today's rules, not a past record's
