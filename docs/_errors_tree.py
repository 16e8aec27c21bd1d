"""Print the Trellis exception tree as Markdown (``python docs/_errors_tree.py > docs/errors.md``)."""

from __future__ import annotations

import importlib

PACKAGES = ("trellis.memory", "trellis.adapters", "trellis.planners", "trellis.agent")


def all_errors() -> list[type[BaseException]]:
    """Every exception class exported by a package's public namespace."""
    from trellis.memory.errors import TrellisError

    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, TrellisError):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return sorted(found.values(), key=lambda cls: cls.__name__)


def render() -> str:
    from trellis.memory.errors import TrellisError

    errors = set(all_errors()) | {TrellisError}
    lines = [
        "# Errors",
        "",
        "Every error Trellis raises derives from `TrellisError` and sits in one of three",
        "branches: `UsageError` (fix the call or the input), `ModelRetry` (a model's output",
        "was unusable: ask again with the feedback), `RuntimeFailure` (something failed while",
        "running). Each class is importable from its package (`from trellis.adapters import ...`).",
        "",
        "```",
    ]

    def walk(cls: type[BaseException], depth: int) -> None:
        package = cls.__module__.split(".")[0]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{'    ' * depth}{cls.__name__} ({package}): {doc}")
        children = sorted((c for c in errors if cls in c.__bases__), key=lambda c: c.__name__)
        for child in children:
            walk(child, depth + 1)

    walk(TrellisError, 0)
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
