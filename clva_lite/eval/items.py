"""Runners: ask a model questions (or for captions) under a decoding method and keep per-item records.

Records are JSON lines, one per question or caption, written as they are produced, so a run can be re-scored
without the model and resumed after an interruption (items already in the file are skipped). Every record
names its split; anything fitted on data records the split it was fitted on (see ``fit_split`` arguments).

Items come from the toy world (:func:`question_items`, :func:`caption_items`: the image is regenerated from
``meta["split"]`` and ``meta["scene_index"]``) or from image files (:func:`pope_file_items`: ``meta["image_path"]``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from ..models.prompts import decode_new_tokens
from ..progress import tqdm
from ..toy.model import CAPTION_REQUEST
from ..toy.questions import ToyQuestion
from ..toy.world import Split, as_split, generate_scene
from .methods import Method
from .prefix import (
    PrefixMismatch,
    SharedPrefixes,
    image_key,
    say_fallback_once,
    shared_prefixes,
)

IMAGE_HINT = ("check --image-dir (for COCO POPE files: the COCO val2014 images, e.g. "
              "val2014/COCO_val2014_000000000042.jpg, from cocodataset.org)")


@dataclass(frozen=True)
class Item:
    """One thing to ask: an id, an image loader and a question, plus what is known about it.

    ``meta`` is copied into the item's record. It holds either ``image_path`` (an image file) or ``split`` and
    ``scene_index`` (a toy scene, regenerated on demand); ``scene_index`` is also the bootstrap's cluster key
    (for image files it is the image's file name, so all questions about one image form one cluster).
    """

    item_id: str
    question: str
    split: str
    meta: dict

    def image(self) -> Image.Image:
        """The item's RGB image: read from ``meta["image_path"]`` if present, else the toy scene."""
        if "image_path" in self.meta:
            return load_image(self.meta["image_path"])
        return generate_scene(self.meta["split"], self.meta["scene_index"]).image()


def load_image(path: str | Path) -> Image.Image:
    """An RGB image from ``path``; a missing or unreadable file is an error naming the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}; {IMAGE_HINT}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise ValueError(f"cannot read image {path} ({error}); replace the file with a valid image") from None


def check_images(items: Sequence[Item]) -> None:
    """Fail before any model call when image files are missing: names how many and the first few."""
    missing = sorted({item.meta["image_path"] for item in items
                      if "image_path" in item.meta and not Path(item.meta["image_path"]).is_file()})
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) not found, first: {missing[:3]}; {IMAGE_HINT}")


def question_items(questions: Iterable[ToyQuestion]) -> list[Item]:
    return [
        Item(q.question_id, q.text, q.split.value,
             {"split": q.split.value, "scene_index": q.scene_index, "label": q.label, "kind": q.kind,
              "category": q.category})
        for q in questions
    ]


def caption_items(split: Split | str, n_scenes: int, start: int = 0) -> list[Item]:
    """One caption request per toy scene ``start .. start+n_scenes``; ``meta["truth"]``: the scene's categories."""
    split = as_split(split)
    return [
        Item(f"{split.value}-{i}-caption", CAPTION_REQUEST, split.value,
             {"split": split.value, "scene_index": i, "kind": "caption",
              "truth": list(generate_scene(split, i).categories)})
        for i in range(start, start + n_scenes)
    ]


def pope_file_items(questions: Iterable, image_dir: str | Path, *, limit: int | None = None,
                    split: str = "test") -> list[Item]:
    """Items for questions of a published POPE file (``clva_lite.eval.benchmarks.load_pope``), images under
    ``image_dir``.

    ``limit``: keep the questions of the first ``limit`` distinct images (file order). Records get ``label``,
    ``kind`` (the POPE sampling named in the file name, else ``"pope"``), ``image_path`` and ``scene_index``
    (the image name, the bootstrap's cluster). ``split`` is recorded as the evaluated split.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be a positive number of images (or None for all)")
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}; {IMAGE_HINT}")
    images: dict[str, None] = {}
    items = []
    for q in questions:
        if q.image not in images and limit is not None and len(images) >= limit:
            continue
        images.setdefault(q.image)
        items.append(Item(f"pope-{q.split or 'pope'}-{q.question_id}", q.text, split,
                          {"split": split, "scene_index": q.image, "image_path": str(image_dir / q.image),
                           "label": q.label, "kind": q.split or "pope", "question_id": q.question_id}))
    counts = Counter(item.item_id for item in items)
    if len(counts) != len(items):
        repeated = sorted(i for i, n in counts.items() if n > 1)[:3]
        raise ValueError(f"question ids repeat in the POPE file (first: {repeated}); every question_id must be "
                         "unique, so records can be matched to questions")
    if not items:
        raise ValueError("the POPE file holds no questions; check the path (see clva_lite.eval.benchmarks.load_pope)")
    return items


def _read_records(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    records = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}); delete the line or the file") from None
        records[record["id"]] = record
    return records


def _batches(loaded, items: Sequence[Item], batch_size: int, store: SharedPrefixes | None) -> tuple[list, object]:
    """``items`` in batches; with a store, encoded and grouped so that rows share their image prefix."""
    if store is not None:
        images: dict[str, Image.Image] = {}
        for item in items:
            key = image_key(item)
            if item.item_id not in store.rows and key not in images:
                images[key] = item.image()
        try:
            store.encode(items, images)
            return store.batches(items, batch_size), store
        except PrefixMismatch as error:
            say_fallback_once(str(error))
    return [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)], None


class SentenceEnd(StoppingCriteria):
    """Stops each row once it has generated a sentence-ending token: POPE's answer rule reads the first sentence only,
    so a yes/no answer is decided there (the record keeps that sentence, e.g. "yes ." or "Yes, there is a dog.")."""

    def __init__(self, loaded, prompt_length: int):
        tokenizer = loaded.processor.tokenizer
        self.ends = torch.tensor(sorted({i for text in (".", " .") for i in tokenizer(text, add_special_tokens=False)
                                         .input_ids[-1:]}))
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if input_ids.shape[1] <= self.prompt_length:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return torch.isin(input_ids[:, -1], self.ends.to(input_ids.device))


def run_items(loaded, method: Method, items: Sequence[Item], *, batch_size: int = 32, max_new_tokens: int = 4,
              records_path: str | Path | None = None, desc: str | None = None,
              shared_prefix: bool | SharedPrefixes = True, stop_at_sentence_end: bool = False) -> list[dict]:
    """Answer every item with ``method``; returns records in ``items`` order.

    With ``records_path``, records already there (same id) are reused and new ones appended as produced.
    ``shared_prefix``: questions about one image continue one cached image prefix (:mod:`clva_lite.eval.prefix`;
    the same answers as full prompts, several times faster); ``False`` prefills every full prompt, as
    ``model.generate`` on the processor's batch does. ``stop_at_sentence_end``: for yes/no items, a row stops at
    the end of its first sentence (:class:`SentenceEnd`), all POPE's answer rule reads.
    """
    path = Path(records_path) if records_path is not None else None
    done = _read_records(path) if path is not None else {}
    todo = [item for item in items if item.item_id not in done]
    batches, store = _batches(loaded, todo, batch_size, shared_prefixes(loaded, shared_prefix) if todo else None)
    handle = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    try:
        for batch in tqdm(batches, desc=desc or f"{method.name}", leave=False):
            shared = store.batch(batch) if store is not None else None
            inputs = shared.inputs if shared is not None else loaded.inputs([item.image() for item in batch],
                                                                            [item.question for item in batch])
            extra = {}
            if stop_at_sentence_end:
                extra["stopping_criteria"] = StoppingCriteriaList([SentenceEnd(loaded, inputs["input_ids"].shape[1])])
            output = method.generate(loaded, inputs, shared=shared, max_new_tokens=max_new_tokens, **extra)
            for item, response in zip(batch, decode_new_tokens(loaded, inputs, output)):
                record = {"id": item.item_id, "method": method.name, "question": item.question,
                          "response": response, **item.meta}
                done[item.item_id] = record
                if handle is not None:
                    handle.write(json.dumps(record) + "\n")
                    handle.flush()
    finally:
        if handle is not None:
            handle.close()
    return [done[item.item_id] for item in items]


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """Items of process ``rank`` out of ``world_size`` (round robin: every item lands in exactly one shard)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return list(items[rank::world_size])


def merge_records(items: Sequence[Item], record_files: Sequence[str | Path]) -> list[dict]:
    """Gather per-process record files back into ``items`` order; a missing or duplicated item is an error."""
    merged: dict[str, dict] = {}
    for path in record_files:
        for item_id, record in _read_records(Path(path)).items():
            if item_id in merged:
                raise ValueError(f"item {item_id} was answered by more than one process ({path})")
            merged[item_id] = record
    missing = [item.item_id for item in items if item.item_id not in merged]
    if missing:
        raise ValueError(f"{len(missing)} items have no record (first: {missing[:3]}); did a process fail?")
    return [merged[item.item_id] for item in items]


def process_state(loaded=None):
    """accelerate's ``PartialState`` for this process, set up so that a CPU launch really is multi-process.

    Why ``cpu=`` matters: ``PartialState()`` (cpu=False) picks its backend from the accelerator it finds. Under
    ``torchrun --nproc_per_node 2`` or ``accelerate launch --multi_gpu --num_processes 2`` on a machine without
    a GPU it finds none, so it sets ``distributed_type=NO`` and every process reports rank 0 of 1 (each then
    answers *all* items). With ``cpu=True`` it reads RANK / WORLD_SIZE, sets up gloo and gives real ranks.
    ``cpu`` is True when the model is on the CPU (or, without a model, when CUDA is unavailable).
    A launcher that set WORLD_SIZE > 1 but still yields one process is an error, not a silent duplicate run.
    """
    import os

    import torch
    from accelerate import PartialState

    device = getattr(loaded, "device", None) if loaded is not None else None
    cpu = device.type == "cpu" if device is not None else not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE) but accelerate sees {state.num_processes} "
            f"(distributed_type={state.distributed_type}); on CPU launch with torchrun --nproc_per_node N or "
            "accelerate launch --multi_gpu --num_processes N (not --cpu, which starts one process)"
        )
    return state


def rank_files(records_dir: str | Path, stem: str, world_size: int) -> list[Path]:
    """``records_dir/<stem>.rank<k>of<n>.jsonl`` for k in 0..n-1 (the world size is in the name, so a resumed
    run with the same number of processes reuses its own shards and never mixes in another layout's)."""
    return [Path(records_dir) / f"{stem}.rank{k}of{world_size}.jsonl" for k in range(world_size)]


def run_items_distributed(loaded, method: Method, items: Sequence[Item], records_dir: str | Path, *,
                          stem: str | None = None, **kwargs) -> list[dict] | None:
    """Data-parallel ``run_items``: each process answers its round-robin shard into
    ``records_dir/<stem>.rank<k>of<n>.jsonl`` (``stem`` defaults to the method name); after a barrier the main
    process merges them and returns all records in ``items`` order (other processes return ``None``).

    Launch with ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N`` (on a
    machine without GPUs the latter also starts N CPU processes through torchrun). ``accelerate launch --cpu
    --num_processes N`` is *not* a multi-process launch in accelerate 1.x: its simple launcher starts one process
    (multi-CPU there means MPI with ``--mpirun_hostfile``). See :func:`process_state` for the rank-0 pitfall.
    Without a launcher this is one process doing everything. Tested with 2 CPU processes in
    ``tests/test_distributed.py``.
    """
    state = process_state(loaded)
    files = rank_files(records_dir, stem or method.name, state.num_processes)
    run_items(loaded, method, shard(items, state.process_index, state.num_processes),
              records_path=files[state.process_index], **kwargs)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return merge_records(items, files)


def find_hallucinations(loaded, method: Method, questions: Sequence[ToyQuestion], *, limit: int = 5,
                        batch_size: int = 32) -> list[dict]:
    """Records of questions whose truth is "no" but ``method`` answers "yes" (at most ``limit``), in order."""
    from .benchmarks import parse_pope_answer

    negatives = [q for q in questions if q.label == "no"]
    found: list[dict] = []
    for start in range(0, len(negatives), batch_size):
        records = run_items(loaded, method, question_items(negatives[start:start + batch_size]),
                            batch_size=batch_size, max_new_tokens=3, desc="search")
        found += [r for r in records if parse_pope_answer(r["response"]) == "yes"]
        if len(found) >= limit:
            break
    return found[:limit]
