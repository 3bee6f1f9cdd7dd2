"""clva-lite: Cross-Layer Visual Anchors (CLVA) made tangible.

Public API (see the notebooks for a guided tour)::

    loaded = clva_lite.load_model("toy")                    # or "llava-hf/llava-1.5-7b-hf"
    inputs = loaded.inputs([image], ["is there a star in the image ?"])
    with clva_lite.capture(loaded, inputs) as rec:          # attention over visual tokens
        loaded.model.generate(**inputs, max_new_tokens=4)
    heads = clva_lite.calibrate_heads(loaded, images, questions, split="calibration")
    with clva_lite.clva(loaded, clva_lite.CLVAConfig(alpha=1.0, beta=1.0), heads=heads):
        loaded.model.generate(**inputs, max_new_tokens=4)
"""

from .analysis import HeadClasses, band_layers, fit_head_classes
from .baselines import PAIConfig, VCDConfig, pai_attention, pai_guidance, vcd_processor
from .calibration import calibrate_heads, record_prefill
from .capture import AttentionRecord, capture
from .clva import CLVAConfig, clva
from .loading import LoadedModel, load_model
from .methods import Method, clva_method, pai_method, vanilla, vcd_method
from .prompts import build_inputs, build_prompt
from .visual import GROUPS, VisualSpan, find_visual_span

__all__ = [
    "GROUPS", "AttentionRecord", "CLVAConfig", "HeadClasses", "LoadedModel", "Method", "PAIConfig", "VCDConfig",
    "VisualSpan", "band_layers", "build_inputs", "build_prompt", "calibrate_heads", "capture", "clva",
    "clva_method", "find_visual_span", "fit_head_classes", "load_model", "pai_attention", "pai_guidance",
    "pai_method", "record_prefill", "vanilla", "vcd_method", "vcd_processor",
]
__version__ = "0.1.0"

# Submodules reachable as attributes (``clva_lite.plots``...) without importing matplotlib etc. up front.
_SUBMODULES = (
    "ablation", "analysis", "baselines", "bench", "benchmarks", "calibration", "comparison", "drift", "evaluation",
    "grounding", "interface", "loading", "methods", "plots", "prompts", "real", "runners", "scoring", "sensitivity",
    "sweep", "tiny", "toy", "visual", "widgets",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'clva_lite' has no attribute {name!r}")
