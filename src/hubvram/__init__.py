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

__all__ = [
    "Architecture", "Dims", "HubvramError", "LinearModule", "MLADims", "Metadata", "ModelRef", "MoEDims",
    "ParamTensor", "ParameterCounts", "Provenance", "TensorInfo", "load_metadata", "load_model", "load_models",
    "__version__",
]
