"""Reference solutions of the notebooks' exercises (:mod:`clva_lite.exercises`). Try the exercise first.

Each function takes the context the exercise's check cell passes and returns the answer. They are used only when
the series is executed with ``CLVA_LITE_SOLUTIONS=1`` (committing, CI) and by the tests.
"""

from __future__ import annotations

import numpy as np
import torch


def beta_only_mass(*, loaded, inputs, heads, config, deep, patch, **_) -> float:
    import clva_lite

    with clva_lite.clva(loaded, config, heads=heads), clva_lite.capture(loaded, inputs) as record:
        loaded.model(**inputs)
    return float(record.visual[0, 0, deep, :, patch].mean())


def sharpest_layer(*, report, **_) -> int:
    from clva_lite.analysis import normalised_entropy

    entropy = normalised_entropy(report["visual"]).mean(0)  # (L, H)
    per_layer = [float(entropy[layer][report["classes"].sensitive([layer])[layer]].mean())
                 for layer in range(entropy.shape[0])]
    return int(np.argmin(per_layer))


def my_heads(*, shares, band, **_) -> torch.Tensor:
    share = shares[0, ..., 1]  # (L, H) prompt 0's visual share
    count = max(1, round(0.25 * len(band) * share.shape[1]))
    scores = torch.full_like(share, float("-inf"))
    scores[band] = share[band]
    chosen = torch.zeros(share.numel(), dtype=torch.bool)
    chosen[scores.flatten().argsort(descending=True)[:count]] = True
    return chosen.view_as(share)


def zero_tokens(*, loaded, inputs, heads=None, **_) -> torch.Tensor:
    import clva_lite

    config = clva_lite.CLVAConfig(alpha=0.0, beta=0.0, head_source="calibrated" if heads is not None else "per-input")
    with clva_lite.clva(loaded, config, heads=heads):
        return loaded.model.generate(**inputs, max_new_tokens=6, do_sample=False)


def my_bias(*, loaded, inputs, heads, config, **_) -> torch.Tensor:
    import clva_lite
    from clva_lite.analysis import anchor_distribution

    with clva_lite.capture(loaded, inputs) as record:
        loaded.model(**inputs)
    bands = config.layers(loaded.num_layers)
    positive = anchor_distribution(record.visual[0, 0], heads.sensitive(bands["intermediate"]))  # (V,)
    negative = anchor_distribution(record.visual[0, 0], heads.insensitive(bands["early"]))
    return config.alpha * positive / positive.max() - config.beta * negative / negative.max()


def lowest_chair(*, chair, **_) -> tuple[float, float]:
    values = np.asarray(chair["values"])
    a, b = np.unravel_index(np.argmin(values), values.shape)
    return chair["alphas"][a], chair["betas"][b]


def clva_yes_ratio(*, records, **_) -> float:
    from clva_lite.eval.benchmarks import parse_pope_answer

    adversarial = [r for r in records if r["kind"] == "adversarial"]
    return sum(parse_pope_answer(r["response"]) == "yes" for r in adversarial) / len(adversarial)


def kv_batch_bytes(*, paper, tokens, batch_size, **_) -> int:
    return 2 * paper["decoder_layers"] * paper["key_value_heads"] * paper["head_dim"] * 2 * tokens * batch_size


def p_moon_given_star(*, frequency, cooccurrence, **_) -> float:
    return cooccurrence["star", "moon"] / frequency["star"]
