"""Fast single-stage diagnostics for the toy recipe (never used to train a model; calibration split only).

    python -m clva_lite.toy.diagnose vision --lr 1e-3 --steps 300 --pool mil [--labels colour] [--world free]
    python -m clva_lite.toy.diagnose language --lr 1e-3 --steps 1000 --layers 4 --turns 3 \
        [--wording object-last|answer-prompt] [--init default|mimetic] [--max-objects 1]
    python -m clva_lite.toy.diagnose layout runs/explore/NAME/checkpoints/1-language.pt
    python -m clva_lite.toy.diagnose patches runs/explore/NAME/checkpoints/0-vision.pt
    python -m clva_lite.toy.diagnose oracle toy --scenes 60 [--alphas 1 2 5]

* ``vision`` trains the toy CLIP tower with a *supervised* image-level presence head (an upper bound for what the
  image-level contrastive stage can teach it) and prints the training loss and the calibration mean ROC AUC every
  100 steps. ``--pool``: ``cls`` / ``mean`` / ``max`` (pooled post-layernormed patches, then linear) or ``mil``
  (per-patch logits, max over patches). ``--labels colour`` asks for colour presence instead of category presence.
  ``--world free`` places objects anywhere (``SNAP_TO_PATCHES`` off, as before the snap), ``big`` scales them by 1.4
  (both only here).
* ``layout CHECKPOINT`` measures whether a checkpoint's text-existence reading survives filler between scene and
  question, and image slots filled with the objects' word embeddings (no projector involved).
* ``patches CHECKPOINT`` fits a linear probe per patch token (category covering the patch, or background) and scores
  it on calibration scenes: whether single patch tokens tell the objects apart.
* ``oracle MODEL`` steers a trained toy's deep band toward each scene's true object patches (and, as a control,
  its background) instead of CLVA's A⁺, and prints POPE-adversarial F1 and "yes" counts (:mod:`.oracle`).
* ``language`` trains the decoder alone on scene text + existence questions (answers-only loss, v2 wording) and
  prints the calibration existence accuracy (yes vs no logit) every 100 steps.

Both use one thread. Measurements from these loops are summarised in ``docs/toy-recipe-history.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import tqdm
from . import train as recipe
from . import world as toy_world
from .metrics import fit_linear_probe
from .model import ModelConfig, build_untrained_model, mimetic_init
from .questions import existence_question
from .world import CATEGORIES, COLOURS, IMAGE_SIZE, Scene, Split, generate_scene


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-column ROC AUC (columns with both classes only)."""
    aucs = []
    for k in range(labels.shape[1]):
        pos, neg = scores[labels[:, k] > 0, k], scores[labels[:, k] == 0, k]
        if len(pos) and len(neg):
            aucs.append(float((pos[:, None] > neg[None, :]).float().mean()))
    return float(np.mean(aucs))


def _world_scene(world: str):
    """A scene generator: the toy world, its objects placed freely (``SNAP_TO_PATCHES`` off, the world before the
    snap) or enlarged by 1.4 (both diagnostic only)."""
    def generate(split, index: int) -> Scene:
        snap = toy_world.SNAP_TO_PATCHES
        toy_world.SNAP_TO_PATCHES = snap and world != "free"
        try:
            scene = generate_scene(split, index)
        finally:
            toy_world.SNAP_TO_PATCHES = snap
        if world != "big":
            return scene
        objects = []
        for o in scene.objects:
            half = o.size * 0.7
            objects.append(dataclasses.replace(o, size=o.size * 1.4, x=float(np.clip(o.x, half, IMAGE_SIZE - half)),
                                               y=float(np.clip(o.y, half, IMAGE_SIZE - half))))
        return dataclasses.replace(scene, objects=tuple(objects))
    return generate


def _render(n: int, split: Split, world: str) -> recipe.Images:
    generate = _world_scene(world)
    scenes = [generate(split, i) for i in tqdm(range(n), desc=f"render {split.value}", leave=False)]
    pixels = torch.stack([torch.from_numpy(np.asarray(s.image(), dtype=np.uint8).copy()).permute(2, 0, 1)
                          for s in scenes])
    return recipe.Images(scenes, pixels)


def vision_presence(lr: float = 1e-3, steps: int = 300, pool: str = "mil", labels: str = "category",
                    world: str = "toy", n_train: int = 4000, batch: int = 64, warmup: int = 30) -> list[dict]:
    """Supervised presence upper bound for the tower; returns one record per 100 steps."""
    train, held = _render(n_train, Split.TRAIN, world), _render(300, Split.CALIBRATION, world)
    names = list(COLOURS) if labels == "colour" else list(CATEGORIES)

    def targets(images: recipe.Images) -> torch.Tensor:
        key = (lambda s: {o.colour for o in s.objects}) if labels == "colour" else (lambda s: set(s.categories))
        return torch.tensor([[c in key(s) for c in names] for s in images.scenes]).float()

    y, y_held = targets(train), targets(held)
    model = build_untrained_model(0)
    model.config.vision_config._attn_implementation = "sdpa"
    tower = model.model.vision_tower.train()
    post_ln = getattr(tower, "vision_model", tower).post_layernorm
    head = torch.nn.Linear(tower.config.hidden_size, len(names))

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        out = tower(pixel_values=pixels)
        patches = post_ln(out.last_hidden_state[:, 1:])
        if pool == "cls":
            return head(out.pooler_output)
        if pool == "mil":
            return head(patches).amax(1)
        return head(patches.amax(1) if pool == "max" else patches.mean(1))

    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng, start, losses, records = np.random.default_rng(0), time.time(), [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = torch.from_numpy(rng.integers(n_train, size=batch))
        loss = F.binary_cross_entropy_with_logits(logits(train.batch(idx)), y[idx])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            tower.eval()
            with torch.no_grad():
                scores = torch.cat([logits(held.batch(slice(i, i + 100))) for i in range(0, 300, 100)])
            tower.train()
            records.append({"step": step + 1, "loss": round(float(np.mean(losses[-50:])), 4),
                            "calibration_auc": round(_auc(scores, y_held), 3), "seconds": round(time.time() - start)})
            print(records[-1], flush=True)
    return records


def text_existence(lr: float = 1e-3, steps: int = 1000, layers: int = 16, turns: int = 3, batch: int = 32,
                   warmup: int = 50, n_train: int = 4000, wording: str = "object-last", init: str = "default",
                   max_objects: int | None = None) -> list[dict]:
    """The decoder alone on ``scene : ... . question : <existence question> yes/no`` (answers-only loss); returns one
    record per 100 steps with the calibration existence accuracy (yes vs no logit; held-out scenes keep all their
    objects). ``wording``: ``"object-last"`` (``"is there a X"``) or ``"answer-prompt"`` (the first toy's
    ``"is there a X in the image ? answer :"``); ``init``: ``"default"`` or ``"mimetic"`` (``model.mimetic_init``);
    ``max_objects`` keeps that many objects of each training scene (the curriculum's first phase)."""
    if wording not in ("object-last", "answer-prompt"):
        raise ValueError(f"wording must be 'object-last' or 'answer-prompt', not {wording!r}")
    rng = np.random.default_rng(0)
    texts = recipe.Texts(rng, recipe.TrainConfig(language_loss="answers"))
    words = texts.words
    model = build_untrained_model(0, ModelConfig(layers=layers)).train()
    if init == "mimetic":
        mimetic_init(model)
    for sub in (model.config, model.config.text_config):
        sub._attn_implementation = "sdpa"
    decoder = model.model.language_model
    scenes = [generate_scene(Split.TRAIN, i) for i in range(n_train)]
    held = [generate_scene(Split.CALIBRATION, i) for i in range(200)]

    def prompt(category: str) -> str:
        if wording == "object-last":
            return f"question : {existence_question(category)}"
        return f"question : is there a {category} in the image ? answer :"

    def draw(scene: Scene, r: np.random.Generator) -> tuple[str, bool]:
        present = r.random() < 0.5
        pool = scene.categories if present else [c for c in CATEGORIES if c not in scene.categories]
        return pool[int(r.integers(len(pool)))], present

    def document(scene: Scene) -> tuple[list[int], list[int]]:
        if max_objects is not None and len(scene.objects) > max_objects:
            keep = sorted(rng.choice(len(scene.objects), size=max_objects, replace=False))
            scene = dataclasses.replace(scene, objects=tuple(scene.objects[k] for k in keep))
        ids = [words["<s>"]] + texts.ids(f"scene : {texts.scene_text(scene)}")
        mask = [0] * len(ids)
        for _ in range(turns):
            category, present = draw(scene, rng)
            asked = texts.ids(prompt(category))
            reply = texts.ids("yes ." if present else "no .") + [words["</s>"]]
            ids, mask = ids + asked + reply, mask + [0] * len(asked) + [1] * len(reply)
        return ids, mask

    @torch.no_grad()
    def accuracy() -> float:
        r, right = np.random.default_rng(1), []
        for scene in held:
            category, present = draw(scene, r)
            ids = [words["<s>"]] + texts.ids(f"scene : {texts.scene_text(scene)} {prompt(category)}")
            hidden = decoder(inputs_embeds=model.get_input_embeddings()(torch.tensor([ids]))).last_hidden_state
            logits = model.lm_head(hidden[:, -1])[0]
            right.append(bool(logits[words["yes"]] > logits[words["no"]]) == present)
        return float(np.mean(right))

    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.01)
    start, losses, records = time.time(), [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / steps))
        docs = [document(scenes[i]) for i in rng.integers(n_train, size=batch)]
        ids, attention, mask = texts.pad([d[0] for d in docs], [d[1] for d in docs])
        hidden = decoder(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=attention).last_hidden_state
        logits = model.lm_head(hidden[:, :-1])
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            decoder.eval()
            held_out = accuracy()
            decoder.train()
            records.append({"step": step + 1, "loss": round(float(np.mean(losses[-100:])), 4),
                            "calibration_text_existence_acc": round(held_out, 3),
                            "seconds": round(time.time() - start)})
            print(records[-1], flush=True)
    return records


def layout_existence(checkpoint: str, scenes: int = 100, repeats: int = 3,
                     fillers: tuple[int, ...] = (0, 20, 60, 120)) -> dict[str, float]:
    """Does a decoder checkpoint's text-existence reading survive the *layout* an image gives it?

    No image features are involved: the 144 image slots are filled with word embeddings ("oracle" slots), so the
    projector and the vision tower are out of the question. Rows (existence accuracy, yes vs no logit, on
    calibration scenes, ``repeats`` draws of the question each):

    * ``text + N filler``: the language stage's own ``scene : ...`` text, then N filler tokens (".") before the
      question (N = 0 is the language stage's check);
    * ``oracle image slots``: every object patch holds its category's word embedding, every background patch the
      filler's, in the image prompt the recipe trains on (``<image> x 144 question : is there a X``).

    If the oracle row sits near 0.5, no projector can make the decoder read an image: the reading is tied to the
    short scene texts it was trained on (docs/toy-recipe-history.md, RoPE section).
    """
    model, config = _load_checkpoint(checkpoint)
    texts = recipe.Texts(np.random.default_rng(0), config)
    words, embed = texts.words, model.get_input_embeddings().weight.detach()
    calibration = [generate_scene(Split.CALIBRATION, i) for i in range(scenes)]

    def accuracy(prefix) -> float:
        right = []
        for r in range(repeats):
            rng = np.random.default_rng(r)
            for scene in calibration:
                question, present = recipe.draw_existence_question(scene, rng)
                head = prefix(scene, rng)
                tail = embed[texts.ids(f"question : {question}")]
                with torch.no_grad():
                    hidden = model.model.language_model(inputs_embeds=torch.cat([head, tail])[None]).last_hidden_state
                    logits = model.lm_head(hidden[0, -1])
                right.append(bool(logits[words["yes"]] > logits[words["no"]]) == present)
        return round(float(np.mean(right)), 3)

    def text(n: int):
        return lambda scene, rng: embed[[words["<s>"]] + texts.ids(f"scene : {texts.scene_text(scene)}")
                                        + [words["."]] * n]

    def oracle(scene: Scene, rng) -> torch.Tensor:
        labels = toy_world.patch_labels(scene)[0].reshape(-1)
        ids = [words[CATEGORIES[c]] if c < len(CATEGORIES) else words["."] for c in labels]
        return embed[[words["<s>"]] + ids]

    result = {f"text + {n} filler": accuracy(text(n)) for n in fillers}
    result["oracle image slots"] = accuracy(oracle)
    return result


def _load_checkpoint(checkpoint: str):
    state = torch.load(checkpoint, weights_only=False)
    config = recipe.TrainConfig.from_dict(state["config"])
    model = build_untrained_model(config.seed, ModelConfig(**config.model))
    model.load_state_dict(state["state_dict"])
    return model.eval(), config


@torch.no_grad()
def patch_category_probe(checkpoint: str, train_scenes: int = 600, eval_scenes: int = 200, steps: int = 300,
                         layers: tuple[int, ...] = (-2, -1)) -> dict[str, dict[str, float]]:
    """Does a single patch token say which category covers that patch? (Analysis only: no stage trains on this.)

    A linear probe per vision layer, fitted on the patch tokens (B * 144, width) of ``train_scenes`` train scenes with
    ``world.patch_labels`` (category of the patch, or background) and scored on ``eval_scenes`` calibration scenes:
    category accuracy over object patches (chance 1/24) and background recall. An image-level probe can be high while
    this is low: the tower then finds objects without telling them apart patch by patch, and a decoder that matches
    the question word against single tokens cannot read the image (docs/toy-recipe-history.md, RoPE section).
    """
    model, _ = _load_checkpoint(checkpoint)
    train, held = recipe.render_images(train_scenes), recipe.render_images(eval_scenes, Split.CALIBRATION)

    def labels(images: recipe.Images) -> torch.Tensor:
        return torch.from_numpy(np.stack([toy_world.patch_labels(s)[0].reshape(-1) for s in images.scenes])).reshape(-1)

    def tokens(images: recipe.Images, layer: int) -> torch.Tensor:
        hidden = model.model.vision_tower(pixel_values=images.batch(slice(None)), output_hidden_states=True)
        return hidden.hidden_states[layer][:, 1:].reshape(-1, hidden.hidden_states[layer].shape[-1])

    y_train, y_eval = labels(train), labels(held)
    on_object = y_eval < len(CATEGORIES)
    result = {}
    for layer in layers:
        probe, _, x_eval = fit_linear_probe(tokens(train, layer), y_train, tokens(held, layer), len(CATEGORIES) + 1,
                                            F.cross_entropy, steps=steps)
        predicted = probe(x_eval).argmax(-1)
        result[f"layer {layer}"] = {
            "object_patch_accuracy": round(float((predicted[on_object] == y_eval[on_object]).float().mean()), 3),
            "background_recall": round(float((predicted[~on_object] == y_eval[~on_object]).float().mean()), 3),
            "object_patches": int(on_object.sum())}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite.toy.diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    vision = commands.add_parser("vision")
    vision.add_argument("--lr", type=float, default=1e-3)
    vision.add_argument("--steps", type=int, default=300)
    vision.add_argument("--pool", choices=("cls", "mean", "max", "mil"), default="mil")
    vision.add_argument("--labels", choices=("category", "colour"), default="category")
    vision.add_argument("--world", choices=("toy", "free", "big"), default="toy")
    vision.add_argument("--train-scenes", type=int, default=4000)
    language = commands.add_parser("language")
    language.add_argument("--lr", type=float, default=1e-3)
    language.add_argument("--steps", type=int, default=1000)
    language.add_argument("--layers", type=int, default=16)
    language.add_argument("--turns", type=int, default=3)
    language.add_argument("--wording", choices=("object-last", "answer-prompt"), default="object-last")
    language.add_argument("--init", choices=("default", "mimetic"), default="default")
    language.add_argument("--max-objects", type=int, default=None)
    layout = commands.add_parser("layout", help="text existence of a checkpoint under longer / image-like layouts")
    layout.add_argument("checkpoint", help="a recipe checkpoint, e.g. runs/explore/NAME/checkpoints/1-language.pt")
    layout.add_argument("--scenes", type=int, default=100)
    patches = commands.add_parser("patches", help="per-patch category probe of a checkpoint's vision tower")
    patches.add_argument("checkpoint", help="a recipe checkpoint, e.g. runs/explore/NAME/checkpoints/0-vision.pt")
    oracle = commands.add_parser("oracle", help="steer the deep band toward the true object patches (oracle A+)")
    oracle.add_argument("model", help='"toy" or a trained toy folder')
    oracle.add_argument("--scenes", type=int, default=60)
    oracle.add_argument("--alphas", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "oracle":
        from ..models.loading import load_model
        from .oracle import oracle_steering

        table = oracle_steering(load_model(args.model, device="cpu"), scenes=args.scenes, alphas=args.alphas)
        print(table.round(3).to_string(index=False), flush=True)
    elif args.command == "patches":
        print(patch_category_probe(args.checkpoint), flush=True)
    elif args.command == "layout":
        print(layout_existence(args.checkpoint, args.scenes), flush=True)
    elif args.command == "vision":
        vision_presence(args.lr, args.steps, args.pool, args.labels, args.world, args.train_scenes)
    else:
        text_existence(args.lr, args.steps, args.layers, args.turns, wording=args.wording, init=args.init,
                       max_objects=args.max_objects)


if __name__ == "__main__":
    main()
