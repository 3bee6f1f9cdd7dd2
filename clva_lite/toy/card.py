"""The toy model's card, generated from an evaluation run (never typed): ``python -m clva_lite.toy card``.

It evaluates the model on the **test** split with the project's runners and metrics (vanilla greedy decoding),
writes the per-item records (``card_records.jsonl``) and the numbers (``card_metrics.json``) next to the weights,
and renders ``README.md`` from them, with the toy's targets (``TARGETS``) checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..eval.items import caption_items, question_items, run_items
from ..eval.methods import vanilla
from ..eval.scoring import score_chair, score_mme, score_pope
from ..models.loading import load_model
from .questions import MME_SUBTASKS, POPE_SAMPLINGS, mme_questions, pope_questions
from .world import (
    CATEGORIES,
    FAINT_PROB,
    GROUPS,
    IMAGE_SIZE,
    MIN_OBJECTS,
    NUM_VISUAL_TOKENS,
    OBJECT_COUNT_PROBS,
    PARTNER_PROB,
    Split,
)

# the toy's targets: POPE-random accuracy, random minus adversarial accuracy, CHAIR_s range
TARGETS = {
    "pope_random_accuracy_min": 0.88,
    "adversarial_gap_min": 0.08,
    "chair_s_range": (0.10, 0.40),
}


def card_items(n_scenes: int) -> dict[str, list]:
    """The test-split items the card evaluates: POPE (3 samplings), captions, MME-style pairs."""
    pope = [q for sampling in POPE_SAMPLINGS for q in pope_questions(Split.TEST, n_scenes, sampling)]
    mme = [q for subtask in MME_SUBTASKS for q in mme_questions(Split.TEST, n_scenes, subtask)]
    return {"pope": question_items(pope), "mme": question_items(mme),
            "captions": caption_items(Split.TEST, n_scenes)}


def evaluate_card(loaded, records_path: Path, n_scenes: int) -> dict:
    items = card_items(n_scenes)
    method = vanilla()
    pope = run_items(loaded, method, items["pope"], batch_size=64, max_new_tokens=3, records_path=records_path,
                     desc="card: POPE")
    mme = run_items(loaded, method, items["mme"], batch_size=64, max_new_tokens=3, records_path=records_path,
                    desc="card: MME")
    captions = run_items(loaded, method, items["captions"], batch_size=64, max_new_tokens=24,
                         records_path=records_path, desc="card: captions")
    return score_records(pope, mme, captions, n_scenes)


def score_records(pope: list[dict], mme: list[dict], captions: list[dict], n_scenes: int) -> dict:
    scores = {"split": "test", "n_scenes": n_scenes, "method": "vanilla greedy",
              "pope": score_pope(pope, metrics=("accuracy", "precision", "recall", "f1", "yes_ratio")),
              "chair": score_chair(captions), "mme": score_mme(mme)}
    random_acc = scores["pope"]["random"]["accuracy"]["value"]
    adversarial_acc = scores["pope"]["adversarial"]["accuracy"]["value"]
    chair_s = scores["chair"]["chair_s"]["value"]
    low, high = TARGETS["chair_s_range"]
    scores["targets"] = {
        "pope_random_accuracy": {"value": random_acc, "target": f">= {TARGETS['pope_random_accuracy_min']}",
                                 "met": random_acc >= TARGETS["pope_random_accuracy_min"]},
        "adversarial_gap": {"value": random_acc - adversarial_acc, "target": f">= {TARGETS['adversarial_gap_min']}",
                            "met": random_acc - adversarial_acc >= TARGETS["adversarial_gap_min"]},
        "chair_s": {"value": chair_s, "target": f"in [{low}, {high}]", "met": low <= chair_s <= high},
    }
    return scores


def read_card_records(folder: Path) -> dict[str, list[dict]]:
    records = [json.loads(line) for line in (folder / "card_records.jsonl").read_text().splitlines() if line]
    return {
        "pope": [r for r in records if r["kind"] in POPE_SAMPLINGS],
        "mme": [r for r in records if r["kind"] in MME_SUBTASKS],
        "captions": [r for r in records if r["kind"] == "caption"],
    }


def _pct(entry: dict) -> str:
    return f"{100 * entry['value']:.1f} [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}]"


def render_card(scores: dict, training: dict, config: dict | None = None) -> str:
    """The card's markdown; ``config`` is the model's ``config.json`` (architecture line), ``training`` its
    ``training_log.json`` (recipe table, where and how it was trained)."""
    p, c, m = scores["pope"], scores["chair"], scores["mme"]
    config = config or {}
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    recipe = training.get("config", {})
    where = training.get("machine", "not recorded")
    lines = [
        "# toy-llava: the clva-lite toy LLaVA",
        "",
        f"A real `LlavaForConditionalGeneration` at toy scale: CLIP vision tower {vision.get('num_hidden_layers')} x "
        f"{vision.get('hidden_size')} ({NUM_VISUAL_TOKENS} visual tokens), Llama decoder "
        f"{text.get('num_hidden_layers')} layers x {text.get('num_attention_heads')} heads x "
        f"{text.get('hidden_size')}, word-level tokenizer. Trained by `python -m clva_lite.toy train` on the toy "
        f"world's train split ({recipe.get('train_scenes')} scenes) on {where}, "
        f"{recipe.get('threads')} torch thread(s), {training.get('total_seconds', 0) / 60:.0f} minutes in all. This "
        "card is generated by `python -m clva_lite.toy card` from an evaluation run; every number below comes from "
        "`card_metrics.json` (per-item records in `card_records.jsonl`).",
        "",
        "## Data",
        f"Toy scenes ({IMAGE_SIZE} x {IMAGE_SIZE}, {MIN_OBJECTS}-{MIN_OBJECTS + len(OBJECT_COUNT_PROBS) - 1} glyphs, "
        f"{len(CATEGORIES)} categories in {len(GROUPS)} co-occurring groups of {len(GROUPS[0])}, group-mate "
        f"probability {PARTNER_PROB}, faint-object probability {FAINT_PROB}). Training used the train split only; "
        "the training log's held-out checks use the calibration split; the numbers below use the **test** split.",
        "",
        "## Recipe (stages, from training_log.json)",
        "",
        "| stage | steps | seconds | final loss | extra |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for stage in training.get("stages", []):
        extra = ", ".join(f"{k}={v}" for k, v in stage.items()
                          if k not in ("stage", "steps", "seconds", "first_loss", "final_loss"))
        lines.append(f"| {stage['stage']} | {stage['steps']} | {stage['seconds']} | {stage['final_loss']} | {extra} |")
    lines += [
        "",
        f"## Results on the test split ({scores['n_scenes']} scenes per benchmark, greedy, 95 % bootstrap CIs over "
        "scenes)",
        "",
        "| POPE sampling | n | accuracy % | precision % | recall % | F1 % | yes ratio % |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for kind, row in p.items():
        lines.append(f"| {kind} | {row['n']} | {_pct(row['accuracy'])} | {_pct(row['precision'])} | "
                     f"{_pct(row['recall'])} | {_pct(row['f1'])} | {_pct(row['yes_ratio'])} |")
    lines += [
        "",
        f"Captions ({c['n']}): CHAIR_s {_pct(c['chair_s'])} %, CHAIR_i {_pct(c['chair_i'])} %, "
        f"recall {_pct(c['recall'])} %, mean length {c['mean_length']['value']:.1f} words.",
        "",
        "MME-style pairs: " + ", ".join(
            f"{name} {s['score']:.1f}/200 (acc {100 * s['acc']:.1f} %, acc+ {100 * s['acc_plus']:.1f} %)"
            for name, s in m["subtasks"].items()) + f"; total {m['total']:.1f}/{m['max_total']}.",
        "",
        "## Targets",
        "",
        "| target | measured | wanted | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, t in scores["targets"].items():
        lines.append(f"| {name} | {t['value']:.3f} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "Toy results describe this toy model only; they say nothing about LLaVA-1.5's numbers.", ""]
    return "\n".join(lines)


def _model_files(folder: Path) -> tuple[dict, dict]:
    """(training_log.json, config.json) of a model folder, ``{}`` for a missing file."""
    def read(name: str) -> dict:
        path = folder / name
        return json.loads(path.read_text()) if path.exists() else {}

    return read("training_log.json"), read("config.json")


def rescore_model_card(model: str | Path = "data/toy-llava") -> Path:
    """Re-score the saved ``card_records.jsonl`` with the current metric code and rewrite the card, without running
    the model (after a change to the scoring, e.g. new CIs). ``tests/test_toy_model.py`` checks that the records
    are still the model's answers."""
    folder = Path(model)
    metrics_path = folder / "card_metrics.json"
    if not (folder / "card_records.jsonl").exists() or not metrics_path.exists():
        raise FileNotFoundError(f"{folder} holds no card records/metrics; run `python -m clva_lite.toy card` first")
    records = read_card_records(folder)
    n_scenes = json.loads(metrics_path.read_text())["n_scenes"]
    scores = score_records(records["pope"], records["mme"], records["captions"], n_scenes)
    metrics_path.write_text(json.dumps(scores, indent=2) + "\n")
    (folder / "README.md").write_text(render_card(scores, *_model_files(folder)))
    return folder / "README.md"


def write_model_card(model: str | Path = "data/toy-llava", n_scenes: int = 300) -> Path:
    folder = Path(model)
    records_path = folder / "card_records.jsonl"
    if records_path.exists():
        records_path.unlink()  # a card always comes from a fresh run of the current weights
    loaded = load_model(str(folder), device="cpu")
    scores = evaluate_card(loaded, records_path, n_scenes)
    (folder / "card_metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    (folder / "README.md").write_text(render_card(scores, *_model_files(folder)))
    return folder / "README.md"
