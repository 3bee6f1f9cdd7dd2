import json

import pytest
import torch

import clva_lite
from clva_lite.models.families import FAMILIES
from clva_lite.toy import generate_scene
from clva_lite.toy.model import NUM_VISUAL_TOKENS
from clva_lite.toy.questions import position_question


def test_toy_model_answers_a_question(toy):
    scene = generate_scene("test", 0)
    answers = toy.generate([scene.image()], ["is there a star"], max_new_tokens=3)
    assert answers[0].split()[0] in ("yes", "no")
    assert not any(p.requires_grad for p in toy.model.parameters())
    assert not toy.model.training


def test_toy_prompt_uses_chat_template(toy):
    prompt = clva_lite.build_prompt(toy.processor, "is there a moon")
    assert prompt.rstrip() == "<image> question : is there a moon"  # the answer follows the object word
    longer = position_question("star", "moon")  # more words than the existence question, so row 1 gets padded
    batch = toy.inputs([generate_scene("test", 1).image()] * 2, [longer, "is there a star"])
    assert int((batch["input_ids"] == toy.image_token_id).sum()) == 2 * NUM_VISUAL_TOKENS
    assert batch["attention_mask"][1, 0] == 0  # left padding: the shorter prompt is padded on the left


@pytest.mark.parametrize("kind,family", [("llava-llama", "llava"), ("llava-qwen2", "llava"),
                                         *((f.tiny_kind, f.model_type) for f in FAMILIES.values()
                                           if f.tiny_kind != "llava-llama")])
def test_hub_style_folders_load_through_from_pretrained(tiny_dirs, kind, family):
    loaded = clva_lite.load_model(tiny_dirs[kind], device="cpu")
    assert loaded.family == family
    assert type(loaded.model).__name__ == FAMILIES[family].model_class
    prompt = loaded.processor.tokenizer.decode(loaded.inputs([generate_scene("test", 2).image()], ["is there a star ?"])
                                               ["input_ids"][0])
    assert "is there a star ?" in prompt and loaded.processor.image_token in prompt
    answers = loaded.generate([generate_scene("test", 2).image()], ["is there a star"],
                              max_new_tokens=2)
    assert len(answers) == 1
    assert loaded.model.dtype == torch.float32


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(OSError, match="could not load a model config"):
        clva_lite.load_model("no-such-org/no-such-model")


def test_folder_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no model"):
        clva_lite.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        clva_lite.load_model(tmp_path / "missing")


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not support.*Supported families"):
        clva_lite.load_model(tmp_path)


def test_wrong_image_type_is_a_clear_error(untrained):
    with pytest.raises(TypeError, match="pass PIL.Image.Image"):
        untrained.inputs([torch.zeros(3, 96, 96)], ["is there a star"])
    with pytest.raises(ValueError, match="one image per question"):
        untrained.inputs([generate_scene("test", 0).image()], ["a", "b"])


def test_quantization_needs_bitsandbytes_and_cuda():
    with pytest.raises((ImportError, ValueError), match="bitsandbytes|CUDA"):
        clva_lite.load_model("toy-untrained", device="cpu", quantization="4bit")
    with pytest.raises(ValueError, match="quantization must be"):
        clva_lite.load_model("toy-untrained", device="cpu", quantization="3bit")


def test_missing_toy_weights_say_how_to_train(monkeypatch, tmp_path):
    monkeypatch.setenv("CLVA_LITE_TOY_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="python -m clva_lite.toy train"):
        clva_lite.load_model("toy")


def test_bundled_toy_is_a_plain_hf_folder(toy):
    folder = clva_lite.models.loading.default_toy_path()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava" and config["text_config"]["num_hidden_layers"] == 16
    assert sum(f.stat().st_size for f in folder.iterdir()) < 25 * 2**20
