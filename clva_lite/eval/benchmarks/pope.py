"""POPE (Polling-based Object Probing Evaluation): question loaders, the official answer rule and metrics.

POPE asks "Is there a <object> in the image?" about COCO, A-OKVQA or GQA images; half the answers are
"yes".  Question files come from the AoiDragon/POPE repository (``output/coco/`` for COCO, JSON lines;
``output/seem/`` for A-OKVQA and GQA, one JSON array).  Three splits pick the absent objects differently:
``random``, ``popular`` (frequent objects) and ``adversarial`` (objects that co-occur with present ones).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

POPE_SPLITS = ("random", "popular", "adversarial")
POPE_SOURCE_HINT = ("POPE question files come from the AoiDragon/POPE repository on GitHub "
                    "(output/coco/coco_pope_{random,popular,adversarial}.json; A-OKVQA and GQA in output/seem/)")
_QUESTION_KEYS = ("question_id", "image", "text", "label")
_METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "yes_ratio")


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question with its ground-truth label ("yes" or "no")."""

    question_id: int | str
    image: str
    text: str
    label: str
    split: str | None = None


@dataclass(frozen=True)
class PopeAnswer:
    """One model answer in POPE's ``answer/example.json`` format."""

    question: str
    answer: str


def read_json_records(path: str | PathLike, *, source_hint: str = "") -> list[tuple[int, Any]]:
    """Read a JSON-lines file or a file holding one JSON array, as ``(line_number, item)`` pairs.

    The format is chosen by the first non-space character (``[`` means an array).  Line numbers are
    1-based and point at the line where each item starts, so errors can name them.
    """
    path = Path(path)
    if not path.is_file():
        hint = f" {source_hint}" if source_hint else ""
        raise FileNotFoundError(f"no such file: {path}.{hint}")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] == "[":
        return _read_json_array(text, path)
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((line_number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name}, line {line_number}: not valid JSON ({error.msg})") from None
    return records


def _read_json_array(text: str, path: Path) -> list[tuple[int, Any]]:
    decoder = json.JSONDecoder()

    def skip_space(at: int) -> int:
        while at < len(text) and text[at].isspace():
            at += 1
        return at

    def error(at: int, what: str) -> ValueError:
        return ValueError(f"{path.name}, line {text.count(chr(10), 0, at) + 1}: {what}")

    records: list[tuple[int, Any]] = []
    at = skip_space(text.index("[") + 1)
    counted_to, line_number = 0, 1
    if at < len(text) and text[at] == "]":
        return records
    while True:
        line_number += text.count("\n", counted_to, at)
        counted_to = at
        try:
            item, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as decode_error:
            raise error(decode_error.pos, f"not valid JSON ({decode_error.msg})") from None
        records.append((line_number, item))
        at = skip_space(end)
        if at < len(text) and text[at] == ",":
            at = skip_space(at + 1)
        elif at < len(text) and text[at] == "]":
            if text[at + 1:].strip():
                raise error(skip_space(at + 1), "unexpected text after the closing ']'")
            return records
        else:
            raise error(at, "expected ',' or ']' between array items")


def infer_pope_split(path: str | PathLike) -> str | None:
    """The POPE split named in a file name (``random``, ``popular`` or ``adversarial``), else None."""
    name = Path(path).name.lower()
    found = [split for split in POPE_SPLITS if split in name]
    return found[0] if len(found) == 1 else None


def load_pope(path: str | PathLike, split: str | None = None) -> list[PopeQuestion]:
    """Load a POPE question file (JSON lines, or the JSON array used by the A-OKVQA/GQA "seem" files).

    ``split`` defaults to the one named in the file name.  A malformed item raises ``ValueError``
    naming the file, the line and the problem.
    """
    split = split if split is not None else infer_pope_split(path)
    questions = []
    for line_number, item in read_json_records(path, source_hint=POPE_SOURCE_HINT):
        where = f"{Path(path).name}, line {line_number}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        missing = [key for key in _QUESTION_KEYS if key not in item]
        if missing:
            hint = " (this looks like an answer file: use load_pope_answers)" if "answer" in item else ""
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}{hint}")
        label = str(item["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"{where}: label must be 'yes' or 'no', got {item['label']!r}")
        questions.append(PopeQuestion(item["question_id"], str(item["image"]), str(item["text"]), label, split))
    return questions


def load_pope_answers(path: str | PathLike) -> list[PopeAnswer]:
    """Load model answers in POPE's answer format: one ``{"question": ..., "answer": ...}`` per line."""
    answers = []
    for line_number, item in read_json_records(path):
        where = f"{Path(path).name}, line {line_number}"
        if not isinstance(item, dict) or "answer" not in item:
            raise ValueError(f"{where}: expected an object with an 'answer' key")
        answers.append(PopeAnswer(str(item.get("question", "")), str(item["answer"])))
    return answers


def parse_pope_answer(text: str, *, treat_nt_as_no: bool = False) -> str:
    """Reduce a free-form answer to "yes" or "no" with POPE's official rule.

    Keep the text before the first ".", drop commas, split on spaces; the answer is "no" when a word
    is "No", "not" or "no", otherwise "yes" (so an empty or evasive answer counts as "yes").  With
    ``treat_nt_as_no`` a word containing "n't" (e.g. "isn't", "don't") also means "no"; the official
    rule leaves "There isn't a dog" as "yes".
    """
    first_sentence = text.split(".")[0].replace(",", "")
    words = first_sentence.split(" ")
    if any(word in ("No", "not", "no") for word in words):
        return "no"
    if treat_nt_as_no and any("n't" in word or "n\u2019t" in word for word in words):
        return "no"
    return "yes"


def _check_yes_no(values: Sequence[str], what: str) -> None:
    bad = sorted({repr(value) for value in values if value not in ("yes", "no")})
    if bad:
        hint = " (reduce free-form answers with parse_pope_answer first)" if what == "predictions" else ""
        raise ValueError(f"{what} must be 'yes' or 'no'; got {', '.join(bad[:5])}{hint}")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" as the positive class.

    Precision is 0.0 when nothing is predicted "yes", recall is 0.0 when no label is "yes", and F1 is
    0.0 when precision + recall is 0 (the official script would divide by zero).  Also returns the
    counts ``tp``, ``fp``, ``tn``, ``fn`` and ``n``.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not predictions:
        raise ValueError("no predictions to score")
    _check_yes_no(predictions, "predictions")
    _check_yes_no(labels, "labels")
    tp = sum(p == "yes" and g == "yes" for p, g in zip(predictions, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(predictions, labels))
    tn = sum(p == "no" and g == "no" for p, g in zip(predictions, labels))
    fn = len(predictions) - tp - fp - tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(predictions),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / len(predictions),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "n": len(predictions),
    }


def pope_metrics_by_split(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``pope_metrics`` per split for records holding "split", "prediction" and "label" (first-seen order)."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for record in records:
        predictions, labels = grouped.setdefault(str(record["split"]), ([], []))
        predictions.append(record["prediction"])
        labels.append(record["label"])
    return {split: pope_metrics(predictions, labels) for split, (predictions, labels) in grouped.items()}


def pope_metric_fn(name: str = "f1") -> Callable[[Sequence[Mapping[str, Any]]], float]:
    """A function of records ({"prediction", "label"}) returning one POPE metric, e.g. for bootstrap_ci."""
    if name not in _METRIC_NAMES:
        raise ValueError(f"unknown POPE metric {name!r}; choose from {', '.join(_METRIC_NAMES)}")

    def metric(records: Sequence[Mapping[str, Any]]) -> float:
        return float(pope_metrics([r["prediction"] for r in records], [r["label"] for r in records])[name])

    return metric
