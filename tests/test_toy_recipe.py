"""The toy recipe (clva_lite/toy/train.py): the four stages end to end at tiny scale, stage resume, the question
wording, mimetic init and the language curriculum; the variants table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import clva_lite
from clva_lite.toy import questions as q2
from clva_lite.toy import world as w2
from clva_lite.toy.model import build_processor, build_untrained_model, mimetic_init
from clva_lite.toy.train import (
    STAGES,
    Texts,
    TrainConfig,
    _same,
    tiny_training_config,
    train_toy_model,
)
from clva_lite.toy.world import Split


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-v2")
    config = tiny_training_config()
    _, partial = train_toy_model(config, out=out, stop_after="language")
    _, log = train_toy_model(config, out=out)  # resumes after "language"
    return out, config, partial, log


def test_tiny_recipe_runs_all_stages_and_loads(tiny_run):
    out, _, _, log = tiny_run
    assert [s["stage"] for s in log] == list(STAGES)
    assert all("first_loss" in s and "final_loss" in s and "seconds" in s for s in log)
    assert json.loads((out / "training_log.json").read_text())["recipe"] == "v2"  # the second toy recipe
    loaded = clva_lite.load_model(str(out), device="cpu")
    assert loaded.num_layers >= 16 and loaded.num_heads >= 8
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    assert size < 25e6
    scene = w2.generate_scene("calibration", 0)
    inputs = loaded.inputs([scene.image()], [q2.existence_question("star")])
    assert int((inputs["input_ids"] == loaded.image_token_id).sum()) == 144
    answers = loaded.generate([scene.image()], [q2.existence_question("star")], max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0], str)
    with clva_lite.capture(loaded, inputs) as rec:
        loaded.model(**inputs)
    assert tuple(rec.visual.shape[-3:]) == (16, 8, 144)


def test_resume_reuses_completed_stages(tiny_run):
    out, config, partial, log = tiny_run
    assert [s["stage"] for s in partial] == ["vision", "language"]
    assert log[:2] == partial  # not retrained
    assert all((out / "checkpoints" / f"{k}-{s}.pt").exists() for k, s in enumerate(STAGES))
    other = TrainConfig.from_dict({**config.__dict__, "vision_lr": 1.0})
    with pytest.raises(ValueError, match="another config"):
        train_toy_model(other, out=out)


def test_instruct_trains_the_tower_only_when_asked(tiny_run, tmp_path):
    out, config, _, _ = tiny_run
    aligned = torch.load(out / "checkpoints" / "2-align.pt", weights_only=False)
    tower_before = {k: v for k, v in aligned["state_dict"].items() if "vision_tower" in k}
    assert tower_before
    for scale in (0.0, 0.5):
        run = tmp_path / f"scale-{scale}"
        (run / "checkpoints").mkdir(parents=True)
        for stage in STAGES[:3]:
            name = f"{STAGES.index(stage)}-{stage}.pt"
            (run / "checkpoints" / name).symlink_to(out / "checkpoints" / name)
        tuned = TrainConfig.from_dict({**config.__dict__, "instruct_tower_lr_scale": scale})
        model, log = train_toy_model(tuned, out=run)
        assert [s["stage"] for s in log] == list(STAGES) and np.isfinite(log[-1]["final_loss"])
        after = model.state_dict()
        moved = [k for k, v in tower_before.items() if not after[k].equal(v)]
        assert bool(moved) == (scale > 0), (scale, moved[:3])
        if scale > 0:  # LLaVA reads layer -2: the last layer and the post-layernorm get no gradient, layer 0 does
            last = model.config.vision_config.num_hidden_layers - 1
            assert any(".layers.0." in k for k in moved)
            assert not any(f".layers.{last}." in k or "post_layernorm" in k for k in moved)
        assert not any(p.requires_grad for p in model.parameters())
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="instruct_tower_lr_scale"):
            train_toy_model(TrainConfig.from_dict({**config.__dict__, "instruct_tower_lr_scale": bad}))


def _instruct_from_the_aligned_run(tiny_run, run: Path, **overrides) -> tuple[dict, dict]:
    """Stage 4 alone from the tiny run's align checkpoint, with ``overrides``: (aligned, after) state dicts."""
    out, config, _, _ = tiny_run
    (run / "checkpoints").mkdir(parents=True)
    for k, stage in enumerate(STAGES[:3]):
        (run / "checkpoints" / f"{k}-{stage}.pt").symlink_to(out / "checkpoints" / f"{k}-{stage}.pt")
    model, _ = train_toy_model(TrainConfig.from_dict({**config.__dict__, **overrides}), out=run)
    aligned = torch.load(out / "checkpoints" / "2-align.pt", weights_only=False)["state_dict"]
    return aligned, model.state_dict()


def _moved_decoder_weights(aligned: dict, after: dict) -> set[str]:
    """Names below ``language_model.layers.`` ("3.self_attn.q_proj.weight") that stage 4 changed."""
    return {k.split("language_model.layers.")[1] for k, v in aligned.items()
            if "language_model.layers." in k and not after[k].equal(v)}


def test_instruct_keeps_the_lower_decoder_layers_frozen_when_asked(tiny_run, tmp_path):
    frozen = 5
    aligned, after = _instruct_from_the_aligned_run(tiny_run, tmp_path / "frozen", instruct_frozen_layers=frozen)
    moved = {int(name.split(".")[0]) for name in _moved_decoder_weights(aligned, after)}
    assert moved == set(range(frozen, 16)), sorted(moved)
    assert any("multi_modal_projector" in k and not after[k].equal(v) for k, v in aligned.items())
    config = tiny_run[1]
    for bad in (-1, 16):
        with pytest.raises(ValueError, match="instruct_frozen_layers"):
            train_toy_model(TrainConfig.from_dict({**config.__dict__, "instruct_frozen_layers": bad}))


def test_instruct_tunes_only_queries_and_keys_of_the_frozen_layers_listed(tiny_run, tmp_path):
    tuned = dict(instruct_frozen_layers=6, instruct_query_key_layers=[2, 4])
    aligned, after = _instruct_from_the_aligned_run(tiny_run, tmp_path / "query-key", **tuned)
    moved = _moved_decoder_weights(aligned, after)
    below = {name for name in moved if int(name.split(".")[0]) < 6}
    assert below == {f"{k}.self_attn.{proj}.weight" for k in (2, 4) for proj in ("q_proj", "k_proj")}, sorted(below)
    assert {int(name.split(".")[0]) for name in moved} == {2, 4, *range(6, 16)}
    config = tiny_run[1]
    for bad in ([6], [-1], [3, 9]):
        with pytest.raises(ValueError, match="instruct_query_key_layers"):
            train_toy_model(TrainConfig.from_dict({**config.__dict__, **tuned, "instruct_query_key_layers": bad}))


def test_cosine_schedule_scales_a_parameter_group_by_its_lr_scale():
    from clva_lite.toy.train import _cosine_lr

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr_scale": 0.3}], lr=1.0)
    for step in (0, 100, 399):
        _cosine_lr(optimizer, 1e-3, step, 400)
        full, scaled = (g["lr"] for g in optimizer.param_groups)
        assert full > 0 and scaled == pytest.approx(0.3 * full)


def test_vision_stage_top_k_patch_pooling_at_the_layer_llava_reads():
    config = TrainConfig.from_dict({**tiny_training_config().__dict__, "vision_mil_topk": 4,
                                      "vision_phrase_layer": -2})
    untrained = build_untrained_model(config.seed).model.vision_tower
    model, log = train_toy_model(config, stop_after="vision")
    assert [s["stage"] for s in log] == ["vision"] and "phrase_acc" in log[0]
    tower = model.model.vision_tower
    unchanged = [name for (name, a), b in zip(tower.named_parameters(), untrained.parameters()) if a.equal(b)]
    assert not unchanged
    for field, value in (("vision_mil_topk", 0), ("vision_mil_topk", 145), ("vision_phrase_layer", 0),
                         ("vision_phrase_layer", -9)):
        bad = TrainConfig.from_dict({**config.__dict__, field: value})
        with pytest.raises(ValueError, match=field):
            train_toy_model(bad, stop_after="vision")


def test_token_wise_caption_matching_scores_every_patch_against_its_best_token():
    from clva_lite.toy.train import token_wise_similarity

    basis = torch.eye(4)
    patches = torch.stack([basis[[0, 1, 1]], basis[[2, 2, 3]]])  # two images, three patches each
    tokens = torch.stack([basis[[0, 1, 3]], basis[[2, 3, 0]]])  # two captions; the second's last token is padding
    attention = torch.tensor([[1, 1, 1], [1, 1, 0]])
    image_to_text, text_to_image = token_wise_similarity(patches, tokens, attention)
    assert image_to_text.shape == text_to_image.shape == (2, 2)
    # image 0 against caption 1 (tokens 2, 3): no patch matches; image 1 against caption 0 matches only patch 3
    assert image_to_text.tolist() == [[1.0, 0.0], [pytest.approx(1 / 3), 1.0]]
    # caption 0's tokens 0, 1, 3 against image 0 (patches 0, 1): two of three found; padding never counts
    assert text_to_image.tolist() == [[pytest.approx(2 / 3), 0.0], [pytest.approx(1 / 3), 1.0]]
    config = TrainConfig.from_dict({**tiny_training_config().__dict__, "vision_caption_match": "tokens"})
    model, log = train_toy_model(config, stop_after="vision")
    assert np.isfinite(log[0]["final_loss"]) and "retrieval_acc" in log[0]
    for bad in ({"vision_caption_match": "words"}, {"vision_caption_match": "tokens", "vision_pool": "mean"}):
        with pytest.raises(ValueError, match="vision_caption_match"):
            train_toy_model(TrainConfig.from_dict({**config.__dict__, **bad}), stop_after="vision")


def test_the_variants_table_reads_the_committed_exploration(tmp_path):
    from clva_lite.toy.explore import variants_frame

    table = variants_frame()
    assert {"v1", "A-base"} <= set(table.index.get_level_values("variant"))
    assert set(table.index.get_level_values("criterion")) == {"share", "focus"}
    assert table["POPE random acc"].between(0, 1).all() and "A+ on-object" in table.columns
    with pytest.raises(FileNotFoundError, match="explore eval"):
        variants_frame(tmp_path / "none.json")


def test_questions_end_with_the_object_word_and_the_prompt_has_no_answer_suffix():
    processor = build_processor()
    question = q2.existence_question("moon")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.split()[-4:] == ["is", "there", "a", "moon"]
    assert q2.count_question("moon", 1).split()[-1] == "moon" and q2.count_question("moon", 3).endswith("three moons")
    assert q2.position_question("star", "moon").split()[-1] == "moon"
    with pytest.raises(ValueError, match="unknown colour"):
        q2.colour_question("moon", "teal")


def test_mimetic_init_ties_keys_to_queries_in_every_decoder_layer():
    model = build_untrained_model(0)
    first = model.model.language_model.layers[0].self_attn
    assert not first.q_proj.weight.equal(first.k_proj.weight)
    mimetic_init(model, std=0.1)
    for layer in model.model.language_model.layers:
        assert layer.self_attn.q_proj.weight.equal(layer.self_attn.k_proj.weight)
    assert 0.08 < float(first.q_proj.weight.std()) < 0.12
    with pytest.raises(ValueError, match="decoder_init"):
        train_toy_model(TrainConfig.from_dict({**tiny_training_config().__dict__, "decoder_init": "xavier"}))



def _same_token_logit(model, distance: int) -> float:
    """Layer 0, mean over heads and 40 words: a word's query on the same word's key ``distance`` tokens back."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    decoder = model.model.language_model
    layer = decoder.layers[0]
    x = layer.input_layernorm(model.get_input_embeddings().weight[5:45].detach())
    heads, head_dim = model.config.text_config.num_attention_heads, 16
    q = layer.self_attn.q_proj(x).view(-1, heads, head_dim).transpose(0, 1)[None]
    k = layer.self_attn.k_proj(x).view(-1, heads, head_dim).transpose(0, 1)[None]
    cos, sin = decoder.rotary_emb(q, torch.tensor([[distance, 0]]))
    q, _ = apply_rotary_pos_emb(q, q, cos[:, :1], sin[:, :1])
    _, k = apply_rotary_pos_emb(k, k, cos[:, 1:], sin[:, 1:])
    return float((q * k).sum(-1).mean()) / head_dim ** 0.5


def test_mimetic_init_in_slow_rope_pairs_matches_words_at_any_distance():
    from clva_lite.toy.model import ModelConfig

    plain = build_untrained_model(0, ModelConfig(rope_theta=1e4))  # RoPE base of the first v2 runs
    mimetic_init(plain, std=0.1)
    # the shared fast pairs lose most of the match 150 tokens away (an image is 144 tokens)
    assert _same_token_logit(plain, 150) < 0.5 * _same_token_logit(plain, 1)
    slow = build_untrained_model(0, ModelConfig(rope_theta=1e6))
    mimetic_init(slow, std=0.15, slow_pairs=4)
    near, far = _same_token_logit(slow, 1), _same_token_logit(slow, 150)
    assert near > 3 and abs(far - near) < 0.05 * near
    attention = slow.model.language_model.layers[3].self_attn
    q, k = attention.q_proj.weight.view(8, 16, -1), attention.k_proj.weight.view(8, 16, -1)
    shared = [4, 5, 6, 7, 12, 13, 14, 15]  # Hugging Face pairs channel i with i + 8; pairs 4-7 turn slowest
    assert q[:, shared].equal(k[:, shared]) and not q[:, :4].equal(k[:, :4])
    with pytest.raises(ValueError, match="slow_pairs must be in 0..8"):
        mimetic_init(slow, slow_pairs=9)

def test_language_curriculum_shortens_early_documents():
    import numpy as np

    config = TrainConfig(language_curriculum=((10, 1, 1), (20, 2, 2)), language_turns=5)
    texts = Texts(np.random.default_rng(0), config)
    scene = next(s for s in w2.generate_scenes(Split.TRAIN, 20) if len(s.objects) >= 4)
    early, turns = texts.curriculum(scene, 3)
    assert len(early.objects) == 1 and turns == 1 and early.objects[0] in scene.objects
    middle, turns = texts.curriculum(scene, 15)
    assert len(middle.objects) == 2 and turns == 2
    late, turns = texts.curriculum(scene, 20)
    assert late == scene and turns == 5
    assert _same(((1, 2), (3, 4)), [[1, 2], [3, 4]]) and not _same(((1, 2),), [[1, 3]])
    texts.config = TrainConfig(language_curriculum=((10, 1, 1),), language_mix=(0.0, 0.0, 1.0), language_turns=4,
                               caption_share=0.0, count_colour_share=0.0)
    ids, mask = texts.text_document(scene, step=0)
    words = {i: w for w, i in texts.words.items()}
    assert [words[i] for i in ids].count("question") == 1 and sum(mask) == 3  # one question: "yes/no . </s>"


def test_long_scene_texts_mention_every_object_among_fillers():
    import numpy as np

    from clva_lite.toy.train import LONG_FILLERS

    config = TrainConfig(language_long_share=1.0, language_long_length=60)
    texts = Texts(np.random.default_rng(0), config)
    for scene in w2.generate_scenes(Split.TRAIN, 20):
        words = texts.scene_text_long(scene).split()
        assert 2 * len(scene.objects) + 4 <= len(words) <= max(60, 6 * len(scene.objects) + 4)
        mentioned = [words[k] for k in range(1, len(words)) if words[k] in w2.CATEGORIES]
        assert set(mentioned) == set(scene.categories)
        for k, word in enumerate(words):  # every category word follows its object's colour
            if word in w2.CATEGORIES:
                assert any(o.category == word and o.colour == words[k - 1] for o in scene.objects)
        assert all(w in LONG_FILLERS or w in w2.CATEGORIES or w in clva_lite.toy.world.COLOURS for w in words)
    # long documents only once the curriculum is over, and only with language_long_share > 0
    scene = next(s for s in w2.generate_scenes(Split.TRAIN, 20) if len(s.objects) >= 4)
    config = TrainConfig(language_long_share=1.0, language_long_length=120, language_curriculum=((10, 1, 1),))
    texts = Texts(np.random.default_rng(1), config)
    assert len(texts.text_document(scene, 3)[0]) < 40
    lengths = [len(texts.text_document(scene, 50)[0]) for _ in range(10)]
    short = Texts(np.random.default_rng(1), TrainConfig(language_curriculum=((10, 1, 1),)))
    assert max(lengths) > max(len(short.text_document(scene, 50)[0]) for _ in range(10))


def test_diagnostics_read_recipe_checkpoints(tiny_run):
    from clva_lite.toy.diagnose import layout_existence, patch_category_probe

    out = tiny_run[0]
    probe = patch_category_probe(str(out / "checkpoints" / "0-vision.pt"), train_scenes=6, eval_scenes=4, steps=3)
    assert set(probe) == {"layer -2", "layer -1"}
    for row in probe.values():
        assert row["object_patches"] > 0
        assert 0.0 <= row["object_patch_accuracy"] <= 1.0 and 0.0 <= row["background_recall"] <= 1.0
    layout = layout_existence(str(out / "checkpoints" / "1-language.pt"), scenes=4, repeats=1, fillers=(0, 20))
    assert list(layout) == ["text + 0 filler", "text + 20 filler", "oracle image slots"]
    assert all(0.0 <= v <= 1.0 for v in layout.values())


def test_checkpoints_from_before_a_default_changed_keep_what_they_were_trained_with():
    from dataclasses import asdict

    from clva_lite.toy.explore import variant_config
    from clva_lite.toy.train import _compatible

    f = variant_config("F-object-last")
    saved = asdict(f)
    del saved["mimetic_slow_pairs"]
    del saved["model"]["rope_theta"]  # F's checkpoints were written before either field existed
    old = TrainConfig.from_dict(saved)
    assert old.mimetic_slow_pairs == 0 and old.model["rope_theta"] == 1e4
    assert _compatible(saved, f, 1)  # so a variant seeded from F's language checkpoint still resumes
    assert not _compatible(saved, TrainConfig.from_dict({**asdict(TrainConfig()), **{
        k: v for k, v in saved.items() if k not in ("model", "mimetic_std")}}), 1)
    assert TrainConfig.from_dict(asdict(TrainConfig())) == TrainConfig()  # a full dict is unchanged


def test_a_run_stopped_mid_stage_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import clva_lite.toy.train as train_module

    config = TrainConfig.from_dict({**tiny_training_config().__dict__, "instruct_steps": 6, "checkpoint_every": 2})
    whole, whole_log = train_toy_model(config, out=tmp_path / "whole")
    real_loss, calls = train_module.language_loss, []

    def stops_in_instruct(*args, **kwargs):  # align makes 3 calls, then instruct's steps 0, 1, 2 ...
        calls.append(1)
        if len(calls) == config.align_steps + 4:
            raise KeyboardInterrupt("stopped in instruct step 3")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "language_loss", stops_in_instruct)
    with pytest.raises(KeyboardInterrupt):
        train_toy_model(config, out=tmp_path / "stopped")
    partial = tmp_path / "stopped" / "checkpoints" / "3-instruct.partial.pt"
    assert torch.load(partial, weights_only=False)["step"] == 2
    other = TrainConfig.from_dict({**config.__dict__, "instruct_lr": 1.0})
    with pytest.raises(ValueError, match="another config"):
        train_module.StageResume(tmp_path / "stopped", 3, other, np.random.default_rng()).load()
    monkeypatch.setattr(train_module, "language_loss", real_loss)
    resumed, resumed_log = train_toy_model(config, out=tmp_path / "stopped")
    assert not partial.exists()  # the finished stage's checkpoint replaces it
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [s["final_loss"] for s in resumed_log] == [s["final_loss"] for s in whole_log]


def test_a_decoy_world_run_records_its_world_and_load_model_activates_it(tiny_run, tmp_path):
    from clva_lite.toy.world import active_world, generate_scene

    out, config, _, _ = tiny_run
    decoys = TrainConfig.from_dict({**config.__dict__, "world": "decoys"})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "0-vision.pt").symlink_to(out / "checkpoints" / "0-vision.pt")
    with pytest.raises(ValueError, match="another config"):  # a plain-world stage is not reused in another world
        train_toy_model(decoys, out=tmp_path)
    run = tmp_path / "decoys"
    train_toy_model(decoys, out=run)
    assert active_world() == "plain"  # training leaves the process's world as it was
    assert json.loads((run / "config.json").read_text())["toy_world"] == "decoys"
    loaded = clva_lite.load_model(str(run), device="cpu")
    try:
        assert loaded.toy_world == "decoys" and active_world() == "decoys"
        assert generate_scene("calibration", 0) == generate_scene("calibration", 0, "decoys")
        assert clva_lite.load_model("toy").toy_world == "plain" and active_world() == "plain"
    finally:
        w2.use_world("plain")
    scene = next(s for i in range(40) if (s := generate_scene("train", i, "decoys")).decoys)
    texts = Texts(np.random.default_rng(0), TrainConfig(world="decoys", caption_share=0.0, count_colour_share=0.0,
                                                         caption_noise=1.0))
    asked = [texts.question(scene) for _ in range(400)]
    about_decoys = [a for q, a in asked if q.split()[-1] in {d.category for d in scene.decoys}]
    assert len(about_decoys) > 50 and set(about_decoys) == {"no ."}
    captions = [texts.caption(scene) for _ in range(100)]
    assert not any(d.category in c.split() for c in captions for d in scene.decoys)


def test_the_train_command_passes_the_world_on(monkeypatch):
    from clva_lite.toy import __main__ as toy_cli
    from clva_lite.toy import train as recipe

    seen = {}
    monkeypatch.setattr(recipe, "main_train", lambda out, **kwargs: seen.update(out=out, **kwargs))
    toy_cli.main(["train", "--out", "somewhere", "--world", "decoys", "--config-json", '{"instruct_frozen_layers": 8}'])
    assert seen["out"] == "somewhere"
    assert json.loads(seen["config_json"]) == {"instruct_frozen_layers": 8, "world": "decoys"}
    with pytest.raises(SystemExit):
        toy_cli.main(["train", "--world", "fog"])
