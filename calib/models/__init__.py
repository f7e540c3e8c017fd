"""JAX language models: Llama-family and Gemma 3 from GGUF files, HF folders or tiny random configs."""

from calib.models.config import ModelConfig
from calib.models.lm import LanguageModel
from calib.models.registry import list_models, load_model

__all__ = ["LanguageModel", "ModelConfig", "list_models", "load_model"]
