"""Percentile-bootstrap confidence intervals for benchmark metrics, single and paired.

Items (records or plain values) are resampled with replacement and the metric is recomputed on each
resample; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of those
values.  Questions about the same image are not independent (POPE asks six per image, MME two), so
``cluster_key`` resamples whole clusters (e.g. images) instead of single items: a cluster drawn twice
contributes all its items twice.  This gives honest, usually wider, intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

Key = str | Callable[[Any], Hashable]
MetricFn = Callable[[Any], float]


def _key_function(key: Key) -> Callable[[Any], Hashable]:
    if callable(key):
        return key
    return lambda item: item[key] if isinstance(item, Mapping) else getattr(item, key)


def _take(items: Sequence[Any] | np.ndarray, indices: np.ndarray) -> Any:
    if isinstance(items, np.ndarray):
        return items[indices]
    return [items[i] for i in indices]


def _check_settings(n_items: int, n_resamples: int, confidence: float) -> None:
    if n_items == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _resample_indices(items: Sequence[Any], n_resamples: int, seed: int,
                      cluster_key: Key | None) -> list[np.ndarray]:
    """Index arrays of each resample: items drawn with replacement, or whole clusters when clustered."""
    rng = np.random.default_rng(seed)
    if cluster_key is None:
        return list(rng.integers(0, len(items), size=(n_resamples, len(items))))
    members: dict[Hashable, list[int]] = {}
    key = _key_function(cluster_key)
    for index, item in enumerate(items):
        members.setdefault(key(item), []).append(index)
    clusters = [np.asarray(indices) for indices in members.values()]
    draws = rng.integers(0, len(clusters), size=(n_resamples, len(clusters)))
    return [np.concatenate([clusters[c] for c in draw]) for draw in draws]


class CountMetric:
    """A metric that is a function of per-item counts summed over the sample (POPE's tp/fp/tn/fn, CHAIR's
    mention counts). Calling it on items gives the metric; the bootstraps below then resample summed counts with
    one matrix product instead of recomputing the metric item by item (same draws, same values).

    ``counts``: item -> 1-D sequence of k numbers; ``from_sums``: (..., k) array of sums -> (...) metric values.
    """

    def __init__(self, counts: Callable[[Any], Sequence[float]], from_sums: Callable[[np.ndarray], np.ndarray],
                 k: int, empty: Callable[[], float]):
        self.counts = counts
        self.from_sums = from_sums
        self.k = k
        self.empty = empty  # the metric of no items (a value, or an error)

    def matrix(self, items: Sequence[Any]) -> np.ndarray:
        """(items, k) counts."""
        return np.asarray([self.counts(item) for item in items], dtype=float).reshape(len(items), self.k)

    def __call__(self, items: Sequence[Any]) -> float:
        if len(items) == 0:
            return self.empty()
        return float(self.from_sums(self.matrix(items).sum(0)))


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0 where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator != 0)


def _resample_weights(items: Sequence[Any], n_resamples: int, seed: int,
                      cluster_key: Key | None) -> tuple[np.ndarray, np.ndarray]:
    """The draws of :func:`_resample_indices` as (resamples, clusters) multiplicities, and each item's cluster."""
    rng = np.random.default_rng(seed)
    if cluster_key is None:
        cluster_of = np.arange(len(items))
    else:
        key = _key_function(cluster_key)
        ids: dict[Hashable, int] = {}
        cluster_of = np.asarray([ids.setdefault(key(item), len(ids)) for item in items])
    clusters = int(cluster_of.max()) + 1
    draws = rng.integers(0, clusters if cluster_key is not None else len(items), size=(n_resamples, clusters))
    weights = np.zeros((n_resamples, clusters))
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)
    return weights, cluster_of


def _resampled_sums(metric: CountMetric, items: Sequence[Any], weights: np.ndarray,
                    cluster_of: np.ndarray) -> np.ndarray:
    """(resamples, k) summed counts of each resample."""
    per_item = metric.matrix(items)
    per_cluster = np.zeros((weights.shape[1], per_item.shape[1]))
    np.add.at(per_cluster, cluster_of, per_item)
    return weights @ per_cluster


def bootstrap_counts(counts: np.ndarray, clusters: Sequence[Hashable], from_sums: Callable[[np.ndarray], np.ndarray],
                     *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """A statistic of summed per-item counts (``counts``: (N, k); ``from_sums``: (..., k) -> (...)) with a
    cluster bootstrap: ``{"value", "low", "high", "p"}``, ``p`` the two-sided bootstrap p-value of "the statistic
    is 0" (as in :func:`paired_bootstrap_test`). E.g. a mean is counts ``(v, 1)`` and
    ``from_sums = s[..., 0] / s[..., 1]``; a difference of two groups' means resamples clusters jointly for both."""
    counts = np.asarray(counts, dtype=float)
    _check_settings(len(counts), n_resamples, confidence)
    metric = CountMetric(lambda row: row, from_sums, counts.shape[1], lambda: float("nan"))
    rows = list(counts)
    weights, cluster_of = _resample_weights([{"c": c} for c in clusters], n_resamples, seed, "c")
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.asarray(from_sums(_resampled_sums(metric, rows, weights, cluster_of)), dtype=float)
        value = float(from_sums(counts.sum(0)))
    values = values[np.isfinite(values)]
    if len(values) == 0:  # e.g. a group that is empty in every resample
        return {"value": value, "low": float("nan"), "high": float("nan"), "p": float("nan")}
    low, high = _interval(values, confidence)
    side = min(int((values <= 0).sum()), int((values >= 0).sum()))
    return {"value": value, "low": low, "high": high, "p": min(1.0, 2 * (side + 1) / (len(values) + 1))}


def _interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values_or_records: Sequence[Any] | np.ndarray, metric_fn: MetricFn, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0, cluster_key: Key | None = None
                 ) -> tuple[float, float, float]:
    """``(point, low, high)``: the metric on all items and its percentile-bootstrap interval.

    ``metric_fn`` receives a list of items (a numpy array when given one) and returns a float.
    ``cluster_key`` (a key of the records, or a function of an item) resamples clusters, see the
    module docstring.  The same ``seed`` gives the same interval.
    """
    _check_settings(len(values_or_records), n_resamples, confidence)
    point = float(metric_fn(values_or_records))
    if isinstance(metric_fn, CountMetric):
        weights, cluster_of = _resample_weights(values_or_records, n_resamples, seed, cluster_key)
        values = metric_fn.from_sums(_resampled_sums(metric_fn, values_or_records, weights, cluster_of))
        low, high = _interval(values, confidence)
        return point, low, high
    resamples = _resample_indices(values_or_records, n_resamples, seed, cluster_key)
    low, high = _interval([metric_fn(_take(values_or_records, indices)) for indices in resamples], confidence)
    return point, low, high


def align_by_key(records_a: Sequence[Any], records_b: Sequence[Any], key: Key | None) -> list[Any]:
    """``records_b`` reordered to match ``records_a`` by key; both must hold the same unique keys.

    ``key=None`` pairs items by position and only checks the lengths.
    """
    if key is None:
        if len(records_a) != len(records_b):
            raise ValueError(f"paired samples differ in length: {len(records_a)} vs {len(records_b)}")
        return list(records_b)
    key_of = _key_function(key)
    keys_a = [key_of(record) for record in records_a]
    by_key_b = {key_of(record): record for record in records_b}
    if len(set(keys_a)) != len(keys_a) or len(by_key_b) != len(records_b):
        raise ValueError("paired samples need unique keys; found repeated keys")
    if set(keys_a) != set(by_key_b):
        only_a = sorted(map(str, set(keys_a) - set(by_key_b)))[:5]
        only_b = sorted(map(str, set(by_key_b) - set(keys_a)))[:5]
        raise ValueError(f"paired samples have different keys: only in a {only_a}, only in b {only_b}")
    return [by_key_b[k] for k in keys_a]


def paired_bootstrap_delta(records_a: Sequence[Any], records_b: Sequence[Any], metric_fn: MetricFn,
                           key: Key | None = "question_id", n_resamples: int = 1000, confidence: float = 0.95,
                           seed: int = 0, cluster_key: Key | None = None) -> tuple[float, float, float]:
    """``(delta, low, high)`` with ``delta = metric(b) - metric(a)``: method (b) minus baseline (a).

    Items are paired by ``key`` (``None``: by position) and every resample draws the same items for
    both, so the interval reflects the difference, not the two separate uncertainties.  Clusters, if
    any, are read from ``records_a``. :func:`paired_bootstrap_test` also gives a p-value.
    """
    result = paired_bootstrap_test(records_a, records_b, metric_fn, key=key, n_resamples=n_resamples,
                                   confidence=confidence, seed=seed, cluster_key=cluster_key)
    return result["value"], result["low"], result["high"]


def paired_bootstrap_test(records_a: Sequence[Any], records_b: Sequence[Any], metric_fn: MetricFn,
                          key: Key | None = "question_id", n_resamples: int = 1000, confidence: float = 0.95,
                          seed: int = 0, cluster_key: Key | None = None) -> dict[str, float]:
    """:func:`paired_bootstrap_delta` as ``{"value", "low", "high", "p"}``, where ``p`` is the two-sided bootstrap
    p-value of "no difference": twice the smaller share of resampled deltas on either side of 0 (each share counted
    with the observed resample, ``(k + 1) / (n + 1)``), at most 1. Identical answers give p = 1."""
    _check_settings(len(records_a), n_resamples, confidence)
    aligned_b = align_by_key(records_a, records_b, key)
    if isinstance(records_b, np.ndarray):
        aligned_b = np.asarray(aligned_b)
    delta = float(metric_fn(aligned_b)) - float(metric_fn(records_a))
    if isinstance(metric_fn, CountMetric):
        weights, cluster_of = _resample_weights(records_a, n_resamples, seed, cluster_key)
        deltas = (metric_fn.from_sums(_resampled_sums(metric_fn, aligned_b, weights, cluster_of))
                  - metric_fn.from_sums(_resampled_sums(metric_fn, records_a, weights, cluster_of)))
    else:
        deltas = np.asarray([float(metric_fn(_take(aligned_b, indices))) - float(metric_fn(_take(records_a, indices)))
                             for indices in _resample_indices(records_a, n_resamples, seed, cluster_key)])
    low, high = _interval(deltas, confidence)
    side = min(int((deltas <= 0).sum()), int((deltas >= 0).sum()))
    p = min(1.0, 2 * (side + 1) / (len(deltas) + 1))
    return {"value": delta, "low": low, "high": high, "p": p}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected with family-wise error <= ``alpha``.

    Sort the m p-values; reject the k-th smallest while p_(k) <= alpha / (m - k + 1), and stop at the first that is
    not. Returns one bool per input p-value, in input order.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be in (0, 1)")
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
