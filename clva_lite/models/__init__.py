"""Loading models (toy, hub id, folder), the served families, prompts through chat templates, tiny random-weight
stand-ins of each family, real-model loading with a stand-in fallback and memory from a config (reference configs of
one checkpoint per family), and images-only processors for families whose stock processor needs a video one."""

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, ("families", "image_only", "loading", "prompts", "real", "reference_configs",
                                         "tiny"))
