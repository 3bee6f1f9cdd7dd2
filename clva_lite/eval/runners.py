"""One runner per benchmark: POPE, CHAIR and MME on the toy world, and POPE from a published question file.

Each runner answers every item with one decoding method, keeps per-item records (JSON lines under
``records_dir``, so an interrupted run resumes), scores them with 95 % scene-clustered bootstrap CIs and
returns a dict::

    {"benchmark": "pope", "model": ..., "evaluated_on": "test",          # the split the records come from
     "fitted_on": {"head_classes": "calibration", ...},                   # what was fitted, and on which split
     "method": method.describe(), "n_items": int, "scores": {...}, "records": [...],
     "records_file": path or None}

Nothing is fitted here: head classes (CLVA) come in with the method and were fitted by
:func:`fit_toy_heads` / :func:`fit_file_heads`, which refuse the test split (and evaluated images); a method
whose head classes say they were fitted on ``"test"`` is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..analysis.calibration import calibrate_heads
from ..attention.clva import CLVAConfig
from ..attention.heads import HeadClasses
from ..attention.pai_vcd import PAIConfig, VCDConfig
from ..toy.questions import MME_SUBTASKS, POPE_SAMPLINGS, calibration_prompts, mme_questions, pope_questions
from ..toy.world import Split, as_split
from .items import Item, caption_items, check_images, pope_file_items, question_items, run_items
from .methods import METHOD_KINDS, Method, clva_method, pai_method, vanilla, vcd_method
from .scoring import format_ci, score_chair, score_mme, score_pope

BENCHMARKS = ("pope", "chair", "mme")
DEFAULT_SCENES = 150  # toy scenes per benchmark when no limit is given (as the main job)
HEAD_PROMPTS = 64  # calibration prompts for head classes (as the main job)
MAX_NEW_TOKENS = {"pope": 3, "chair": 24, "mme": 3, "pope-file": 16}
WEIGHTS = {"clva": ("alpha", "beta"), "pai": ("alpha",), "vcd": ("alpha", "beta"), "vanilla": ()}


# ---------------------------------------------------------------- methods and what they were fitted on


def method_config(kind: str, *, alpha: float | None = None, beta: float | None = None):
    """The config of method ``kind`` (``vanilla`` / ``clva`` / ``pai`` / ``vcd``; ``None`` for vanilla): the
    defaults, except ``alpha`` / ``beta`` when given (CLVA's anchor weights in [0, 20]; PAI's alpha; VCD's alpha
    and beta). Unknown names, weights a method does not have and out-of-range weights raise ``ValueError``.
    """
    if kind not in METHOD_KINDS:
        raise ValueError(f"unknown method {kind!r}; use one of {', '.join(METHOD_KINDS)}")
    given = {name: value for name, value in (("alpha", alpha), ("beta", beta)) if value is not None}
    extra = sorted(set(given) - set(WEIGHTS[kind]))
    if extra:
        takes = ", ".join(f"--{w}" for w in WEIGHTS[kind]) or "no weights"
        raise ValueError(f"method {kind!r} has no {', '.join(extra)}; it takes {takes}")
    configs = {"vanilla": None, "clva": CLVAConfig, "pai": PAIConfig, "vcd": VCDConfig}
    return None if configs[kind] is None else configs[kind](**given)


def build_method(kind: str, *, alpha: float | None = None, beta: float | None = None,
                 heads: HeadClasses | None = None) -> Method:
    """The method named ``kind`` with :func:`method_config`'s config. CLVA needs ``heads`` (fitted on the
    calibration split, see :func:`fit_toy_heads`)."""
    config = method_config(kind, alpha=alpha, beta=beta)
    if kind == "vanilla":
        return vanilla()
    if kind == "clva":
        if heads is None:
            raise ValueError("CLVA needs head classes: fit them on the calibration split with fit_toy_heads or "
                             "fit_file_heads (the command line does this for --method clva)")
        return clva_method(config, heads)
    return pai_method(config) if kind == "pai" else vcd_method(config)


def fit_toy_heads(loaded, *, split: Split | str = Split.CALIBRATION, n_prompts: int = HEAD_PROMPTS) -> HeadClasses:
    """CLVA head classes from ``n_prompts`` toy calibration prompts (``toy.questions.calibration_prompts``).

    Only the calibration split can be used: ``split="test"`` (or anything else) is refused.
    """
    split = as_split(split)
    if split is not Split.CALIBRATION:
        raise ValueError(f"head classes must be fitted on the calibration split, not {split.value!r}; "
                         "the test split is for evaluation only")
    if n_prompts < 1:
        raise ValueError(f"n_prompts={n_prompts} must be at least 1")
    images, questions = calibration_prompts(n_prompts)
    return calibrate_heads(loaded, images, questions, split=split.value)


def fit_file_heads(loaded, calibration_items: Sequence[Item], evaluated_items: Sequence[Item], *,
                   n_prompts: int = HEAD_PROMPTS) -> HeadClasses:
    """CLVA head classes from the first ``n_prompts`` items of a calibration POPE file (its own images).

    Refused when a calibration image is also an evaluated image: fitting on the evaluated (test) images would
    leak them into the method. The head classes record ``source="calibration"``.
    """
    shared = sorted({i.meta["scene_index"] for i in calibration_items}
                    & {i.meta["scene_index"] for i in evaluated_items})
    if shared:
        raise ValueError(f"{len(shared)} calibration image(s) are also evaluated (first: {shared[:3]}); fitting on "
                         "the test split is not allowed: pass a --calibration-file about other images")
    chosen = list(calibration_items)[:n_prompts]
    if not chosen:
        raise ValueError("the calibration file holds no questions")
    check_images(chosen)
    return calibrate_heads(loaded, [i.image() for i in chosen], [i.question for i in chosen],
                           split="calibration")


def fitted_on(method: Method, extra: dict | None = None) -> dict:
    """What the method was fitted on: ``{"head_classes": <split> or None, **extra}`` (extra: e.g. where
    alpha/beta came from)."""
    return {"head_classes": None if method.heads is None else method.heads.source, **(extra or {})}


def check_evaluation_split(method: Method) -> None:
    """Refuse a method whose head classes were fitted on the test split (they must come from calibration)."""
    source = None if method.heads is None else str(method.heads.source)
    if source is not None and "test" in source:
        raise ValueError(f"{method.name}'s head classes were fitted on the {source!r} split; fitting on the test "
                         "split is not allowed: fit them on the calibration split (fit_toy_heads)")


# ---------------------------------------------------------------- items


def _scenes(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_SCENES
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive number of scenes (or None for {DEFAULT_SCENES})")
    return limit


def _toy_items(split: Split | str, limit: int | None, kinds: Sequence[str], known: Sequence[str], what: str,
               questions) -> list[Item]:
    """Items of ``questions(split, scenes, kind)`` for each kind (in order), after checking the kinds are known."""
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise ValueError(f"unknown {what}(s) {unknown}; use some of {tuple(known)}")
    n = _scenes(limit)
    return question_items([q for k in kinds for q in questions(split, n, k)])


def toy_pope_items(split: Split | str, limit: int | None = None,
                   samplings: Sequence[str] = POPE_SAMPLINGS) -> list[Item]:
    """Toy POPE questions of the first ``limit`` scenes of ``split``, for each sampling (in order)."""
    return _toy_items(split, limit, samplings, POPE_SAMPLINGS, "POPE sampling", pope_questions)


def toy_mme_items(split: Split | str, limit: int | None = None,
                  subtasks: Sequence[str] = MME_SUBTASKS) -> list[Item]:
    """Toy MME-style pairs of the first ``limit`` scenes of ``split``, for each subtask (in order)."""
    return _toy_items(split, limit, subtasks, MME_SUBTASKS, "MME subtask", mme_questions)


# ---------------------------------------------------------------- running


def distributed_launch() -> bool:
    """True inside a multi-process launch (torchrun / accelerate launch set WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _answer(loaded, method: Method, items: Sequence[Item], benchmark: str, *, records_dir: str | Path | None,
            batch_size: int, max_new_tokens: int, distributed: bool | None) -> tuple[list[dict] | None, Path | None]:
    """Records for ``items`` (``None`` on non-main processes of a distributed run) and the records file
    ``records_dir/<benchmark>-<method>.jsonl``. Distributed: each process answers its shard into
    ``<benchmark>-<method>.rank<k>of<n>.jsonl`` and the main process writes the merged file."""
    from .items import run_items_distributed

    stem = f"{benchmark}-{method.name}"
    distributed = distributed_launch() if distributed is None else distributed
    if records_dir is not None:
        _check_manifest(Path(records_dir) / f"{stem}.method.json", method, max_new_tokens)
    kwargs = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "desc": f"{method.name} {benchmark}"}
    if distributed:
        if records_dir is None:
            raise ValueError("a distributed run needs records_dir (processes exchange records through files)")
        records = run_items_distributed(loaded, method, items, records_dir, stem=stem, **kwargs)
        merged = Path(records_dir) / f"{stem}.jsonl"
        if records is not None:  # the main process writes the merged records where a one-process run would
            merged.write_text("".join(json.dumps(r) + "\n" for r in records))
        return records, merged
    path = Path(records_dir) / f"{stem}.jsonl" if records_dir is not None else None
    return run_items(loaded, method, items, records_path=path, **kwargs), path


def _check_manifest(path: Path, method: Method, max_new_tokens: int) -> None:
    """Resuming reuses records by id, so the records must come from the same method settings."""
    if int(os.environ.get("RANK", "0")) != 0:
        return  # in a distributed launch only the main process checks and writes it (no write races)
    manifest = {"method": method.describe(), "max_new_tokens": max_new_tokens}
    text = json.dumps(manifest, sort_keys=True, default=str)
    if path.exists() and path.read_text().strip() != text:
        raise ValueError(f"{path.parent} holds records of {method.name} made with other settings ({path.name}); "
                         "use another --out folder (or delete it) to run these settings")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _result(benchmark: str, loaded, method: Method, split: str, records: list[dict] | None, scores,
            records_file: Path | None, extra_fitted: dict | None) -> dict | None:
    if records is None:
        return None
    return {"benchmark": benchmark, "model": getattr(loaded, "name", None), "evaluated_on": split,
            "fitted_on": fitted_on(method, extra_fitted), "method": method.describe(), "n_items": len(records),
            "scores": scores(records), "records": records,
            "records_file": None if records_file is None else str(records_file)}


def run_pope(loaded, method: Method, *, split: Split | str = "test", limit: int | None = None,
             samplings: Sequence[str] = POPE_SAMPLINGS, records_dir: str | Path | None = None,
             batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS["pope"],
             fitted_extra: dict | None = None, distributed: bool | None = None) -> dict | None:
    """Toy POPE on the first ``limit`` scenes of ``split``: 6 questions per scene (>= 3 objects) and sampling.

    ``scores``: per sampling, ``n`` and accuracy, precision, recall, F1 and yes-ratio with CIs. Returns ``None``
    on non-main processes of a distributed launch (``distributed=None``: detected from WORLD_SIZE).
    """
    split = as_split(split).value
    check_evaluation_split(method)
    items = toy_pope_items(split, limit, samplings)
    records, path = _answer(loaded, method, items, "pope", records_dir=records_dir, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, distributed=distributed)
    return _result("pope", loaded, method, split, records, _score_pope, path, fitted_extra)


def run_pope_file(loaded, method: Method, pope_file: str | Path, image_dir: str | Path, *,
                  limit: int | None = None, records_dir: str | Path | None = None, batch_size: int = 8,
                  max_new_tokens: int = MAX_NEW_TOKENS["pope-file"], fitted_extra: dict | None = None,
                  distributed: bool | None = None) -> dict | None:
    """POPE from a published question file (``{"question_id", "image", "text", "label"}`` per line) with the
    images under ``image_dir``; ``limit``: the first ``limit`` images. Missing files fail before any model call.

    ``evaluated_on`` is ``"test: <file name>"``: a benchmark file is a test set, so nothing may be fitted on it.
    """
    from .benchmarks import load_pope

    items = pope_file_items(load_pope(pope_file), image_dir, limit=limit)
    check_images(items)
    split = f"test: {Path(pope_file).name}"
    check_evaluation_split(method)
    records, path = _answer(loaded, method, items, "pope", records_dir=records_dir, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, distributed=distributed)
    return _result("pope", loaded, method, split, records, _score_pope, path, fitted_extra)


def _score_pope(records: list[dict]) -> dict:
    return score_pope(records, metrics=("accuracy", "precision", "recall", "f1", "yes_ratio"))


def run_chair(loaded, method: Method, *, split: Split | str = "test", limit: int | None = None,
              records_dir: str | Path | None = None, batch_size: int = 32,
              max_new_tokens: int = MAX_NEW_TOKENS["chair"], fitted_extra: dict | None = None,
              distributed: bool | None = None) -> dict | None:
    """Toy CHAIR: one caption per scene of the first ``limit`` scenes of ``split``.

    ``scores``: ``n`` and CHAIR_s, CHAIR_i, object recall, mean caption length (words) with CIs.
    """
    split = as_split(split).value
    check_evaluation_split(method)
    items = caption_items(split, _scenes(limit))
    records, path = _answer(loaded, method, items, "chair", records_dir=records_dir, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, distributed=distributed)
    return _result("chair", loaded, method, split, records, score_chair, path, fitted_extra)


def run_mme(loaded, method: Method, *, split: Split | str = "test", limit: int | None = None,
            subtasks: Sequence[str] = MME_SUBTASKS, records_dir: str | Path | None = None, batch_size: int = 32,
            max_new_tokens: int = MAX_NEW_TOKENS["mme"], fitted_extra: dict | None = None,
            distributed: bool | None = None) -> dict | None:
    """Toy MME-style pairs (existence, count, position, color) of the first ``limit`` scenes of ``split``.

    ``scores``: ``score_mme``'s dict (acc, acc+, score per subtask; total out of ``max_total``) and ``"ci"``
    with scene-clustered bootstrap intervals for each.
    """
    split = as_split(split).value
    check_evaluation_split(method)
    items = toy_mme_items(split, limit, subtasks)
    records, path = _answer(loaded, method, items, "mme", records_dir=records_dir, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, distributed=distributed)
    return _result("mme", loaded, method, split, records, score_mme, path, fitted_extra)


RUNNERS = {"pope": run_pope, "chair": run_chair, "mme": run_mme}


# ---------------------------------------------------------------- tables


def format_result(result: dict) -> str:
    """A small markdown table of ``result["scores"]`` (value [95 % CI]), with what was evaluated and fitted."""
    scores, bench = result["scores"], result["benchmark"]
    lines = [f"{bench.upper()} | {result['method']['name']} | evaluated on {result['evaluated_on']} | "
             f"fitted on {result['fitted_on']} | {result['n_items']} items", ""]
    if bench == "pope":
        lines += ["| sampling | n | accuracy % | precision % | recall % | F1 % | yes % |",
                  "|---|---:|---|---|---|---|---|"]
        for kind, s in scores.items():
            lines.append(f"| {kind} | {s['n']} | " + " | ".join(
                format_ci(s[m]) for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")) + " |")
    elif bench == "chair":
        lines += ["| n | CHAIR_s % | CHAIR_i % | recall % | mean words |", "|---:|---|---|---|---|",
                  f"| {scores['n']} | {format_ci(scores['chair_s'])} | {format_ci(scores['chair_i'])} | "
                  f"{format_ci(scores['recall'])} | {format_ci(scores['mean_length'], percent=False)} |"]
    else:
        ci = scores["ci"]
        lines += ["| subtask | images | acc % | acc+ % | score (of 200) |", "|---|---:|---|---|---|"]
        for name, s in scores["subtasks"].items():
            lines.append(f"| {name} | {s['n_images']} | {format_ci(ci[name]['acc'])} | "
                         f"{format_ci(ci[name]['acc_plus'])} | {format_ci(ci[name]['score'], percent=False)} |")
        lines.append(f"| total (of {scores['max_total']}) | | | | {format_ci(ci['total'], percent=False)} |")
    lines += ["", "Cells: value [95 % bootstrap CI, resampling scenes/images]."]
    return "\n".join(lines)


def write_result(result: dict, out: str | Path) -> Path:
    """``out/result.json``: everything but the records (they are in ``records_file``); returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "result.json"
    summary = {k: v for k, v in result.items() if k != "records"}
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return path
