"""The alpha/beta grid (the paper's Fig. 5), fitted on the calibration split only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..attention.clva import CLVAConfig
from ..attention.heads import HeadClasses
from ..progress import tqdm
from .items import Item, run_items
from .methods import clva_method
from .scoring import CHAIR_METRICS, POPE_METRICS, metric_function, with_chair_counts

METRICS = {"pope": POPE_METRICS, "chair": CHAIR_METRICS}


def sweep_weights(loaded, heads: HeadClasses, items: Sequence[Item], alphas: Sequence[float],
                  betas: Sequence[float], *, benchmark: str = "pope", metric: str = "f1",
                  base: CLVAConfig | None = None, batch_size: int = 64, max_new_tokens: int = 3) -> dict:
    """``metric`` for every (alpha, beta); items must not come from the test split.

    ``benchmark="pope"`` (items: yes/no questions, metric in ``POPE_METRICS``) or ``"chair"`` (items: caption
    requests with ``truth``, metric in ``CHAIR_METRICS``; give captions room, e.g. ``max_new_tokens=24``).
    Returns ``{"values": (len(alphas), len(betas)) array, "alphas", "betas", "benchmark", "metric",
    "best": (alpha, beta), "split": ...}``; the best point maximises the metric (minimises CHAIR_s / CHAIR_i).
    """
    if benchmark not in METRICS:
        raise ValueError(f"unknown benchmark {benchmark!r}; use one of {sorted(METRICS)}")
    if metric not in METRICS[benchmark]:
        raise ValueError(f"unknown {benchmark} metric {metric!r}; use one of {METRICS[benchmark]}")
    splits = sorted({item.split for item in items})
    if "test" in splits:
        raise ValueError("the alpha/beta sweep must not see the test split; sweep on the calibration split")
    base = base or CLVAConfig()
    score = metric_function(benchmark, metric)
    values = np.zeros((len(alphas), len(betas)))
    grid = [(i, j) for i in range(len(alphas)) for j in range(len(betas))]
    for i, j in tqdm(grid, desc="alpha/beta grid"):
        config = CLVAConfig(**{**base.__dict__, "alpha": float(alphas[i]), "beta": float(betas[j])})
        records = run_items(loaded, clva_method(config, heads), items, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, desc=f"alpha={alphas[i]:g} beta={betas[j]:g}")
        if benchmark == "chair":
            records = with_chair_counts(records)
        values[i, j] = score(records)
    lower_is_better = benchmark == "chair" and metric.startswith("chair")
    flat = values.argmin() if lower_is_better else values.argmax()
    i, j = np.unravel_index(flat, values.shape)
    return {"values": values, "alphas": list(alphas), "betas": list(betas), "benchmark": benchmark, "metric": metric,
            "best": (float(alphas[i]), float(betas[j])), "split": ",".join(splits)}
