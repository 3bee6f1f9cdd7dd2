"""Text derived from v2 scenes: captions (v1's rule), POPE questions (v1's sampling rules on v2's categories,
statistics from v2's train split), training questions.

* **Caption**: v1's :func:`clva_lite.toy.questions.caption` (objects left to right, ``"a {colour} {category}"``).
* **Wording**: every question ends with the word it asks about (``"is there a star"``, ``"are there two stars"``,
  ``"is the star red"``), and the answer follows it (``clva_lite.toy.v2.model.CHAT_TEMPLATE`` has no ``answer :``).
* **POPE**: scenes with >= 3 objects (all v2 scenes); up to 3 distinct present categories are positives, each
  paired with one absent category: *random* (uniform among absent), *popular* (most frequent absent on the train
  split), *adversarial* (absent category co-occurring most with that positive on the train split). Negatives
  within one scene are distinct.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..questions import NUMBER_WORDS, POPE_SAMPLINGS, ToyQuestion, caption, cooccurrence_counts
from ..world import COLOURS, Split, as_split
from .world import CATEGORIES, GROUP_OF, PLURALS, Scene, generate_scene, generate_scenes

STATS_SCENES = 4000

__all__ = ["POPE_SAMPLINGS", "V2Question", "adversarial_groupmate_share", "calibration_prompts", "caption",
           "count_question", "existence_question", "pope_questions", "train_statistics"]


def existence_question(category: str) -> str:
    """``"is there a star"``: the object word last, the answer right after it."""
    return f"is there a {category}"


def count_question(category: str, k: int) -> str:
    """``"is there one star"`` / ``"are there two stars"``."""
    return f"is there one {category}" if k == 1 else f"are there {NUMBER_WORDS[k]} {PLURALS[category]}"


def colour_question(category: str, colour: str) -> str:
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; use one of {tuple(COLOURS)}")
    return f"is the {category} {colour}"


def position_question(left: str, right: str) -> str:
    """``"is the star on the left of the moon"``."""
    return f"is the {left} on the left of the {right}"


@dataclass(frozen=True)
class V2Question(ToyQuestion):
    """A v1 ``ToyQuestion`` whose ``scene`` is regenerated from the v2 world."""

    @property
    def scene(self) -> Scene:
        return generate_scene(self.split, self.scene_index)


@lru_cache(maxsize=1)
def train_statistics() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Category frequencies and pairwise co-occurrence counts over the first ``STATS_SCENES`` train scenes."""
    return cooccurrence_counts(generate_scenes(Split.TRAIN, STATS_SCENES), CATEGORIES)


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda c: (-scores[c], CATEGORIES.index(c)))


def pope_questions(split: Split | str, n_scenes: int, sampling: str, *, start: int = 0,
                   positives_per_scene: int = 3) -> list[V2Question]:
    """POPE questions (positive, negative, positive, ...) for v2 scenes ``start .. start+n_scenes``."""
    split = as_split(split)
    if sampling not in POPE_SAMPLINGS:
        raise ValueError(f"unknown POPE sampling {sampling!r}; use one of {POPE_SAMPLINGS}")
    frequency, cooccurrence = train_statistics()
    popular_order = _ranked({c: float(frequency[c]) for c in CATEGORIES})
    questions: list[V2Question] = []
    for scene in generate_scenes(split, n_scenes, start):
        if len(scene.objects) < 3:
            continue
        present = scene.categories
        rng = np.random.default_rng([scene.seed, 2, POPE_SAMPLINGS.index(sampling)])
        used: list[str] = []
        for k, positive in enumerate(present[:positives_per_scene]):
            absent = [c for c in CATEGORIES if c not in present and c not in used]
            if not absent:
                break
            if sampling == "random":
                negative = absent[int(rng.integers(len(absent)))]
            elif sampling == "popular":
                negative = next(c for c in popular_order if c in absent)
            else:
                negative = _ranked({c: float(cooccurrence[positive, c]) for c in absent})[0]
            used.append(negative)
            for label, category in (("yes", positive), ("no", negative)):
                questions.append(V2Question(
                    question_id=f"v2-{split.value}-{scene.index}-pope-{sampling}-{k}-{label}",
                    split=split, scene_index=scene.index, text=existence_question(category),
                    label=label, kind=sampling, category=category))
    return questions


def adversarial_groupmate_share(questions: list[V2Question]) -> float:
    """Share of adversarial negatives that are group-mates of some present category of their scene."""
    negatives = [q for q in questions if q.label == "no"]
    hits = 0
    for q in negatives:
        groups = {GROUP_OF[c] for c in q.scene.categories}
        hits += GROUP_OF[q.category] in groups
    return hits / max(1, len(negatives))


def calibration_prompts(n: int, start: int = 1000) -> tuple[list, list[str], list[Scene]]:
    """``n`` calibration-split images with existence questions cycling over categories (scenes from ``start``,
    clear of the POPE calibration scenes); also returns the scenes (for on-object masks)."""
    scenes = generate_scenes(Split.CALIBRATION, n, start=start)
    questions = [existence_question(CATEGORIES[i % len(CATEGORIES)]) for i in range(n)]
    return [s.image() for s in scenes], questions, scenes
