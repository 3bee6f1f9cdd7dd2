"""Command line: ``python -m clva_lite demo | drift | premise | bench | throughput | pope | chair | mme``.

Benchmarks, one method per call (records and ``result.json`` under ``--out``, default ``runs/<bench>-<method>``)::

    python -m clva_lite pope --model toy --method clva --alpha 1 --beta 1 --split test --limit 50
    python -m clva_lite mme --model toy --method vcd
    python -m clva_lite pope --model llava-hf/llava-1.5-7b-hf --method vanilla \
        --pope-file coco_pope_random.json --image-dir val2014
    torchrun --nproc_per_node 2 -m clva_lite pope --model toy --method vanilla   # data-parallel

Errors in what was asked (unknown method, weights out of range, fitting on the test split, missing files) end
the command with a one-line message; ``main()`` itself raises them (``ValueError`` / ``FileNotFoundError``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite", description="clva-lite command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the main job on the bundled toy model")
    demo.add_argument("--out", default="runs/demo", help="folder for the table (markdown + JSON) and figures")
    demo.add_argument("--scenes", type=int, default=None, help="test scenes per benchmark (default: see demo)")
    drift = commands.add_parser("drift", help="Fig. 1 / Fig. 2b numbers of the toy model (calibration split)")
    drift.add_argument("--prompts", type=int, default=96)
    premise = commands.add_parser("premise", help="the premise report P1-P5 of a toy model (calibration split)")
    premise.add_argument("--model", default="toy", help="'toy' or a trained toy folder (default: toy)")
    premise.add_argument("--scenes", type=int, default=200, help="calibration scenes for the POPE questions")
    premise.add_argument("--head-prompts", type=int, default=64, help="calibration prompts for the head classes")
    premise.add_argument("--out", default="runs/premise/report.json", help="the report as JSON; a .png beside it")
    bench = commands.add_parser("bench", help="generate-time and peak-memory ratios against stock SDPA")
    bench.add_argument("--model", default="toy", help="'toy', a hub id or a folder (default: toy)")
    bench.add_argument("--random-weights-from-config", default=None, metavar="SHAPE",
                       help="benchmark a random-weight model of a known shape instead, e.g. llava-1.5-7b")
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--device", default=None)
    bench.add_argument("--dtype", default="float16", help="dtype for --random-weights-from-config")
    bench.add_argument("--out", default="runs/bench.json")
    bench.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice); never more than free cores when timing")
    speed = commands.add_parser("throughput", help="questions per second: the evaluator against a batch-1 loop")
    speed.add_argument("--model", default="toy", help="'toy', a hub id or a folder (default: toy)")
    speed.add_argument("--random-weights-from-config", default=None, metavar="SHAPE",
                       help="instead of --model: a LLaVA of this shape with random weights (llava-1.5-7b, or "
                            "llava-tiny-576 for a CPU smoke run) asked the toy's questions; timing only")
    speed.add_argument("--dtype", default=None, help="with --random-weights-from-config (default: float16 on CUDA)")
    speed.add_argument("--scenes", type=int, default=20, help="toy test scenes (18 POPE questions each)")
    speed.add_argument("--pope-file", default=None, help="a published POPE file instead of toy questions")
    speed.add_argument("--image-dir", default=None, help="the images of --pope-file")
    speed.add_argument("--images", type=int, default=20, help="images of --pope-file to ask about")
    speed.add_argument("--method", default="vanilla", choices=("vanilla", "clva", "pai", "vcd"),
                       help="decoding method (clva: per-input head classes, alpha = beta = 1)")
    speed.add_argument("--batch-size", type=int, default=128)
    speed.add_argument("--loop-questions", type=int, default=None,
                       help="time the batch-1 loop on the first N questions only (default: all)")
    speed.add_argument("--device", default=None)
    speed.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    speed.add_argument("--out", default="runs/throughput.json")
    for name in ("pope", "chair", "mme"):
        _benchmark_parser(commands, name)
    args = parser.parse_args(argv)

    if args.command == "bench":
        from .eval.overhead import format_results, run_benchmark

        results = run_benchmark(args.model, random_weights_from_config=args.random_weights_from_config,
                                new_tokens=args.new_tokens, repeats=args.repeats, out=args.out,
                                device=args.device, dtype=args.dtype, threads=args.threads)
        print(format_results(results))
        print(f"wrote {args.out}")
    elif args.command == "throughput":
        run_throughput_command(args)
    elif args.command == "drift":
        from .analysis.drift import drift_report, format_report
        from .models.loading import load_model
        from .toy.questions import calibration_prompts

        loaded = load_model("toy", device="cpu")
        images, questions = calibration_prompts(args.prompts)
        print(format_report(drift_report(loaded, images, questions, split="calibration")))
    elif args.command == "premise":
        run_premise_command(args)
    elif args.command == "demo":
        from .eval.main_job import run_demo

        summary = run_demo(out=args.out, n_scenes=args.scenes)
        print(json.dumps(summary.get("files", {}), indent=2))
    else:
        run_benchmark_command(args)


def run_premise_command(args):
    """``toy_premise_report`` on ``args.model``: print the verdicts, write the JSON report and its chart."""
    import time

    import matplotlib

    matplotlib.use("Agg")
    import torch

    from .analysis.premise import toy_premise_report
    from .models.loading import load_model
    from .plots import premise_chart

    torch.set_grad_enabled(False)
    loaded = load_model(args.model, device="cpu")
    start = time.perf_counter()
    report = toy_premise_report(loaded, scenes=args.scenes, head_prompts=args.head_prompts)
    report.details["command"] = {"model": args.model, "scenes": args.scenes, "head_prompts": args.head_prompts,
                                 "seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    report.save(out)
    premise_chart(report, title=f"Premise report, {args.model} (calibration split, 95 % CI)").savefig(
        out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(report.summary())
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


def run_throughput_command(args) -> dict:
    """Load the model, pick the questions and the method, measure, print and write ``args.out``."""
    import torch

    from .attention.clva import CLVAConfig
    from .eval.items import pope_file_items, question_items
    from .eval.methods import clva_method, pai_method, vanilla, vcd_method
    from .eval.throughput import format_throughput, measure_throughput
    from .models.loading import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.random_weights_from_config:
        from .eval.overhead import random_weights_loaded

        loaded = random_weights_loaded(args.random_weights_from_config, device=args.device,
                                       dtype=getattr(torch, args.dtype) if args.dtype else None)
    else:
        loaded = load_model(args.model, device=args.device)
    if args.pope_file:
        from .eval.benchmarks import load_pope

        if not args.image_dir:
            raise SystemExit("--pope-file needs --image-dir (the folder of its images)")
        items = pope_file_items(load_pope(args.pope_file), args.image_dir, limit=args.images)
    else:
        from .toy.questions import pope_questions

        items = question_items([q for sampling in ("random", "popular", "adversarial")
                                for q in pope_questions("test", args.scenes, sampling)])
    method = {"vanilla": vanilla, "pai": pai_method, "vcd": vcd_method,
              "clva": lambda: clva_method(CLVAConfig(head_source="per-input"))}[args.method]()
    result = measure_throughput(loaded, items, method=method, batch_size=args.batch_size,
                                loop_items=args.loop_questions)
    print(format_throughput(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def _benchmark_parser(commands, name: str) -> None:
    from .eval.methods import METHOD_KINDS
    from .toy.questions import MME_SUBTASKS, POPE_SAMPLINGS

    what = {"pope": "POPE (toy, or a published question file with --pope-file)", "chair": "toy CHAIR captions",
            "mme": "toy MME-style pairs (existence, count, position, color)"}[name]
    sub = commands.add_parser(name, help=f"{what} with one decoding method; scores with 95 % bootstrap CIs")
    sub.add_argument("--model", default="toy", help="'toy', 'toy-untrained', a hub id or a folder (default: toy)")
    sub.add_argument("--method", default="vanilla", choices=METHOD_KINDS)
    sub.add_argument("--alpha", type=float, default=None,
                     help="CLVA: positive-anchor weight in [0, 20]; PAI/VCD: their alpha (default: the config's)")
    sub.add_argument("--beta", type=float, default=None, help="CLVA: negative-anchor weight; VCD: its beta")
    sub.add_argument("--split", default="test", help="toy split to evaluate on (default: test)")
    sub.add_argument("--fit-split", default="calibration",
                     help="split CLVA's head classes are fitted on; only 'calibration' is allowed")
    sub.add_argument("--head-prompts", type=int, default=64, help="calibration prompts for CLVA's head classes")
    sub.add_argument("--head-criterion", choices=("share", "focus", "share_focus"), default=None,
                     help="CLVA: what makes a head vision-sensitive (default: share; see docs/benchmarks.md)")
    sub.add_argument("--limit", type=int, default=None, help="number of scenes (toy) or images (--pope-file)")
    sub.add_argument("--batch-size", type=int, default=None)
    sub.add_argument("--max-new-tokens", type=int, default=None)
    sub.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    sub.add_argument("--out", default=None, help=f"folder for records and result.json (default: runs/{name}-<method>)")
    if name == "pope":
        sub.add_argument("--samplings", nargs="+", default=list(POPE_SAMPLINGS), choices=POPE_SAMPLINGS)
        sub.add_argument("--pope-file", default=None,
                         help="a published POPE question file (JSON lines: question_id, image, text, label)")
        sub.add_argument("--image-dir", default=None, help="folder holding the images named in --pope-file")
        sub.add_argument("--calibration-file", default=None,
                         help="with --pope-file and --method clva: a POPE-format file about *other* images, used to "
                              "fit CLVA's head classes")
        sub.add_argument("--calibration-image-dir", default=None, help="images of --calibration-file "
                                                                       "(default: --image-dir)")
    if name == "mme":
        sub.add_argument("--subtasks", nargs="+", default=list(MME_SUBTASKS), choices=MME_SUBTASKS)


def _device(requested: str | None) -> str | None:
    """In a multi-process CUDA launch, each process takes the GPU of its LOCAL_RANK."""
    import os

    import torch

    if requested is None and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return requested


def _check_benchmark_args(args) -> None:
    """Contradictory or impossible requests, refused before any model is loaded."""
    if args.fit_split != "calibration":
        raise ValueError(f"--fit-split {args.fit_split}: head classes may only be fitted on the calibration split "
                         "(fitting anything on the test split is refused)")
    if args.head_criterion is not None and args.method != "clva":
        raise ValueError(f"--head-criterion only applies to --method clva, not {args.method!r}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} must be a positive number of scenes/images")
    pope_file = getattr(args, "pope_file", None)
    if pope_file is not None and args.image_dir is None:
        raise ValueError("--pope-file needs --image-dir, the folder holding its images (e.g. COCO val2014)")
    if pope_file is None and getattr(args, "image_dir", None) is not None:
        raise ValueError("--image-dir only applies with --pope-file")
    if pope_file is None and getattr(args, "calibration_file", None) is not None:
        raise ValueError("--calibration-file only applies with --pope-file")
    if pope_file is not None and args.method == "clva" and args.calibration_file is None:
        raise ValueError("--method clva on a POPE file needs --calibration-file (POPE-format questions about other "
                         "images) to fit its head classes; the evaluated file is a test set and is never fitted on")


def run_benchmark_command(args) -> dict | None:
    """Build the method (fitting CLVA's head classes on calibration data), run the benchmark, print and write."""
    from .eval.items import check_images, pope_file_items
    from .eval.runners import (
        MAX_NEW_TOKENS,
        RUNNERS,
        build_method,
        distributed_launch,
        fit_file_heads,
        fit_toy_heads,
        format_result,
        method_config,
        run_pope_file,
        write_result,
    )
    from .models.loading import load_model
    from .toy.world import as_split

    _check_benchmark_args(args)
    if getattr(args, "pope_file", None) is None:
        as_split(args.split)  # an unknown split fails before the model loads
    method_config(args.method, alpha=args.alpha, beta=args.beta)  # bad weights fail before the model loads
    out = Path(args.out or f"runs/{args.command}-{args.method}")
    pope_file = getattr(args, "pope_file", None)
    if pope_file is not None:  # missing question or image files fail before the model loads
        from .eval.benchmarks import load_pope

        evaluated = pope_file_items(load_pope(pope_file), args.image_dir, limit=args.limit)
        check_images(evaluated)
    loaded = load_model(args.model, device=_device(args.device))
    heads, extra = None, {}
    if args.method == "clva":
        if pope_file is not None:
            calibration = pope_file_items(load_pope(args.calibration_file),
                                          args.calibration_image_dir or args.image_dir, split="calibration")
            heads = fit_file_heads(loaded, calibration, evaluated, n_prompts=args.head_prompts)
            extra["head_classes_data"] = f"{Path(args.calibration_file).name} ({args.head_prompts} prompts at most)"
        else:
            heads = fit_toy_heads(loaded, split=args.fit_split, n_prompts=args.head_prompts)
            extra["head_classes_data"] = f"toy calibration_prompts({args.head_prompts})"
        extra["alpha_beta"] = "given on the command line" if args.alpha is not None or args.beta is not None \
            else "CLVAConfig defaults"
        if args.head_criterion is not None:
            heads = heads.with_criterion(args.head_criterion)
    method = build_method(args.method, alpha=args.alpha, beta=args.beta, heads=heads)
    common = {"records_dir": out / "records", "fitted_extra": extra, "distributed": distributed_launch()}
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if pope_file is not None:
        result = run_pope_file(loaded, method, pope_file, args.image_dir, limit=args.limit,
                               max_new_tokens=args.max_new_tokens or MAX_NEW_TOKENS["pope-file"], **common)
    else:
        options = {"samplings": args.samplings} if args.command == "pope" else \
            {"subtasks": args.subtasks} if args.command == "mme" else {}
        result = RUNNERS[args.command](loaded, method, split=args.split, limit=args.limit,
                                      max_new_tokens=args.max_new_tokens or MAX_NEW_TOKENS[args.command],
                                      **options, **common)
    if common["distributed"]:
        from .eval.items import process_state

        process_state(loaded).destroy_process_group()
    if result is None:  # a non-main process of a distributed launch: the main process reports
        return None
    print(format_result(result))
    print(f"wrote {write_result(result, out)} (records: {result['records_file']})")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
