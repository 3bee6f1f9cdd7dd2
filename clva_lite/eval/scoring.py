"""Turn runner records into metrics with bootstrap 95 % CIs, and method-minus-vanilla paired deltas.

Questions about one scene are not independent, so every bootstrap resamples whole scenes
(``cluster_key="scene_index"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..toy.world import CATEGORIES, PLURALS
from .benchmarks import (
    CountMetric,
    MmeRecord,
    ObjectVocabulary,
    bootstrap_ci,
    chair_metrics,
    mme_scores,
    paired_bootstrap_test,
    parse_mme_answer,
    parse_pope_answer,
    pope_metrics,
    ratio,
)

N_RESAMPLES = 1000


def toy_vocabulary() -> ObjectVocabulary:
    """The toy world's objects: each category and its plural."""
    return ObjectVocabulary({**{c: c for c in CATEGORIES}, **{PLURALS[c]: c for c in CATEGORIES}})


_POPE_CELLS = {("yes", "yes"): (1, 0, 0, 0), ("yes", "no"): (0, 1, 0, 0), ("no", "no"): (0, 0, 1, 0),
               ("no", "yes"): (0, 0, 0, 1)}  # (prediction, label) -> tp, fp, tn, fn


def _pope_counts(record: dict) -> tuple[int, int, int, int]:
    prediction = record.get("prediction") or parse_pope_answer(record["response"])
    cell = _POPE_CELLS.get((prediction, record["label"]))
    if cell is None:
        pope_metrics([prediction], [record["label"]])  # its error names the bad value
    return cell


def pope_from_counts(name: str, sums: np.ndarray) -> np.ndarray:
    """A POPE metric from summed (..., 4) tp, fp, tn, fn, with :func:`pope_metrics`' conventions for 0 / 0."""
    tp, fp, tn, fn = (sums[..., i] for i in range(4))
    n = tp + fp + tn + fn
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    values = {"accuracy": ratio(tp + tn, n), "precision": precision, "recall": recall,
              "f1": ratio(2 * precision * recall, precision + recall), "yes_ratio": ratio(tp + fp, n)}
    if name not in values:
        raise ValueError(f"unknown POPE metric {name!r}; use one of {POPE_METRICS}")
    return values[name]


def _no_pope_records() -> float:
    raise ValueError("no predictions to score")


def _pope_metric(name: str) -> CountMetric:
    pope_from_counts(name, np.zeros(4))  # an unknown name fails now
    return CountMetric(_pope_counts, lambda sums: pope_from_counts(name, sums), 4, _no_pope_records)


def with_chair_counts(records: Sequence[dict], vocab: ObjectVocabulary | None = None) -> list[dict]:
    """Records with their CHAIR counts attached (computed once, so bootstrap resamples only add counts)."""
    vocab = vocab or toy_vocabulary()
    details = chair_metrics([r["response"] for r in records], [r["truth"] for r in records], vocab)["per_caption"]
    return [{**r, "chair_counts": {"mentions": len(d["mentioned"]), "hallucinated": len(d["hallucinated"]),
                                   "truth": len(set(r["truth"])), "matched": len(d["matched"]),
                                   "words": d["n_words"]}}
            for r, d in zip(records, details)]


def _chair_counts(record: dict) -> tuple[int, ...]:
    c = record["chair_counts"]
    return 1, int(c["hallucinated"] > 0), c["mentions"], c["hallucinated"], c["truth"], c["matched"], c["words"]


def chair_from_counts(name: str, sums: np.ndarray) -> np.ndarray:
    """A CHAIR metric from summed (..., 7) captions, hallucinating captions, mentions, hallucinated mentions,
    truth objects, matched objects, words."""
    captions, hallucinating, mentions, hallucinated, truth, matched, words = (sums[..., i] for i in range(7))
    values = {"chair_s": ratio(hallucinating, captions), "chair_i": ratio(hallucinated, mentions),
              "recall": ratio(matched, truth), "mean_length": ratio(words, captions)}
    if name not in values:
        raise ValueError(f"unknown CHAIR metric {name!r}")
    return values[name]


def _chair_metric(name: str) -> CountMetric:
    chair_from_counts(name, np.zeros(7))  # an unknown name fails now
    return CountMetric(_chair_counts, lambda sums: chair_from_counts(name, sums), 7, lambda: 0.0)


POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
CHAIR_METRICS = ("chair_s", "chair_i", "recall", "mean_length")


def metric_function(benchmark: str, name: str) -> Callable[[Sequence[dict]], float]:
    if benchmark == "pope":
        return _pope_metric(name)
    if benchmark == "chair":
        return _chair_metric(name)
    raise ValueError(f"unknown benchmark {benchmark!r}")


def with_ci(records: Sequence[dict], benchmark: str, name: str, seed: int = 0) -> dict:
    point, low, high = bootstrap_ci(list(records), metric_function(benchmark, name), n_resamples=N_RESAMPLES,
                                    seed=seed, cluster_key="scene_index")
    return {"value": point, "low": low, "high": high}


def with_predictions(records: Sequence[dict]) -> list[dict]:
    """Records with POPE's official answer rule applied once (``prediction``)."""
    return [{**r, "prediction": parse_pope_answer(r["response"])} for r in records]


def score_pope(records: Sequence[dict], metrics: Sequence[str] = ("accuracy", "f1", "yes_ratio")) -> dict:
    """Per sampling (``kind``): the chosen POPE metrics with CIs, plus ``n``."""
    records = with_predictions(records)
    result = {}
    for kind in dict.fromkeys(r["kind"] for r in records):
        subset = [r for r in records if r["kind"] == kind]
        result[kind] = {"n": len(subset), **{m: with_ci(subset, "pope", m) for m in metrics}}
    return result


def score_chair(records: Sequence[dict], metrics: Sequence[str] = CHAIR_METRICS) -> dict:
    records = with_chair_counts(records)
    return {"n": len(records), **{m: with_ci(records, "chair", m) for m in metrics}}


def score_mme(records: Sequence[dict], *, ci: bool = True, seed: int = 0) -> dict:
    """MME-style scores (acc, acc+, score per subtask; total) from toy MME records (or any records with
    ``kind`` = subtask, ``scene_index`` = image, ``question``, ``label``, ``response``).

    Returns ``mme_scores``' dict (``{"subtasks": {name: {"acc", "acc_plus", "score", ...}}, "total",
    "max_total"}``); with ``ci``, also ``"ci"``: ``{name: {"acc"|"acc_plus"|"score": {"value", "low", "high"}},
    "total": {...}}``, 95 % percentile bootstrap over scenes (a scene's questions in every subtask are drawn
    together, see :func:`mme_bootstrap`).
    """
    mme_records = [MmeRecord(r["kind"], str(r["scene_index"]), r["question"], r["label"], r["response"])
                   for r in records]
    result = mme_scores(mme_records)
    if ci:
        result["ci"] = mme_bootstrap(records, list(result["subtasks"]), seed=seed)
    return result


def mme_scene_counts(records: Sequence[dict], subtasks: Sequence[str]) -> tuple[list, np.ndarray]:
    """Per scene and subtask: (questions right, questions, 1 if every question right, 1 if asked at all).

    Returns ``(scenes, counts)`` with counts of shape (n_scenes, len(subtasks), 4); MME's answer rule
    (``parse_mme_answer``) decides what is right.
    """
    scenes = list(dict.fromkeys(str(r["scene_index"]) for r in records))
    row = {scene: i for i, scene in enumerate(scenes)}
    counts = np.zeros((len(scenes), len(subtasks), 4))
    wrong = np.zeros((len(scenes), len(subtasks)), dtype=bool)
    for r in records:
        if r["kind"] not in subtasks:
            continue
        i, j = row[str(r["scene_index"])], list(subtasks).index(r["kind"])
        right = parse_mme_answer(r["response"]) == str(r["label"]).strip().lower()
        counts[i, j, 0] += right
        counts[i, j, 1] += 1
        counts[i, j, 3] = 1
        wrong[i, j] |= not right
    counts[..., 2] = counts[..., 3] * ~wrong
    return scenes, counts


def _mme_from_counts(totals: np.ndarray) -> dict[str, np.ndarray]:
    """acc, acc+ and score per subtask from summed counts (..., S, 4); total over subtasks. NaN where empty."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(totals[..., 1] > 0, totals[..., 0] / totals[..., 1], np.nan)
        acc_plus = np.where(totals[..., 3] > 0, totals[..., 2] / totals[..., 3], np.nan)
    score = 100 * acc + 100 * acc_plus
    return {"acc": acc, "acc_plus": acc_plus, "score": score, "total": score.sum(-1)}


def mme_bootstrap(records: Sequence[dict], subtasks: Sequence[str], *, n_resamples: int = N_RESAMPLES,
                  seed: int = 0, confidence: float = 0.95) -> dict:
    """Scene-clustered percentile bootstrap of MME acc, acc+ and score per subtask, and of the total.

    Each resample draws scenes with replacement (a scene drawn twice counts twice, in every subtask); resamples
    in which a subtask has no image are left out of that subtask's interval.
    """
    _, counts = mme_scene_counts(records, subtasks)
    if len(counts) == 0:
        raise ValueError("no MME records to bootstrap")
    point = _mme_from_counts(counts.sum(0))
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(n_resamples, len(counts)))
    boot = _mme_from_counts(counts[draws].sum(1))  # (R, S) per metric, (R,) total
    tail = (1 - confidence) / 2 * 100

    def entry(value: float, samples: np.ndarray) -> dict:
        samples = samples[np.isfinite(samples)]
        low, high = np.percentile(samples, [tail, 100 - tail]) if len(samples) else (np.nan, np.nan)
        return {"value": float(value), "low": float(low), "high": float(high)}

    result = {name: {m: entry(point[m][j], boot[m][:, j]) for m in ("acc", "acc_plus", "score")}
              for j, name in enumerate(subtasks)}
    result["total"] = entry(point["total"], boot["total"])
    return result


def paired_delta(baseline: Sequence[dict], method: Sequence[dict], benchmark: str, name: str,
                 seed: int = 0) -> dict:
    """metric(method) - metric(baseline) on the same items, with a paired, scene-clustered bootstrap CI and
    p-value: ``{"value", "low", "high", "p"}``."""
    prepare = with_predictions if benchmark == "pope" else with_chair_counts
    baseline, method = prepare(baseline), prepare(method)
    return paired_bootstrap_test(list(baseline), list(method), metric_function(benchmark, name), key="id",
                                 n_resamples=N_RESAMPLES, seed=seed, cluster_key="scene_index")


def format_ci(entry: dict, percent: bool = True) -> str:
    scale = 100 if percent else 1
    return f"{entry['value'] * scale:.1f} [{entry['low'] * scale:.1f}, {entry['high'] * scale:.1f}]"
