"""AMBER's discriminative questions ("Is there a cloud in this image?"), read as POPE-style yes/no questions.

AMBER (junyangwang0410/AMBER, ``data/``) keeps questions and truth apart: ``query_discriminative-*.json`` is one JSON
array of ``{"id", "image", "query"}``, and ``annotations.json`` holds, for the same ids, ``{"id", "type", "truth"}``
with ``truth`` "yes" or "no" (generative entries, whose truth is a list of objects, are ignored here). The questions
come back as :class:`~clva_lite.eval.benchmarks.pope.PopeQuestion`, so POPE's answer rule, metrics and the
evaluator (``clva_lite.eval.items.pope_file_items``) apply unchanged.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from .pope import PopeQuestion, read_json_records

AMBER_SOURCE_HINT = ("AMBER's files come from the junyangwang0410/AMBER repository on GitHub (data/query/"
                     "query_discriminative-existence.json and data/annotations.json; images from its README's link)")


def load_amber_discriminative(query_path: str | PathLike, annotations_path: str | PathLike,
                              split: str | None = None) -> list[PopeQuestion]:
    """The questions of an AMBER discriminative query file with their truth from ``annotations.json``.

    ``split`` (the name records carry) defaults to the file's dimension, e.g. ``"amber-existence"``. An id listed
    twice (with another image or question), an id without a yes/no truth, or a malformed entry is an error that
    names the file and the id.
    """
    query_path, annotations_path = Path(query_path), Path(annotations_path)
    split = split or "amber-" + query_path.stem.split("discriminative-")[-1].split("_")[0]
    truth: dict = {}
    for line, item in read_json_records(annotations_path, source_hint=AMBER_SOURCE_HINT):
        if not isinstance(item, dict) or "id" not in item or "truth" not in item:
            raise ValueError(f"{annotations_path.name}, entry at line {line}: expected an object with 'id' and 'truth'")
        truth[item["id"]] = item["truth"]
    questions, seen = [], {}
    for line, item in read_json_records(query_path, source_hint=AMBER_SOURCE_HINT):
        where = f"{query_path.name}, entry at line {line}"
        if not isinstance(item, dict) or any(key not in item for key in ("id", "image", "query")):
            raise ValueError(f"{where}: expected an object with 'id', 'image' and 'query'")
        key = item["id"]
        if key in seen:
            raise ValueError(f"{where}: id {key} is listed twice ({seen[key]} and {item['image']!r}, "
                             f"{item['query']!r}); every question needs its own id")
        seen[key] = (item["image"], item["query"])
        label = str(truth.get(key, "")).strip().lower()
        if label not in ("yes", "no"):
            found = "no entry" if key not in truth else f"truth {truth[key]!r}"
            raise ValueError(f"{where}: id {key} has {found} in {annotations_path.name}; a discriminative question "
                             "needs truth 'yes' or 'no' (is this the annotations file of the same AMBER release?)")
        questions.append(PopeQuestion(key, str(item["image"]), str(item["query"]), label, split))
    if not questions:
        raise ValueError(f"{query_path.name} holds no questions")
    return questions
