"""Create real PEFT LoRA adapter folders (for tests, benchmarks and as training seeds).

``create_lora_adapter`` writes ``adapter_config.json`` and ``adapter_model.safetensors`` in the
exact layout PEFT's ``save_pretrained`` produces, so the folder loads in peft and in vLLM.
The B matrices are seeded random (PEFT initialises them to zero, which would make every
adapter equal the base model), so different adapters really change the output.

The base model is instantiated on the ``meta`` device only to learn the module shapes: no
weights are read, so this takes seconds and little memory.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from trellis.adapters._model import DEFAULT_BASE_MODEL
from trellis.adapters.errors import AdapterValidationError, ModelPreparationError

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAMES", "create_lora_adapter"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def create_lora_adapter(
    base_model_dir: Path | str,
    out_dir: Path | str,
    *,
    rank: int = 8,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    seed: int = 0,
    base_model_name: str = DEFAULT_BASE_MODEL,
    alpha: int | None = None,
    scale: float = 0.08,
) -> Path:
    """Write a PEFT LoRA adapter for ``base_model_dir`` into ``out_dir`` and return it.

    ``base_model_name`` is recorded as ``base_model_name_or_path`` in adapter_config.json;
    the adapter registry checks it against its configured base model. ``scale`` is the
    standard deviation of the random B matrices (A uses PEFT's Kaiming init), large enough
    to change greedy outputs, small enough to keep the text fluent.
    """
    try:
        import torch
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
        from safetensors.torch import save_file
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as exc:
        raise ModelPreparationError(
            f"creating adapters needs the embedded extra ({exc.name} is missing): "
            "pip install 'trellis-agent[embedded]'"
        ) from exc

    if rank < 1:
        raise AdapterValidationError(f"rank must be at least 1, got {rank}")
    modules = list(target_modules)
    if not modules or any(not _MODULE_NAME.match(m) for m in modules):
        raise AdapterValidationError(
            f"target_modules must be non-empty module names such as q_proj, got {modules!r}"
        )
    base = Path(base_model_dir).expanduser()
    if not (base / "config.json").is_file():
        raise ModelPreparationError(
            f"{base} is not a Hugging Face model folder (no config.json); "
            "run `trellis model prepare` or pass a folder made by save_pretrained"
        )

    config = AutoConfig.from_pretrained(str(base))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    lora_config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        target_modules=modules,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers deprecation noise
            peft_model = get_peft_model(skeleton, lora_config)
    except ValueError as exc:
        raise AdapterValidationError(
            f"cannot place LoRA on {modules} of {base.name}: {exc}"
        ) from exc
    state = get_peft_model_state_dict(peft_model)
    shapes = {key: tuple(value.shape) for key, value in state.items()}

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if ".lora_A." in key:
            # Kaiming-uniform bound for fan_in = shape[1] with a = sqrt(5), as PEFT does.
            bound = 1.0 / (shape[1] ** 0.5)
            tensors[key] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        else:
            tensors[key] = torch.randn(shape, generator=generator) * scale
    del peft_model, skeleton, state

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / ADAPTER_WEIGHTS_NAMES[0]))
    payload = lora_config.to_dict()
    payload["base_model_name_or_path"] = base_model_name
    payload["target_modules"] = sorted(modules)
    payload["peft_type"] = "LORA"
    payload["inference_mode"] = True
    payload["task_type"] = "CAUSAL_LM"
    (out / ADAPTER_CONFIG_NAME).write_text(
        json.dumps(payload, indent=2, sort_keys=True, default=str)
    )
    return out
