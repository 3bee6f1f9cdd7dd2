"""Loading models (toy, hub id, folder), prompts through chat templates, tiny random-weight stand-ins, real-model
loading with a stand-in fallback and memory from a config, and an image-only Qwen2-VL processor."""

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, ("loading", "prompts", "qwen2_vl", "real", "tiny"))
