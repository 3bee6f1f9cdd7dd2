"""Train the toy LLaVA with the LLaVA recipe at toy scale.

Stages (each logged, each with a progress bar):

1. **vision** - pre-train the CLIP vision tower alone: a per-patch head predicts the category and colour of the
   object covering each 8x8 patch (dense labels from the world's geometry). Like CLIP pre-training, this is done
   before the language model ever sees an image; the head is thrown away.
2. **language** - pre-train the decoder on text only. The 64 image slots hold *symbolic* embeddings: the sum of
   the colour and category word embeddings of the object in that patch, or ``<bg>``. The decoder learns to
   caption and to answer questions by comparing question words with slot contents, the way a real LLaVA inherits
   question answering from its LLM.
3. **align** - projector alignment (LLaVA stage 1): vision tower and decoder frozen, the projector learns to map
   patch features to where the symbolic embeddings live (language-model loss plus a regression to the symbolic
   embeddings).
4. **instruct** - instruction tuning (LLaVA stage 2): projector and decoder trained on multi-turn conversations
   (captions and yes/no questions) over real images. Faint objects are named in captions and answers although
   their pixels barely show them: this is where the decoder learns the co-occurrence prior that makes it
   hallucinate.

Questions during training ask about a category drawn uniformly (present or absent, 50/50), so the prior the model
learns is the world's own statistics, not the benchmark's sampling.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import tqdm
from .model import CAPTION_REQUEST, NUM_VISUAL_TOKENS, build_processor, build_untrained_model, vocabulary
from .questions import MME_SUBTASKS, _mme_pair, caption, existence_question
from .world import CATEGORIES, COLOURS, Scene, Split, generate_scene, patch_labels


@dataclass
class TrainConfig:
    seed: int = 0
    train_scenes: int = 12000
    batch_size: int = 32
    turns: int = 3
    vision_steps: int = 4000
    vision_lr: float = 2e-3
    language_steps: int = 1500
    language_lr: float = 1e-3
    align_steps: int = 300
    align_lr: float = 2e-3
    instruct_steps: int = 1500
    instruct_lr: float = 5e-4
    caption_share: float = 0.3
    mme_share: float = 0.2
    held_out_scenes: int = 300
    threads: int = 2

    @classmethod
    def quick(cls) -> TrainConfig:
        """A run that finishes in about a minute on 2 cores: for tests and the notebook on the recipe."""
        return cls(train_scenes=400, batch_size=16, vision_steps=40, language_steps=60, align_steps=30,
                   instruct_steps=40, held_out_scenes=64)


def tiny_training_config(seed: int = 0) -> TrainConfig:
    """All four stages in about half a minute on one CPU thread: for notebook 07 and CI, not for a usable model.

    Every stage runs at least 30 steps, so its logged ``first_loss`` (mean of the first 10 steps) and
    ``final_loss`` (mean of the last 20) come from different steps. One thread: steady timing on a shared machine.
    """
    return TrainConfig(seed=seed, train_scenes=128, batch_size=8, turns=2, vision_steps=60, language_steps=40,
                       align_steps=30, instruct_steps=40, held_out_scenes=32, threads=1)


@dataclass
class TrainingData:
    """Rendered train scenes: pixels (N, 3, 64, 64) in the processor's normalisation, patch labels (N, 64)."""

    scenes: list[Scene]
    pixels: torch.Tensor
    patch_categories: torch.Tensor
    patch_colours: torch.Tensor


def render_training_data(n: int, split: Split = Split.TRAIN) -> TrainingData:
    scenes, pixels, categories, colours = [], [], [], []
    for index in tqdm(range(n), desc=f"render {split.value} scenes", leave=False):
        scene = generate_scene(split, index)
        scenes.append(scene)
        array = np.asarray(scene.image(), dtype=np.float32) / 255.0
        pixels.append(torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1))
        cat, col = patch_labels(scene)
        categories.append(torch.from_numpy(cat.reshape(-1)))
        colours.append(torch.from_numpy(col.reshape(-1)))
    return TrainingData(scenes, torch.stack(pixels), torch.stack(categories), torch.stack(colours))


def render_held_out(n: int) -> TrainingData:
    """Calibration scenes for the training log's held-out checks (never the test split)."""
    return render_training_data(n, Split.CALIBRATION)


class ConversationBuilder:
    """Token ids and answer-loss masks for multi-turn conversations about a scene."""

    def __init__(self, rng: np.random.Generator, config: TrainConfig):
        self.words = {w: i for i, w in enumerate(vocabulary())}
        self.rng = rng
        self.config = config

    def ids(self, text: str) -> list[int]:
        return [self.words[w] for w in text.split()]

    def _question(self, scene: Scene) -> tuple[str, str]:
        draw = self.rng.random()
        if draw < self.config.caption_share:
            return CAPTION_REQUEST, caption(scene)
        if draw < self.config.caption_share + self.config.mme_share:
            subtask = MME_SUBTASKS[1 + int(self.rng.integers(len(MME_SUBTASKS) - 1))]
            pair = _mme_pair(scene, subtask, self.rng)
            if pair is not None:
                k = int(self.rng.integers(2))
                return pair[k], ("yes ." if k == 0 else "no .")
        present = scene.categories
        if self.rng.random() < 0.5:
            return existence_question(present[int(self.rng.integers(len(present)))]), "yes ."
        absent = [c for c in CATEGORIES if c not in present]
        return existence_question(absent[int(self.rng.integers(len(absent)))]), "no ."

    def conversation(self, scene: Scene) -> tuple[list[int], list[int]]:
        ids = [self.words["<s>"]] + [self.words["<image>"]] * NUM_VISUAL_TOKENS
        loss = [0] * len(ids)
        for _ in range(self.config.turns):
            question, answer = self._question(scene)
            prompt = self.ids(f"question : {question} answer :")
            reply = self.ids(answer) + [self.words["</s>"]]
            ids += prompt + reply
            loss += [0] * len(prompt) + [1] * len(reply)
        return ids, loss

    def batch(self, scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, loss_mask), each (batch, seq), right-padded."""
        pairs = [self.conversation(s) for s in scenes]
        length = max(len(ids) for ids, _ in pairs)
        pad = self.words["<pad>"]
        ids = torch.full((len(pairs), length), pad)
        attention = torch.zeros((len(pairs), length), dtype=torch.long)
        loss = torch.zeros((len(pairs), length), dtype=torch.long)
        for row, (i, m) in enumerate(pairs):
            ids[row, : len(i)] = torch.tensor(i)
            attention[row, : len(i)] = 1
            loss[row, : len(m)] = torch.tensor(m)
        return ids, attention, loss


def symbolic_slots(model, categories: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Symbolic image slots (batch, 64, hidden): colour + category word embeddings, or ``<bg>``."""
    words = {w: i for i, w in enumerate(vocabulary())}
    embed = model.get_input_embeddings()
    category_ids = torch.tensor([words[c] for c in CATEGORIES] + [words["<bg>"]])
    colour_ids = torch.tensor([words[c] for c in COLOURS])
    slots = embed(category_ids[categories])
    has_object = colours < len(COLOURS)
    colour_embedding = embed(colour_ids[colours.clamp(max=len(COLOURS) - 1)])
    return slots + colour_embedding * has_object.unsqueeze(-1)


def language_loss(model, ids, attention, loss_mask, image_slots: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Next-token loss on answer tokens, with image-token embeddings replaced by ``image_slots``.

    Also returns the share of answer tokens predicted right (argmax), for the progress bar and the log.
    """
    embeds = model.get_input_embeddings()(ids)
    image_positions = ids == model.config.image_token_id
    embeds = embeds.masked_scatter(image_positions.unsqueeze(-1), image_slots.to(embeds.dtype))
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
    logits = model.lm_head(hidden[:, :-1])
    targets = ids[:, 1:].masked_fill(loss_mask[:, 1:] == 0, -100)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    supervised = targets != -100
    accuracy = (logits.argmax(-1) == targets)[supervised].float().mean()
    return loss, {"answer_token_acc": round(float(accuracy), 3)}


def visual_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """Vision-tower patch features (batch, 64, vision_hidden), CLS dropped (LLaVA's "default" strategy)."""
    return model.model.vision_tower(pixel_values=pixels).last_hidden_state[:, 1:]


def existence_accuracy(model, scenes: list[Scene], slots: torch.Tensor, rng: np.random.Generator) -> float:
    """Share of yes/no existence questions answered right (yes vs no logit at the answer position).

    ``slots`` (N, 64, hidden): what fills the image slots (symbolic embeddings or projected features). Half the
    questions ask about a present category, half about an absent one.
    """
    words = {w: i for i, w in enumerate(vocabulary())}
    ids, labels = [], []
    for scene in scenes:
        present = rng.random() < 0.5
        pool = scene.categories if present else [c for c in CATEGORIES if c not in scene.categories]
        question = existence_question(pool[int(rng.integers(len(pool)))])
        tokens = [words["<s>"]] + [words["<image>"]] * NUM_VISUAL_TOKENS
        tokens += [words[w] for w in f"question : {question} answer :".split()]
        ids.append(tokens)
        labels.append(present)
    ids_tensor = torch.tensor(ids)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids_tensor)
        embeds = embeds.masked_scatter((ids_tensor == model.config.image_token_id).unsqueeze(-1), slots)
        hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state[:, -1]
        logits = model.lm_head(hidden)
    says_yes = logits[:, words["yes"]] > logits[:, words["no"]]
    return float((says_yes == torch.tensor(labels)).float().mean())


def _cosine_lr(optimizer, base_lr: float, step: int, total: int, warmup: int = 50) -> None:
    warm = min(1.0, (step + 1) / max(1, min(warmup, total // 5)))
    lr = base_lr * warm * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def _run_stage(name: str, steps: int, lr: float, params, loss_fn, log: list[dict]) -> None:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    start = time.time()
    losses, extras = [], []
    bar = tqdm(range(steps), desc=f"stage {name}")
    for step in bar:
        _cosine_lr(optimizer, lr, step, steps)
        loss, extra = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        extras.append(extra)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", **extra)
    log.append({
        "stage": name, "steps": steps, "seconds": round(time.time() - start, 1),
        "first_loss": round(float(np.mean(losses[:10])), 4), "final_loss": round(float(np.mean(losses[-20:])), 4),
        **{k: round(float(np.mean([e[k] for e in extras[-20:]])), 3) for k in extras[-1]},
    })
    print(f"[{name}] {log[-1]}", flush=True)


@torch.enable_grad()
def train_toy_model(config: TrainConfig, out: str | Path | None = None) -> tuple[object, list[dict]]:
    """Run all four stages; save model + processor + ``training_log.json`` to ``out`` when given.

    Gradients are switched on inside, so it also works after ``torch.set_grad_enabled(False)`` (as notebooks do).
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    model = build_untrained_model(config.seed).train()
    data = render_training_data(config.train_scenes)
    builder = ConversationBuilder(rng, config)
    n, batch_size = len(data.scenes), config.batch_size
    log: list[dict] = []

    def sample() -> np.ndarray:
        return rng.integers(n, size=batch_size)

    # 1. vision tower with a throwaway per-patch head
    tower = model.model.vision_tower
    hidden = tower.config.hidden_size
    head = torch.nn.Linear(hidden, len(CATEGORIES) + 1 + len(COLOURS) + 1)

    def vision_loss(step):
        idx = torch.from_numpy(sample())
        logits = head(visual_features(model, data.pixels[idx]))
        cat_logits, col_logits = logits.split([len(CATEGORIES) + 1, len(COLOURS) + 1], dim=-1)
        cats, cols = data.patch_categories[idx], data.patch_colours[idx]
        loss = F.cross_entropy(cat_logits.flatten(0, 1), cats.flatten()) + F.cross_entropy(
            col_logits.flatten(0, 1), cols.flatten())
        object_patch = cats < len(CATEGORIES)
        accuracy = (cat_logits.argmax(-1) == cats)[object_patch].float().mean()
        return loss, {"object_patch_acc": round(float(accuracy), 3)}

    _run_stage("vision", config.vision_steps, config.vision_lr, [*tower.parameters(), *head.parameters()],
               vision_loss, log)
    tower.requires_grad_(False)
    tower.eval()

    # 2. decoder on text with symbolic image slots
    decoder_params = [*model.model.language_model.parameters()]

    def text_loss(step):
        idx = sample()
        ids, attention, loss_mask = builder.batch([data.scenes[i] for i in idx])
        t = torch.from_numpy(idx)
        slots = symbolic_slots(model, data.patch_categories[t], data.patch_colours[t])
        return language_loss(model, ids, attention, loss_mask, slots)

    _run_stage("language", config.language_steps, config.language_lr, decoder_params, text_loss, log)
    held_out = render_held_out(config.held_out_scenes)
    symbolic = symbolic_slots(model, held_out.patch_categories, held_out.patch_colours).detach()
    log[-1]["calibration_existence_acc"] = round(existence_accuracy(model, held_out.scenes, symbolic, rng), 3)
    print(f"[language] calibration existence accuracy (symbolic slots): {log[-1]['calibration_existence_acc']}")

    # 3. projector alignment, decoder and vision frozen
    with torch.no_grad():
        features = torch.cat([visual_features(model, data.pixels[i:i + 256]) for i in range(0, n, 256)])
    projector = model.model.multi_modal_projector
    model.model.language_model.requires_grad_(False)

    def align_loss(step):
        idx = sample()
        ids, attention, loss_mask = builder.batch([data.scenes[i] for i in idx])
        t = torch.from_numpy(idx)
        projected = projector(features[t])
        with torch.no_grad():
            target = symbolic_slots(model, data.patch_categories[t], data.patch_colours[t])
        regression = F.mse_loss(projected, target) / target.pow(2).mean()
        loss, extra = language_loss(model, ids, attention, loss_mask, projected)
        return loss + regression, {**extra, "regression": round(float(regression.detach()), 3)}

    _run_stage("align", config.align_steps, config.align_lr, [*projector.parameters()], align_loss, log)

    # 4. instruction tuning: projector + decoder
    model.model.language_model.requires_grad_(True)

    def instruct_loss(step):
        idx = sample()
        ids, attention, loss_mask = builder.batch([data.scenes[i] for i in idx])
        return language_loss(model, ids, attention, loss_mask, projector(features[torch.from_numpy(idx)]))

    _run_stage("instruct", config.instruct_steps, config.instruct_lr, [*projector.parameters(), *decoder_params],
               instruct_loss, log)

    with torch.no_grad():
        projected = projector(visual_features(model, held_out.pixels))
    log[-1]["calibration_existence_acc"] = round(existence_accuracy(model, held_out.scenes, projected, rng), 3)
    print(f"[instruct] calibration existence accuracy (images): {log[-1]['calibration_existence_acc']}")
    model.eval()
    model.requires_grad_(False)
    if out is not None:
        save_toy_model(model, out, config, log)
    return model, log


def save_toy_model(model, out: str | Path, config: TrainConfig, log: list[dict]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_processor().save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps({"config": asdict(config), "stages": log}, indent=2) + "\n")
    return out
