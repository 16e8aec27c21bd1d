"""The public namespaces are complete and the documented error tree is current."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

from trellis.memory.errors import TrellisError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "trellis",
    "trellis.memory",
    "trellis.adapters",
    "trellis.planners",
    "trellis.agent",
)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__)), "duplicate names in __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which is missing"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_error_class_is_exported(package: str) -> None:
    exported = set(importlib.import_module(package).__all__)
    package_module = importlib.import_module(package)
    missing = []
    for info in pkgutil.iter_modules(package_module.__path__):
        if info.name.endswith("cli") or info.name == "migrations":
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for name, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, TrellisError)
                and value.__module__ == module.__name__
                and not name.startswith("_")
                and name not in exported
            ):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"error classes not exported from {package}: {missing}"


def test_error_tree_document_is_current() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        tree = importlib.import_module("_errors_tree")
    finally:
        sys.path.pop(0)
    expected = tree.render()
    actual = (ROOT / "docs" / "errors.md").read_text()
    assert actual == expected, (
        "docs/errors.md is stale: python docs/_errors_tree.py > docs/errors.md"
    )


def test_every_error_derives_from_one_branch() -> None:
    from trellis.memory.errors import ModelRetry, RuntimeFailure, UsageError

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        tree = importlib.import_module("_errors_tree")
    finally:
        sys.path.pop(0)
    for cls in tree.all_errors():
        if cls in (TrellisError,):
            continue
        branches = [b for b in (UsageError, ModelRetry, RuntimeFailure) if issubclass(cls, b)]
        assert len(branches) == 1 or cls in (UsageError, ModelRetry, RuntimeFailure), (
            f"{cls.__name__} must derive from exactly one of UsageError, ModelRetry, RuntimeFailure"
        )
