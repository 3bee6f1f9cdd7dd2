"""The core: one attention function registered with transformers, visual spans, capture, CLVA, PAI and VCD.

Read in this order: ``spans`` (where the image tokens are), ``function`` (the registered attention function and
how observers and interventions attach to it), ``capture`` (record the current query's attention), ``heads`` (depth
bands and head classes), ``clva`` (the intervention), ``pai_vcd`` (the baselines). Nothing here imports from
``analysis``, ``eval``, ``plots`` or ``toy``.
"""

from .capture import AttentionRecord, capture, unwrap
from .clva import CLVAConfig, CLVAIntervention, clva
from .function import attached, is_attached, paused
from .heads import DEFAULT_BANDS, HeadClasses, band_layers, fit_head_classes
from .pai_vcd import PAIConfig, VCDConfig, pai_attention, pai_guidance, vcd_processor
from .spans import GROUPS, VisualSpan, find_visual_span

__all__ = [
    "DEFAULT_BANDS", "GROUPS", "AttentionRecord", "CLVAConfig", "CLVAIntervention", "HeadClasses", "PAIConfig",
    "VCDConfig", "VisualSpan", "attached", "band_layers", "capture", "clva", "find_visual_span",
    "fit_head_classes", "is_attached", "pai_attention", "pai_guidance", "paused", "unwrap", "vcd_processor",
]
