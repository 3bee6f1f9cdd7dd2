"""Side-by-side tables of decoding methods on the same items (notebooks 03-05), and attention under CLVA.

Point estimates only: these tables are for exploring on the calibration split. Held-out numbers with bootstrap
CIs and paired deltas come from :mod:`clva_lite.eval.scoring` on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..analysis.anchors import anchor_distribution, pearson
from ..analysis.calibration import record_prefill
from ..analysis.grounding import on_object_share
from ..attention.clva import CLVAConfig, clva
from ..attention.heads import HeadClasses, normalise_visual
from .benchmarks import parse_pope_answer, pope_metrics
from .comparison import evaluate_methods
from .items import Item
from .methods import Method
from .scoring import CHAIR_METRICS, metric_function, with_chair_counts


def pope_table(loaded, methods: Sequence[Method], items: Sequence[Item], *, batch_size: int = 128) -> pd.DataFrame:
    """One row per method: POPE accuracy, precision, recall, F1, yes-ratio and the count of hallucinations
    (``fp``: "yes" to an absent object), all on the same ``items``."""
    rows = []
    for name, records in evaluate_methods(loaded, methods, items, max_new_tokens=3, batch_size=batch_size).items():
        metrics = pope_metrics([parse_pope_answer(r["response"]) for r in records], [r["label"] for r in records])
        rows.append({"method": name, **{k: metrics[k] for k in
                                                ("accuracy", "precision", "recall", "f1", "yes_ratio", "fp", "n")}})
    return pd.DataFrame(rows).set_index("method")


def caption_table(loaded, methods: Sequence[Method], items: Sequence[Item], *, batch_size: int = 128,
                  max_new_tokens: int = 24) -> pd.DataFrame:
    """One row per method: CHAIR_s, CHAIR_i, object recall and mean caption length on the same caption items."""
    rows = []
    answers = evaluate_methods(loaded, methods, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
    for name, records in answers.items():
        records = with_chair_counts(records)
        rows.append({"method": name, **{m: metric_function("chair", m)(records) for m in CHAIR_METRICS},
                     "n": len(records)})
    return pd.DataFrame(rows).set_index("method")


def one_item_steps(pope: pd.DataFrame | None = None, captions: pd.DataFrame | None = None,
                   row: str = "vanilla") -> dict[str, float]:
    """How much one item moves each metric at ``row`` of a :func:`pope_table` / :func:`caption_table`: one answer
    (F1, accuracy, yes-ratio, ``fp``) and one caption (CHAIR_s), for :func:`~clva_lite.plots.metric_curves`."""
    steps: dict[str, float] = {}
    if pope is not None:
        r = pope.loc[row]
        n = float(r["n"])
        true_yes = r["yes_ratio"] * n - r["fp"]  # TP
        positives = true_yes / r["recall"] if r["recall"] > 0 else 0.0  # TP + FN
        denominator = true_yes + r["fp"] + positives  # 2 TP + FP + FN
        # one answer changes F1 = 2TP / (2TP + FP + FN) by about F1 / (2TP + FP + FN) (an FP turned TN, an FN TP...)
        steps.update({"f1": float(r["f1"] / denominator) if denominator else 0.0, "accuracy": 1 / n,
                      "yes_ratio": 1 / n, "fp": 1.0})
    if captions is not None:
        steps["chair_s"] = 1 / float(captions.loc[row, "n"])
    return steps


def attention_with(loaded, images: list, questions: list[str], config: CLVAConfig | None = None,
                   heads: HeadClasses | None = None, *, batch_size: int = 16) -> torch.Tensor:
    """(N, L, H, V) visual attention of each prompt's last token, stock (``config=None``) or under CLVA.

    Under CLVA the deep layers show the attention *after* the intervention.
    """
    if config is None:
        return record_prefill(loaded, images, questions, batch_size=batch_size, desc="stock attention")[0]
    with clva(loaded, config, heads=heads):
        return record_prefill(loaded, images, questions, batch_size=batch_size, desc="attention under CLVA")[0]


def anchoring_effect(loaded, images: list, questions: list[str], configs: dict[str, CLVAConfig | None],
                     heads: HeadClasses, bands: dict[str, list[int]], masks: torch.Tensor | None = None
                     ) -> pd.DataFrame:
    """How each config moves the deep layers' attention, one row per config (``None`` = stock).

    Columns: mean over prompts of the deep band's Pearson r with the stock A+ and A- of the same prompt (anchors
    are read before the deep layers, so CLVA does not change them), and, with ``masks`` (N, V), the deep layers'
    share of visual attention on object patches.
    """
    stock = attention_with(loaded, images, questions)
    positive = anchor_distribution(stock, heads.sensitive(bands["intermediate"]))  # (N, V)
    negative = anchor_distribution(stock, heads.insensitive(bands["early"]))
    rows = []
    for name, config in configs.items():
        visual = stock if config is None else attention_with(loaded, images, questions, config, heads)
        deep = normalise_visual(visual[:, bands["deep"]]).mean((1, 2))  # (N, V)
        row = {"config": name, "deep r with A+": float(pearson(deep, positive).mean()),
               "deep r with A-": float(pearson(deep, negative).mean())}
        if masks is not None:
            row["deep on-object share"] = float(on_object_share(deep, masks).mean())
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")
