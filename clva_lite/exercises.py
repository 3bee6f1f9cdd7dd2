"""The notebooks' exercises: each check compares your answer with what the library computes, and fails until the
exercise is solved.

A notebook's exercise is three cells: a TODO cell that sets a variable to ``None``, a hidden solution, and a check
cell that calls :func:`check`. Left at ``None``, the check stops with :class:`NotSolved`. When the series is
executed for committing or under CI (``CLVA_LITE_SOLUTIONS=1``), an untouched exercise is answered by the
reference solution in :mod:`clva_lite.exercise_solutions` instead, and the output says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

SOLUTIONS_ENV = "CLVA_LITE_SOLUTIONS"


class NotSolved(AssertionError):
    """The exercise's variable is still ``None``."""


@dataclass(frozen=True)
class Exercise:
    variable: str
    task: str
    check: Callable[..., str]  # (answer, **context) -> what was checked; raises AssertionError with a hint


def _close(a: float, b: float, tolerance: float = 1e-6) -> bool:
    return abs(float(a) - float(b)) <= tolerance


def _beta_only_mass(answer, *, loaded, inputs, heads, config, deep, patch, stock_mass, **_) -> str:
    import clva_lite

    with clva_lite.clva(loaded, config, heads=heads), clva_lite.capture(loaded, inputs) as record:
        loaded.model(**inputs)
    expected = float(record.visual[0, 0, deep, :, patch].mean())
    assert _close(answer, expected), (f"got {float(answer):.6f}; the library gives {expected:.6f}: capture under "
                                      "CLVA, step 0, row 0, the deep layers, every head, the one patch, then the mean")
    direction = "lower" if expected < stock_mass else "not lower"
    return f"deep attention on the patch: stock {stock_mass:.4f}, beta only {expected:.4f} ({direction})"


def _sharpest_layer(answer, *, report, **_) -> str:
    expected = int(torch.as_tensor(report["curves"]["entropy_sensitive"]).argmin())
    assert int(answer) == expected, (f"got layer {int(answer)}; Fig. 2b's entropy curve is lowest at layer {expected}. "
                                     "Average each layer's sensitive heads (report['classes'].sensitive([layer]))")
    return f"sharpest vision-sensitive layer: {expected} (the minimum of Fig. 2b's entropy curve)"


def _prompt_heads(answer, *, shares, band, **_) -> str:
    from .attention.heads import fit_head_classes

    expected = fit_head_classes(shares[:1], split="calibration").sensitive(band)
    answer = torch.as_tensor(answer)
    assert answer.shape == expected.shape and answer.dtype == torch.bool, \
        f"return an (L, H) bool mask, got {tuple(answer.shape)} {answer.dtype}"
    assert torch.equal(answer, expected), "compare with HeadClasses.sensitive on prompt 0's shares"
    return f"prompt 0's A+ heads (layer, head): {expected.nonzero().tolist()}"


def _zero_weights(answer, *, loaded, inputs, **_) -> str:
    from .models.prompts import decode_new_tokens

    stock = loaded.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.is_tensor(answer) and torch.equal(answer, stock), "alpha = beta = 0 must leave generation unchanged"
    return f"identical to stock generation: {decode_new_tokens(loaded, inputs, stock)}"


def _clva_bias(answer, *, loaded, inputs, heads, config, **_) -> str:
    import clva_lite

    with clva_lite.clva(loaded, config, heads=heads) as intervention:
        loaded.model(**inputs)
    expected = intervention.bias_row[0]
    answer = torch.as_tensor(answer).float().reshape(-1)
    assert answer.shape == expected.shape, \
        f"one bias per visual token: {tuple(expected.shape)}, got {tuple(answer.shape)}"
    gap = float((answer - expected).abs().max())
    assert gap < 1e-5, (f"max |yours - CLVA's| = {gap:.3g}: alpha times A+ over its max, minus beta times A- over its "
                        "max, both read from the same prompt")
    return f"your bias equals CLVA's (max difference {gap:.1e}); it ranges {float(expected.min()):+.2f} .. " \
           f"{float(expected.max()):+.2f}"


def _lowest_chair(answer, *, chair, **_) -> str:
    expected = tuple(chair["best"])  # sweep_weights keeps the lowest cell for CHAIR metrics
    assert tuple(answer) == expected, f"got {tuple(answer)}; look for the smallest CHAIR_s, not the largest"
    return f"lowest CHAIR_s at alpha, beta = {expected}, the cell sweep_weights chose"


def _yes_ratio(answer, *, records, **_) -> str:
    from .eval.scoring import score_pope

    expected = score_pope(records, metrics=("yes_ratio",))["adversarial"]["yes_ratio"]["value"]
    assert _close(answer, expected, 1e-12), "count 'yes' answers (parse_pope_answer) among the adversarial records"
    return f"CLVA yes-ratio on adversarial questions: {expected:.3f}"


def _kv_bytes(answer, *, estimate, tokens, batch_size, **_) -> str:
    expected = estimate["kv_cache_per_token"] * tokens * batch_size
    assert int(answer) == int(expected), "count K and V, every layer and KV head, head size, 2 bytes each (fp16)"
    return f"KV cache, {batch_size} x {tokens} tokens: {expected / 1e9:.2f} GB"


def _conditional(answer, *, conditional, **_) -> str:
    expected = float(conditional.loc["star", "moon"])
    assert _close(answer, expected, 1e-12), "divide the star-and-moon scenes by the scenes with a star"
    return f"P(moon | star) = {expected:.3f}"


EXERCISES: dict[str, Exercise] = {
    "00-beta-only": Exercise("beta_only_mass", "deep attention on the noise patch with beta only", _beta_only_mass),
    "01-sharpest-layer": Exercise("sharpest_layer", "the layer whose sensitive heads are sharpest", _sharpest_layer),
    "02-prompt-heads": Exercise("my_heads", "prompt 0's intermediate-band sensitive heads", _prompt_heads),
    "03-zero-weights": Exercise("zero_tokens", "generation under alpha = beta = 0", _zero_weights),
    "04-clva-bias": Exercise("my_bias", "CLVA's bias on the visual logits, by hand", _clva_bias),
    "04-lowest-chair": Exercise("lowest_chair", "the (alpha, beta) cell with the lowest CHAIR_s", _lowest_chair),
    "05-yes-ratio": Exercise("clva_yes_ratio", "CLVA's yes-ratio on adversarial questions", _yes_ratio),
    "06-kv-bytes": Exercise("kv_batch_bytes", "the KV cache of a batch", _kv_bytes),
    "07-conditional": Exercise("p_moon_given_star", "P(moon | star) on the train split", _conditional),
}


def check(name: str, answer, **context):
    """Check exercise ``name``'s ``answer`` against the library (``context``: what the check needs from the
    notebook). Returns the answer that was checked; prints what the check found."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    note = ""
    if answer is None:
        if os.environ.get(SOLUTIONS_ENV) != "1":
            raise NotSolved(f"`{exercise.variable}` is still None: fill in the TODO cell above ({exercise.task}), "
                            "run it, then run this cell again. The solution is in the collapsed cell above.")
        from . import exercise_solutions

        answer = getattr(exercise_solutions, exercise.variable)(**context)
        note = f"  [reference solution: {SOLUTIONS_ENV}=1]"
    print(exercise.check(answer, **context) + note)
    return answer
