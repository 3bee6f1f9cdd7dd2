"""How stable are the head classes CLVA's anchors rely on? (notebook 02)

All functions take group shares ``shares`` (N, L, H, 4) recorded with :func:`clva_lite.record_prefill` (N prompts,
L layers, H heads, ``GROUPS`` order) and return small tables (pandas DataFrames) or numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attention.heads import CRITERIA, HeadClasses, visual_attention_share


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean head masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of the flattened values, tied values sharing their average rank (as ``scipy.stats.rankdata``)."""
    x = x.detach().flatten().cpu()
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[x.argsort(stable=True)] = torch.arange(x.numel(), dtype=torch.float64)
    _, tie, counts = torch.unique(x, return_inverse=True, return_counts=True)
    return torch.zeros(counts.numel(), dtype=torch.float64).index_add_(0, tie, ranks)[tie] / counts[tie]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two equally shaped tensors (flattened; ties get their average rank, so a
    constant tensor correlates 0 with anything)."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp_min(1e-12))


def _classes(shares: torch.Tensor, template: HeadClasses) -> HeadClasses:
    return HeadClasses(visual_attention_share(shares), rule=template.rule, fraction=template.fraction,
                       low=template.low, high=template.high, source=template.source)


def split_half_stability(shares: torch.Tensor, bands: dict[str, list[int]], template: HeadClasses, *,
                         repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """Fit head classes on two random halves of the prompts, ``repeats`` times, and compare them.

    Returns one row per band: mean Jaccard overlap of the sensitive and of the insensitive heads between halves,
    and the mean Spearman correlation of the two halves' (L, H) visual-share matrices.
    """
    if shares.shape[0] < 4:
        raise ValueError(f"need at least 4 prompts to split in halves, got {shares.shape[0]}")
    rng = np.random.default_rng(seed)
    rows = {name: {"sensitive": [], "insensitive": []} for name in bands}
    rank = []
    for _ in range(repeats):
        order = torch.as_tensor(rng.permutation(shares.shape[0]))
        half = shares.shape[0] // 2
        a, b = _classes(shares[order[:half]], template), _classes(shares[order[half:2 * half]], template)
        rank.append(spearman(a.visual_share, b.visual_share))
        for name, layers in bands.items():
            rows[name]["sensitive"].append(jaccard(a.sensitive(layers), b.sensitive(layers)))
            rows[name]["insensitive"].append(jaccard(a.insensitive(layers), b.insensitive(layers)))
    return pd.DataFrame([
        {"band": name, "layers": str(bands[name]), "sensitive overlap": float(np.mean(v["sensitive"])),
         "insensitive overlap": float(np.mean(v["insensitive"])), "share rank corr.": float(np.mean(rank))}
        for name, v in rows.items()
    ]).set_index("band")


def per_input_agreement(shares: torch.Tensor, classes: HeadClasses, layers: list[int], kind: str = "sensitive"
                        ) -> torch.Tensor:
    """(N,) Jaccard overlap between each prompt's own head choice and the calibrated one, within ``layers``.

    Each prompt's choice uses the same rule on that prompt's visual shares alone, layer by layer (what
    ``CLVAConfig(head_source="per-input")`` does: top/bottom ``fraction`` of each layer's heads); the calibrated
    choice is the band-wide one CLVA's calibrated mode uses.
    """
    if kind not in ("sensitive", "insensitive"):
        raise ValueError(f"kind must be 'sensitive' or 'insensitive', not {kind!r}")
    reference = getattr(classes, kind)(layers)

    def own_choice(i: int) -> torch.Tensor:
        own = getattr(_classes(shares[i:i + 1], classes), kind)
        return torch.stack([own([layer]) for layer in layers]).any(0)

    return torch.tensor([jaccard(own_choice(i), reference) for i in range(shares.shape[0])])


def compare_rules(visual_share: torch.Tensor, bands: dict[str, list[int]], *, fraction: float = 0.25,
                  low: float = 0.05, high: float = 0.3) -> pd.DataFrame:
    """Top-k vs. threshold on the same (L, H) visual shares: heads chosen per band, and their overlap."""
    topk = HeadClasses(visual_share, rule="topk", fraction=fraction)
    threshold = HeadClasses(visual_share, rule="threshold", low=low, high=high)
    rows = []
    for name, layers in bands.items():
        for kind in ("sensitive", "insensitive"):
            a, b = getattr(topk, kind)(layers), getattr(threshold, kind)(layers)
            rows.append({"band": name, "class": kind, f"top-k ({fraction:g})": int(a.sum()),
                         f"threshold ({low:g}/{high:g})": int(b.sum()), "overlap (Jaccard)": jaccard(a, b)})
    return pd.DataFrame(rows).set_index(["band", "class"])


def compare_classes(a: HeadClasses, b: HeadClasses, bands: dict[str, list[int]]) -> pd.DataFrame:
    """Two fits of head classes (e.g. on different prompt types) compared band by band."""
    rows = []
    for name, layers in bands.items():
        rows.append({"band": name, "sensitive overlap": jaccard(a.sensitive(layers), b.sensitive(layers)),
                     "insensitive overlap": jaccard(a.insensitive(layers), b.insensitive(layers)),
                     "share rank corr.": spearman(a.visual_share[layers], b.visual_share[layers])})
    return pd.DataFrame(rows).set_index("band")


def compare_criteria(classes: HeadClasses, on_object: torch.Tensor, bands: dict[str, list[int]], *,
                     uniform: float, criteria: tuple[str, ...] = tuple(CRITERIA)) -> pd.DataFrame:
    """Do the heads each criterion picks look at the objects? (needs object masks: the toy only)

    classes: fitted head classes with ``focus``; on_object: (L, H) mean share of each head's visual attention on
    object patches; uniform: what a head spreading attention evenly over the image would score. Per criterion:
    Pearson r over all heads between its score and the on-object share; on-object share and normalised entropy of
    its A+ heads (intermediate band, sensitive) and A- heads (early band, insensitive); and whether A+ beats both
    the uniform reference and A- (the paper's reading of the anchors).
    """
    rows = []
    for criterion in criteria:
        ranked = classes.with_criterion(criterion)
        positive, negative = ranked.sensitive(bands["intermediate"]), ranked.insensitive(bands["early"])
        entropy = 1.0 - ranked.focus
        r = float(np.corrcoef(ranked.score.flatten().numpy(), on_object.flatten().numpy())[0, 1])
        plus, minus = float(on_object[positive].mean()), float(on_object[negative].mean())
        rows.append({"criterion": criterion, "r(score, on-object share)": r,
                     "A+ on-object share": plus, "A- on-object share": minus, "uniform": uniform,
                     "A+ entropy": float(entropy[positive].mean()), "A- entropy": float(entropy[negative].mean()),
                     "A+ > uniform and A-": plus > uniform and plus > minus})
    return pd.DataFrame(rows).set_index("criterion")
