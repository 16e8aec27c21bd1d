"""The adapter registry on every supported database, and its folder validation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from trellis.adapters import (
    AdapterPathError,
    AdapterRegistry,
    AdapterValidationError,
    DuplicateAdapterError,
    IncompatibleAdapterError,
    UnknownAdapterError,
    create_lora_adapter,
    inspect_adapter,
)
from trellis.memory import check_schema, make_engine


def write_adapter(
    folder: Path,
    *,
    rank: int = 8,
    base_model: str = "gemma-3-270m",
    modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """A small but well-formed PEFT LoRA folder (two layers' worth of tensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(modules),
        "base_model_name_or_path": base_model,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for module in modules:
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = np.ones((rank, 16), dtype=np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.ones((16, rank), dtype=np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def add(registry: AdapterRegistry, name: str, path: Path, **extra: object) -> object:
    fields: dict[str, object] = {"description": "sorts laundry", "examples": ["fold the shirts"]}
    fields.update(extra)
    return registry.add(name, path, **fields)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "adapters"
    folder.mkdir()
    return folder


def test_add_get_list_remove_roundtrip(database_url: str, root: Path) -> None:
    engine = make_engine(database_url)
    registry = AdapterRegistry(engine, roots=[root])
    check_schema(engine)  # the adapters branch was applied by upgrade
    before = dt.datetime.now(dt.UTC)
    record = registry.add(
        "laundry",
        write_adapter(root / "laundry", rank=4),
        description="  sorts and folds laundry ",
        examples=["fold the shirts", " ", "sort the socks"],
        tags=["household"],
    )
    assert record.name == "laundry"
    assert record.rank == 4
    assert record.target_modules == ("q_proj", "v_proj")
    assert record.description == "sorts and folds laundry"
    assert record.examples == ("fold the shirts", "sort the socks")
    assert record.tags == ("household",)
    assert record.base_model == "gemma-3-270m"
    assert record.path == (root / "laundry").resolve()
    add(registry, "dishes", write_adapter(root / "dishes"))

    fetched = registry.get("laundry")
    assert fetched == record
    assert fetched.created.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= fetched.created <= dt.datetime.now(dt.UTC)
    assert [r.name for r in registry.list()] == ["dishes", "laundry"]
    assert "dishes" in registry and "nope" not in registry
    assert registry.path_of("dishes") == (root / "dishes").resolve()
    assert registry.path_of("nope") is None

    removed = registry.remove("dishes")
    assert removed.name == "dishes"
    assert [r.name for r in registry.list()] == ["laundry"]
    assert (root / "dishes" / "adapter_config.json").is_file()  # files are left alone
    with pytest.raises(UnknownAdapterError, match=r"'dishes'.*laundry"):
        registry.get("dishes")
    with pytest.raises(UnknownAdapterError):
        registry.remove("dishes")


def test_records_persist_across_registries(tmp_path: Path, root: Path) -> None:
    url = f"sqlite:///{tmp_path}/reg.db"
    add(AdapterRegistry(url, roots=[root]), "kitchen", write_adapter(root / "kitchen"))
    again = AdapterRegistry(url, roots=[root])
    assert again.get("kitchen").examples == ("fold the shirts",)


def test_duplicate_name_is_rejected(database_url: str, root: Path) -> None:
    registry = AdapterRegistry(database_url, roots=[root])
    add(registry, "one", write_adapter(root / "a"))
    with pytest.raises(DuplicateAdapterError, match="already registered"):
        add(registry, "one", write_adapter(root / "b"))
    assert registry.get("one").path == (root / "a").resolve()


@pytest.mark.parametrize("name", ["a.b", "../x", "", "has space", "__base__", "-lead", "x" * 65])
def test_bad_names_are_rejected(name: str, root: Path) -> None:
    registry = AdapterRegistry("sqlite://", roots=[root])
    with pytest.raises(AdapterValidationError, match="invalid adapter name"):
        add(registry, name, write_adapter(root / "ok"))
    assert registry.list() == []


def test_description_and_examples_are_required(root: Path) -> None:
    registry = AdapterRegistry("sqlite://", roots=[root])
    folder = write_adapter(root / "x")
    with pytest.raises(AdapterValidationError, match="description"):
        add(registry, "x", folder, description="  ")
    with pytest.raises(AdapterValidationError, match="example prompt"):
        add(registry, "x", folder, examples=["", "  "])
    with pytest.raises(AdapterValidationError, match="list of strings"):
        add(registry, "x", folder, examples="one string")
    assert registry.list() == []


def test_path_outside_roots_is_rejected(tmp_path: Path, root: Path) -> None:
    registry = AdapterRegistry("sqlite://", roots=[root])
    outside = write_adapter(tmp_path / "elsewhere")
    with pytest.raises(AdapterPathError, match="outside the allowed adapter roots"):
        add(registry, "x", outside)
    # A symlink inside a root that points outside it is judged by where it leads.
    (root / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.raises(AdapterPathError):
        add(registry, "x", root / "sneaky")
    with pytest.raises(AdapterPathError):
        add(registry, "x", root / ".." / "elsewhere")
    assert registry.list() == []


def test_symlink_within_roots_is_accepted(tmp_path: Path, root: Path) -> None:
    real = write_adapter(root / "real")
    (root / "alias").symlink_to(real, target_is_directory=True)
    registry = AdapterRegistry("sqlite://", roots=[root])
    assert add(registry, "x", root / "alias").path == real.resolve()  # type: ignore[attr-defined]


def test_folder_problems_each_have_a_specific_error(root: Path) -> None:
    registry = AdapterRegistry("sqlite://", roots=[root], max_rank=8)

    with pytest.raises(AdapterValidationError, match="does not exist"):
        add(registry, "x", root / "missing")

    no_config = write_adapter(root / "no_config")
    (no_config / "adapter_config.json").unlink()
    with pytest.raises(AdapterValidationError, match=r"has no adapter_config\.json"):
        add(registry, "x", no_config)

    garbled = write_adapter(root / "garbled")
    (garbled / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterValidationError, match="not parseable JSON"):
        add(registry, "x", garbled)

    other_base = write_adapter(root / "other", base_model="meta-llama/Llama-3.2-1B")
    with pytest.raises(IncompatibleAdapterError, match=r"Llama-3\.2-1B"):
        add(registry, "x", other_base)

    too_big = write_adapter(root / "big", rank=16)
    with pytest.raises(IncompatibleAdapterError, match="rank 16, above the maximum rank 8"):
        add(registry, "x", too_big)

    no_weights = write_adapter(root / "no_weights")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterValidationError, match="has no weights"):
        add(registry, "x", no_weights)

    truncated = write_adapter(root / "truncated")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(AdapterValidationError, match="truncated"):
        add(registry, "x", truncated)

    junk = write_adapter(root / "junk")
    (junk / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(AdapterValidationError, match="corrupt"):
        add(registry, "x", junk)

    assert registry.list() == []


def test_hub_id_and_local_path_of_the_base_model_both_match(root: Path) -> None:
    assert inspect_adapter(write_adapter(root / "a", base_model="google/gemma-3-270m")).rank == 8
    local = write_adapter(root / "b", base_model="/models/gemma-3-270m/")
    assert inspect_adapter(local).base_model == "/models/gemma-3-270m/"


def test_created_adapters_validate_and_differ_by_seed(tmp_path: Path, root: Path) -> None:
    # A tiny model config is enough: create_lora_adapter reads shapes, never weights.
    base = tmp_path / "tiny"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gemma3_text",
                "architectures": ["Gemma3ForCausalLM"],
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 16,
                "num_hidden_layers": 2,
                "vocab_size": 128,
            }
        )
    )
    first = create_lora_adapter(base, root / "s0", rank=4, seed=0)
    second = create_lora_adapter(base, root / "s1", rank=4, seed=1)
    again = create_lora_adapter(base, root / "s0b", rank=4, seed=0)
    info = inspect_adapter(first, max_rank=4)
    assert info.rank == 4 and info.target_modules == ("q_proj", "v_proj")
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "gemma-3-270m"
    weights = [(p / "adapter_model.safetensors").read_bytes() for p in (first, second, again)]
    assert weights[0] == weights[2] and weights[0] != weights[1]
    from safetensors.numpy import load_file

    tensors = load_file(str(first / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 2 * 2  # layers x modules x (A, B)
    assert all(np.abs(v).sum() > 0 for k, v in tensors.items() if "lora_B" in k)
    registry = AdapterRegistry("sqlite://", roots=[root], max_rank=4)
    assert add(registry, "s0", first).rank == 4  # type: ignore[attr-defined]
