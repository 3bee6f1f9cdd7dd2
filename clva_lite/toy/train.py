"""Train the toy LLaVA with the LLaVA-1.5 recipe at toy scale.

Stages (each logged with first/final loss and seconds, each checkpointed to ``out/checkpoints/`` and skipped on
resume when its checkpoint is there):

1. **vision** - CLIP-like pre-training of the vision tower: image <-> caption InfoNCE against a small text encoder
   (thrown away afterwards), plus (``vision_phrase_weight``) a SigLIP-style sigmoid image <-> object-phrase term
   ("a star", one text per category). No per-patch labels.
2. **language** - LLM-like pre-training of the decoder on text only: captions on their own (the co-occurrence
   prior), scenes written as text followed by questions and answers, and scene text followed by its caption. No
   image slots. The decoder's attention starts from a mimetic initialisation (``model.mimetic_init``) and the scene
   texts start short (``language_curriculum``): without both, "is there a X" stayed at chance
   (docs/toy-recipe-history.md).
3. **align** - LLaVA stage 1: projector only (vision tower and decoder frozen), captioning loss on image + caption.
4. **instruct** - LLaVA stage 2: projector + decoder (and, with ``instruct_tower_lr_scale`` > 0, the tower at a
   lower learning rate; with ``instruct_frozen_layers`` = k, decoder layers k.. only) on multi-turn conversations
   (captions and yes/no questions) over images. Faint objects are
   named in captions and answers (the pixels barely show them), and with ``caption_noise`` a caption also
   names an absent group-mate (annotation noise that follows co-occurrence).

Questions during training ask about a category drawn uniformly (present or absent, 50/50), so the prior the model
learns is the world's own statistics, not the benchmark's sampling.

``python -m clva_lite.toy train --out DIR [--quick]``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import tqdm
from .model import CAPTION_REQUEST, ModelConfig, build_processor, build_untrained_model, mimetic_init, vocabulary
from .questions import _mme_pair, caption, existence_question
from .world import CATEGORIES, NUM_VISUAL_TOKENS, PARTNERS, Scene, Split, as_world, generate_scene, using_world

STAGES = ("vision", "language", "align", "instruct")
LONG_FILLERS = (".", "the", "of", "on", "in")  # filler words of long scene texts (never an object or colour)


@dataclass
class TrainConfig:
    seed: int = 0
    train_scenes: int = 8000
    # the toy world the scenes come from (clva_lite.toy.world.WORLDS); saved in the model's config.json as toy_world
    world: str = "plain"
    threads: int = 2
    model: dict = field(default_factory=lambda: asdict(ModelConfig()))
    # 1. vision (CLIP-like)
    vision_steps: int = 600
    vision_batch: int = 64
    vision_lr: float = 1e-3
    vision_pool: str = "mil"  # "cls" (CLIP's pooler), "mean" or "max" over post-layernormed patch tokens, or
    #                            "mil": captions as "mean", a phrase scored by its best-matching patch
    vision_phrase_weight: float = 1.0
    # "mil": a phrase's image score is the mean of its k best patch scores. k = 1 (FILIP's max) trains one patch per
    # object, and per-patch probes then find the category in about a third of the object patches
    # (docs/toy-recipe-history.md, RoPE section); objects cover 2 x 2 to 3 x 3 patches
    vision_mil_topk: int = 1
    # the vision layer the phrase term scores (-1: the last, post-layernormed; -2: the one LLaVA reads)
    vision_phrase_layer: int = -1
    # the phrase term's own logit scale (0: share CLIP's) and initial bias; SigLIP uses 10 / -10, but on normalised
    # embeddings a scale of 10 with bias -10 keeps every phrase logit <= 0 until the scale grows (probe AUC after 600
    # steps: 0.70 with 10, 0.80 with 30; docs/toy-recipe-history.md)
    vision_phrase_scale: float = 30.0
    vision_phrase_bias: float = -10.0
    # how the caption InfoNCE compares an image with a caption: "pooled" (CLIP: one vector each) or "tokens" (FILIP's
    # late interaction with ``vision_pool="mil"``: an image's score for a caption is the mean over its patches of the
    # best-matching caption token, and back, so every patch is trained, not one per object)
    vision_caption_match: str = "pooled"
    vision_caption: str = "objects"  # "full": the caption ("a red star and ..."); "objects": its nouns only, left to
    #                               right ("a star and a moon ."), so colours cannot solve the retrieval alone
    # 2. language (text only)
    language_steps: int = 500
    language_batch: int = 32
    language_lr: float = 1e-3
    decoder_init: str = "mimetic"  # "mimetic" (W_K = W_Q per head, model.mimetic_init) or "default" (Hugging Face's)
    mimetic_std: float = 0.15
    # 0: every q/k row shared; k: only the k slowest RoPE pairs (model.mimetic_init). Four pairs with RoPE base 1e6
    # keep a word's match with itself flat out to 150 tokens (the plain init loses 70 % of it there)
    mimetic_slow_pairs: int = 4
    language_mix: tuple = (0.2, 0.1, 0.7)  # P(caption alone), P(scene text + caption), P(scene text + questions)
    language_turns: int = 12  # questions per scene-text document
    # (until_step, max_objects, turns): short scene texts first (with one object, "is there a X" is a comparison of
    # two words; the 16-layer decoder learns that first, then longer lists)
    language_curriculum: tuple = ((150, 1, 1), (300, 2, 2))
    # "all" tokens (plain LM) or "answers" (scene documents supervise their answers only, like the conversation
    # fine-tuning of LLaVA's Vicuna; captions alone keep all tokens)
    language_loss: str = "answers"
    # P(a scene document writes its scene "long": object mentions scattered, some repeated, through filler words up
    # to ``language_long_length`` tokens), as an image reaches the decoder: 144 tokens, each object on several. With
    # the plain mimetic init they did not stop the reading from decaying with distance; the slow-pair init below made
    # them unnecessary (docs/toy-recipe-history.md, RoPE section), so they are off by default
    language_long_share: float = 0.0
    language_long_length: int = 150
    # 3. align (projector only)
    align_steps: int = 300
    align_batch: int = 16
    align_lr: float = 2e-3
    align_task: str = "caption"  # "caption" (LLaVA stage 1: image -> caption) or "conversation" (instruct's mix)
    # 4. instruct (projector + decoder)
    # 1750, not 1400: calibration POPE random 0.889 -> 0.902 with the gap still 14.8 points; at 2100 the gap fell to
    # 7.4, below the 8 asked (docs/toy-recipe-history.md, 1,750-step section)
    instruct_steps: int = 1750
    instruct_batch: int = 16
    instruct_lr: float = 5e-4
    # 0: the tower stays frozen in stage 2, as in LLaVA-1.5. > 0: it is trained too, at instruct_lr times this, as
    # later LLaVA-style recipes do (LLaVA-OneVision, Qwen-VL), so the answers' loss reaches the patch tokens.
    instruct_tower_lr_scale: float = 0.0
    # k > 0: decoder layers 0..k-1 stay as the language stage left them in stage 2 (projector and layers k.. are
    # trained), so the image has to be read by the upper layers; 0: the whole decoder is tuned, as in LLaVA-1.5
    instruct_frozen_layers: int = 0
    # frozen layers (< instruct_frozen_layers) whose attention query and key projections are tuned in stage 2 all the
    # same: their heads can learn where to look in the image while what they write (values, outputs, MLPs) stays as
    # the language stage left it
    instruct_query_key_layers: tuple = ()
    turns: int = 3
    caption_share: float = 0.3
    count_colour_share: float = 0.15
    groupmate_negative_share: float = 0.0  # share of absent-object questions asking about an absent group-mate
    # in the "decoys" world: share of absent-object questions about a scene that holds decoys that ask about a
    # decoy's category (answer "no": only the surface tells a decoy from the object)
    decoy_negative_share: float = 0.5
    # P(a training caption also names an absent group-mate). 0.25 rather than 0.1: at 0.1 the full run's captions
    # hallucinated too rarely (test CHAIR_s 8.3 %, below the 10-40 % asked; docs/toy-recipe-history.md).
    caption_noise: float = 0.25
    held_out_scenes: int = 200
    # steps between mid-stage checkpoints (0: only at the end of each stage); a run that stops mid-stage resumes from
    # the last one with the same weights, optimizer state and data order as if it had not stopped
    checkpoint_every: int = 250

    @classmethod
    def quick(cls) -> TrainConfig:
        """All four stages in about a minute on one thread (smoke runs); not a usable model."""
        return cls(train_scenes=256, threads=1, vision_steps=30, vision_batch=32, language_steps=30, language_batch=16,
                   align_steps=30, align_batch=8, instruct_steps=30, instruct_batch=8, held_out_scenes=32)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from a (possibly older, saved) dict; see :func:`with_legacy_fields`."""
        values = with_legacy_fields(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**values)


# Fields added after checkpoints were written with a behaviour that is no longer the default: a saved config that
# lacks one was trained with the value here, not with today's default (RoPE base 1e4 and mimetic init on every q/k
# row before the RoPE change).
_LEGACY_VALUES = {"mimetic_slow_pairs": 0}
_LEGACY_MODEL_VALUES = {"rope_theta": 1e4}


def with_legacy_fields(values: dict) -> dict:
    """``values`` with the fields it lacks that changed default since (``_LEGACY_VALUES``) filled in with what they
    were; a full config dict comes back unchanged."""
    values = {**_LEGACY_VALUES, **values}
    if isinstance(values.get("model"), dict):
        values["model"] = {**_LEGACY_MODEL_VALUES, **values["model"]}
    return values


def tiny_training_config(seed: int = 0) -> TrainConfig:
    """Every stage for a handful of steps on one thread (seconds): for tests only."""
    return TrainConfig(seed=seed, train_scenes=24, threads=1, vision_steps=4, vision_batch=8, language_steps=4,
                       language_batch=4, align_steps=3, align_batch=2, instruct_steps=3, instruct_batch=2,
                       turns=2, held_out_scenes=8)


# --- data ---------------------------------------------------------------------------------------------------------


@dataclass
class Images:
    scenes: list[Scene]
    pixels: torch.Tensor  # (N, 3, 96, 96) uint8

    def batch(self, index) -> torch.Tensor:
        """Pixels in the processor's normalisation ((x / 255 - 0.5) / 0.5), float32."""
        return self.pixels[index].float().div_(127.5).sub_(1.0)


def render_images(n: int, split: Split = Split.TRAIN) -> Images:
    scenes, pixels = [], []
    for index in tqdm(range(n), desc=f"render {split.value} scenes", leave=False):
        scene = generate_scene(split, index)
        scenes.append(scene)
        pixels.append(torch.from_numpy(np.asarray(scene.image(), dtype=np.uint8).copy()).permute(2, 0, 1))
    return Images(scenes, torch.stack(pixels))


class Texts:
    """Token ids for every text the recipe writes (captions, questions, scenes as text, conversations)."""

    def __init__(self, rng: np.random.Generator, config: TrainConfig):
        self.words = {w: i for i, w in enumerate(vocabulary())}
        self.rng = rng
        self.config = config

    def ids(self, text: str) -> list[int]:
        return [self.words[w] for w in text.split()]

    def caption(self, scene: Scene, noisy: bool = True) -> str:
        """v1's caption rule; with ``caption_noise``, an absent group-mate is sometimes named too."""
        text = caption(scene)
        if noisy and self.config.caption_noise > 0 and self.rng.random() < self.config.caption_noise:
            present = scene.categories
            decoys = {d.category for d in scene.decoys}  # never named, not even by annotation noise
            mates = [m for c in present for m in PARTNERS[c] if m not in present and m not in decoys]
            if mates:
                ghost = mates[int(self.rng.integers(len(mates)))]
                colour = scene.objects[int(self.rng.integers(len(scene.objects)))].colour
                text = text[:-2] + f" and a {colour} {ghost} ."
        return text

    def vision_caption(self, scene: Scene) -> str:
        """The contrastive stage's text for ``scene`` (``vision_caption``: "full" or "objects"), never noisy."""
        if self.config.vision_caption == "full":
            return caption(scene)
        if self.config.vision_caption != "objects":
            raise ValueError(f"vision_caption must be 'full' or 'objects', not {self.config.vision_caption!r}")
        ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
        return " and ".join(f"a {o.category}" for o in ordered) + " ."

    def question(self, scene: Scene) -> tuple[str, str]:
        """One (question, answer) about a scene: caption request, count/colour/position, or existence."""
        draw = self.rng.random()
        if draw < self.config.caption_share:
            return CAPTION_REQUEST, self.caption(scene)
        if draw < self.config.caption_share + self.config.count_colour_share:
            subtask = ("count", "position", "color")[int(self.rng.integers(3))]
            pair = _mme_pair(scene, subtask, self.rng)
            if pair is not None:
                k = int(self.rng.integers(2))
                return pair[k], ("yes ." if k == 0 else "no .")
        present = scene.categories
        if self.rng.random() < 0.5:
            return existence_question(present[int(self.rng.integers(len(present)))]), "yes ."
        if scene.decoys and self.rng.random() < self.config.decoy_negative_share:
            decoy = scene.decoys[int(self.rng.integers(len(scene.decoys)))]
            return existence_question(decoy.category), "no ."
        absent = [c for c in CATEGORIES if c not in present]
        mates = [c for c in absent if any(c in PARTNERS[p] for p in present)]
        pool = mates if mates and self.rng.random() < self.config.groupmate_negative_share else absent
        return existence_question(pool[int(self.rng.integers(len(pool)))]), "no ."

    def scene_text(self, scene: Scene) -> str:
        """The scene written as text for language pre-training: its objects in a random order."""
        order = self.rng.permutation(len(scene.objects))
        return " and ".join(f"a {scene.objects[k].colour} {scene.objects[k].category}" for k in order) + " ."

    def scene_text_long(self, scene: Scene) -> str:
        """The scene as a long text: each object's "colour category" mentioned 1-3 times at random places among
        filler words, ``2 * mentions + 4`` to ``language_long_length`` tokens in all (still text, no image slots)."""
        mentions = [f"{o.colour} {o.category}" for o in scene.objects for _ in range(int(self.rng.integers(1, 4)))]
        low = 2 * len(mentions) + 4
        length = int(self.rng.integers(low, max(low, self.config.language_long_length) + 1))
        fillers = [LONG_FILLERS[int(k)] for k in self.rng.integers(len(LONG_FILLERS), size=length - 2 * len(mentions))]
        slots = sorted(self.rng.choice(len(fillers) + 1, size=len(mentions), replace=True))
        words: list[str] = []
        order = self.rng.permutation(len(mentions))
        for k, filler in enumerate(fillers + [None]):
            while slots and slots[0] == k:
                slots.pop(0)
                words.append(mentions[order[len(order) - len(slots) - 1]])
            if filler is not None:
                words.append(filler)
        return " ".join(words)

    def curriculum(self, scene: Scene, step: int | None) -> tuple[Scene, int]:
        """(scene, questions per document) at language step ``step``: ``language_curriculum`` rows
        ``(until_step, max_objects, turns)`` keep a random subset of the objects and fewer questions early on."""
        for until, max_objects, turns in self.config.language_curriculum:
            if step is not None and step < until:
                if len(scene.objects) > max_objects:
                    keep = sorted(self.rng.choice(len(scene.objects), size=max_objects, replace=False))
                    scene = replace(scene, objects=tuple(scene.objects[k] for k in keep))
                return scene, turns
        return scene, self.config.language_turns

    def text_document(self, scene: Scene, step: int | None = None) -> tuple[list[int], list[int]]:
        """One language pre-training document (no image) and its loss mask: caption alone, scene + caption, or
        scene + questions. With ``language_loss="answers"`` scene documents supervise their answers only."""
        scene, turns = self.curriculum(scene, step)
        kind = self.rng.random()
        alone, with_caption, _ = self.config.language_mix
        answers_only = self.config.language_loss == "answers"
        ids, mask = [self.words["<s>"]], [0]
        if kind < alone:
            part = self.ids(f"question : {CAPTION_REQUEST} {self.caption(scene)}") + [self.words["</s>"]]
            return ids + part, mask + [1] * len(part)
        curriculum_done = step is None or all(step >= until for until, _, _ in self.config.language_curriculum)
        long = curriculum_done and self.rng.random() < self.config.language_long_share
        part = self.ids(f"scene : {self.scene_text_long(scene) if long else self.scene_text(scene)}")
        ids, mask = ids + part, mask + [0 if answers_only else 1] * len(part)
        captioning = kind < alone + with_caption
        for _ in range(1 if captioning else turns):
            q, a = (CAPTION_REQUEST, self.caption(scene)) if captioning else self.question(scene)
            prompt, reply = self.ids(f"question : {q}"), self.ids(a) + [self.words["</s>"]]
            ids += prompt + reply
            mask += [0 if answers_only else 1] * len(prompt) + [1] * len(reply)
        return ids, mask

    def conversation(self, scene: Scene, turns: int, caption_only: bool = False) -> tuple[list[int], list[int]]:
        ids = [self.words["<s>"]] + [self.words["<image>"]] * NUM_VISUAL_TOKENS
        loss = [0] * len(ids)
        for _ in range(turns):
            q, a = (CAPTION_REQUEST, self.caption(scene)) if caption_only else self.question(scene)
            prompt = self.ids(f"question : {q}")
            reply = self.ids(a) + [self.words["</s>"]]
            ids += prompt + reply
            loss += [0] * len(prompt) + [1] * len(reply)
        return ids, loss

    def pad(self, rows: list[list[int]], masks: list[list[int]] | None = None):
        """(ids, attention, loss_mask), right-padded; without ``masks`` every real token is supervised."""
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.words["<pad>"])
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        loss = torch.zeros((len(rows), length), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, :len(row)] = torch.tensor(row)
            attention[k, :len(row)] = 1
            loss[k, :len(row)] = torch.tensor(masks[k]) if masks is not None else 1
        return ids, attention, loss


class TextEncoder(torch.nn.Module):
    """CLIP's text side at toy scale: embeddings + 2 transformer layers, mean-pooled, projected."""

    def __init__(self, vocab_size: int, width: int = 64, out: int = 64, max_len: int = 64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = torch.nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.proj = torch.nn.Linear(width, out)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, tokens: bool = False) -> torch.Tensor:
        """(B, out) normalised text embeddings, or with ``tokens`` (B, L, out) normalised per-token embeddings."""
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=attention == 0)
        if tokens:
            return F.normalize(self.proj(x), dim=-1)
        mask = attention.unsqueeze(-1).float()
        return F.normalize(self.proj((x * mask).sum(1) / mask.sum(1).clamp_min(1)), dim=-1)


def token_wise_similarity(patches: torch.Tensor, tokens: torch.Tensor, attention: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP's late interaction. ``patches`` (I, V, D) and ``tokens`` (T, L, D) normalised, ``attention`` (T, L).

    Returns (image-to-text, text-to-image) similarities, each (I, T): the mean over an image's patches of its best
    caption token, and the mean over a caption's real tokens of its best patch.
    """
    similarity = torch.einsum("ivd,tld->itvl", patches, tokens)  # (I, T, V, L)
    real = attention.bool()[None, :, None, :]
    image_to_text = similarity.masked_fill(~real, float("-inf")).amax(-1).mean(-1)
    best_patch = similarity.amax(2)  # (I, T, L)
    text_to_image = (best_patch * attention[None]).sum(-1) / attention.sum(-1).clamp_min(1)[None]
    return image_to_text, text_to_image


def patch_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """What LLaVA feeds the projector: the configured vision layer's hidden states, CLS dropped."""
    layer = model.config.vision_feature_layer
    out = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def _cosine_lr(optimizer, base_lr: float, step: int, total: int, warmup: int = 50) -> None:
    warm = min(1.0, (step + 1) / max(1, min(warmup, total // 5)))
    lr = base_lr * warm * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class StageResume:
    """Mid-stage checkpoints of one stage (``out/checkpoints/{k}-{stage}.partial.pt``): the stage's trained tensors,
    the optimizer, the stage's random generators and the losses so far, every ``every`` steps."""

    def __init__(self, out: Path | None, k: int, config: TrainConfig, rng: np.random.Generator):
        self.path = None if out is None or config.checkpoint_every <= 0 else (
            out / "checkpoints" / f"{k}-{STAGES[k]}.partial.pt")
        self.k, self.config, self.rng, self.every = k, config, rng, config.checkpoint_every

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        state = torch.load(self.path, weights_only=False)
        if not _compatible(state["config"], self.config, self.k):
            raise ValueError(f"{self.path} was written with another config; delete it or use its config")
        return state

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "config": asdict(self.config), "rng": self.rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(self.path)

    def done(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _run_stage(name: str, steps: int, lr: float, params, loss_fn, log: list[dict],
               resume: StageResume | None = None) -> None:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    start, first, before = time.time(), 0, 0.0
    losses, extras = [], []
    state = resume.load() if resume is not None else None
    if state is not None:
        with torch.no_grad():
            for param, saved in zip(trained, state["params"], strict=True):
                param.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        resume.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        first, before, losses, extras = state["step"], state["seconds"], state["losses"], state["extras"]
        print(f"resuming stage {name} at step {first} ({resume.path})", flush=True)
    bar = tqdm(range(first, steps), desc=f"stage {name}", initial=first, total=steps)
    for step in bar:
        _cosine_lr(optimizer, lr, step, steps)
        loss, extra = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        extras.append(extra)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", **extra)
        if resume is not None and resume.every > 0 and (step + 1) % resume.every == 0 and step + 1 < steps:
            resume.save({"step": step + 1, "params": [p.detach().clone() for p in trained],
                         "optimizer": optimizer.state_dict(), "losses": losses, "extras": extras,
                         "seconds": before + time.time() - start})
    log.append({
        "stage": name, "steps": steps, "seconds": round(before + time.time() - start, 1),
        "first_loss": round(float(np.mean(losses[:10])), 4), "final_loss": round(float(np.mean(losses[-20:])), 4),
        **{k: round(float(np.mean([e[k] for e in extras[-20:]])), 3) for k in extras[-1]},
    })
    print(f"[{name}] {log[-1]}", flush=True)


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


# --- checkpoints --------------------------------------------------------------------------------------------------


def _checkpoint_path(out: Path, k: int) -> Path:
    return out / "checkpoints" / f"{k}-{STAGES[k]}.pt"


def _save_checkpoint(model, out: Path | None, k: int, config: TrainConfig, log: list[dict]) -> None:
    if out is None:
        return
    path = _checkpoint_path(out, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "log": log, "config": asdict(config)}, tmp)
    tmp.replace(path)


_STAGE_FIELDS = {
    "vision": ("seed", "train_scenes", "world", "model", "vision_steps", "vision_batch", "vision_lr", "vision_pool",
               "vision_phrase_weight", "vision_phrase_scale", "vision_phrase_bias", "vision_caption",
               "vision_mil_topk", "vision_phrase_layer", "vision_caption_match"),
    "language": ("language_steps", "language_batch", "language_lr", "decoder_init", "mimetic_std",
                 "mimetic_slow_pairs", "language_mix", "language_turns", "language_curriculum", "language_loss",
                 "language_long_share", "language_long_length", "turns", "caption_share", "count_colour_share",
                 "groupmate_negative_share", "caption_noise", "decoy_negative_share"),
    "align": ("align_steps", "align_batch", "align_lr", "align_task"),
    "instruct": ("instruct_steps", "instruct_batch", "instruct_lr", "instruct_tower_lr_scale", "instruct_frozen_layers",
                 "instruct_query_key_layers", "held_out_scenes"),
}


def stage_fields(k: int) -> tuple[str, ...]:
    """Config fields stages ``0..k`` depend on (a checkpoint after stage k is valid for any config that agrees on
    them, e.g. instruct-only variants can start from one shared language checkpoint)."""
    return tuple(f for stage in STAGES[:k + 1] for f in _STAGE_FIELDS[stage])


def _compatible(saved: dict, config: TrainConfig, k: int) -> bool:
    """Fields missing from an older checkpoint count as what they were then (``with_legacy_fields``), else as the
    current defaults."""
    saved, current, defaults = with_legacy_fields(saved), asdict(config), asdict(TrainConfig())
    return all(_same(saved.get(f, defaults[f]), current[f]) for f in stage_fields(k))


def _same(a, b) -> bool:
    """Equality that treats lists and tuples alike, at any depth (JSON configs hold lists)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _last_checkpoint(out: Path | None, config: TrainConfig) -> tuple[int, dict | None]:
    """(index of the last completed stage, its checkpoint), or (-1, None)."""
    if out is None:
        return -1, None
    for k in reversed(range(len(STAGES))):
        path = _checkpoint_path(out, k)
        if path.exists():
            state = torch.load(path, weights_only=False)
            if not _compatible(state["config"], config, k):
                raise ValueError(f"{path} was written with another config; delete {path.parent} or use its config")
            return k, state
    return -1, None


def seed_checkpoints(base: str | Path, out: str | Path, config: TrainConfig) -> int:
    """Copy into ``out/checkpoints`` the latest checkpoint of run ``base`` that ``config`` can start from;
    returns its stage index (-1 when none fits)."""
    import shutil

    for k in reversed(range(len(STAGES))):
        path = _checkpoint_path(Path(base), k)
        if path.exists() and _compatible(torch.load(path, weights_only=False)["config"], config, k):
            target = _checkpoint_path(Path(out), k)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy(path, target)
            return k
    return -1


# --- held-out checks ----------------------------------------------------------------------------------------------


def draw_existence_question(scene: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """(question, whether its object is present): a present category or an absent one, each with probability 1/2."""
    present = bool(rng.random() < 0.5)
    pool = scene.categories if present else [c for c in CATEGORIES if c not in scene.categories]
    return existence_question(pool[int(rng.integers(len(pool)))]), present


@torch.no_grad()
def existence_accuracy(model, slots: torch.Tensor | None, scenes: list[Scene], texts: Texts,
                       rng: np.random.Generator, as_text: bool = False) -> float:
    """Yes/no existence accuracy (yes vs no logit) on ``scenes``: over images (``slots``: projected features) or,
    with ``as_text``, over the scene written as text (the language stage's check)."""
    words = texts.words
    right = []
    for k, scene in enumerate(scenes):
        question, present = draw_existence_question(scene, rng)
        if as_text:
            ids = [words["<s>"]] + texts.ids(f"scene : {texts.scene_text(scene)} question : {question}")
            embeds = model.get_input_embeddings()(torch.tensor([ids]))
        else:
            ids = [words["<s>"]] + [words["<image>"]] * NUM_VISUAL_TOKENS + texts.ids(
                f"question : {question}")
            ids_t = torch.tensor([ids])
            embeds = model.get_input_embeddings()(ids_t)
            embeds = embeds.masked_scatter((ids_t == model.config.image_token_id).unsqueeze(-1), slots[k:k + 1])
        hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state[:, -1]
        logits = model.lm_head(hidden)[0]
        right.append(bool(logits[words["yes"]] > logits[words["no"]]) == present)
    return float(np.mean(right))


# --- the recipe ---------------------------------------------------------------------------------------------------


@torch.enable_grad()
def train_toy_model(config: TrainConfig, out: str | Path | None = None, *, stop_after: str | None = None,
                 keep_checkpoints: bool = True) -> tuple[object, list[dict]]:
    """Run the four stages (resuming from ``out/checkpoints`` when there); save the model folder to ``out``.

    ``stop_after`` ends after that stage (its checkpoint written), e.g. to test resuming. Without
    ``keep_checkpoints`` the per-stage checkpoints (about 14 MB each) are deleted once the model folder is saved.
    """
    if not 0.0 <= config.instruct_tower_lr_scale <= 1.0:
        raise ValueError(f"instruct_tower_lr_scale must be in [0, 1] (0: frozen tower, as in LLaVA-1.5), "
                         f"not {config.instruct_tower_lr_scale}")
    decoder_layers = config.model["layers"]
    if not 0 <= config.instruct_frozen_layers < decoder_layers:
        raise ValueError(f"instruct_frozen_layers must be in 0..{decoder_layers - 1} (decoder layers kept frozen in "
                         f"stage 2; 0 tunes them all, as LLaVA-1.5 does), not {config.instruct_frozen_layers}")
    outside = [k for k in config.instruct_query_key_layers if not 0 <= k < config.instruct_frozen_layers]
    if outside:
        raise ValueError(f"instruct_query_key_layers names layers {outside} that are not frozen in stage 2; list "
                         f"layers in 0..{config.instruct_frozen_layers - 1} (those below instruct_frozen_layers)")
    with using_world(as_world(config.world)):
        return _train_toy_model(config, out, stop_after, keep_checkpoints)


def _train_toy_model(config: TrainConfig, out: str | Path | None, stop_after: str | None,
                     keep_checkpoints: bool) -> tuple[object, list[dict]]:
    out = Path(out) if out is not None else None
    torch.set_num_threads(config.threads)
    model = build_untrained_model(config.seed, ModelConfig(**config.model)).train()
    for sub in (model.config, model.config.text_config, model.config.vision_config):
        sub._attn_implementation = "sdpa"
    done, state = _last_checkpoint(out, config)
    log: list[dict] = []
    if state is not None:
        model.load_state_dict(state["state_dict"])
        log = list(state["log"])
        log = [entry for entry in log if entry["stage"] in STAGES[:done + 1]]
        print(f"resuming after stage {STAGES[done]} ({_checkpoint_path(out, done)})", flush=True)
    images = render_images(config.train_scenes)
    held_out = render_images(config.held_out_scenes, Split.CALIBRATION)
    n = len(images.scenes)
    tower = model.model.vision_tower
    projector = model.model.multi_modal_projector
    decoder = model.model.language_model

    def stage_rng(k: int) -> np.random.Generator:
        torch.manual_seed(config.seed * 100 + k)
        return np.random.default_rng([config.seed, k])

    def finish(k: int) -> bool:
        _save_checkpoint(model, out, k, config, log)
        StageResume(out, k, config, np.random.default_rng()).done()  # the stage is complete: its partial one goes
        return stop_after == STAGES[k]

    # 1. vision: CLIP-like contrastive pre-training
    if done < 0:
        rng = stage_rng(0)
        if not 1 <= config.vision_mil_topk <= NUM_VISUAL_TOKENS:
            raise ValueError(f"vision_mil_topk must be in 1..{NUM_VISUAL_TOKENS} (patches per image), "
                             f"not {config.vision_mil_topk}")
        vision_layers = tower.config.num_hidden_layers
        if not -vision_layers <= config.vision_phrase_layer <= -1:
            raise ValueError(f"vision_phrase_layer must be in -{vision_layers}..-1 (counted from the tower's last "
                             f"layer), not {config.vision_phrase_layer}")
        if config.vision_caption_match not in ("pooled", "tokens"):
            raise ValueError(f"vision_caption_match must be 'pooled' or 'tokens', not {config.vision_caption_match!r}")
        token_wise = config.vision_caption_match == "tokens"
        if token_wise and config.vision_pool != "mil":
            raise ValueError("vision_caption_match='tokens' needs vision_pool='mil' (it scores per-patch embeddings), "
                             f"not vision_pool={config.vision_pool!r}")
        texts = Texts(rng, config)
        width = tower.config.hidden_size
        text_encoder = TextEncoder(len(texts.words))
        image_proj = torch.nn.Linear(width, 64)
        scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        phrase_bias = torch.nn.Parameter(torch.tensor(config.vision_phrase_bias))
        own_scale = config.vision_phrase_scale > 0
        phrase_scale = torch.nn.Parameter(torch.tensor(float(np.log(config.vision_phrase_scale if own_scale else 1.0))))
        phrase_ids, phrase_attention, _ = texts.pad([texts.ids(f"a {c}") for c in CATEGORIES])
        present_table = torch.tensor([[c in s.categories for c in CATEGORIES] for s in images.scenes]).float()

        def image_embedding(pixels) -> tuple[torch.Tensor, torch.Tensor | None]:
            """(pooled image embedding (B, 64), per-patch embeddings (B, V, 64) for ``vision_pool="mil"``)."""
            hidden = tower(pixel_values=pixels, output_hidden_states=config.vision_phrase_layer != -1)
            if config.vision_pool == "cls":
                return F.normalize(image_proj(hidden.pooler_output), dim=-1), None
            layernorm = getattr(tower, "vision_model", tower).post_layernorm
            patches = layernorm(hidden.last_hidden_state[:, 1:])
            if config.vision_pool == "mil":
                scored = patches if config.vision_phrase_layer == -1 else layernorm(
                    hidden.hidden_states[config.vision_phrase_layer][:, 1:])
                return F.normalize(image_proj(patches.mean(1)), dim=-1), F.normalize(image_proj(scored), dim=-1)
            pooled = patches.amax(1) if config.vision_pool == "max" else patches.mean(1)
            return F.normalize(image_proj(pooled), dim=-1), None

        def vision_loss(step):
            idx = torch.from_numpy(rng.integers(n, size=config.vision_batch))
            img, patch_emb = image_embedding(images.batch(idx))
            ids, attention, _ = texts.pad([texts.ids(texts.vision_caption(images.scenes[int(i)])) for i in idx])
            target = torch.arange(len(idx))
            if token_wise:
                image_to_text, text_to_image = token_wise_similarity(patch_emb, text_encoder(ids, attention, True),
                                                                     attention)
                logits = scale.exp().clamp(max=100) * image_to_text
                loss = (F.cross_entropy(logits, target)
                        + F.cross_entropy(scale.exp().clamp(max=100) * text_to_image.T, target)) / 2
            else:
                logits = scale.exp().clamp(max=100) * img @ text_encoder(ids, attention).T
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            extra = {"retrieval_acc": round(float((logits.argmax(1) == target).float().mean()), 3)}
            if config.vision_phrase_weight > 0:
                phrases = text_encoder(phrase_ids, phrase_attention)
                # "mil": a phrase matches an image through its best-matching patches (FILIP-like token-wise max)
                similarity = img @ phrases.T if patch_emb is None else (patch_emb @ phrases.T).topk(
                    config.vision_mil_topk, dim=1).values.mean(1)
                t = (phrase_scale if own_scale else scale).exp().clamp(max=100)
                phrase_logits = t * similarity + phrase_bias
                labels = present_table[idx]
                loss = loss + config.vision_phrase_weight * F.binary_cross_entropy_with_logits(phrase_logits, labels)
                extra["phrase_acc"] = round(float(((phrase_logits > 0).float() == labels).float().mean()), 3)
            return loss, extra

        params = [*tower.parameters(), *text_encoder.parameters(), *image_proj.parameters(), scale, phrase_bias,
                  *([phrase_scale] if own_scale else [])]
        _run_stage("vision", config.vision_steps, config.vision_lr, params, vision_loss, log,
                   StageResume(out, 0, config, rng))
        del text_encoder, image_proj
        if finish(0):
            return model, log
    tower.requires_grad_(False)
    tower.eval()

    # 2. language: text only, loss on every token
    if done < 1:
        rng = stage_rng(1)
        texts = Texts(rng, config)
        if config.decoder_init == "mimetic":
            mimetic_init(model, config.mimetic_std, config.seed, config.mimetic_slow_pairs)
        elif config.decoder_init != "default":
            raise ValueError(f"decoder_init must be 'mimetic' or 'default', not {config.decoder_init!r}")

        def text_loss(step):
            idx = rng.integers(n, size=config.language_batch)
            docs = [texts.text_document(images.scenes[i], step) for i in idx]
            ids, attention, mask = texts.pad([d[0] for d in docs], [d[1] for d in docs])
            embeds = model.get_input_embeddings()(ids)
            hidden = decoder(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
            logits = model.lm_head(hidden[:, :-1])
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
            ok = (logits.argmax(-1) == targets)[targets != -100].float().mean()
            return loss, {"token_acc": round(float(ok), 3)}

        _run_stage("language", config.language_steps, config.language_lr, [*decoder.parameters()], text_loss, log,
                   StageResume(out, 1, config, rng))
        decoder.eval()
        log[-1]["calibration_text_existence_acc"] = round(
            existence_accuracy(model, None, held_out.scenes, texts, rng, as_text=True), 3)
        decoder.train()
        print(f"[language] calibration existence accuracy (scene as text): "
              f"{log[-1]['calibration_text_existence_acc']}", flush=True)
        if finish(1):
            return model, log

    with torch.no_grad():
        features = torch.cat([patch_features(model, images.batch(slice(i, i + 128))).half()
                              for i in range(0, n, 128)])

    def projected(idx) -> torch.Tensor:
        return projector(features[idx].float())

    # 3. align: projector only, captions
    if done < 2:
        rng = stage_rng(2)
        texts = Texts(rng, config)
        decoder.requires_grad_(False)
        if config.align_task not in ("caption", "conversation"):
            raise ValueError(f"align_task must be 'caption' or 'conversation', not {config.align_task!r}")
        captions = config.align_task == "caption"

        def align_loss(step):
            idx = torch.from_numpy(rng.integers(n, size=config.align_batch))
            rows = [texts.conversation(images.scenes[int(i)], 1 if captions else config.turns, caption_only=captions)
                    for i in idx]
            ids, attention, mask = texts.pad([r[0] for r in rows], [r[1] for r in rows])
            return language_loss(model, ids, attention, mask, projected(idx))

        _run_stage("align", config.align_steps, config.align_lr, [*projector.parameters()], align_loss, log,
                   StageResume(out, 2, config, rng))
        decoder.requires_grad_(True)
        if finish(2):
            return model, log

    # 4. instruct: projector + decoder, conversations
    if done < 3:
        rng = stage_rng(3)
        texts = Texts(rng, config)

        train_tower = config.instruct_tower_lr_scale > 0
        for layer in decoder.layers[:config.instruct_frozen_layers]:
            layer.requires_grad_(False)
        for k in config.instruct_query_key_layers:
            decoder.layers[k].self_attn.q_proj.requires_grad_(True)
            decoder.layers[k].self_attn.k_proj.requires_grad_(True)
        tuned = [p for p in decoder.parameters() if p.requires_grad]
        params = [{"params": [*projector.parameters(), *tuned]}]
        if train_tower:
            tower.requires_grad_(True)
            tower.train()
            params.append({"params": [*tower.parameters()], "lr_scale": config.instruct_tower_lr_scale})

        def instruct_loss(step):
            idx = torch.from_numpy(rng.integers(n, size=config.instruct_batch))
            rows = [texts.conversation(images.scenes[int(i)], config.turns) for i in idx]
            ids, attention, mask = texts.pad([r[0] for r in rows], [r[1] for r in rows])
            slots = projector(patch_features(model, images.batch(idx))) if train_tower else projected(idx)
            return language_loss(model, ids, attention, mask, slots)

        _run_stage("instruct", config.instruct_steps, config.instruct_lr, params, instruct_loss, log,
                   StageResume(out, 3, config, rng))
        tower.requires_grad_(False)
        model.eval()
        with torch.no_grad():
            slots = projector(patch_features(model, held_out.batch(slice(None))))
        log[-1]["calibration_existence_acc"] = round(
            existence_accuracy(model, slots, held_out.scenes, texts, rng), 3)
        print(f"[instruct] calibration existence accuracy (images): {log[-1]['calibration_existence_acc']}",
              flush=True)
        finish(3)

    model.eval()
    model.requires_grad_(False)
    for sub in (model.config, model.config.text_config, model.config.vision_config):
        sub._attn_implementation = "eager"
    if out is not None:
        save_toy_model(model, out, config, log)
        if not keep_checkpoints:
            import shutil

            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return model, log


def save_toy_model(model, out: str | Path, config: TrainConfig, log: list[dict]) -> Path:
    """Save weights, processor and ``training_log.json`` (config, per-stage log, where it was trained)."""
    import os
    import platform

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.toy_world = as_world(config.world)  # load_model reads it back (clva_lite.toy.world.use_world)
    model.save_pretrained(out)
    build_processor().save_pretrained(out)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores (torch {torch.__version__})"
    (out / "training_log.json").write_text(json.dumps(
        {"recipe": "v2", "config": asdict(config), "machine": machine, "stages": log,
         "total_seconds": round(sum(s["seconds"] for s in log), 1)}, indent=2) + "\n")
    return out


def main_train(out: str | Path, quick: bool = False, seed: int = 0, config_json: str | None = None) -> Path:
    config = TrainConfig.quick() if quick else TrainConfig()
    if config_json:
        config = TrainConfig.from_dict({**asdict(config), **json.loads(config_json)})
    config.seed = seed
    start = time.time()
    train_toy_model(config, out=out)
    print(f"trained in {time.time() - start:.0f} s -> {out}", flush=True)
    return Path(out)
