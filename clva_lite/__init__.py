"""clva-lite: Cross-Layer Visual Anchors (CLVA) made tangible.

Public API (see the notebooks for a guided tour)::

    loaded = clva_lite.load_model("toy")                    # or "llava-hf/llava-1.5-7b-hf"
    inputs = loaded.inputs([image], ["is there a star"])
    with clva_lite.capture(loaded, inputs) as rec:          # attention over visual tokens
        loaded.model.generate(**inputs, max_new_tokens=4)
    heads = clva_lite.calibrate_heads(loaded, images, questions, split="calibration")
    with clva_lite.clva(loaded, clva_lite.CLVAConfig(alpha=1.0, beta=1.0), heads=heads):
        loaded.model.generate(**inputs, max_new_tokens=4)
"""

from ._lazy import lazy_submodules
from .analysis.calibration import calibrate_heads, record_prefill
from .attention.capture import AttentionRecord, capture
from .attention.clva import CLVAConfig, clva
from .attention.heads import HeadClasses, band_layers, fit_head_classes
from .attention.pai_vcd import PAIConfig, VCDConfig, pai_attention, pai_guidance, vcd_processor
from .attention.spans import GROUPS, VisualSpan, find_visual_span
from .eval.methods import Method, clva_method, pai_method, vanilla, vcd_method
from .models.loading import LoadedModel, load_model
from .models.prompts import build_inputs, build_prompt

__all__ = [
    "GROUPS", "AttentionRecord", "CLVAConfig", "HeadClasses", "LoadedModel", "Method", "PAIConfig", "VCDConfig",
    "VisualSpan", "band_layers", "build_inputs", "build_prompt", "calibrate_heads", "capture", "clva",
    "clva_method", "find_visual_span", "fit_head_classes", "load_model", "pai_attention", "pai_guidance",
    "pai_method", "record_prefill", "vanilla", "vcd_method", "vcd_processor",
]
__version__ = "0.1.0"

# Folders reachable as attributes (``clva_lite.plots``...) without importing matplotlib etc. up front.
__getattr__ = lazy_submodules(__name__, ("analysis", "attention", "eval", "exercises", "models", "notebooks", "plots",
                                         "toy"))
