"""Overhead benchmark: generate time and peak memory of capture, CLVA, PAI and VCD against stock SDPA.

Every method generates the same number of tokens (``min_new_tokens = max_new_tokens``) from the same inputs on
the same model; runs are interleaved (vanilla, m1, m2, ..., vanilla, m1, ...) and paired, and each ratio is the
median over repeats of (method time / stock time of the same round). Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during the call; on CPU the peak resident set size sampled every
millisecond. ``random_weights_from_config`` builds a model of a real shape (e.g. LLaVA-1.5-7B) with random
weights, so the overhead at 7B scale is measured on a GPU without downloading anything.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..attention.capture import capture, unwrap

LLAVA_15_7B = {
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                      "projection_dim": 768},
    "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                    "vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "image_seq_length": 576,
}
# A few-million-parameter LLaVA of the same structure (CLIP 336 px / 14 px patches, 576 visual tokens, Llama), for
# smoke runs of the random-weights commands on a CPU; its timings say nothing about 7B.
LLAVA_TINY_576 = {
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 336, "patch_size": 14,
                      "projection_dim": 64},
    "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 32064,
                    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "image_seq_length": 576,
}
SHAPES = {"llava-1.5-7b": LLAVA_15_7B, "llava-tiny-576": LLAVA_TINY_576}


def _random_llava(shape: str, device, dtype, text_values: dict | None = None, **config_values):
    """An eval-mode ``LlavaForConditionalGeneration`` of ``SHAPES[shape]`` with random weights (``config_values``
    and ``text_values`` override its top-level and text configs); generation pads with the text config's pad id (0
    when unset) and stops at its eos id."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    text_config = {**SHAPES[shape]["text_config"], **(text_values or {})}
    config = LlavaConfig(**{**SHAPES[shape], **config_values, "text_config": text_config})
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.pad_token_id = config.text_config.pad_token_id or 0
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model


def random_weights_model(shape: str = "llava-1.5-7b", *, device="cuda", dtype=torch.float16):
    """A ``LlavaForConditionalGeneration`` of a known shape with random weights, and matching dummy inputs."""
    model = _random_llava(shape, device, dtype)
    model.generation_config.eos_token_id = None
    config = model.config
    size = config.vision_config.image_size
    n_visual = (size // config.vision_config.patch_size) ** 2
    text = torch.randint(100, 30000, (1, 40), generator=torch.Generator().manual_seed(0))
    input_ids = torch.cat([torch.tensor([[1]]), text[:, :5], torch.full((1, n_visual), config.image_token_id),
                           text[:, 5:]], dim=1).to(device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "pixel_values": torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(
                  device, dtype)}
    return model, inputs


def random_weights_loaded(shape: str = "llava-1.5-7b", *, device=None, dtype=None):
    """A :class:`~clva_lite.models.loading.LoadedModel` of a known shape with random weights that takes the toy's
    questions: the toy's processor (word-level tokenizer, chat template) at the shape's image size and patch size
    (toy scenes are upscaled: 576 visual tokens for LLaVA-1.5). For timing the evaluator at a real shape without
    downloading anything (``python -m clva_lite throughput --random-weights-from-config llava-1.5-7b`` on a GPU); its
    answers are noise. ``device`` defaults as in ``load_model``; ``dtype`` to float16 on CUDA, float32 elsewhere."""
    from ..models.loading import LoadedModel, _finish, default_device
    from ..toy.model import build_config, build_processor

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else (torch.float16 if device.type == "cuda" else torch.float32)
    toy = build_config()  # the toy tokenizer's special ids, all inside the shape's larger vocabulary
    special = {name: getattr(toy.text_config, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model = _random_llava(shape, device, dtype, special, image_token_index=toy.image_token_index)
    vision = model.config.vision_config
    processor = build_processor(image_size=vision.image_size, patch_size=vision.patch_size)
    return _finish(LoadedModel(model, processor, "llava", f"random weights, {shape} shape"))


@contextmanager
def _peak_memory(device: torch.device):
    """Yields a dict whose ``peak`` is set, on exit, to the peak memory (bytes) during the block."""
    result: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak"] = torch.cuda.max_memory_allocated(device)
        return
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result["peak"] = max(peak[0], process.memory_info().rss)


def _timed(run, device: torch.device) -> float:
    """Seconds of one call (synchronised on CUDA). Nothing else runs in this process meanwhile."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _peak(run, device: torch.device) -> float:
    """Peak memory of one call: ``torch.cuda.max_memory_allocated`` on CUDA, the sampled RSS on the CPU."""
    with _peak_memory(device) as memory:
        run()
    return memory["peak"]


def benchmark(loaded_or_model, inputs, methods: dict, *, new_tokens: int = 64, repeats: int = 5,
              warmup: int = 1) -> dict:
    """Time ``methods`` (name -> callable(model, inputs, generate_kwargs)) against stock generate.

    Returns per method: median seconds, median time ratio vs stock (paired by round), peak-memory ratio. The first
    (untimed) round warms up and measures memory; time and memory come from separate calls because on the CPU the
    memory sampler is a thread that would share the interpreter with the timed call and slow Python-heavy methods
    more than stock generation.
    """
    model = unwrap(loaded_or_model)
    device = next(model.parameters()).device
    generate_kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def stock(m, i, kw):
        return m.generate(**i, **kw)

    runners = {"stock SDPA": stock, **methods}
    times: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for round_index in range(max(warmup, 1) + repeats):
            for name, runner in runners.items():
                call = lambda r=runner: r(model, inputs, generate_kwargs)  # noqa: E731
                if round_index == 0:
                    peaks[name].append(_peak(call, device))  # the first call warms up and measures memory, untimed
                elif round_index >= max(warmup, 1):
                    times[name].append(_timed(call, device))
                else:
                    call()
    results = {"device": str(device), "dtype": str(next(model.parameters()).dtype), "new_tokens": new_tokens,
               "torch_threads": torch.get_num_threads(),
               "repeats": repeats, "prompt_tokens": int(inputs["input_ids"].shape[1]), "methods": {}}
    for name in runners:
        ratios = [t / s for t, s in zip(times[name], times["stock SDPA"])]
        results["methods"][name] = {
            "median_seconds": statistics.median(times[name]),
            "time_ratio": statistics.median(ratios),
            "peak_memory_bytes": max(peaks[name]),
            "memory_ratio": max(peaks[name]) / max(peaks["stock SDPA"]),
        }
    return results


def default_methods(loaded_or_model, heads=None) -> dict:
    """capture, CLVA (with ``heads``: calibrated heads, and a per-input-heads row; else per-input heads only), PAI
    with guidance, VCD."""
    from ..attention.clva import CLVAConfig, clva
    from ..attention.pai_vcd import PAIConfig, pai_attention, pai_guidance, vcd_processor

    config = CLVAConfig(head_source="calibrated" if heads is not None else "per-input")
    per_input = CLVAConfig(head_source="per-input")

    def with_capture(m, i, kw):
        with capture(m, i) as record:
            out = m.generate(**i, **kw)
            record.flush()  # rows of deferred steps are computed here: the timing holds all of capture's work
            return out

    def with_clva(m, i, kw):
        with clva(m, config, heads=heads):
            return m.generate(**i, **kw)

    def with_per_input_clva(m, i, kw):
        with clva(m, per_input):
            return m.generate(**i, **kw)

    def with_pai(m, i, kw):
        with pai_attention(m, PAIConfig()):
            return m.generate(**i, **kw, logits_processor=pai_guidance(m, i, PAIConfig()))

    def with_vcd(m, i, kw):
        return m.generate(**i, **kw, logits_processor=vcd_processor(m, i))

    methods = {"capture": with_capture, "CLVA": with_clva}
    if heads is not None:
        methods["CLVA (per-input heads)"] = with_per_input_clva
    return {**methods, "PAI (with guidance)": with_pai, "VCD": with_vcd}


def benchmark_heads(subject, inputs):
    """Head classes for the benchmark's calibrated CLVA row: fitted on the toy's calibration split, or (for a
    random-weight model, which has no data) on the benchmark prompt itself. Only the timing depends on them."""
    from ..attention.heads import fit_head_classes

    if getattr(subject, "name", None) == "toy":
        from ..analysis.calibration import calibrate_heads
        from ..toy.questions import calibration_prompts

        return calibrate_heads(subject, *calibration_prompts(32), split="calibration")
    with torch.no_grad(), capture(subject, inputs) as record:
        unwrap(subject)(**inputs)
    return fit_head_classes(record.shares[0], visual=record.visual[0], split="benchmark-prompt")


def format_results(results: dict) -> str:
    lines = [f"device={results['device']} dtype={results['dtype']} torch_threads={results.get('torch_threads')} "
             f"prompt_tokens={results['prompt_tokens']} new_tokens={results['new_tokens']} "
             f"repeats={results['repeats']}",
             f"{'method':<22}{'median s':>10}{'time ratio':>12}{'peak MiB':>11}{'mem ratio':>11}"]
    for name, r in results["methods"].items():
        lines.append(f"{name:<22}{r['median_seconds']:>10.3f}{r['time_ratio']:>12.3f}"
                     f"{r['peak_memory_bytes'] / 2**20:>11.1f}{r['memory_ratio']:>11.3f}")
    return "\n".join(lines)


def run_benchmark(model: str = "toy", *, random_weights_from_config: str | None = None, new_tokens: int = 64,
                  repeats: int = 5, out: str | Path | None = None, device: str | None = None,
                  dtype: str = "float16", threads: int | None = None) -> dict:
    """Benchmark on the toy (or any ``load_model`` name), or on a random-weight model of a known shape.
    ``threads``: torch's CPU threads for the run (default: torch's own choice); the results record the number."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        torch.set_num_threads(threads)
    if random_weights_from_config:
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        hf_model, inputs = random_weights_model(random_weights_from_config, device=target,
                                                dtype=getattr(torch, dtype))
        subject = hf_model
    else:
        from ..models.loading import load_model
        from ..toy import generate_scene

        subject = load_model(model, device=device)
        inputs = subject.inputs([generate_scene("calibration", 0).image()], ["describe the image ."])
    heads = benchmark_heads(subject, inputs)
    results = benchmark(subject, inputs, default_methods(subject, heads), new_tokens=new_tokens, repeats=repeats)
    results["clva_heads"] = {"source": heads.source, "criterion": heads.criterion}
    results["model"] = random_weights_from_config or model
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results
