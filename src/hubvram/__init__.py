"""hubvram: will fine-tuning this model fit on my GPUs, and how?

Exact parameter counts from Hub metadata (config.json + safetensors headers, never a weight) and
training-memory estimates for full fine-tuning, LoRA and QLoRA.
"""

from .api import load_metadata, load_model, load_models
from .architecture import Architecture, LinearModule, ParameterCounts, ParamTensor
from .config import Dims, MLADims, MoEDims
from .errors import HubvramError
from .metadata import Metadata, ModelRef, Provenance, TensorInfo

__version__ = "0.1.0"

_LAZY = {"Estimate", "Setup", "estimate", "explain"}  # hubvram.memory: imported on first use (start-up time)


def __getattr__(name: str):
    if name in _LAZY:
        from . import memory

        return getattr(memory, name)
    raise AttributeError(f"module 'hubvram' has no attribute {name!r}")

__all__ = [
    "Architecture", "Dims", "Estimate", "HubvramError", "LinearModule", "MLADims", "Metadata", "ModelRef", "MoEDims",
    "ParamTensor", "ParameterCounts", "Provenance", "Setup", "TensorInfo", "estimate", "explain", "load_metadata",
    "load_model", "load_models", "__version__",
]
