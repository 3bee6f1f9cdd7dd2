"""Evaluation: benchmark files and metrics (POPE, CHAIR, MME, bootstrap), scoring, decoding methods, resumable
runs over items, per-benchmark runners, method comparisons and ablations, the alpha/beta sweep, the overhead
benchmark and the main job."""

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, ("ablation", "benchmarks", "comparison", "items", "main_job", "methods",
                                         "overhead", "runners", "scoring", "sweep"))
