"""Figures (seaborn / matplotlib). Every function computes nothing new: it draws tensors it is given and
returns the ``matplotlib.figure.Figure``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from ..attention.spans import GROUPS, VisualSpan

Grid = tuple[int, int] | VisualSpan | None  # a capture's span, or (rows, cols)


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def on_grid(values: np.ndarray, grid) -> tuple[np.ndarray, tuple[int, int]]:
    """(..., V) values laid out as (..., rows, cols), and (rows, cols).

    ``grid`` is a capture's span (``rec.span``: it knows which tokens tile the image, e.g. LLaVA-NeXT's base view
    or SmolVLM's global view) or a plain (rows, cols) when all V tokens tile it.
    """
    if isinstance(grid, VisualSpan):
        return grid.on_grid(values), grid.grid
    if grid is None:
        raise ValueError("these visual tokens do not form one image grid, so they cannot be drawn over the image")
    rows, cols = grid
    if values.shape[-1] != rows * cols:
        raise ValueError(
            f"{values.shape[-1]} visual tokens do not tile a {rows} x {cols} grid; pass the capture's span "
            "(rec.span) instead of rec.span.grid, so the tokens of the image's grid are picked")
    return values.reshape(*values.shape[:-1], rows, cols), (rows, cols)


ATTENTION_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"


def overlay(ax, heat: np.ndarray, grid: tuple[int, int], image=None, *, vmin: float | None = None,
            vmax: float | None = None, cmap: str = ATTENTION_CMAP):
    """Draw a (rows, cols) heat map over ``image`` (or alone when there is no image) on ``ax``; returns the heat
    map's ``AxesImage`` (for a colour bar). The image is drawn in grey, so the colour map's hues cannot be confused
    with the objects' colours. Pass ``vmin`` / ``vmax`` to put several panels on one scale."""
    extent = (0, grid[1] * 16, grid[0] * 16, 0)
    if image is None:
        return ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent)
    ax.imshow(np.asarray(image.convert("L").resize((grid[1] * 16, grid[0] * 16))), cmap="gray", vmin=0, vmax=255,
              extent=extent)
    return ax.imshow(heat, cmap=cmap, alpha=0.65, vmin=vmin, vmax=vmax, extent=extent)


def visual_share_matrix(share_matrix: torch.Tensor, *, annotate: str | None = "system+prompt",
                        title: str = "Attention of the query on visual tokens"):
    """Fig. 1: layer x head matrix of the visual share.

    share_matrix: (L, H, 4) mean group shares (``GROUPS`` order). Cells are coloured by the visual share and,
    with ``annotate``, labelled with the share of the named text groups (e.g. ``"system+prompt"``).
    """
    shares = _np(share_matrix)
    visual = shares[..., GROUPS.index("visual")]
    labels = None
    if annotate:
        text = sum(shares[..., GROUPS.index(g)] for g in annotate.split("+"))
        labels = np.vectorize(lambda v: f"{v:.2f}")(text)
    height = max(3.0, 0.35 * visual.shape[0] + 1.2)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * visual.shape[1] + 2), height))
    sns.heatmap(visual, ax=ax, cmap="viridis", vmin=0, vmax=max(1e-6, float(visual.max())),
                annot=labels if labels is not None and visual.size <= 1100 else None, fmt="",
                annot_kws={"fontsize": 6}, cbar_kws={"label": "visual share"})
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    subtitle = f"\n(cell text: share on {annotate} tokens)" if annotate else ""
    ax.set_title(title + subtitle, fontsize=10)
    fig.tight_layout()
    return fig


def layer_heatmaps(visual: torch.Tensor, grid: Grid, image=None, *, layers=None,
                   columns: int = 4, title: str = "Visual attention per layer"):
    """Fig. 2a: each layer's mean visual distribution drawn over the image.

    visual: (L, H, V) attention of one query. ``grid``: the capture's span, or (rows, cols) (see :func:`on_grid`);
    without a grid the tokens cannot be placed on the image and a clear error is raised.
    """
    data = _np(visual)
    p = data / np.clip(data.sum(-1, keepdims=True), 1e-12, None)
    per_layer, grid = on_grid(p.mean(1), grid)  # (L, rows, cols)
    layers = list(range(per_layer.shape[0])) if layers is None else list(layers)
    rows = int(np.ceil(len(layers) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns + 0.8, 2.3 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    top = float(per_layer[layers].max())  # one scale for every panel, so layers can be compared
    for ax, layer in zip(axes.flat, layers):
        image_artist = overlay(ax, per_layer[layer], grid, image, vmin=0.0, vmax=top)
        ax.set_title(f"layer {layer}", fontsize=9)
    fig.colorbar(image_artist, ax=axes, shrink=0.6, label="share of the layer's visual attention per patch")
    fig.suptitle(title, fontsize=10)
    return fig


BAND_COLOURS = {"early": "tab:green", "intermediate": "tab:red", "deep": "tab:gray"}


def _shade_bands(ax, bands: dict[str, list[int]] | None, *, alpha: float, label_at: float | None = None) -> None:
    """Shade each band's layers on a layer axis; with ``label_at``, write the band's name at that height."""
    for name, band in (bands or {}).items():
        ax.axvspan(min(band) - 0.5, max(band) + 0.5, color=BAND_COLOURS.get(name, "tab:gray"), alpha=alpha)
        if label_at is not None:
            ax.text((min(band) + max(band)) / 2, label_at, name, ha="center", fontsize=8)


def drift_curves(curves: dict[str, torch.Tensor], bands: dict[str, list[int]] | None = None,
                 title: str = "Visual attention drift across layers"):
    """Fig. 2b: entropy of sensitive heads and correlations with the two anchors, per layer, bands shaded."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    layers = np.arange(len(_np(curves["entropy_sensitive"])))
    left.plot(layers, _np(curves["entropy_sensitive"]), marker="o", color="tab:blue")
    left.set_xlabel("layer")
    left.set_ylabel("normalised entropy")
    left.set_title("entropy of vision-sensitive heads", fontsize=10)
    right.plot(layers, _np(curves["corr_early_insensitive"]), marker="o", color="tab:green",
               label="vs. A⁻ (early insensitive mean)")
    right.plot(layers, _np(curves["corr_mid_sensitive"]), marker="o", color="tab:red",
               label="vs. A⁺ (mid sensitive mean)")
    right.set_xlabel("layer")
    right.set_ylabel("Pearson r")
    right.set_title("correlation of each layer's visual attention", fontsize=10)
    right.legend(fontsize=8)
    for ax in (left, right):
        _shade_bands(ax, bands, alpha=0.08)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def lens_curves(table, bands: dict[str, list[int]] | None = None,
                title: str = "By which layer is the yes/no answer settled? (logit lens)"):
    """The logit lens per layer (a :func:`clva_lite.analysis.lens.lens_table`): agreement with the final answer and
    the share of answers settled, bands shaded."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    layers = np.asarray(table.index)
    ax.plot(layers, table["agrees with final answer"], marker="o", label="sign agrees with the final answer")
    ax.plot(layers, table["settled by this layer"], marker="s", label="answers settled by this layer")
    _shade_bands(ax, bands, alpha=0.1, label_at=0.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of questions")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _answer_scale(values: np.ndarray, answers: int | None, span: int = 10) -> tuple[float, float, str]:
    """Colour limits at least ``span`` answers wide (one answer of ``answers`` moves a rate by about 1 / answers),
    so a grid whose cells differ by an answer or two does not fill the whole colour range; and a note saying so."""
    low, high = float(np.min(values)), float(np.max(values))
    if not answers:
        return low, high, ""
    half = max((high - low) / 2, span / 2 / answers)
    middle = (low + high) / 2
    return middle - half, middle + half, f"one answer of {answers} ≈ {1 / answers:.3f}"


def weight_grid(values: np.ndarray, alphas, betas, *, metric: str = "F1", title: str | None = None,
                answers: int | None = None):
    """Fig. 5: a metric over the alpha (rows) x beta (columns) grid. ``answers``: how many questions or captions
    each cell was scored on; the colour scale then spans at least ten of them (see :func:`_answer_scale`)."""
    fig, ax = plt.subplots(figsize=(1.0 * len(betas) + 2.5, 0.8 * len(alphas) + 1.7))
    vmin, vmax, note = _answer_scale(np.asarray(values), answers)
    sns.heatmap(np.asarray(values), annot=True, fmt=".3f", cmap="rocket_r" if "CHAIR" in metric else "rocket",
                xticklabels=[f"{b:g}" for b in betas], yticklabels=[f"{a:g}" for a in alphas], ax=ax,
                vmin=vmin, vmax=vmax, cbar_kws={"label": metric})
    ax.set_xlabel("beta (negative anchor)")
    ax.set_ylabel("alpha (positive anchor)")
    ax.set_title((title or f"{metric} over the alpha/beta grid") + (f"\n({note})" if note else ""), fontsize=10)
    fig.tight_layout()
    return fig


def criterion_grid(choice: dict, *, title: str | None = None):
    """One alpha x beta heat map per head criterion, one shared colour scale; the chosen cell outlined.

    ``choice``: the result of :func:`clva_lite.eval.sweep.choose_on_calibration`.
    """
    values = np.asarray(choice["values"])
    criteria, alphas, betas = choice["criteria"], choice["alphas"], choice["betas"]
    fig, axes = plt.subplots(1, len(criteria), figsize=(2.9 * len(criteria) + 0.8, 0.75 * len(alphas) + 1.8),
                             sharey=True)
    axes = np.atleast_1d(axes)
    vmin, vmax, note = _answer_scale(values, choice.get("n_items"))
    for k, (ax, criterion) in enumerate(zip(axes, criteria)):
        sns.heatmap(values[k], annot=True, fmt=".3f", cmap="rocket", vmin=vmin, vmax=vmax, ax=ax,
                    xticklabels=[f"{b:g}" for b in betas], yticklabels=[f"{a:g}" for a in alphas],
                    cbar=k == len(criteria) - 1, cbar_kws={"label": choice["metric"]})
        ax.set_title(f"criterion: {criterion}", fontsize=10)
        ax.set_xlabel("beta (negative anchor)")
        if criterion == choice["best"]["criterion"]:
            i, j = alphas.index(choice["best"]["alpha"]), betas.index(choice["best"]["beta"])
            ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="cyan", linewidth=2.5))
    axes[0].set_ylabel("alpha (positive anchor)")
    heading = title or f"{choice['metric']} on {choice['split']} (chosen cell outlined)"
    fig.suptitle(heading + (f"\n({note}; the colour scale spans at least ten)" if note else ""), fontsize=10)
    fig.tight_layout()
    return fig


def attention_before_after(before: torch.Tensor, after: torch.Tensor, grid: Grid, image=None,
                           titles=("stock", "with CLVA")):
    """Two heat maps of a (V,) distribution over the image: before and after an intervention."""
    return attention_maps([before, after], titles, grid, image)


def attention_maps(maps, titles, grid: Grid, image=None, *, suptitle: str | None = None, signed=(),
                   label: str = "share of visual attention per patch", signed_label: str = "bias (logit)"):
    """Several (V,) maps over the image side by side (e.g. anchors, or deep attention per alpha), all on one
    colour scale from 0 with one colour bar, so panels can be compared. ``signed``: indices of maps with both
    signs (e.g. CLVA's bias), drawn on a diverging colour map centred at 0 with a colour bar of their own."""
    maps = list(maps)
    if len(maps) != len(titles):
        raise ValueError(f"{len(maps)} maps but {len(titles)} titles")
    signed = set(signed)
    if not signed <= set(range(len(maps))):
        raise ValueError(f"signed={sorted(signed)} names maps outside 0..{len(maps) - 1}")
    placed = [on_grid(_np(data), grid) for data in maps]
    plain = [heat for k, (heat, _) in enumerate(placed) if k not in signed]
    top = max((float(h.max()) for h in plain), default=1.0)
    reach = max((float(np.abs(placed[k][0]).max()) for k in signed), default=1.0) or 1.0
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps) + 0.9 * (1 + bool(signed)), 2.9), squeeze=False,
                             layout="constrained")
    artists = {}
    for k, (ax, (heat, shape), name) in enumerate(zip(axes[0], placed, titles)):
        if k in signed:
            artists["signed"] = overlay(ax, heat, shape, image, vmin=-reach, vmax=reach, cmap=SIGNED_CMAP)
        else:
            artists["plain"] = overlay(ax, heat, shape, image, vmin=0.0, vmax=top)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if "plain" in artists:
        fig.colorbar(artists["plain"], ax=[a for k, a in enumerate(axes[0]) if k not in signed], shrink=0.8,
                     label=label)
    if "signed" in artists:
        fig.colorbar(artists["signed"], ax=[axes[0][k] for k in sorted(signed)], shrink=0.8, label=signed_label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def head_class_map(classes, bands: dict[str, list[int]], title: str = "Head classes used by CLVA's anchors"):
    """(L, H) visual shares with the anchors' heads marked: S = sensitive (A+ / deep), I = insensitive (A-)."""
    share = _np(classes.visual_share)
    labels = np.full(share.shape, "", dtype=object)
    for name, layers in bands.items():
        if name in ("intermediate", "deep"):
            labels[_np(classes.sensitive(layers)).astype(bool)] = "S"
        if name == "early":
            labels[_np(classes.insensitive(layers)).astype(bool)] = "I"
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * share.shape[1] + 2), max(3.0, 0.35 * share.shape[0] + 1.2)))
    sns.heatmap(share, annot=labels, fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax, cbar_kws={"label": "visual share"})
    band_of = {layer: name for name, layers in bands.items() for layer in layers}
    ax.set_yticks(np.arange(share.shape[0]) + 0.5,
                  [f"{layer} {band_of.get(layer, '')}".strip() for layer in range(share.shape[0])], rotation=0)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_curves(table, x: str, metrics, *, title: str = "", xlabel: str | None = None, reference: str | None = None,
                  steps: dict[str, float] | None = None, min_steps: int = 6):
    """Line plot of some columns of a DataFrame against column ``x`` (one panel per metric).

    ``reference``: the index label of a row drawn as a dashed line in every panel (e.g. ``"vanilla"``).
    ``steps``: per metric, how much one item (one answer, one caption) moves it; it is drawn as a bar at the right
    edge, and the y-axis spans at least ``min_steps`` of them, so that a change of one answer does not fill the panel.
    """
    metrics = list(metrics)
    steps = steps or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ax.plot(table[x], table[metric], marker="o")
        if reference is not None:
            ax.axhline(table.loc[reference, metric], color="gray", ls="--", lw=0.9, label=str(reference))
            ax.legend(fontsize=7, loc="upper left")
        step = steps.get(metric)
        if step:
            low, high = float(table[metric].min()), float(table[metric].max())
            centre, half = (low + high) / 2, max(high - low, min_steps * step) / 2 * 1.15
            ax.set_ylim(centre - half, centre + half)
            first, last = float(table[x].min()), float(table[x].max())
            right = last + 0.15 * ((last - first) or 1.0)  # beside the data, not on it
            ax.set_xlim(first - 0.05 * ((last - first) or 1.0), right + 0.08 * ((last - first) or 1.0))
            ax.errorbar([right], [centre - step / 2], yerr=[[0.0], [step]], color="black", capsize=3, lw=1.2)
            ax.annotate("one\nitem", (right, centre + step / 2), xytext=(0, 3), textcoords="offset points",
                        fontsize=7, ha="center", va="bottom")
        ax.set_xlabel(xlabel or x)
        ax.set_title(metric, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def delta_forest(deltas, title: str = "Method minus vanilla (paired, 95 % CI)", *, unit: str = "points",
                 lower_is_better=("chair",)):
    """Forest plot of paired deltas. deltas: DataFrame with columns method, metric, value, low, high (in ``unit``).
    Each panel says which way is better: metrics whose name contains one of ``lower_is_better`` (CHAIR: fewer
    hallucinated captions) improve to the left, the others (F1, accuracy) to the right."""
    metrics = list(dict.fromkeys(deltas["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 0.45 * deltas["method"].nunique() + 1.7),
                             squeeze=False, sharey=True)
    for ax, metric in zip(axes[0], metrics):
        rows = deltas[deltas["metric"] == metric]
        y = np.arange(len(rows))
        ax.errorbar(rows["value"], y, xerr=[rows["value"] - rows["low"], rows["high"] - rows["value"]], fmt="o",
                    capsize=3)
        ax.axvline(0, color="gray", lw=0.8, ls="--")
        ax.set_yticks(y, rows["method"])
        ax.set_title(metric, fontsize=9)
        lower = any(word in metric.lower() for word in lower_is_better)
        ax.set_xlabel(f"{unit}   " + ("← better" if lower else "better →"), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def premise_chart(report, title: str = "Does CLVA's premise hold? (calibration split, 95 % CI)"):
    """One row per statistic of a :class:`~clva_lite.analysis.premise.PremiseReport`: its value and interval on its
    own axis, the line it must clear (0 for the tests; the ``max_settled`` share for P3, which must stay below it),
    and the verdict (green: holds after Holm's correction; grey: does not)."""
    table = report.table.reset_index(drop=True)
    max_settled = float(report.details["max_settled"])
    fig, axes = plt.subplots(len(table), 1, figsize=(7.5, 0.85 * len(table) + 0.9), squeeze=False)
    for ax, row in zip(axes[:, 0], table.itertuples()):
        threshold = max_settled if row.link == "P3" else 0.0
        colour = "tab:green" if bool(row.holds) else "tab:gray"
        measured = bool(np.isfinite([row.value, row.low, row.high]).all())
        if measured:
            ax.errorbar([row.value], [0], xerr=[[row.value - row.low], [row.high - row.value]], fmt="o",
                        color=colour, capsize=4)
        ax.axvline(threshold, color="black", lw=0.8, ls="--")
        low, high = (min(row.low, threshold), max(row.high, threshold)) if measured else (threshold, threshold)
        pad = 0.15 * max(high - low, 1e-3) if measured else 1.0
        ax.set_xlim(low - pad, high + pad)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7)
        want = f"must stay below {threshold:g}" if row.link == "P3" else "must be above 0"
        verdict = ("holds" if bool(row.holds) else "does not hold") if measured else "not measurable: does not hold"
        if (table["link"] == row.link).sum() > 1:
            verdict += f" ({row.link} needs all its rows)"
        ax.set_title(f"{row.link}  {row.statistic}  ({want}): {verdict}", fontsize=8, loc="left", color=colour)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def anchor_agreement_by_step(correlations: dict[str, torch.Tensor], layers: list[int], tokens: list[str],
                             title: str = "Deep-layer agreement with each anchor, token by token"):
    """correlations: ``anchor_correlations`` of one generation, each (steps, L); plotted as the mean over ``layers``."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(tokens) + 1.5), 3.0))
    names = {"early_insensitive": ("A⁻ (early insensitive heads)", "tab:green"),
             "mid_sensitive": ("A⁺ (mid sensitive heads)", "tab:red")}
    for key, (label, colour) in names.items():
        ax.plot(_np(correlations[key])[:, layers].mean(1), marker="o", color=colour, label=label)
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, fontsize=7)
    ax.set_ylabel(f"Pearson r, layers {layers[0]}-{layers[-1]}")
    ax.axhline(0, color="gray", lw=0.6)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the curves, never over a point
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
