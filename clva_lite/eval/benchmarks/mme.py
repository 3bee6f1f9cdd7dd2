"""MME, hallucination subset: the existence, count, position and color subtasks.

Results follow MME's ``eval_tool`` layout: one ``<subtask>.txt`` file per subtask, each line
``image<TAB>question<TAB>ground truth (Yes/No)<TAB>model response``, two questions per image (one
answered "Yes", one "No").  Per subtask, acc is the share of questions answered right, acc+ the share
of images with both questions right, and score = 100 * acc + 100 * acc+ (at most 200); the four
subtasks give a total of at most 800.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

MME_HALLUCINATION_SUBTASKS = ("existence", "count", "position", "color")
MME_SOURCE_HINT = ("MME results are written by your inference script in the layout of MME's eval_tool "
                   "(Your_Results/<subtask>.txt; the benchmark comes from the MME authors, BradyFU)")


@dataclass(frozen=True)
class MmeRecord:
    """One MME question with the model's raw response; ``ground_truth`` is "yes" or "no"."""

    subtask: str
    image: str
    question: str
    ground_truth: str
    response: str


def parse_mme_answer(response: str) -> str:
    """MME's official rule: "yes", "no" or "other" (which always counts as wrong).

    The lower-cased, stripped response is used as is when it is exactly "yes" or "no"; otherwise its
    first four characters decide: "yes" inside them gives "yes", else "no" inside them gives "no".
    (The official script does not strip, so a response with two leading spaces could differ.)
    """
    answer = response.strip().lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def _load_mme_file(path: Path, subtask: str) -> list[MmeRecord]:
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(f"{path.name}, line {line_number}: expected 4 tab-separated fields "
                             f"(image, question, ground truth, response), got {len(fields)}")
        image, question, ground_truth, response = fields
        if ground_truth.strip().lower() not in ("yes", "no"):
            raise ValueError(f"{path.name}, line {line_number}: ground truth must be Yes or No, "
                             f"got {ground_truth!r}")
        records.append(MmeRecord(subtask, image, question, ground_truth.strip().lower(), response))
    return records


def load_mme_results(path_or_dir: str | PathLike) -> list[MmeRecord]:
    """Load one ``<subtask>.txt`` results file, or every ``*.txt`` file of a directory.

    The subtask is the file name without ``.txt``.  A malformed line raises ``ValueError`` naming the
    file and the line.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no <subtask>.txt files in {path}; {MME_SOURCE_HINT}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no such MME results file or directory: {path}; {MME_SOURCE_HINT}")
    return [record for file in files for record in _load_mme_file(file, file.stem)]


def _subtask_scores(records: Sequence[MmeRecord]) -> dict[str, Any]:
    correct_by_image: dict[str, list[bool]] = {}
    n_other = 0
    for record in records:
        answer = parse_mme_answer(record.response)
        n_other += answer == "other"
        correct_by_image.setdefault(record.image, []).append(answer == record.ground_truth.strip().lower())
    n_correct = sum(sum(flags) for flags in correct_by_image.values())
    n_images_all_correct = sum(all(flags) for flags in correct_by_image.values())
    accuracy = n_correct / len(records)
    accuracy_plus = n_images_all_correct / len(correct_by_image)
    return {
        "acc": accuracy,
        "acc_plus": accuracy_plus,
        "score": 100 * accuracy + 100 * accuracy_plus,
        "n_questions": len(records),
        "n_images": len(correct_by_image),
        "n_other": n_other,
    }


def mme_scores(records: Iterable[MmeRecord], subtasks: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-subtask acc, acc+ and score, and their total.

    ``subtasks`` defaults to the hallucination subtasks present in ``records``; a requested subtask
    without records is an error.  Questions are grouped into images by image name (the official tool
    pairs consecutive lines, which is the same for files in MME's order).  Returns
    ``{"subtasks": {name: {...}}, "total": float, "max_total": 200 * number of subtasks}``.
    """
    by_subtask: dict[str, list[MmeRecord]] = {}
    for record in records:
        by_subtask.setdefault(record.subtask, []).append(record)
    if subtasks is None:
        subtasks = [name for name in MME_HALLUCINATION_SUBTASKS if name in by_subtask]
        if not subtasks:
            raise ValueError(f"no records for the MME hallucination subtasks {MME_HALLUCINATION_SUBTASKS}; "
                             f"found {sorted(by_subtask)}")
    missing = [name for name in subtasks if name not in by_subtask]
    if missing:
        raise ValueError(f"no records for MME subtask(s) {missing}; found {sorted(by_subtask)}")
    scores = {name: _subtask_scores(by_subtask[name]) for name in subtasks}
    return {
        "subtasks": scores,
        "total": sum(score["score"] for score in scores.values()),
        "max_total": 200 * len(scores),
    }
