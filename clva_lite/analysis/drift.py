"""The discovery in numbers: where the vision-sensitive heads are and how deep layers drift (Fig. 1, Fig. 2b).

``drift_report(loaded, images, questions, split=...)`` records the last prompt token's attention for every prompt,
fits head classes on it and returns the per-layer curves; ``python -m clva_lite drift`` prints them for the toy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attention.heads import DEFAULT_BANDS, band_layers, fit_head_classes, visual_attention_share
from ..eval.benchmarks import bootstrap_ci, parse_pope_answer
from .anchors import anchor_correlations, drift_curves, group_share_matrix
from .calibration import record_prefill


def drift_report(loaded, images: list, questions: list[str], *, split: str, bands: dict | None = None,
                 fraction: float = 0.25) -> dict:
    """Per-layer numbers behind Fig. 1 and Fig. 2b.

    Returns ``share_matrix`` (L, H, 4), ``visual_share`` (L, H), ``sensitive_per_layer`` (L,) count of
    globally top-``fraction`` heads per layer, the three ``curves`` of :func:`clva_lite.analysis.drift_curves`
    (each (L,)), the ``bands`` as layer lists, and ``visual`` (N, L, H, V) for plotting.
    """
    visual, shares = record_prefill(loaded, images, questions, desc="record attention")
    classes = fit_head_classes(shares, split=split, fraction=fraction)
    num_layers = visual.shape[1]
    layer_bands = {name: band_layers(band, num_layers, name) for name, band in (bands or DEFAULT_BANDS).items()}
    curves = drift_curves(visual, classes, layer_bands["early"], layer_bands["intermediate"])
    return {
        "share_matrix": group_share_matrix(shares),
        "visual_share": visual_attention_share(shares),
        "sensitive_per_layer": classes.sensitive().sum(1),
        "curves": curves,
        "bands": layer_bands,
        "classes": classes,
        "visual": visual,
    }


def format_report(report: dict) -> str:
    curves = report["curves"]
    early, mid = curves["corr_early_insensitive"], curves["corr_mid_sensitive"]
    lines = ["layer  visual share  #top heads  entropy(sens.)  r(early insens.)  r(mid sens.)"]
    for layer in range(len(curves["entropy_sensitive"])):
        band = next((name for name, layers in report["bands"].items() if layer in layers), "")
        lines.append(
            f"{layer:>5}  {float(report['visual_share'][layer].mean()):>12.3f}  "
            f"{int(report['sensitive_per_layer'][layer]):>10}  {float(curves['entropy_sensitive'][layer]):>14.3f}  "
            f"{float(early[layer]):>16.3f}  {float(mid[layer]):>12.3f}  {band}")

    def mean(values: torch.Tensor, layers: list[int]) -> float:
        return float(torch.as_tensor(values)[layers].mean())

    bands = report["bands"]
    lines.append(f"mean r with A- (the early-insensitive pattern): intermediate "
                 f"{mean(early, bands['intermediate']):.3f}, deep {mean(early, bands['deep']):.3f}")
    return "\n".join(lines)


POPE_OUTCOMES = {("yes", "no"): "hallucination (FP)", ("no", "no"): "correct no (TN)",
                 ("yes", "yes"): "correct yes (TP)", ("no", "yes"): "missed (FN)"}


def pope_outcome(prediction: str, label: str) -> str:
    """Name of the outcome of one POPE answer, e.g. ``"hallucination (FP)"`` for "yes" to an absent object."""
    if (prediction, label) not in POPE_OUTCOMES:
        raise ValueError(f"prediction and label must be 'yes'/'no', got {prediction!r}, {label!r}")
    return POPE_OUTCOMES[(prediction, label)]


def drift_by_outcome(visual: torch.Tensor, records: list[dict], classes, bands: dict[str, list[int]],
                     seed: int = 0):
    """Deep-layer agreement with each anchor, grouped by how the question was answered.

    visual: (N, L, H, V) last-prompt-token attention of the N questions of ``records`` (same order). Returns a
    DataFrame, one row per outcome: ``n``, and for each anchor the mean over questions of the deep band's
    Pearson r with it, with a 95 % bootstrap CI (resampling scenes, since questions about one scene are
    not independent).
    """
    if visual.shape[0] != len(records):
        raise ValueError(f"{visual.shape[0]} attention rows but {len(records)} records; pass them in the same order")
    correlations = anchor_correlations(visual, classes, bands["early"], bands["intermediate"])
    deep = {name: values[:, bands["deep"]].mean(1).numpy() for name, values in correlations.items()}
    outcomes = np.array([pope_outcome(parse_pope_answer(r["response"]), r["label"]) for r in records])
    rows = []
    for outcome in POPE_OUTCOMES.values():
        index = np.flatnonzero(outcomes == outcome)
        row = {"outcome": outcome, "n": len(index)}
        for name, label in (("early_insensitive", "deep r with A-"), ("mid_sensitive", "deep r with A+")):
            if len(index) >= 2:
                items = [{"value": float(deep[name][i]), "scene": records[i].get("scene_index", i)} for i in index]
                value, low, high = bootstrap_ci(items, lambda rs: float(np.mean([r["value"] for r in rs])),
                                                n_resamples=1000, seed=seed, cluster_key="scene")
                row[label] = f"{value:.3f} [{low:.3f}, {high:.3f}]"
            else:
                row[label] = "n < 2"
        rows.append(row)
    return pd.DataFrame(rows).set_index("outcome")
