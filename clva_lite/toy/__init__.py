"""The toy world and the toy LLaVA trained on it (see ``python -m clva_lite.toy --help``)."""

from .questions import (
    MME_SUBTASKS,
    POPE_SAMPLINGS,
    ToyQuestion,
    caption,
    existence_question,
    mme_questions,
    pope_questions,
)
from .world import CATEGORIES, COLOURS, PARTNERS, Scene, Split, generate_scene, generate_scenes

__all__ = [
    "CATEGORIES", "COLOURS", "MME_SUBTASKS", "PARTNERS", "POPE_SAMPLINGS", "Scene", "Split", "ToyQuestion",
    "caption", "existence_question", "generate_scene", "generate_scenes", "mme_questions", "pope_questions",
]
