"""Text derived from toy scenes: captions, POPE questions and MME-style pairs.

Documented rules:

* **Caption**: objects left to right, ``"a {colour} {category}"`` joined by ``" and "``, ending in ``" ."``.
* **Wording**: every question ends with the word it asks about (``"is there a star"``, ``"are there two stars"``,
  ``"is the star red"``, ``"is the star on the left of the moon"``); the toy's chat template adds no ``answer :``,
  so the answer follows that word (``clva_lite.toy.model.CHAT_TEMPLATE`` says why).
* **POPE** (following POPE's own sampling, Li et al. 2023): scenes with >= 3 objects (all of them); up to 3
  distinct present categories are positives (in ``CATEGORIES`` order); each positive is paired with one absent category:
  *random* draws uniformly among absent categories; *popular* takes the most frequent absent category (frequency
  ranked on the train split); *adversarial* takes the absent category that co-occurs most with that positive
  (co-occurrence counted on the train split; mostly an absent group-mate, see
  :func:`adversarial_groupmate_share`). Negatives within one scene are distinct.
* **MME-style pairs**: for each scene and subtask, one question whose answer is yes and one whose answer is no
  (existence, count, position, colour). Scenes where a subtask has no valid pair are skipped for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from .world import CATEGORIES, COLOURS, GROUP_OF, PLURALS, Scene, Split, as_split, generate_scenes

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
POPE_SAMPLINGS = ("random", "popular", "adversarial")
MME_SUBTASKS = ("existence", "count", "position", "color")
STATS_SCENES = 4000


def caption(scene: Scene) -> str:
    """Objects from left to right, e.g. ``"a red star and a blue moon ."``."""
    ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
    return " and ".join(f"a {o.colour} {o.category}" for o in ordered) + " ."


def existence_question(category: str) -> str:
    """``"is there a star"``: the object word last, the answer right after it."""
    return f"is there a {category}"


def count_question(category: str, k: int) -> str:
    """``"is there one star"`` / ``"are there two stars"``."""
    return f"is there one {category}" if k == 1 else f"are there {NUMBER_WORDS[k]} {PLURALS[category]}"


def colour_question(category: str, colour: str) -> str:
    """``"is the star red"``."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; use one of {tuple(COLOURS)}")
    return f"is the {category} {colour}"


def position_question(left: str, right: str) -> str:
    """``"is the star on the left of the moon"``."""
    return f"is the {left} on the left of the {right}"


@dataclass(frozen=True)
class ToyQuestion:
    """One yes/no question about one scene; ``kind`` is the POPE sampling or the MME subtask."""

    question_id: str
    split: Split
    scene_index: int
    text: str
    label: str  # "yes" / "no"
    kind: str
    category: str | None = None

    @property
    def scene(self) -> Scene:
        from .world import generate_scene

        return generate_scene(self.split, self.scene_index)


@lru_cache(maxsize=1)
def train_statistics() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Category frequencies and pairwise co-occurrence counts over the first ``STATS_SCENES`` train scenes."""
    return cooccurrence_counts(generate_scenes(Split.TRAIN, STATS_SCENES), CATEGORIES)


def cooccurrence_counts(scenes, categories: tuple[str, ...]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """How many scenes hold each category, and each ordered pair of distinct categories."""
    frequency = {c: 0 for c in categories}
    cooccurrence = {(a, b): 0 for a in categories for b in categories if a != b}
    for scene in scenes:
        present = scene.categories
        for c in present:
            frequency[c] += 1
        for a, b in combinations(present, 2):
            cooccurrence[a, b] += 1
            cooccurrence[b, a] += 1
    return frequency, cooccurrence


def _ranked(scores: dict[str, float]) -> list[str]:
    """Categories by descending score, ties broken by ``CATEGORIES`` order (never hash order)."""
    return sorted(scores, key=lambda c: (-scores[c], CATEGORIES.index(c)))


def pope_questions(
    split: Split | str, n_scenes: int, sampling: str, *, start: int = 0, positives_per_scene: int = 3
) -> list[ToyQuestion]:
    """POPE questions (positive, negative, positive, ...) for scenes ``start .. start+n_scenes`` with >= 3 objects."""
    split = as_split(split)
    if sampling not in POPE_SAMPLINGS:
        raise ValueError(f"unknown POPE sampling {sampling!r}; use one of {POPE_SAMPLINGS}")
    frequency, cooccurrence = train_statistics()
    popular_order = _ranked({c: float(frequency[c]) for c in CATEGORIES})
    questions: list[ToyQuestion] = []
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
                ranked = _ranked({c: float(cooccurrence[positive, c]) for c in absent})
                negative = ranked[0]
            used.append(negative)
            for label, category in (("yes", positive), ("no", negative)):
                questions.append(
                    ToyQuestion(
                        question_id=f"{split.value}-{scene.index}-pope-{sampling}-{k}-{label}",
                        split=split, scene_index=scene.index, text=existence_question(category),
                        label=label, kind=sampling, category=category,
                    )
                )
    return questions


def adversarial_groupmate_share(questions: list[ToyQuestion]) -> float:
    """Share of negative questions whose category is a group-mate of some present category of their scene."""
    negatives = [q for q in questions if q.label == "no"]
    hits = sum(GROUP_OF[q.category] in {GROUP_OF[c] for c in q.scene.categories} for q in negatives)
    return hits / max(1, len(negatives))


def _mme_pair(scene: Scene, subtask: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(yes-question, no-question) for one scene and subtask, or ``None`` when the scene has no valid pair."""
    present = scene.categories
    if subtask == "existence":
        absent = [c for c in CATEGORIES if c not in present]
        yes_cat = present[int(rng.integers(len(present)))]
        no_cat = absent[int(rng.integers(len(absent)))]
        return existence_question(yes_cat), existence_question(no_cat)
    if subtask == "count":
        category = present[int(rng.integers(len(present)))]
        n = scene.count(category)
        if n > 4:
            return None
        wrong = [k for k in range(1, 5) if k != n]
        return count_question(category, n), count_question(category, wrong[int(rng.integers(len(wrong)))])
    if subtask == "position":
        singles = [o for o in scene.objects if scene.count(o.category) == 1]
        pairs = [(a, b) for a, b in combinations(singles, 2) if abs(a.x - b.x) >= 12]
        if not pairs:
            return None
        a, b = pairs[int(rng.integers(len(pairs)))]
        left, right = (a, b) if a.x < b.x else (b, a)
        return position_question(left.category, right.category), position_question(right.category, left.category)
    if subtask == "color":
        singles = [o for o in scene.objects if scene.count(o.category) == 1]
        if not singles:
            return None
        obj = singles[int(rng.integers(len(singles)))]
        others = [c for c in COLOURS if c != obj.colour]
        other = others[int(rng.integers(len(others)))]
        return colour_question(obj.category, obj.colour), colour_question(obj.category, other)
    raise ValueError(f"unknown MME subtask {subtask!r}; use one of {MME_SUBTASKS}")


def mme_questions(split: Split | str, n_scenes: int, subtask: str, *, start: int = 0) -> list[ToyQuestion]:
    """MME-style pairs (yes question, then no question) for each usable scene."""
    split = as_split(split)
    if subtask not in MME_SUBTASKS:
        raise ValueError(f"unknown MME subtask {subtask!r}; use one of {MME_SUBTASKS}")
    questions = []
    for scene in generate_scenes(split, n_scenes, start):
        rng = np.random.default_rng([scene.seed, 100 + MME_SUBTASKS.index(subtask)])
        pair = _mme_pair(scene, subtask, rng)
        if pair is None:
            continue
        for label, text in zip(("yes", "no"), pair):
            questions.append(
                ToyQuestion(f"{split.value}-{scene.index}-mme-{subtask}-{label}", split, scene.index, text,
                            label, subtask)
            )
    return questions


def calibration_prompts(n: int, start: int = 1000) -> tuple[list, list[str]]:
    """``n`` calibration-split images with existence questions (cycling over categories), for fitting head
    classes and for the drift analysis. Starts at scene ``start`` so it does not overlap the POPE calibration
    scenes used for the alpha/beta sweep."""
    scenes = generate_scenes(Split.CALIBRATION, n, start=start)
    questions = [existence_question(CATEGORIES[i % len(CATEGORIES)]) for i in range(n)]
    return [s.image() for s in scenes], questions
