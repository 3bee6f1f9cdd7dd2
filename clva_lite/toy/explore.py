"""Explore recipe variants of the toy at reduced scale, on the calibration split only.

    python -m clva_lite.toy.explore train NAME [--base RUN]   # train variant NAME into runs/explore/NAME
    python -m clva_lite.toy.explore eval NAME                 # measure it, add its row to the table
    python -m clva_lite.toy.explore list

Rows go to ``data/toy-variants.json``. Every number is measured on the **calibration** split (POPE scenes
0..n, head-fitting / anchor prompts from scene 1000 on, captions from scene 2000 on); the test split is never
read here. The rows "v1", "A-base" and "E-vision-lm" were measured with code since retired (the first toy and its
64 px world; the recipe before the object-last wording); they stay as the record of what was tried.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from . import world as toy_world
from .model import ModelConfig
from .train import TrainConfig, seed_checkpoints, train_toy_model

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "explore"
TABLE = ROOT / "data" / "toy-variants.json"

# Reduced scale: about 20 minutes on one thread.
EXPLORE_BASE = dict(train_scenes=4000, threads=1, vision_steps=800, vision_batch=64, language_steps=500,
                    language_batch=32, align_steps=80, align_batch=16, instruct_steps=350, instruct_batch=16,
                    held_out_scenes=100)

# The decoder defaults before the RoPE change (variants F-H were trained with them): RoPE base 1e4, mimetic init on
# every q/k row with std 0.1. Pinned here so those rows keep meaning what they meant when the defaults change.
_F_DECODER = {"model": {**asdict(ModelConfig()), "rope_theta": 1e4}, "mimetic_std": 0.1, "mimetic_slow_pairs": 0}
BUNDLED = "bundled"  # `explore eval bundled`: the model in data/toy-llava, trained with the recipe defaults

VARIANTS: dict[str, tuple[str, dict]] = {
    "A-base": ("recipe defaults at reduced scale (mean-pooled CLIP-like vision, caption + phrase contrastive; "
               "faint objects named; no caption noise)", {}),
    "B-noise": ("A + caption noise 0.1 (a caption names an absent group-mate) and 30 % of 'no' questions about "
                "absent group-mates", {"caption_noise": 0.1, "groupmate_negative_share": 0.3}),
    "C-cls": ("A with CLIP's CLS pooling for the contrastive stage (vision_pool='cls')", {"vision_pool": "cls"}),
    "D-longer": ("A with 2x instruct steps", {"instruct_steps": 700}),
    "E-vision-lm": ("A with most of the budget moved to the vision stage (1800 steps, lr 1e-3, max-pooled "
                    "contrastive embedding) and a QA-heavy language stage (700 steps, lr 2e-3, mix 0.2/0.2/0.6, "
                    "2 questions per scene text, answers-only loss on scene documents); instruct 300 steps",
                    {"vision_steps": 1800, "vision_lr": 1e-3, "vision_pool": "max", "language_steps": 700,
                     "language_lr": 2e-3, "language_mix": [0.2, 0.2, 0.6], "language_turns": 2,
                     "language_loss": "answers", "instruct_steps": 300}),
    "F-object-last": ("recipe defaults at reduced scale after the diagnosis: questions end with the object word (no "
                      "'answer :'), mimetic q/k init of the decoder, phrase logit scale 30, object-count curriculum "
                      "in the language stage, 12 questions per scene text", _F_DECODER),
    "G-align-qa": ("F with the align stage on instruct's conversation mix (captions and questions, projector only) "
                   "instead of captions alone", {**_F_DECODER, "align_task": "conversation"}),
    "H-align-qa-long": ("G with 3x the align steps (240) and instruct lr 1e-3",
                        {**_F_DECODER, "align_task": "conversation", "align_steps": 240, "instruct_lr": 1e-3}),
}


def variant_config(name: str) -> TrainConfig:
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return TrainConfig.from_dict({**asdict(TrainConfig()), **EXPLORE_BASE, **VARIANTS[name][1]})


def train_variant(name: str, base: str | None = None) -> Path:
    config = variant_config(name)
    out = RUNS / name
    if base:
        k = seed_checkpoints(RUNS / base, out, config)
        print(f"seeded {name} from {base}: stages up to {k} reused", flush=True)
    start = time.time()
    train_toy_model(config, out=out)
    print(f"trained {name} in {time.time() - start:.0f} s -> {out}", flush=True)
    return out


def evaluate_variant(name: str, *, pope_scenes: int = 64, n_prompts: int = 96, n_captions: int = 64,
                     folder: str | Path | None = None, table: str | Path | None = None, what: str | None = None,
                     overrides: dict | None = None) -> dict:
    """Measure the model in ``folder`` (default ``runs/explore/NAME``) on calibration and store its row under NAME.
    ``what`` / ``overrides`` describe a run trained outside ``VARIANTS`` (e.g. a full-scale one with ``--config-json``).
    """
    from ..models.loading import load_model
    from .metrics import measure, summary, world_view

    if name == "v1":
        raise SystemExit("the first toy (v1) was retired with its world; its row in the table was measured before")
    folder = Path(folder or (ROOT / "data" / "toy-llava" if name == BUNDLED else RUNS / name))
    log_path = folder / "training_log.json"
    training = json.loads(log_path.read_text()) if log_path.exists() else {}
    if name == BUNDLED:
        c = training.get("config", {})
        settings = ", ".join(f"{k} {c[k]}" for k in ("train_scenes", "vision_steps", "language_steps", "align_steps",
                                                      "instruct_steps", "instruct_frozen_layers", "caption_noise")
                             if k in c)
        what = what or ("the bundled model (data/toy-llava), trained by `python -m clva_lite.toy train` with the "
                        "recipe's defaults: F with RoPE base 1e6 and the mimetic init in the 4 slowest RoPE pairs "
                        f"(std 0.15), striped 18-30 px glyphs; {settings}")
    elif what is None:
        if name not in VARIANTS:
            raise SystemExit(f"{name!r} is not in VARIANTS: say what it is (what=..., overrides=...)")
        what = VARIANTS[name][0]
    world = world_view()
    loaded = load_model(str(folder), device="cpu")
    result = measure(loaded, world, pope_scenes=pope_scenes, n_prompts=n_prompts, n_captions=n_captions)
    # stored relative to the repository when inside it, so the table does not carry one machine's paths
    resolved = folder.resolve()
    shown = resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else folder
    row = {"name": name, "what": what, "folder": str(shown),
           "overrides": overrides if overrides is not None else VARIANTS.get(name, ("", {}))[1],
           "training": [{k: s[k] for k in s if k in ("stage", "steps", "seconds", "first_loss", "final_loss")}
                        | {k: v for k, v in s.items() if k.startswith("calibration")}
                        for s in training.get("stages", [])],
           "train_seconds": round(sum(s["seconds"] for s in training.get("stages", [])), 1),
           # rows measured before the striped glyphs predate the glyph textures (world.TEXTURES) and lack this field
           "glyph_textures": None if name == "v1" else toy_world.TEXTURES, "world": loaded.toy_world, **result}
    table = Path(table or TABLE)
    rows = json.loads(table.read_text()) if table.exists() else []
    rows = [r for r in rows if r["name"] != name] + [row]
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps(rows, indent=1) + "\n")
    print(summary(row), flush=True)
    return row


def markdown_table(rows: list[dict]) -> str:
    """One line per variant and head criterion: benchmarks, anchors' on-object share / entropy, deep r with A-."""
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["| variant | train s | POPE rand | POPE adv | gap | CHAIR_s | crit | uniform obj | A+ obj | A+ ent | "
             "A- obj | A- ent | deep obj | deep r(A-) FP | deep r(A-) TN | FP-TN [CI] |",
             "|" + "---|" * 16]
    for r in rows:
        p = r["pope"]
        for crit, block in r["criteria"].items():
            ph, dc = block["phenomenon"], block["deep_correlation"]["A-"]
            d = dc["FP_minus_TN"]
            ci = f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]"
            lines.append(
                f"| {r['name']} | {r['train_seconds']:.0f} | {f(p['random']['accuracy'])} | "
                f"{f(p['adversarial']['accuracy'])} | {f(p['gap_random_minus_adversarial'])} | "
                f"{f(r['chair']['chair_s'])} | {crit} | {f(ph['uniform_on_object'])} | "
                f"{f(ph['A+']['head_on_object'])} | "
                f"{f(ph['A+']['head_entropy'])} | {f(ph['A-']['head_on_object'])} | {f(ph['A-']['head_entropy'])} | "
                f"{f(ph['bands']['deep']['all_heads']['on_object'])} | {f(dc['hallucinated_FP']['value'])} "
                f"(n={dc['hallucinated_FP']['n']}) | {f(dc['correct_TN']['value'])} | {ci} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite.toy.explore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("name")
    train.add_argument("--base", default=None, help="variant run whose compatible checkpoints to start from")
    ev = commands.add_parser("eval")
    ev.add_argument("name")
    ev.add_argument("--pope-scenes", type=int, default=64)
    ev.add_argument("--prompts", type=int, default=96)
    ev.add_argument("--captions", type=int, default=64)
    probe = commands.add_parser("probe", help="linear-probe diagnostic of a run's vision checkpoint")
    probe.add_argument("name")
    commands.add_parser("list")
    commands.add_parser("table", help="print data/toy-variants.json as a markdown table")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.command == "train":
        train_variant(args.name, args.base)
    elif args.command == "eval":
        evaluate_variant(args.name, pope_scenes=args.pope_scenes, n_prompts=args.prompts, n_captions=args.captions)
    elif args.command == "table":
        print(markdown_table(json.loads(TABLE.read_text())))
    elif args.command == "probe":
        from .metrics import vision_probe
        from .model import ModelConfig, build_untrained_model

        config = variant_config(args.name) if args.name != "untrained" else TrainConfig()
        model = build_untrained_model(config.seed, ModelConfig(**config.model))
        if args.name != "untrained":
            state = torch.load(RUNS / args.name / "checkpoints" / "0-vision.pt", weights_only=False)
            model.load_state_dict(state["state_dict"])
        print(args.name, vision_probe(model.eval()), flush=True)
    else:
        for name, (what, overrides) in VARIANTS.items():
            print(f"{name}: {what} {overrides}")


VARIANTS_FILE = Path(__file__).resolve().parents[2] / "data" / "toy-variants.json"


def variants_frame(path: str | Path = VARIANTS_FILE):
    """The variants table as a pandas DataFrame, one row per variant and head criterion (notebook 07)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it is written by `python -m clva_lite.toy.explore eval NAME`")
    rows = []
    for r in json.loads(path.read_text()):
        for criterion, block in r["criteria"].items():
            ph = block["phenomenon"]
            rows.append({"variant": r["name"], "criterion": criterion, "train s": round(r["train_seconds"]),
                         "POPE random acc": r["pope"]["random"]["accuracy"],
                         "POPE adversarial acc": r["pope"]["adversarial"]["accuracy"],
                         "gap": r["pope"]["gap_random_minus_adversarial"], "CHAIR_s": r["chair"]["chair_s"],
                         "uniform": ph["uniform_on_object"], "A+ on-object": ph["A+"]["head_on_object"],
                         "A- on-object": ph["A-"]["head_on_object"], "reading holds": ph["reading_holds"]})
    return pd.DataFrame(rows).set_index(["variant", "criterion"])


if __name__ == "__main__":
    main()
