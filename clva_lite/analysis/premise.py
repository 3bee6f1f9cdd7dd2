"""The premise report: does the chain of reasoning behind CLVA hold on this model? Measure it before trusting CLVA.

CLVA assumes five things. Each is measured on calibration data only, with a 95 % scene-clustered bootstrap
interval and a p-value; the verdicts are Holm-corrected over the links tested.

* **P1 drift**: the deep band's attention looks more like the early insensitive heads' pattern (A-) than the
  intermediate band's does (per prompt: mean deep r(A-) - mean intermediate r(A-), > 0).
* **P2 anchors look at objects** (needs object masks, so the toy only): the A+ heads' share of attention on object
  patches is above a uniform spread and above the A- heads'.
* **P3 answers form where CLVA steers**: few answers are settled (logit lens) before the first deep-band layer. A
  share, compared with a threshold (``max_settled``), not a test against 0.
* **P4 hallucinations drift**: on questions about absent objects, the deep band agrees more with A- when the model
  says "yes" (hallucination) than when it says "no" (deep r(A-), FP - TN, > 0).
* **P5 CLVA helps**: CLVA's criterion, alpha and beta are chosen on half of the POPE scenes; on the other half its
  paired F1 change against the stock model (> 0), and how many answers it changed.

``premise_report(loaded, ...)`` takes any loaded model; ``toy_premise_report(loaded)`` builds the inputs from the
toy world's calibration split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..attention.capture import unwrap
from ..attention.clva import CLVAConfig
from ..attention.heads import fit_head_classes
from ..eval.benchmarks import bootstrap_counts, holm, parse_pope_answer
from .anchors import anchor_correlations
from .grounding import on_object_share
from .lens import _answer_token, layer_margins, settled_layer

LINKS = {
    "P1": "deep attention drifts toward A- more than intermediate attention does",
    "P2": "A+ heads look at objects (above uniform and above A- heads)",
    "P3": "answers are still open at the first steered layer",
    "P4": "hallucinated 'yes' answers' deep attention is closer to A- than correct 'no' answers'",
    "P5": "CLVA raises POPE-adversarial F1 on held-out calibration scenes",
}


@dataclass
class PremiseReport:
    """``table``: one row per measured statistic (link, statistic, value, low, high, p, holm, holds);
    ``details``: what each link was computed from (choice, counts, per-layer curves)."""

    table: pd.DataFrame
    details: dict

    def save(self, path) -> None:
        """Write the report as JSON (``load`` reads it back), e.g. to keep a long run beside the model it measured."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"table": self.table.to_dict(orient="records"), "details": self.details}
        path.write_text(json.dumps(_plain(record), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> PremiseReport:
        """A report written by :meth:`save`; a missing file is an error that says how to make one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no premise report at {path}; write one with python -m clva_lite premise "
                                    f"--model MODEL --out {path}")
        record = json.loads(path.read_text())
        return cls(pd.DataFrame(record["table"]), record["details"])

    def summary(self) -> str:
        """One line per link: what it claims, whether it holds on this model, and the numbers."""
        lines = []
        for link, claim in LINKS.items():
            rows = self.table[self.table["link"] == link]
            if rows.empty:
                lines.append(f"{link} {claim}: not measured ({self.details.get('skipped', {}).get(link, '')})")
                continue
            verdict = "holds" if bool(rows["holds"].all()) else "does not hold"
            numbers = "; ".join(f"{r.statistic} {r.value:+.3f} [{r.low:+.3f}, {r.high:+.3f}]"
                                for r in rows.itertuples())
            lines.append(f"{link} {claim}: {verdict} ({numbers})")
        return "\n".join(lines)


def _plain(value):
    """``value`` with numpy and torch scalars and arrays turned into JSON's types (NaN becomes null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return value


def _mean(values: np.ndarray) -> np.ndarray:
    return np.stack([values, np.ones_like(values)], 1)


def attention_and_margins(loaded, images: list, questions: list[str], batch_size: int = 32, desc: str = "prompts",
                          shared_prefix=True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass per batch for both the attention and the lens: last-prompt-token visual attention
    (N, L, H, V), group shares (N, L, H, 4) and the logit lens's yes - no margin per layer (N, L), on the CPU.
    Questions about the same picture share its image prefix (:func:`~clva_lite.eval.prefix.forward_prompts`)."""
    from ..eval.prefix import forward_prompts

    if not questions:
        raise ValueError("no prompts given; pass at least one image and question")
    model = unwrap(loaded)
    tokens = tuple(_answer_token(loaded.processor.tokenizer, w) for w in ("yes", "no"))
    visual, shares, margins = [None] * len(questions), [None] * len(questions), [None] * len(questions)
    for rows, out, record in forward_prompts(loaded, images, questions, batch_size=batch_size, desc=desc,
                                             record=True, shared_prefix=shared_prefix, output_hidden_states=True):
        batch_visual, batch_shares = record.visual[0].float().cpu(), record.shares[0].float().cpu()
        batch_margins = layer_margins(model, out, tokens)
        for r, k in enumerate(rows):
            visual[k], shares[k], margins[k] = batch_visual[r], batch_shares[r], batch_margins[r]
    return torch.stack(visual), torch.stack(shares), torch.stack(margins)


def premise_report(loaded, head_images: list, head_questions: list[str], pope_items: Sequence, *,
                   head_scenes: Sequence | None = None, masks: torch.Tensor | None = None,
                   config: CLVAConfig | None = None, criteria: Sequence[str] = ("share", "focus", "share_focus"),
                   alphas: Sequence[float] = (0.0, 1.0, 2.0, 5.0), betas: Sequence[float] = (0.0, 1.0, 2.0, 5.0),
                   max_settled: float = 0.7, n_resamples: int = 1000, seed: int = 0) -> PremiseReport:
    """Measure P1-P5 (module docstring) on calibration data.

    ``head_images`` / ``head_questions``: prompts that fit the head classes and measure P1/P2 (``head_scenes``: their
    cluster for the bootstrap, default one per prompt; ``masks``: (N, V) bool object patches, for P2). ``pope_items``:
    POPE questions about absent and present objects (``clva_lite.eval.items.Item`` with ``label`` and
    ``scene_index``), none from the test split; the first half of their scenes chooses CLVA's criterion, alpha and
    beta, the second half measures P5. ``config`` gives the bands (default :class:`CLVAConfig`).
    """
    from ..eval.items import run_items
    from ..eval.methods import clva_method, vanilla
    from ..eval.prefix import SharedPrefixes
    from ..eval.scoring import paired_delta
    from ..eval.sweep import choose_on_calibration

    if any(item.split == "test" for item in pope_items):
        raise ValueError("the premise report reads calibration data only; pass POPE items from another split")
    if len(head_images) != len(head_questions):
        raise ValueError(f"{len(head_images)} head images for {len(head_questions)} head questions")
    config = config or CLVAConfig()
    bands = config.layers(loaded.num_layers)
    first_deep = min(bands["deep"])
    head_scenes = list(head_scenes) if head_scenes is not None else list(range(len(head_questions)))
    rows, details, skipped = [], {"bands": bands}, {}

    def add(link: str, statistic: str, counts: np.ndarray, clusters: Sequence, from_sums, tested: bool = True):
        result = bootstrap_counts(counts, clusters, from_sums, n_resamples=n_resamples, seed=seed)
        rows.append({"link": link, "statistic": statistic, **result, "tested": tested})

    # Head classes and P1, P2 on the head prompts.
    visual, shares, _ = attention_and_margins(loaded, head_images, head_questions, desc="head prompts")
    heads = fit_head_classes(shares, visual=visual, split="calibration")
    correlations = anchor_correlations(visual, heads, bands["early"], bands["intermediate"])["early_insensitive"]
    deep_r, mid_r = correlations[:, bands["deep"]].mean(1).numpy(), correlations[:, bands["intermediate"]].mean(1)
    add("P1", "deep - intermediate r(A-)", _mean(deep_r - mid_r.numpy()), head_scenes,
        lambda s: s[..., 0] / s[..., 1])
    details["P1"] = {"deep r(A-)": float(deep_r.mean()), "intermediate r(A-)": float(mid_r.mean())}
    if masks is not None:
        on_object = on_object_share(visual, masks).numpy()  # (N, L, H)
        plus = on_object[:, heads.sensitive(bands["intermediate"]).numpy()].mean(-1)
        minus = on_object[:, heads.insensitive(bands["early"]).numpy()].mean(-1)
        uniform = masks.float().mean(-1).numpy()
        add("P2", "A+ - uniform on-object share", _mean(plus - uniform), head_scenes, lambda s: s[..., 0] / s[..., 1])
        add("P2", "A+ - A- on-object share", _mean(plus - minus), head_scenes, lambda s: s[..., 0] / s[..., 1])
        details["P2"] = {"A+": float(plus.mean()), "A-": float(minus.mean()), "uniform": float(uniform.mean())}
    else:
        skipped["P2"] = "no object masks (they exist for the toy only)"

    # P3, P4 on the POPE questions.
    pope_visual, _, margins = attention_and_margins(
        loaded, [item.image() for item in pope_items], [item.question for item in pope_items], desc="POPE questions")
    scenes = [item.meta["scene_index"] for item in pope_items]
    settled_early = (settled_layer(margins) < first_deep).numpy().astype(float)
    add("P3", f"share settled before layer {first_deep}", _mean(settled_early), scenes,
        lambda s: s[..., 0] / s[..., 1], tested=False)
    details["P3"] = {"first_steered_layer": first_deep, "median_settled_layer": float(settled_layer(margins).median())}
    store = SharedPrefixes(loaded)
    stock = run_items(loaded, vanilla(), pope_items, batch_size=128, max_new_tokens=3, shared_prefix=store,
                      desc="stock answers")
    predictions = np.array([parse_pope_answer(r["response"]) for r in stock])
    labels = np.array([item.meta["label"] for item in pope_items])
    deep_a_minus = anchor_correlations(pope_visual, heads, bands["early"], bands["intermediate"])[
        "early_insensitive"][:, bands["deep"]].mean(1).numpy()
    fp = ((labels == "no") & (predictions == "yes")).astype(float)
    tn = ((labels == "no") & (predictions == "no")).astype(float)
    add("P4", "deep r(A-): hallucinated - correct no", np.stack([deep_a_minus * fp, fp, deep_a_minus * tn, tn], 1),
        scenes, lambda s: s[..., 0] / s[..., 1] - s[..., 2] / s[..., 3])
    details["P4"] = {"hallucinated": int(fp.sum()), "correct_no": int(tn.sum())}

    # P5: choose on the first half of the scenes, measure on the second.
    order = list(dict.fromkeys(scenes))
    choose = set(order[:len(order) // 2])
    choosing = [item for item in pope_items if item.meta["scene_index"] in choose]
    held_out = [item for item in pope_items if item.meta["scene_index"] not in choose]
    choice = choose_on_calibration(loaded, heads, choosing, criteria=criteria, alphas=alphas,
                                   betas=betas, batch_size=128, shared_prefix=store)
    best = choice["best"]
    chosen = clva_method(CLVAConfig(alpha=best["alpha"], beta=best["beta"], early=config.early,
                                    intermediate=config.intermediate, deep=config.deep), choice["heads"])
    base = [r for r in stock if r["scene_index"] not in choose]
    steered = run_items(loaded, chosen, held_out, batch_size=128, max_new_tokens=3, shared_prefix=store,
                        desc="CLVA, held-out scenes")
    delta = paired_delta(base, steered, "pope", "f1", seed=seed)
    rows.append({"link": "P5", "statistic": "ΔF1 (CLVA - stock), held-out scenes", **delta, "tested": True})
    changed = sum(parse_pope_answer(a["response"]) != parse_pope_answer(b["response"]) for a, b in zip(base, steered))
    details["P5"] = {"chosen": best, "choice_scenes": len(choose), "held_out_scenes": len(order) - len(choose),
                     "held_out_questions": len(held_out), "answers_changed": changed,
                     "grid_f1": {c: choice["values"][k].tolist() for k, c in enumerate(choice["criteria"])}}
    details["skipped"] = skipped

    table = pd.DataFrame(rows)
    tested = table["tested"].to_numpy()
    table["holm"] = False
    table.loc[tested, "holm"] = holm(table.loc[tested, "p"].fillna(1.0).tolist())  # not measurable: not rejected
    table["holds"] = [
        (row.value <= max_settled and row.high <= max_settled) if row.link == "P3" else bool(row.holm and row.value > 0)
        for row in table.itertuples()]
    table.loc[~tested, "p"] = float("nan")  # a share against a threshold, not a test
    details["max_settled"] = max_settled
    return PremiseReport(table.drop(columns="tested"), details)


def toy_premise_report(loaded, *, head_prompts: int = 64, scenes: int = 80, **kwargs) -> PremiseReport:
    """:func:`premise_report` on the toy world's calibration split: head prompts from scene 1000 on (with their
    object masks), POPE-adversarial questions about scenes 0..``scenes``."""
    from ..eval.items import question_items
    from ..toy.questions import calibration_prompts, pope_questions
    from ..toy.world import generate_scene, object_patch_mask

    images, questions = calibration_prompts(head_prompts, start=1000)
    start = 1000  # calibration_prompts' first scene
    masks = torch.stack([torch.as_tensor(object_patch_mask(generate_scene("calibration", start + i)))
                         for i in range(head_prompts)])
    items = question_items(pope_questions("calibration", scenes, "adversarial"))
    return premise_report(loaded, images, questions, items, masks=masks,
                          head_scenes=list(range(head_prompts)), **kwargs)
