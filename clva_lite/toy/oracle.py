"""Oracle anchors: what steering the deep band could do with a perfect positive anchor (toy only: it needs masks).

CLVA pulls the deep layers' attention toward A⁺, an estimate of where the image's content is. On the toy the true
answer is known: each scene's object patches. :func:`oracle_steering` replaces A⁺ by that ground truth (or by its
complement, the background, as a control) and adds ``alpha`` to those patches' logits in every deep-band head, the
bias CLVA's ``"logit"`` mode adds at A⁺'s strongest patch. If even this changes few answers, no anchor can help the
model; if it changes many but the background control changes them as much, deep steering acts as a lever on "yes"
rather than as a check of the asked object. In the decoy world (``clva_lite.toy.world``) a third target, the
scene's decoys, shows whether attention on a decoy turns a "no" into a false "yes" (scenes without a decoy get no
bias), and each row splits the false "yes" between negatives with a decoy of the asked category in the scene and
the other negatives.

    python -m clva_lite.toy.diagnose oracle toy --scenes 60

A diagnostic on the calibration split; nothing here is used by CLVA or by the main job.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.grounding import object_patch_masks
from ..analysis.lens import _answer_token
from ..attention.capture import unwrap
from ..attention.clva import CLVAConfig
from ..attention.function import attached
from ..eval.benchmarks.pope import pope_metrics
from ..progress import tqdm
from .questions import pope_questions
from .world import decoy_patch_mask, generate_scene

TARGETS = ("objects", "background", "decoys")


class FixedAnchor:
    """An intervention (:class:`clva_lite.attention.function.Intervention`) that adds ``alpha`` times ``anchor``
    (each row scaled to a maximum of 1) to the visual logits of every head in ``layers``.

    anchor: (batch, V) non-negative weights over the visual tokens, one row per prompt of the batch it is used with.
    """

    needs_visual_share = False

    def __init__(self, anchor: torch.Tensor, alpha: float, layers: Sequence[int], *, empty_rows: bool = False):
        """``empty_rows``: rows of zeros are allowed (those prompts get no bias)."""
        if anchor.ndim != 2 or bool((anchor < 0).any()) or (not empty_rows and bool((anchor.amax(-1) <= 0).any())):
            raise ValueError("anchor must be (batch, V), non-negative, with a positive weight in every row"
                             + ("" if empty_rows else " (empty_rows=True lets a row of zeros mean no bias)"))
        peak = anchor.amax(-1, keepdim=True)
        self._bias = (alpha * anchor / peak.where(peak > 0, torch.ones_like(peak))).unsqueeze(1)  # (batch, 1, V)
        self._layers = set(layers)

    def begin_step(self, step: int, prompt: int) -> None:
        pass

    def wants_visual(self, layer: int) -> bool:
        return False

    def observe_visual(self, layer, row, span) -> None:
        pass

    def wants_logits(self, layer: int) -> bool:
        return False

    def acts_on(self, layer: int) -> bool:
        return layer in self._layers

    def bias(self, layer: int, logits, span) -> torch.Tensor:
        return self._bias.to(span.positions.device)


def oracle_steering(loaded, *, scenes: int = 60, alphas: Sequence[float] = (1.0, 2.0, 5.0),
                    targets: Sequence[str] | None = None, batch_size: int = 32) -> pd.DataFrame:
    """POPE-adversarial questions about calibration scenes ``0..scenes-1``, answered from the first token (the
    "yes" logit against the "no" logit) by the stock model and with each oracle anchor at each ``alpha`` on the
    default deep band. ``targets``: default objects and background, and decoys when the scenes hold any. One row
    per setting: F1, "yes" ratio, false and true "yes" counts, false "yes" among the negatives whose category is a
    decoy in the scene (and their number), answers changed."""
    questions = pope_questions("calibration", scenes, "adversarial")
    scene_of = [generate_scene("calibration", q.scene_index) for q in questions]
    decoy_negative = np.array([q.label == "no" and q.category in {d.category for d in scene.decoys}
                               for q, scene in zip(questions, scene_of)])
    if targets is None:
        targets = TARGETS if any(scene.decoys for scene in scene_of) else TARGETS[:2]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown oracle targets {unknown}; use any of {TARGETS}")
    model = unwrap(loaded)
    tokenizer = loaded.processor.tokenizer
    yes, no = _answer_token(tokenizer, "yes"), _answer_token(tokenizer, "no")
    deep = CLVAConfig().layers(loaded.num_layers)["deep"]
    labels = [q.label for q in questions]
    masks = {"objects": object_patch_masks(scene_of).float()}
    masks["background"] = 1 - masks["objects"]
    masks["decoys"] = torch.as_tensor(np.stack([decoy_patch_mask(scene) for scene in scene_of])).float()

    def says_yes(alpha: float, target: str) -> np.ndarray:
        answers = []
        for start in tqdm(range(0, len(questions), batch_size), desc=f"{target}, alpha={alpha:g}", leave=False):
            batch = questions[start:start + batch_size]
            inputs = loaded.inputs([scene.image() for scene in scene_of[start:start + batch_size]],
                                   [q.text for q in batch])
            anchor = masks[target][start:start + batch_size]
            with torch.no_grad():
                if alpha == 0:
                    logits = model(**inputs).logits[:, -1]
                else:
                    with attached(model, intervention=FixedAnchor(anchor, alpha, deep, empty_rows=True)):
                        logits = model(**inputs).logits[:, -1]
            answers += (logits[:, yes] > logits[:, no]).tolist()
        return np.array(answers)

    def row(name: str, alpha: float, answers: np.ndarray, stock: np.ndarray) -> dict:
        scores = pope_metrics(["yes" if a else "no" for a in answers], labels)
        return {"anchor": name, "alpha": alpha, "f1": scores["f1"], "yes_ratio": scores["yes_ratio"],
                "false_yes": int(scores["fp"]), "true_yes": int(scores["tp"]),
                "false_yes_decoy_negatives": int(answers[decoy_negative].sum()),
                "decoy_negatives": int(decoy_negative.sum()), "answers_changed": int((answers != stock).sum())}

    stock = says_yes(0.0, "objects")
    rows = [row("none (stock)", 0.0, stock, stock)]
    rows += [row(target, alpha, says_yes(alpha, target), stock) for target in targets for alpha in alphas]
    return pd.DataFrame(rows)
