"""Every served family through the one generic path, on tiny random-weight stand-ins of the real classes."""

import pytest
import torch
from transformers import LogitsProcessorList

import clva_lite
from clva_lite.attention.function import _STATES
from clva_lite.attention.pai_vcd import MROPE_MODEL_TYPES, ContrastivePass
from clva_lite.eval.methods import Method, pai_method, vanilla
from clva_lite.models import real
from clva_lite.models.families import FAMILIES, family_of
from clva_lite.models.reference_configs import PUBLISHED_PARAMETERS, REFERENCE_CONFIGS
from clva_lite.models.tiny import TINY_KINDS, build_tiny_model
from clva_lite.plots import layer_heatmaps
from clva_lite.toy import generate_scene

QUESTIONS = ["is there a star", "describe the image .", "is the star on the left of the moon",
             "are there two rings"]
KIND_OF = {f.tiny_kind: f for f in FAMILIES.values()}


def _inputs(loaded, n):
    return loaded.inputs([generate_scene("test", i).image() for i in range(n)], QUESTIONS[:n])


@pytest.fixture(scope="module", params=sorted(KIND_OF))
def family_model(request, tiny_dirs):
    return clva_lite.load_model(tiny_dirs[request.param], device="cpu")


def test_every_family_has_a_stand_in_of_its_class():
    assert set(KIND_OF) <= set(TINY_KINDS)
    for kind, family in KIND_OF.items():
        model, _ = build_tiny_model(kind)
        assert type(model).__name__ == family.model_class
        assert family_of(model.config, kind) is family


def test_clva_with_zero_weights_generates_stock_tokens(family_model):
    inputs = _inputs(family_model, 4)
    stock = family_model.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with clva_lite.clva(family_model, clva_lite.CLVAConfig(alpha=0.0, beta=0.0, head_source="per-input")):
        steered = family_model.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(steered, stock)


def test_alpha_raises_deep_attention_on_the_positive_anchor(family_model):
    """alpha > 0 moves the deep layers' visual attention toward the positive anchor's strongest patch."""
    inputs = _inputs(family_model, 2)
    deep = clva_lite.CLVAConfig().layers(family_model.num_layers)["deep"]
    masses, patch = {}, None
    for alpha in (2.0, 0.0):  # alpha = 0 reads no positive anchor: the patch comes from the alpha = 2 run
        config = clva_lite.CLVAConfig(alpha=alpha, beta=0.0, head_source="per-input")
        with clva_lite.clva(family_model, config) as intervention, \
                clva_lite.capture(family_model, inputs, layers=deep) as record:
            family_model.model(**inputs)
        if patch is None:
            patch = intervention.positive_anchor.argmax(-1)  # (batch,)
        visual = record.visual[0]  # (batch, deep layers, heads, V)
        index = patch[:, None, None, None].expand(-1, visual.shape[1], visual.shape[2], 1)
        masses[alpha] = float(visual.gather(3, index).mean())
    assert masses[2.0] > masses[0.0] + 1e-4


def test_hooks_are_removed_when_the_body_raises(family_model):
    with pytest.raises(KeyError):
        with clva_lite.clva(family_model, clva_lite.CLVAConfig(head_source="per-input")):
            family_model.model(**_inputs(family_model, 1))
            raise KeyError("boom")
    assert not _STATES
    assert family_model.model.config.get_text_config()._attn_implementation == "sdpa"
    assert not any(m._forward_pre_hooks for m in family_model.model.modules())


def test_contrastive_baselines_run_or_name_the_family(family_model):
    """The second pass (VCD, PAI's guidance) reproduces the main pass's logits where it is served, and is refused
    with the family's name where it is not (M-RoPE); PAI's attention part runs everywhere."""
    inputs = _inputs(family_model, 3)
    model, model_type = family_model.model, family_model.family
    if model_type in MROPE_MODEL_TYPES:
        for method in (Method("VCD", "vcd", clva_lite.VCDConfig()), pai_method()):
            with pytest.raises(NotImplementedError, match=f"{model_type}.*M-RoPE"):
                method.generate(family_model, inputs, max_new_tokens=2)
        assert not FAMILIES[model_type].contrastive
    else:
        differences = []

        def record(scores, contrast):
            finite = torch.isfinite(scores)
            differences.append(float((scores.float() - contrast)[finite].abs().max()))
            return scores

        processors = LogitsProcessorList([ContrastivePass(model, dict(inputs), record)])
        model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, logits_processor=processors)
        assert len(differences) == 4 and max(differences) <= 1e-5
        out = Method("VCD", "vcd", clva_lite.VCDConfig()).generate(family_model, inputs, max_new_tokens=2)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    no_guidance = Method("PAI", "pai", clva_lite.PAIConfig(alpha=0.2, start_layer=1, guidance=None))
    stock = vanilla().generate(family_model, inputs, max_new_tokens=2, min_new_tokens=2)
    assert no_guidance.generate(family_model, inputs, max_new_tokens=2, min_new_tokens=2).shape == stock.shape
    assert not _STATES


# kind -> (visual tokens of one 96 x 96 toy scene, heat-map grid, tokens that tile it)
GRIDS = {"llava-llama": (16, (4, 4), None), "llava-next": (88, (4, 4), (0, 16)),
         "llava-onevision": (88, (4, 4), (0, 16)), "qwen2-vl": (16, (4, 4), None), "qwen2.5-vl": (16, (4, 4), None),
         "qwen3-vl": (16, (4, 4), None),
         "gemma3": (4, (2, 2), None), "paligemma": (16, (4, 4), None), "idefics3": (20, (2, 2), (16, 20)),
         "smolvlm": (20, (2, 2), (16, 20))}


def test_heat_map_grid_per_family(family_model):
    kind = FAMILIES[family_model.family].tiny_kind
    inputs = _inputs(family_model, 2)
    with clva_lite.capture(family_model, inputs) as record:
        family_model.model(**inputs)
    n_visual, grid, tokens = GRIDS[kind]
    span = record.span
    assert (span.num_visual, span.grid, span.grid_tokens) == (n_visual, grid, tokens)
    assert span.on_grid(record.visual[0]).shape[-2:] == grid
    layer_heatmaps(record.visual[0, 0], span, generate_scene("test", 0).image())
    if tokens is not None:  # the grid alone cannot place these tokens: the error says to pass the span
        with pytest.raises(ValueError, match="pass the capture's span"):
            layer_heatmaps(record.visual[0, 0], span.grid)


def test_several_images_in_one_prompt(tiny_dirs):
    """Two images in one LLaVA prompt: two runs of visual tokens, recorded rows equal eager attention."""
    loaded = clva_lite.load_model(tiny_dirs["llava-llama"], device="cpu")
    images = [generate_scene("test", i).image() for i in range(2)]
    text = "USER: <image> and <image> : which image holds a star ? ASSISTANT:"
    inputs = loaded.processor(images=images, text=[text], return_tensors="pt")
    model = loaded.model
    model.set_attn_implementation("eager")
    try:
        eager = model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    with clva_lite.capture(loaded, inputs) as record:
        model(**inputs)
    assert record.span.num_visual == 32 and record.span.start is None  # not one run: gathered, not sliced
    expected = torch.stack([layer[:, :, -1, :] for layer in eager], 1)
    expected = expected.gather(3, record.span.positions[:, None, None, :].expand(-1, *expected.shape[1:3], -1))
    assert (record.visual[0] - expected).abs().max() <= 1e-5
    assert record.span.grid == (4, 4) and record.span.grid_tokens == (0, 16)  # heat maps: the first image


def test_sliding_window_shorter_than_the_sequence_is_a_clear_error(tiny_dirs):
    loaded = clva_lite.load_model(tiny_dirs["gemma3"], device="cpu")
    text_config = loaded.model.config.get_text_config()
    inputs = _inputs(loaded, 1)
    window = text_config.sliding_window
    text_config.sliding_window = 8  # shorter than the prompt: the cache of sliding layers keeps 8 keys
    try:
        with pytest.raises(ValueError, match="sliding-window layer"):
            with clva_lite.capture(loaded, inputs):
                loaded.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    finally:
        text_config.sliding_window = window
    assert not _STATES


def test_unserved_architecture_lists_the_served_families():
    from transformers import BlipConfig

    with pytest.raises(ValueError, match="does not support.*Gemma 3.*Qwen2.5-VL|does not support.*Qwen2.5-VL"):
        family_of(BlipConfig(), "Salesforce/blip")
    with pytest.raises(ValueError, match="not supported.*SmolVLM"):
        real.stand_in_kind("OpenGVLab/InternVL2-8B")


@pytest.mark.parametrize("row", real.SUPPORTED_MODELS, ids=lambda r: r["model_id"])
def test_hub_ids_map_to_the_stand_in_of_their_family(row):
    assert real.stand_in_kind(row["model_id"]) == row["stand_in"] == FAMILIES[row["family"]].tiny_kind


@pytest.mark.parametrize("model_id", sorted(REFERENCE_CONFIGS))
def test_reference_configs_have_the_published_size(model_id):
    billions = real.parameter_count(REFERENCE_CONFIGS[model_id]) / 1e9
    assert abs(billions - PUBLISHED_PARAMETERS[model_id]) <= 0.01 * PUBLISHED_PARAMETERS[model_id]


def test_family_table_covers_every_family():
    rows = real.family_table()
    assert {r["class"] for r in rows} >= {f.model_class for f in FAMILIES.values()} - {
        "Qwen2VLForConditionalGeneration", "Qwen3VLForConditionalGeneration", "SmolVLMForConditionalGeneration"}
    for row in rows:
        assert row["fp16 GB"] == pytest.approx(2 * row["parameters (B)"], abs=0.1)


def test_heat_maps_say_why_when_no_grid_is_known(tiny_dirs):
    """Qwen without image_grid_thw (e.g. inputs_embeds built by hand): capture works, the plots explain."""
    loaded = clva_lite.load_model(tiny_dirs["qwen2.5-vl"], device="cpu")
    inputs = _inputs(loaded, 1)
    from clva_lite.attention.spans import find_visual_span

    span = find_visual_span(loaded.model, {k: v for k, v in inputs.items() if k != "image_grid_thw"})
    assert span.grid is None and "image_grid_thw" in span.grid_note
    with clva_lite.capture(loaded, inputs) as record:
        loaded.model(**inputs)
    with pytest.raises(ValueError, match="image_grid_thw"):
        layer_heatmaps(record.visual[0, 0], span)
    with pytest.raises(ValueError, match="image_grid_thw"):
        span.on_grid(record.visual[0, 0])
