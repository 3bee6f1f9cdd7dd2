"""The alpha/beta grid (the paper's Fig. 5), fitted on the calibration split only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..attention.clva import CLVAConfig
from ..attention.heads import CRITERIA, HeadClasses
from ..progress import tqdm
from .items import Item, run_items, shared_prefixes
from .methods import clva_method
from .prefix import SharedPrefixes
from .scoring import CHAIR_METRICS, POPE_METRICS, metric_function, with_chair_counts

METRICS = {"pope": POPE_METRICS, "chair": CHAIR_METRICS}


def sweep_weights(loaded, heads: HeadClasses, items: Sequence[Item], alphas: Sequence[float],
                  betas: Sequence[float], *, benchmark: str = "pope", metric: str = "f1",
                  base: CLVAConfig | None = None, batch_size: int = 64, max_new_tokens: int = 3,
                  shared_prefix: bool | SharedPrefixes = True) -> dict:
    """``metric`` for every (alpha, beta); items must not come from the test split.

    ``benchmark="pope"`` (items: yes/no questions, metric in ``POPE_METRICS``) or ``"chair"`` (items: caption
    requests with ``truth``, metric in ``CHAIR_METRICS``; give captions room, e.g. ``max_new_tokens=24``).
    Returns ``{"values": (len(alphas), len(betas)) array, "alphas", "betas", "benchmark", "metric",
    "best": (alpha, beta), "split": ...}``; the best point maximises the metric (minimises CHAIR_s / CHAIR_i).
    Every point continues the same cached image prefixes (``shared_prefix``, see :func:`~.items.run_items`).
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
    store = shared_prefixes(loaded, shared_prefix)
    values = np.zeros((len(alphas), len(betas)))
    grid = [(i, j) for i in range(len(alphas)) for j in range(len(betas))]
    for i, j in tqdm(grid, desc="alpha/beta grid", disable=len(grid) == 1):
        config = CLVAConfig(**{**base.__dict__, "alpha": float(alphas[i]), "beta": float(betas[j])})
        records = run_items(loaded, clva_method(config, heads), items, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, desc=f"alpha={alphas[i]:g} beta={betas[j]:g}",
                            shared_prefix=store or False, stop_at_sentence_end=benchmark == "pope")
        if benchmark == "chair":
            records = with_chair_counts(records)
        values[i, j] = score(records)
    lower_is_better = benchmark == "chair" and metric.startswith("chair")
    flat = values.argmin() if lower_is_better else values.argmax()
    i, j = np.unravel_index(flat, values.shape)
    return {"values": values, "alphas": list(alphas), "betas": list(betas), "benchmark": benchmark, "metric": metric,
            "best": (float(alphas[i]), float(betas[j])), "split": ",".join(splits), "n_items": len(items)}


CHOICE_RULE = ("the highest POPE-adversarial F1 on the calibration items over head criterion x alpha x beta; ties go "
               "to the earlier criterion in {criteria}, then the smaller alpha, then the smaller beta")


def choose_on_calibration(loaded, heads: HeadClasses, items: Sequence[Item], *,
                          criteria: Sequence[str] = tuple(CRITERIA), alphas: Sequence[float] = (0.0, 1.0, 2.0),
                          betas: Sequence[float] = (0.0, 1.0, 2.0), metric: str = "f1", batch_size: int = 64,
                          max_new_tokens: int = 3, shared_prefix: bool | SharedPrefixes = True) -> dict:
    """CLVA's head criterion and alpha/beta, chosen together on calibration items by one rule (:data:`CHOICE_RULE`).

    ``heads`` must carry each head's focus (``clva_lite.calibrate_heads`` records it). alpha = beta = 0 is the stock
    model whatever the criterion, so it is run once and shared by every criterion's grid; likewise a cell whose anchors
    in use (A+ when alpha > 0, A- when beta > 0) another criterion picked too. Returns ``{"values":
    (criteria, alphas, betas) array, "criteria", "alphas", "betas", "metric", "best": {"criterion", "alpha",
    "beta"}, "heads": the chosen HeadClasses, "rule", "split"}``.
    """
    if not items:
        raise ValueError("no calibration items to choose on; pass POPE questions from the calibration split")
    for criterion in criteria:
        heads.with_criterion(criterion)  # clear error now if a criterion cannot be scored (no focus)
    splits = sorted({item.split for item in items})
    if "test" in splits:
        raise ValueError("the criterion/alpha/beta choice must not see the test split; use the calibration split")
    values = np.zeros((len(criteria), len(alphas), len(betas)))
    store = shared_prefixes(loaded, shared_prefix)  # one image prefix per scene for the whole grid
    config = CLVAConfig()
    bands = config.layers(heads.num_layers)
    done: dict[tuple, float] = {}
    for c, criterion in enumerate(tqdm(criteria, desc="head criteria")):
        ranked = heads.with_criterion(criterion)
        positive, negative, deep = (tuple(map(tuple, chosen.nonzero().tolist())) for chosen in (
            ranked.sensitive(bands["intermediate"]), ranked.insensitive(bands["early"]),
            ranked.sensitive(bands["deep"]) if config.apply_to == "sensitive" else torch.zeros(0)))
        for i, alpha in enumerate(alphas):
            for j, beta in enumerate(betas):
                # CLVA reads A+ only when alpha > 0 and A- only when beta > 0, so criteria that pick the same heads
                # for the anchors in use run the same computation (alpha = beta = 0 is the stock model): run it once
                key = (positive if alpha else None, negative if beta else None, deep if alpha or beta else None,
                       float(alpha), float(beta))
                if key not in done:
                    done[key] = sweep_weights(loaded, ranked, items, [alpha], [beta], metric=metric,
                                              batch_size=batch_size, max_new_tokens=max_new_tokens,
                                              shared_prefix=store or False)["values"][0, 0]
                values[c, i, j] = done[key]
    c, i, j = np.unravel_index(values.argmax(), values.shape)  # first maximum: the tie order of CHOICE_RULE
    best = {"criterion": criteria[c], "alpha": float(alphas[i]), "beta": float(betas[j])}
    return {"values": values, "criteria": list(criteria), "alphas": list(alphas), "betas": list(betas),
            "metric": metric, "best": best, "heads": heads.with_criterion(criteria[c]),
            "rule": CHOICE_RULE.format(criteria=tuple(criteria)), "split": ",".join(splits), "n_items": len(items)}


def toy_calibration_choice(loaded, *, head_prompts: int = 64, scenes: int = 60,
                           alphas: Sequence[float] = (0.0, 1.0, 2.0), betas: Sequence[float] = (0.0, 1.0, 2.0),
                           cache: bool = True) -> dict:
    """The main job's calibration step on the toy, for the notebooks: head classes from ``head_prompts``
    calibration prompts, then :func:`choose_on_calibration` on POPE-adversarial questions about ``scenes``
    calibration scenes. With the defaults it makes the same choice as ``python -m clva_lite demo``.

    The grid costs minutes on a CPU and notebooks 03-05 each need it: with ``cache`` the result is kept in
    ``~/.cache/clva_lite`` (``$CLVA_LITE_CACHE``) under a key made of the model folder, its weights file's size and
    modification time, the arguments, the toy world the scenes come from and the source of the code it runs, so
    a retrained model, other arguments, another world or edited code compute it anew."""
    import hashlib
    import os
    from pathlib import Path

    import torch

    from ..analysis.calibration import calibrate_heads
    from ..toy.questions import calibration_prompts, pope_questions
    from .items import question_items

    path = None
    weights = Path(loaded.name) / "model.safetensors" if loaded.name not in ("toy", "toy-untrained") else None
    if loaded.name == "toy":
        from ..models.loading import default_toy_path

        weights = default_toy_path() / "model.safetensors"
    if cache and weights is not None and weights.exists():
        stat = weights.stat()
        package = Path(__file__).resolve().parents[1]
        code = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(package.rglob("*.py")))).hexdigest()
        from ..toy.world import active_world

        key = repr((str(weights.resolve()), stat.st_size, stat.st_mtime_ns, head_prompts, scenes, tuple(alphas),
                    tuple(betas), str(loaded.device), code, active_world()))
        folder = Path(os.environ.get("CLVA_LITE_CACHE", Path.home() / ".cache" / "clva_lite"))
        path = folder / f"calibration-choice-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
    heads = calibrate_heads(loaded, *calibration_prompts(head_prompts), split="calibration")
    items = question_items(pope_questions("calibration", scenes, "adversarial"))
    choice = choose_on_calibration(loaded, heads, items, alphas=alphas, betas=betas)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(choice, tmp)
        tmp.replace(path)
    return choice
