"""Hallucination benchmarks: POPE, CHAIR, MME (existence, count, position, color) and AMBER's discriminative
questions, with bootstrap CIs.

Pure Python and numpy; benchmark files are read from paths you give (none ship with the package).
"""

from .amber import load_amber_discriminative
from .bootstrap import (
    CountMetric,
    align_by_key,
    bootstrap_ci,
    bootstrap_counts,
    holm,
    paired_bootstrap_delta,
    paired_bootstrap_test,
    ratio,
)
from .chair import CaptionRecord, chair_metrics, count_words, load_caption_records, load_coco_ground_truth
from .coco_synonyms import (
    COCO_SYNONYMS,
    PHRASE_RULES,
    coco_vocabulary,
    load_synonyms_file,
    read_synonyms_file,
)
from .mme import MME_HALLUCINATION_SUBTASKS, MmeRecord, load_mme_results, mme_scores, parse_mme_answer
from .objects import ObjectMention, ObjectVocabulary, extract_objects
from .pope import (
    POPE_SPLITS,
    PopeAnswer,
    PopeQuestion,
    infer_pope_split,
    load_pope,
    load_pope_answers,
    parse_pope_answer,
    pope_metric_fn,
    pope_metrics,
    pope_metrics_by_split,
    read_json_records,
)

__all__ = [
    "COCO_SYNONYMS", "MME_HALLUCINATION_SUBTASKS", "PHRASE_RULES", "POPE_SPLITS",
    "CaptionRecord", "MmeRecord", "ObjectMention", "ObjectVocabulary", "PopeAnswer", "PopeQuestion",
    "load_amber_discriminative", "CountMetric", "bootstrap_counts", "ratio", "align_by_key", "bootstrap_ci", "holm",
    "chair_metrics",
    "coco_vocabulary", "count_words", "extract_objects",
    "infer_pope_split", "load_caption_records", "load_coco_ground_truth", "load_mme_results", "load_pope",
    "load_pope_answers", "load_synonyms_file", "mme_scores", "paired_bootstrap_delta", "paired_bootstrap_test",
    "parse_mme_answer", "parse_pope_answer", "pope_metric_fn", "pope_metrics", "pope_metrics_by_split",
    "read_json_records", "read_synonyms_file",
]
