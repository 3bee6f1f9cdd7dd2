"""Held-out comparison of decoding methods (notebook 05): records per method, tables with CIs, paired deltas.

Every method answers the same items; metrics carry 95 % bootstrap CIs over scenes and deltas are paired
(method minus baseline on the same questions), see :mod:`clva_lite.eval.scoring`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .benchmarks.bootstrap import holm
from .items import Item, run_items, shared_prefixes
from .methods import Method
from .scoring import format_ci, paired_delta, score_chair, score_mme, score_pope


def evaluate_methods(loaded, methods: Sequence[Method], items: Sequence[Item], *, max_new_tokens: int,
                     batch_size: int = 128) -> dict[str, list[dict]]:
    """``{method name: records}`` for every method on the same ``items`` (in order); every method continues the
    same cached image prefixes (see :func:`~clva_lite.eval.items.run_items`)."""
    if not items:
        raise ValueError("no items to evaluate; check the split and the number of scenes")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    store = shared_prefixes(loaded, True)
    return {m.name: run_items(loaded, m, items, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              desc=m.name, shared_prefix=store or False) for m in methods}


def pope_summary(records: dict[str, list[dict]], metrics: Sequence[str] = ("accuracy", "f1", "yes_ratio")
                 ) -> pd.DataFrame:
    """Rows: method; columns: (sampling, metric) as ``"value [low, high]"`` in %."""
    table = {}
    for name, method_records in records.items():
        scores = score_pope(method_records, metrics=metrics)
        table[name] = {(kind, metric): format_ci(scores[kind][metric]) for kind in scores for metric in metrics}
    return pd.DataFrame.from_dict(table, orient="index")


def chair_summary(records: dict[str, list[dict]], metrics: Sequence[str] = ("chair_s", "chair_i", "recall")
                  ) -> pd.DataFrame:
    """Rows: method; columns: CHAIR metrics as ``"value [low, high]"`` in %, and mean caption length in words."""
    rows = {}
    for name, method_records in records.items():
        scores = score_chair(method_records, metrics=(*metrics, "mean_length"))
        rows[name] = {**{m: format_ci(scores[m]) for m in metrics},
                      "mean length": f"{scores['mean_length']['value']:.1f}"}
    return pd.DataFrame.from_dict(rows, orient="index")


def mme_summary(records: dict[str, list[dict]], *, ci: bool = True) -> pd.DataFrame:
    """Rows: method; columns: MME-style score per subtask (max 200) and the total (max 800 for four), as
    ``"value [low, high]"`` with a 95 % scene-clustered bootstrap CI (``ci=False``: the values alone)."""
    rows = {}
    for name, method_records in records.items():
        scores = score_mme(method_records, ci=ci)
        if not ci:
            rows[name] = {**{k: round(v["score"], 1) for k, v in scores["subtasks"].items()},
                          "total": round(scores["total"], 1)}
            continue
        bounds = {**{k: scores["ci"][k]["score"] for k in scores["subtasks"]}, "total": scores["ci"]["total"]}
        rows[name] = {k: f"{b['value']:.1f} [{b['low']:.1f}, {b['high']:.1f}]" for k, b in bounds.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def pope_deltas(records: dict[str, list[dict]], baseline: str = "vanilla", metric: str = "f1") -> pd.DataFrame:
    """Long table (method, metric, value, low, high) of paired POPE deltas per sampling, in points (x100)."""
    if baseline not in records:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(records)}")
    rows = []
    for name, method_records in records.items():
        if name == baseline:
            continue
        for kind in dict.fromkeys(r["kind"] for r in method_records):
            delta = paired_delta([r for r in records[baseline] if r["kind"] == kind],
                                 [r for r in method_records if r["kind"] == kind], "pope", metric)
            rows.append({"method": name, "metric": f"Δ {metric} {kind}", **_points(delta)})
    return pd.DataFrame(rows)


def chair_deltas(records: dict[str, list[dict]], baseline: str = "vanilla", metric: str = "chair_s"
                 ) -> pd.DataFrame:
    """Long table (method, metric, value, low, high) of paired CHAIR deltas in points (x100)."""
    if baseline not in records:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(records)}")
    rows = [{"method": name, "metric": f"Δ {metric}", **_points(paired_delta(records[baseline], recs, "chair", metric))}
            for name, recs in records.items() if name != baseline]
    return pd.DataFrame(rows)


def _points(delta: dict) -> dict:
    """A paired delta with value and CI in points (x100); the p-value as it is."""
    return {**{k: 100 * delta[k] for k in ("value", "low", "high")}, "p": delta["p"]}


def verdicts(deltas: pd.DataFrame, lower_is_better: Sequence[str] = ("chair",), baseline: str = "vanilla",
             alpha: float = 0.05) -> list[str]:
    """One sentence per delta row: "better" / "worse" than the baseline only where Holm's procedure over *all the
    rows given* rejects "no difference" at family-wise error ``alpha`` (bootstrap p-values, column ``p``), so that
    among a dozen deltas one does not come out "better" by chance. Each line also says whether its own 95 % CI
    excludes 0."""
    if "p" not in deltas.columns:
        raise ValueError("the deltas have no p-values (column 'p'); build them with pope_deltas / chair_deltas")
    rejected = holm(list(deltas["p"]), alpha=alpha)
    family = len(deltas)
    lines = []
    for row, reject in zip(deltas.itertuples(), rejected):
        lower = any(tag in row.metric.lower() for tag in lower_is_better)
        excludes = row.low > 0 or row.high < 0
        if reject:
            better = (row.value < 0) == lower
            verdict = f"{'better' if better else 'worse'} than {baseline} (Holm over {family})"
        elif excludes:
            verdict = f"CI excludes 0, but not significant after Holm over {family}"
        else:
            verdict = "no difference the data can resolve"
        lines.append(f"{row.method:>8} {row.metric:<22} {row.value:+6.1f} [{row.low:+.1f}, {row.high:+.1f}] "
                     f"p={row.p:.3f} -> {verdict}")
    return lines
