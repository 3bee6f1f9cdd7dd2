"""The toy world and the toy LLaVA trained on it (see ``python -m clva_lite.toy --help``)."""

from .questions import (
    MME_SUBTASKS,
    POPE_SAMPLINGS,
    ToyQuestion,
    caption,
    count_question,
    existence_question,
    mme_questions,
    pope_questions,
)
from .world import CATEGORIES, COLOURS, GROUPS, PARTNERS, Scene, Split, generate_scene, generate_scenes

__all__ = [
    "CATEGORIES", "COLOURS", "GROUPS", "MME_SUBTASKS", "PARTNERS", "POPE_SAMPLINGS", "Scene", "Split", "ToyQuestion",
    "caption", "count_question", "existence_question", "generate_scene", "generate_scenes", "mme_questions",
    "pope_questions",
]
