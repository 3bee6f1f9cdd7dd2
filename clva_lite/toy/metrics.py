"""Measure a toy model on the calibration split: POPE, CHAIR and the anchor phenomenon (explore.py's table).

Everything uses the project's own functions: ``capture`` / ``record_prefill`` for attention, ``fit_head_classes``
and ``HeadClasses`` for head classes, ``band_layers(DEFAULT_BANDS)`` for bands, ``normalised_entropy``,
``on_object_share``, ``anchor_distribution`` and ``anchor_correlations`` for the phenomenon, ``pope_metrics`` /
``chair_metrics`` / ``bootstrap_ci`` for the benchmarks. On the toy world.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.anchors import anchor_correlations, anchor_distribution
from ..analysis.calibration import record_prefill
from ..analysis.grounding import on_object_share
from ..attention.capture import capture
from ..attention.heads import DEFAULT_BANDS, HeadClasses, band_layers, fit_head_classes, normalised_entropy
from ..eval.benchmarks import ObjectVocabulary, bootstrap_ci, chair_metrics, parse_pope_answer, pope_metrics
from .questions import POPE_SAMPLINGS
from .world import Split

POPE_START, PROMPT_START, CAPTION_START = 0, 1000, 2000


@dataclass
class WorldView:
    """What the metrics need from a toy world ."""

    name: str
    categories: tuple[str, ...]
    plurals: dict[str, str]
    generate_scene: Callable
    pope_questions: Callable
    object_masks: Callable  # scenes -> (N, V) bool
    existence_question: Callable  # category -> question text (the world's wording)
    caption_request: str


def world_view() -> WorldView:
    """The toy world as the metrics see it. (The first toy's world was retired with its model; its row in the
    variants table was measured before.)"""
    from . import questions, world
    from .model import CAPTION_REQUEST

    def masks(scenes):
        return torch.stack([torch.as_tensor(world.object_patch_mask(s)) for s in scenes])

    return WorldView("toy", world.CATEGORIES, world.PLURALS, world.generate_scene, questions.pope_questions, masks,
                     questions.existence_question, CAPTION_REQUEST)


def _ci(values: np.ndarray, clusters: np.ndarray, seed: int = 0) -> dict:
    if len(values) < 2:
        return {"value": float(values.mean()) if len(values) else None, "low": None, "high": None, "n": len(values)}
    items = [{"v": float(v), "c": c} for v, c in zip(values, clusters)]
    value, low, high = bootstrap_ci(items, lambda rs: float(np.mean([r["v"] for r in rs])), n_resamples=500,
                                    seed=seed, cluster_key="c")
    return {"value": round(value, 4), "low": round(low, 4), "high": round(high, 4), "n": len(values)}


def _diff_ci(a: np.ndarray, ca: np.ndarray, b: np.ndarray, cb: np.ndarray, seed: int = 0, n: int = 500) -> dict:
    """mean(a) - mean(b) with a scene-clustered bootstrap (scenes resampled jointly for both groups)."""
    if len(a) < 2 or len(b) < 2:
        return {"value": None, "low": None, "high": None}
    scenes = np.unique(np.concatenate([ca, cb]))
    rng = np.random.default_rng(seed)
    ia = {s: np.flatnonzero(ca == s) for s in scenes}
    ib = {s: np.flatnonzero(cb == s) for s in scenes}
    draws = []
    for _ in range(n):
        pick = rng.choice(scenes, size=len(scenes))
        xa = np.concatenate([ia[s] for s in pick])
        xb = np.concatenate([ib[s] for s in pick])
        if len(xa) and len(xb):
            draws.append(a[xa].mean() - b[xb].mean())
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": round(float(a.mean() - b.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4)}


@torch.no_grad()
def pope_with_attention(loaded, world: WorldView, n_scenes: int, batch_size: int = 32
                        ) -> tuple[list[dict], torch.Tensor]:
    """POPE (all samplings) on calibration scenes: greedy first answer token and the last prompt token's visual
    attention (N, L, H, V) from the same forward pass."""
    records, visual = [], []
    tokenizer = loaded.processor.tokenizer
    questions = [q for s in POPE_SAMPLINGS for q in world.pope_questions(Split.CALIBRATION, n_scenes, s,
                                                                           start=POPE_START)]
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        images = [world.generate_scene(q.split, q.scene_index).image() for q in batch]
        inputs = loaded.inputs(images, [q.text for q in batch])
        with capture(loaded, inputs) as rec:
            logits = loaded.model(**inputs).logits[:, -1]
        visual.append(rec.visual[0].float().cpu())
        for q, token in zip(batch, logits.argmax(-1).tolist()):
            response = tokenizer.decode([token], skip_special_tokens=True).strip()
            records.append({"id": q.question_id, "kind": q.kind, "label": q.label, "category": q.category,
                            "scene_index": q.scene_index, "response": response,
                            "prediction": parse_pope_answer(response)})
    return records, torch.cat(visual)


def pope_scores(records: list[dict]) -> dict:
    out = {}
    for kind in POPE_SAMPLINGS:
        subset = [r for r in records if r["kind"] == kind]

        def accuracy(rs):
            return pope_metrics([r["prediction"] for r in rs], [r["label"] for r in rs])["accuracy"]

        value, low, high = bootstrap_ci(subset, accuracy, n_resamples=500, cluster_key="scene_index")
        yes = pope_metrics([r["prediction"] for r in subset], [r["label"] for r in subset])["yes_ratio"]
        out[kind] = {"n": len(subset), "accuracy": round(value, 4), "low": round(low, 4), "high": round(high, 4),
                     "yes_ratio": round(float(yes), 4)}
    out["gap_random_minus_adversarial"] = round(out["random"]["accuracy"] - out["adversarial"]["accuracy"], 4)
    return out


@torch.no_grad()
def chair_scores(loaded, world: WorldView, n: int, batch_size: int = 32) -> dict:
    vocab = ObjectVocabulary({**{c: c for c in world.categories}, **{world.plurals[c]: c for c in world.categories}})
    captions, truths, scenes = [], [], []
    for start in range(CAPTION_START, CAPTION_START + n, batch_size):
        batch = [world.generate_scene(Split.CALIBRATION, i) for i in range(start, min(start + batch_size,
                                                                                    CAPTION_START + n))]
        captions += loaded.generate([s.image() for s in batch], [world.caption_request] * len(batch), max_new_tokens=40)
        truths += [list(s.categories) for s in batch]
        scenes += [s.index for s in batch]
    result = chair_metrics(captions, truths, vocab)
    flags = np.array([bool(d["hallucinated"]) for d in result["per_caption"]], dtype=float)
    ci = _ci(flags, np.array(scenes))
    return {"n": n, "chair_s": ci["value"], "chair_s_low": ci["low"], "chair_s_high": ci["high"],
            "chair_i": round(result["chair_i"], 4), "recall": round(result["recall"], 4),
            "mean_length": round(result["mean_length"], 2), "examples": captions[:3]}


def head_classes(visual: torch.Tensor, shares: torch.Tensor) -> dict[str, HeadClasses]:
    """The two head criteria: ``share`` (today's rule, ``fit_head_classes``) and ``focus`` (1 - normalised entropy
    of the head's visual distribution, mean over prompts, top/bottom 25 % within the band the same way)."""
    share = fit_head_classes(shares, split="calibration")
    focus = HeadClasses(1.0 - normalised_entropy(visual).mean(0), rule="topk", fraction=share.fraction,
                        source="calibration")
    return {"share": share, "focus": focus}


def phenomenon(visual: torch.Tensor, masks: torch.Tensor, classes: HeadClasses, bands: dict[str, list[int]]
               ) -> dict:
    """Per band: entropy / on-object share of the band's sensitive and insensitive heads; the anchors A+
    (intermediate sensitive) and A- (early insensitive); the deep band's head-mean attention; uniform reference."""
    entropy = normalised_entropy(visual)  # (N, L, H)
    on_object = on_object_share(visual, masks)  # (N, L, H)
    out: dict = {"uniform_on_object": round(float(masks.float().mean()), 4), "bands": {}}
    for name, layers in bands.items():
        row = {"layers": layers}
        for kind in ("sensitive", "insensitive"):
            heads = getattr(classes, kind)(layers)
            row[kind] = {"n_heads": int(heads.sum()),
                         "entropy": round(float(entropy[:, heads].mean()), 4),
                         "on_object": round(float(on_object[:, heads].mean()), 4)}
        row["all_heads"] = {"entropy": round(float(entropy[:, layers].mean()), 4),
                            "on_object": round(float(on_object[:, layers].mean()), 4)}
        out["bands"][name] = row
    for anchor, heads in (("A+", classes.sensitive(bands["intermediate"])),
                          ("A-", classes.insensitive(bands["early"]))):
        p = anchor_distribution(visual, heads)  # (N, V)
        out[anchor] = {"heads": [[int(layer), int(h)] for layer, h in heads.nonzero().tolist()],
                       "head_entropy": round(float(entropy[:, heads].mean()), 4),
                       "head_on_object": round(float(on_object[:, heads].mean()), 4),
                       "anchor_entropy": round(float(normalised_entropy(p).mean()), 4),
                       "anchor_on_object": round(float(on_object_share(p, masks).mean()), 4)}
    plus = on_object[:, classes.sensitive(bands["intermediate"])].mean(-1).numpy()  # (N,) per prompt
    minus = on_object[:, classes.insensitive(bands["early"])].mean(-1).numpy()
    uniform = masks.float().mean(-1).numpy()
    prompts = np.arange(len(plus))
    out["A+_minus_A-_on_object"] = _ci(plus - minus, prompts)
    out["A+_minus_uniform_on_object"] = _ci(plus - uniform, prompts)
    out["reading_holds"] = bool(out["A+"]["head_on_object"] > out["uniform_on_object"]
                                and out["A+"]["head_on_object"] > out["A-"]["head_on_object"])
    out["reading_holds_ci"] = bool((out["A+_minus_A-_on_object"]["low"] or 0) > 0
                                   and (out["A+_minus_uniform_on_object"]["low"] or 0) > 0)
    return out


def correlations_by_outcome(visual: torch.Tensor, records: list[dict], classes: HeadClasses,
                            bands: dict[str, list[int]]) -> dict:
    """Deep-band Pearson r with A- and A+ (``anchor_correlations``) for hallucinated (FP) vs correct answers."""
    corr = anchor_correlations(visual, classes, bands["early"], bands["intermediate"])
    deep = {name: values[:, bands["deep"]].mean(1).numpy() for name, values in corr.items()}
    label = np.array([r["label"] for r in records])
    pred = np.array([r["prediction"] for r in records])
    scene = np.array([f"{r['scene_index']}" for r in records])
    groups = {"hallucinated_FP": (label == "no") & (pred == "yes"), "correct_TN": (label == "no") & (pred == "no"),
              "correct_all": label == pred, "missed_FN": (label == "yes") & (pred == "no")}
    out = {}
    for anchor, key in (("A-", "early_insensitive"), ("A+", "mid_sensitive")):
        values = deep[key]
        out[anchor] = {g: _ci(values[m], scene[m]) for g, m in groups.items()}
        fp, tn, ok = groups["hallucinated_FP"], groups["correct_TN"], groups["correct_all"]
        out[anchor]["FP_minus_TN"] = _diff_ci(values[fp], scene[fp], values[tn], scene[tn])
        out[anchor]["FP_minus_correct"] = _diff_ci(values[fp], scene[fp], values[ok], scene[ok])
    diff = out["A-"]["FP_minus_TN"]["value"]
    out["hallucinated_closer_to_A-"] = bool(diff is not None and diff > 0)
    return out


def measure(loaded, world: WorldView, *, pope_scenes: int = 64, n_prompts: int = 96, n_captions: int = 64) -> dict:
    start = time.time()
    scenes = [world.generate_scene(Split.CALIBRATION, i) for i in range(PROMPT_START, PROMPT_START + n_prompts)]
    questions = [world.existence_question(world.categories[i % len(world.categories)]) for i in range(n_prompts)]
    visual, shares = record_prefill(loaded, [s.image() for s in scenes], questions, desc="calibration prompts")
    masks = world.object_masks(scenes)
    num_layers = visual.shape[1]
    bands = {name: band_layers(band, num_layers, name) for name, band in DEFAULT_BANDS.items()}
    classes = head_classes(visual, shares)
    records, pope_visual = pope_with_attention(loaded, world, pope_scenes)
    result = {
        "world": world.name, "layers": num_layers, "heads": visual.shape[2], "visual_tokens": visual.shape[3],
        "n_prompts": n_prompts, "pope": pope_scores(records), "chair": chair_scores(loaded, world, n_captions),
        "criteria": {},
    }
    for criterion, cls in classes.items():
        result["criteria"][criterion] = {"phenomenon": phenomenon(visual, masks, cls, bands),
                                         "deep_correlation": correlations_by_outcome(pope_visual, records, cls, bands)}
    result["measure_seconds"] = round(time.time() - start, 1)
    return result


def summary(row: dict) -> str:
    p, c = row["pope"], row["chair"]
    lines = [f"== {row['name']}: POPE random {p['random']['accuracy']:.3f} popular {p['popular']['accuracy']:.3f} "
             f"adversarial {p['adversarial']['accuracy']:.3f} gap {p['gap_random_minus_adversarial']:.3f}; "
             f"CHAIR_s {c['chair_s']} (recall {c['recall']})"]
    for criterion, block in row["criteria"].items():
        ph, dc = block["phenomenon"], block["deep_correlation"]
        lines.append(f"  [{criterion}] uniform {ph['uniform_on_object']:.3f}  "
                     f"A+ on-object {ph['A+']['head_on_object']:.3f}"
                     f" ent {ph['A+']['head_entropy']:.3f}  A- on-object {ph['A-']['head_on_object']:.3f} ent "
                     f"{ph['A-']['head_entropy']:.3f}  reading holds: {ph['reading_holds']}")
        for band, b in ph["bands"].items():
            lines.append(f"     {band:>12}: sens ent {b['sensitive']['entropy']:.3f} "
                         f"obj {b['sensitive']['on_object']:.3f}"
                         f" | insens ent {b['insensitive']['entropy']:.3f} obj {b['insensitive']['on_object']:.3f}"
                         f" | all obj {b['all_heads']['on_object']:.3f}")
        a = dc["A-"]
        lines.append(f"     deep r(A-): FP {a['hallucinated_FP']['value']} (n={a['hallucinated_FP']['n']}) TN "
                     f"{a['correct_TN']['value']} correct {a['correct_all']['value']}; FP-TN {a['FP_minus_TN']}; "
                     f"closer to A-: {dc['hallucinated_closer_to_A-']}")
    return "\n".join(lines)


@torch.no_grad()
def fit_linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_eval: torch.Tensor, out_features: int, loss_fn,
                     *, steps: int = 300, weight_decay: float = 0.0, seed: int = 0):
    """A linear probe on standardised features (statistics of ``x_train``), Adam lr 1e-2, full batch.

    ``x_train`` (N, D), ``x_eval`` (M, D); ``loss_fn(logits (N, out_features), y_train)``. Returns
    ``(probe, x_train standardised, x_eval standardised)``. Diagnostics only: no training stage uses it."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], out_features)
    with torch.enable_grad():
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=weight_decay)
        for _ in range(steps):
            loss = loss_fn(probe(x_train), y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return probe, x_train, x_eval


def vision_probe(model, n_train: int = 1500, n_eval: int = 300, seed: int = 0) -> dict:
    """Diagnostic (never used for training the model): how well a linear probe on the tower's LLaVA features
    (mean- and max-pooled over patches) tells which categories are present. Trained on train scenes, scored on
    calibration scenes: mean per-category ROC AUC (0.5 = chance)."""
    from .train import patch_features, render_images
    from .world import CATEGORIES

    def pooled(images):
        feats = torch.cat([patch_features(model, images.batch(slice(i, i + 64)))
                           for i in range(0, len(images.scenes), 64)])
        return torch.cat([feats.mean(1), feats.amax(1)], -1)

    train, held = render_images(n_train), render_images(n_eval, Split.CALIBRATION)
    yt = torch.tensor([[c in s.categories for c in CATEGORIES] for s in train.scenes]).float()
    ye = torch.tensor([[c in s.categories for c in CATEGORIES] for s in held.scenes]).float()
    probe, xt, xe = fit_linear_probe(pooled(train), yt, pooled(held), len(CATEGORIES),
                                     torch.nn.functional.binary_cross_entropy_with_logits, weight_decay=1e-4, seed=seed)
    scores = probe(xe)
    aucs = []
    for k in range(len(CATEGORIES)):
        pos, neg = scores[ye[:, k] > 0, k], scores[ye[:, k] == 0, k]
        if len(pos) and len(neg):
            aucs.append(float((pos[:, None] > neg[None, :]).float().mean()))
    train_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(probe(xt), yt))
    return {"mean_auc": round(float(np.mean(aucs)), 4), "train_loss": round(train_loss, 4), "n_train": n_train,
            "n_eval": n_eval}
