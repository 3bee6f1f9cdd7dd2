"""CHAIR (Caption Hallucination Assessment with Image Relevance, Rohrbach et al. 2018).

A caption mentions objects; those absent from the image's ground truth are hallucinated.

* CHAIR_s: captions with at least one hallucinated object / captions.
* CHAIR_i: hallucinated object mentions / object mentions.  As in the original ``chair.py`` (and OPERA's
  copy) every mention counts, so "a dog ... the dog" is two mentions; pass ``unique_per_caption=True``
  to count each category once per caption instead.
* recall: ground-truth objects mentioned at least once / ground-truth objects (summed over captions).
* mean_length: mean number of words per caption.

With no captions every rate is 0.0; with no object mentions CHAIR_i is 0.0; with no ground-truth objects
recall is 0.0.

Objects are found by a plain longest-match over lower-cased words, so "hot dog" is a hot dog and not a
dog, and "dining table" is one mention.  Only the last word of a phrase may be plural ("traffic lights").
Like the original, this is lexical: the colour "orange" counts as the fruit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from .coco_synonyms import coco_vocabulary
from .objects import ObjectVocabulary, extract_objects
from .pope import read_json_records

COCO_ANNOTATIONS_HINT = ("COCO 2014 annotations come in annotations_trainval2014.zip from "
                         "https://cocodataset.org/#download (annotations/instances_val2014.json and "
                         "annotations/captions_val2014.json)")

_WORDS_PER_CAPTION = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)*")


def count_words(caption: str) -> int:
    """Number of words in a caption (punctuation excluded, "don't" is one word)."""
    return len(_WORDS_PER_CAPTION.findall(caption))


def _canonical_ground_truth(objects: Iterable[str], vocab: ObjectVocabulary) -> set[str]:
    return {vocab.lookup(name) or name for name in objects}


def chair_metrics(captions: Sequence[str], ground_truth: Sequence[Iterable[str]], vocab: ObjectVocabulary,
                  *, unique_per_caption: bool = False) -> dict[str, Any]:
    """CHAIR_s, CHAIR_i, recall and mean caption length, plus per-caption details.

    ``ground_truth[k]`` holds the objects of caption k's image (names are mapped through ``vocab``, so
    "motorbike" counts as "motorcycle").  ``per_caption`` lists, for each caption, the mentioned
    categories (in order, repeats kept unless ``unique_per_caption``), the hallucinated ones and the
    ground-truth categories it matched.
    """
    if len(captions) != len(ground_truth):
        raise ValueError(f"{len(captions)} captions but {len(ground_truth)} ground-truth sets")
    per_caption = []
    n_mentions = n_hallucinated = n_hallucinated_captions = n_gt = n_matched = n_words = 0
    for caption, objects in zip(captions, ground_truth):
        truth = _canonical_ground_truth(objects, vocab)
        mentioned = extract_objects(caption, vocab, unique=unique_per_caption)
        hallucinated = [category for category in mentioned if category not in truth]
        matched = sorted(set(mentioned) & truth)
        words = count_words(caption)
        per_caption.append({"mentioned": mentioned, "hallucinated": hallucinated, "matched": matched,
                            "n_words": words})
        n_mentions += len(mentioned)
        n_hallucinated += len(hallucinated)
        n_hallucinated_captions += bool(hallucinated)
        n_gt += len(truth)
        n_matched += len(matched)
        n_words += words
    n_captions = len(captions)
    return {
        "chair_s": n_hallucinated_captions / n_captions if n_captions else 0.0,
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "recall": n_matched / n_gt if n_gt else 0.0,
        "mean_length": n_words / n_captions if n_captions else 0.0,
        "n_captions": n_captions,
        "n_hallucinated_captions": n_hallucinated_captions,
        "n_mentions": n_mentions,
        "n_hallucinated_mentions": n_hallucinated,
        "n_ground_truth_objects": n_gt,
        "n_matched_objects": n_matched,
        "per_caption": per_caption,
    }


def _load_coco_json(path: str | PathLike, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO {what} file not found: {path}. {COCO_ANNOTATIONS_HINT}")
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"{path.name}: not a COCO annotation file (no 'annotations' key)")
    return data


def load_coco_ground_truth(instances_path: str | PathLike, captions_path: str | PathLike | None = None,
                           vocab: ObjectVocabulary | None = None) -> dict[int, set[str]]:
    """Objects per COCO image id, from ``instances_*.json`` and, optionally, ``captions_*.json``.

    Instance annotations give the labelled categories; as in CHAIR, objects that the human reference
    captions mention (found with ``vocab``) are added.  Every image listed in the files is present,
    possibly with an empty set.  ``vocab`` defaults to ``coco_vocabulary()``.
    """
    if vocab is None:

        vocab = coco_vocabulary()
    instances = _load_coco_json(instances_path, "instances")
    names = {category["id"]: category["name"] for category in instances.get("categories", [])}
    objects: dict[int, set[str]] = {image["id"]: set() for image in instances.get("images", [])}
    for annotation in instances["annotations"]:
        category_id = annotation["category_id"]
        if category_id not in names:
            raise ValueError(f"{Path(instances_path).name}: annotation {annotation.get('id')} has unknown "
                             f"category_id {category_id}")
        name = names[category_id]
        objects.setdefault(annotation["image_id"], set()).add(vocab.lookup(name) or name)
    if captions_path is not None:
        captions = _load_coco_json(captions_path, "captions")
        for annotation in captions["annotations"]:
            objects.setdefault(annotation["image_id"], set()).update(extract_objects(annotation["caption"], vocab))
    return objects


@dataclass(frozen=True)
class CaptionRecord:
    """A generated caption for one COCO image."""

    image_id: int
    caption: str


def load_caption_records(path: str | PathLike, *, image_id_key: str = "image_id",
                         caption_key: str = "caption") -> list[CaptionRecord]:
    """Load generated captions from JSON lines (or a JSON array) of ``{"image_id": ..., "caption": ...}``."""
    records = []
    for line_number, item in read_json_records(path):
        where = f"{Path(path).name}, line {line_number}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        missing = [key for key in (image_id_key, caption_key) if key not in item]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        try:
            image_id = int(item[image_id_key])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {image_id_key} must be an integer, got {item[image_id_key]!r}") from None
        if not isinstance(item[caption_key], str):
            raise ValueError(f"{where}: {caption_key} must be a string")
        records.append(CaptionRecord(image_id, item[caption_key]))
    return records
