"""Adapters: the registry, the router, the LLM backends and the reminder adapter."""

from adapters._backend import (
    BackendBase,
    FunctionBackend,
    LLMBackend,
    LLMRequest,
    LLMResult,
    Message,
    SamplingParams,
    SyncBackend,
)
from adapters._model import (
    DEFAULT_BASE_MODEL,
    default_model_dir,
    model_identity,
    prepare_model,
    resolve_model_dir,
    verify_model,
)
from adapters.errors import ModelPreparationError, UnknownAdapterError

__all__ = [
    "DEFAULT_BASE_MODEL",
    "BackendBase",
    "FunctionBackend",
    "LLMBackend",
    "LLMRequest",
    "LLMResult",
    "Message",
    "ModelPreparationError",
    "SamplingParams",
    "SyncBackend",
    "UnknownAdapterError",
    "default_model_dir",
    "model_identity",
    "prepare_model",
    "resolve_model_dir",
    "verify_model",
]
