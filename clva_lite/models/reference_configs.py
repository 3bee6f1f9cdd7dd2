"""Architecture values of one public checkpoint per served family (from each hub ``config.json``), so sizes can be
computed offline on the ``meta`` device (:func:`clva_lite.models.real.family_table`). Only the fields that set
shapes are kept; ``PUBLISHED_PARAMETERS`` holds the sizes the model cards state, which the tests check against.
"""

from __future__ import annotations

from ..eval.overhead import LLAVA_15_7B

_SIGLIP_SO400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                  "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14}

REFERENCE_CONFIGS: dict[str, dict] = {
    "llava-hf/llava-1.5-7b-hf": {"model_type": "llava", **LLAVA_15_7B},
    "llava-hf/llava-v1.6-mistral-7b-hf": {
        "model_type": "llava_next",
        "vision_config": LLAVA_15_7B["vision_config"],
        "text_config": {"model_type": "mistral", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "max_position_embeddings": 32768},
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "image_seq_length": 576},
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": {
        "model_type": "llava_onevision",
        "vision_config": {**_SIGLIP_SO400M, "num_hidden_layers": 26, "image_size": 384, "vision_use_head": False},
        "text_config": {"model_type": "qwen2", "vocab_size": 152128, "hidden_size": 3584, "intermediate_size": 18944,
                        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                        "tie_word_embeddings": False},
        "image_grid_pinpoints": [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)],
        "image_token_index": 151646, "video_token_index": 151647, "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full"},
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "model_type": "qwen2_5_vl",
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
        "text_config": {"model_type": "qwen2_5_vl_text", "vocab_size": 152064, "hidden_size": 3584,
                        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4, "tie_word_embeddings": False,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                            "mrope_section": [16, 24, 24]}},
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": False},
    "google/gemma-3-4b-it": {
        "model_type": "gemma3",
        "vision_config": {**_SIGLIP_SO400M, "image_size": 896, "vision_use_head": False},
        "text_config": {"model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 2560,
                        "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
                        "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 1024,
                        "query_pre_attn_scalar": 256},
        "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000,
        "image_token_index": 262144},
    "google/paligemma2-3b-mix-224": {
        "model_type": "paligemma",
        "vision_config": {**_SIGLIP_SO400M, "image_size": 224, "projection_dim": 2304},
        "text_config": {"model_type": "gemma2", "vocab_size": 257216, "hidden_size": 2304, "intermediate_size": 9216,
                        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                        "head_dim": 256},
        "image_token_index": 257152, "projection_dim": 2304, "hidden_size": 2304},
    "HuggingFaceTB/SmolVLM-Instruct": {
        "model_type": "idefics3",
        "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                          "num_attention_heads": 16, "image_size": 384, "patch_size": 14},
        "text_config": {"model_type": "llama", "vocab_size": 49155, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "tie_word_embeddings": False},
        "scale_factor": 3, "image_token_id": 49153},
}
# Parameter counts the model cards / hub pages state (billions), to check the values above against.
PUBLISHED_PARAMETERS: dict[str, float] = {
    "llava-hf/llava-1.5-7b-hf": 7.06, "llava-hf/llava-v1.6-mistral-7b-hf": 7.57,
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": 8.03, "Qwen/Qwen2.5-VL-7B-Instruct": 8.29,
    "google/gemma-3-4b-it": 4.30, "google/paligemma2-3b-mix-224": 3.03, "HuggingFaceTB/SmolVLM-Instruct": 2.25,
}
