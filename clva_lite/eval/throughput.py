"""Evaluator throughput: questions per second of :func:`~clva_lite.eval.items.run_items` (shared image prefix,
batched) against the way peers evaluate (one full prompt per ``model.generate`` call, batch 1), and against
batched full prompts, on the same model and the same questions, in one run.

``python -m clva_lite throughput [--scenes N] [--method vanilla|clva|pai|vcd]``. The ratio is the number to
quote; the absolute rates depend on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from ..models.prompts import decode_new_tokens
from ..progress import tqdm
from .items import Item, run_items
from .methods import Method, vanilla
from .prefix import SharedPrefixes


def batch1_loop(loaded, method: Method, items: Sequence[Item], max_new_tokens: int) -> list[str]:
    """The peers' loop: for each question, process its image and prompt and call ``generate`` (batch 1)."""
    answers = []
    for item in tqdm(items, desc="batch-1 loop", leave=False):
        inputs = loaded.inputs([item.image()], [item.question])
        output = method.generate(loaded, inputs, max_new_tokens=max_new_tokens)
        answers += decode_new_tokens(loaded, inputs, output)
    return answers


def _timed(function) -> tuple:
    """(result, seconds, peak allocated CUDA memory in MiB during the call, or None without CUDA)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = function()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return result, seconds, torch.cuda.max_memory_allocated() / 2**20 if cuda else None


def measure_throughput(loaded, items: Sequence[Item], *, method: Method | None = None, batch_size: int = 64,
                       max_new_tokens: int = 3, loop_items: int | None = None) -> dict:
    """Seconds and questions per second of three ways to answer ``items``: the batch-1 full-prompt loop (on the
    first ``loop_items`` items, all by default), batched full prompts, and the evaluator (shared image prefix,
    its prefixes computed inside the timed run). Also whether they gave the same answers."""
    method = method or vanilla()
    loop_set = list(items[:loop_items] if loop_items else items)
    loop_answers, loop_seconds, loop_peak = _timed(lambda: batch1_loop(loaded, method, loop_set, max_new_tokens))
    full, full_seconds, full_peak = _timed(lambda: run_items(loaded, method, items, batch_size=batch_size,
                                                             max_new_tokens=max_new_tokens, shared_prefix=False,
                                                             desc="batched full prompts"))
    store = SharedPrefixes(loaded)
    shared, shared_seconds, shared_peak = _timed(lambda: run_items(loaded, method, items, batch_size=batch_size,
                                                                   max_new_tokens=max_new_tokens, shared_prefix=store,
                                                                   desc="evaluator"))
    rate = {"batch1_loop": len(loop_set) / loop_seconds, "batched_full_prompts": len(items) / full_seconds,
            "evaluator": len(items) / shared_seconds}
    shared_answers = [r["response"] for r in shared]
    return {
        "method": method.name, "questions": len(items), "loop_questions": len(loop_set),
        "images": len({r["scene_index"] for r in shared}), "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "device": str(loaded.device), "threads": torch.get_num_threads(),
        "seconds": {"batch1_loop": loop_seconds, "batched_full_prompts": full_seconds, "evaluator": shared_seconds},
        "questions_per_second": rate,
        "evaluator_vs_batch1_loop": rate["evaluator"] / rate["batch1_loop"],
        "evaluator_vs_batched_full_prompts": rate["evaluator"] / rate["batched_full_prompts"],
        "prefix_passes": store.prefills,
        "same_answers_as_loop": sum(a == b for a, b in zip(loop_answers, shared_answers)) / len(loop_set),
        "same_answers_as_full_prompts": sum(r["response"] == a for r, a in zip(full, shared_answers)) / len(items),
        "cuda_peak_mib": None if loop_peak is None else {  # peak allocated memory of each way, CUDA only
            "batch1_loop": loop_peak, "batched_full_prompts": full_peak, "evaluator": shared_peak},
    }


def format_throughput(result: dict) -> str:
    rate, seconds = result["questions_per_second"], result["seconds"]
    lines = [f"{result['questions']} questions about {result['images']} images, {result['method']}, "
             f"{result['device']} ({result['threads']} threads), up to {result['max_new_tokens']} new tokens",
             f"  batch-1 full-prompt loop : {rate['batch1_loop']:8.1f} q/s  ({result['loop_questions']} questions, "
             f"{seconds['batch1_loop']:.1f} s)",
             f"  batched full prompts     : {rate['batched_full_prompts']:8.1f} q/s  "
             f"({seconds['batched_full_prompts']:.1f} s, batch {result['batch_size']})",
             f"  evaluator (shared prefix): {rate['evaluator']:8.1f} q/s  ({seconds['evaluator']:.1f} s, "
             f"{result['prefix_passes']} prefix passes)",
             f"  evaluator / batch-1 loop : {result['evaluator_vs_batch1_loop']:.1f}x",
             f"  evaluator / batched full : {result['evaluator_vs_batched_full_prompts']:.1f}x",
             f"  same answers: {100 * result['same_answers_as_loop']:.1f} % of the loop's, "
             f"{100 * result['same_answers_as_full_prompts']:.1f} % of the batched full prompts'"]
    if result.get("cuda_peak_mib"):
        peak = result["cuda_peak_mib"]
        lines.append(f"  CUDA peak memory (MiB): loop {peak['batch1_loop']:.0f}, batched full "
                     f"{peak['batched_full_prompts']:.0f}, evaluator {peak['evaluator']:.0f}")
    return "\n".join(lines)
