"""The main job (``make demo``): vanilla, CLVA, PAI and VCD on the bundled toy model, held-out.

1. head classes fitted on the calibration split (each head's visual share and focus);
2. CLVA's head criterion and alpha/beta chosen together on the calibration split by one rule
   (:data:`~clva_lite.eval.sweep.CHOICE_RULE`): the best POPE-adversarial F1 on ``CALIBRATION_SCENES`` calibration
   scenes over criterion x alpha x beta (``alpha_beta_calibration.png``, one panel per criterion). The chosen
   criterion's alpha/beta grid is also scored by CHAIR_s on ``CHAIR_CALIBRATION_SCENES`` calibration captions
   (``alpha_beta_chair_s_calibration.png``, values in ``table.json``) to show the caption side of the trade-off; it
   does not take part in the choice;
3. every method evaluated once on the test split: POPE (random / popular / adversarial) and toy CHAIR, with
   95 % bootstrap CIs and paired method-minus-vanilla deltas;
4. generate-time and peak-memory ratios against stock SDPA;
5. one table printed, written as markdown + JSON, and figures, under ``runs/demo``. ``table.json`` also keeps
   the wall-clock seconds of each phase (``seconds_by_phase``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from ..analysis.calibration import calibrate_heads  # noqa: E402
from ..attention.clva import CLVAConfig  # noqa: E402
from ..models.loading import load_model  # noqa: E402
from ..plots.figures import criterion_grid, weight_grid  # noqa: E402
from ..toy.questions import POPE_SAMPLINGS, calibration_prompts, pope_questions  # noqa: E402
from ..toy.world import Split, generate_scenes  # noqa: E402
from .items import caption_items, question_items, run_items, shared_prefixes  # noqa: E402
from .methods import clva_method, pai_method, vanilla, vcd_method  # noqa: E402
from .overhead import benchmark, default_methods  # noqa: E402
from .scoring import format_ci, paired_delta, score_chair, score_pope  # noqa: E402
from .sweep import choose_on_calibration, sweep_weights  # noqa: E402

TEST_SCENES = 150
CALIBRATION_SCENES = 60
# Captions per point of the CHAIR_s grid (9 points x this many 24-token captions): kept small so the whole demo
# stays within its time budget (one generate batch of 64 per grid point).
CHAIR_CALIBRATION_SCENES = 64
HEAD_PROMPTS = 64
BATCH_SIZE = 128
ALPHAS = (0.0, 1.0, 2.0)
BETAS = (0.0, 1.0, 2.0)


def run_demo(out: str | Path = "runs/demo", n_scenes: int | None = None) -> dict:
    start = time.time()
    phases: dict[str, float] = {}
    clock = [start]

    def phase(name: str) -> None:
        now = time.time()
        phases[name], clock[0] = round(now - clock[0], 1), now

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_scenes = n_scenes or TEST_SCENES
    loaded = load_model("toy", device="cpu")

    images, questions = calibration_prompts(HEAD_PROMPTS)
    fitted = calibrate_heads(loaded, images, questions, split="calibration")
    phase("head_classes")
    sweep = pope_grid(loaded, fitted, out)
    heads, criterion = sweep["heads"], sweep["best"]["criterion"]
    alpha, beta = sweep["best"]["alpha"], sweep["best"]["beta"]
    phase("criterion_alpha_beta_pope_grid")
    chair_sweep = chair_grid(loaded, heads, out)
    phase("alpha_beta_chair_grid")

    methods = [vanilla(), clva_method(CLVAConfig(alpha=alpha, beta=beta), heads), pai_method(), vcd_method()]
    pope_items = question_items([q for s in POPE_SAMPLINGS for q in pope_questions(Split.TEST, n_scenes, s)])
    captions = caption_items(Split.TEST, n_scenes)
    records = {}
    store = shared_prefixes(loaded, True)  # every method continues the same image prefixes (VCD: its own)
    for method in methods:
        records[method.name] = {
            "pope": run_items(loaded, method, pope_items, batch_size=BATCH_SIZE, max_new_tokens=3,
                              records_path=out / "records" / f"{method.name}.jsonl", desc=f"{method.name} POPE",
                              shared_prefix=store or False, stop_at_sentence_end=True),
            "chair": run_items(loaded, method, captions, batch_size=BATCH_SIZE, max_new_tokens=24,
                               records_path=out / "records" / f"{method.name}.jsonl",
                               desc=f"{method.name} captions", shared_prefix=store or False),
        }

    phase("test_runs")
    inputs = loaded.inputs([generate_scenes(Split.CALIBRATION, 1)[0].image()], ["describe the image ."])
    overhead = benchmark(loaded, inputs, default_methods(loaded, heads), new_tokens=16, repeats=2)
    phase("overhead")

    table = {}
    base = records["vanilla"]
    for method in methods:
        rec = records[method.name]
        pope = score_pope(rec["pope"], metrics=("accuracy", "f1"))
        row = {"pope": pope, "chair": score_chair(rec["chair"], metrics=("chair_s", "chair_i", "recall"))}
        if method.name != "vanilla":
            row["delta_vs_vanilla"] = {
                **{f"pope_{s}_f1": paired_delta([r for r in base["pope"] if r["kind"] == s],
                                                [r for r in rec["pope"] if r["kind"] == s], "pope", "f1")
                   for s in POPE_SAMPLINGS},
                "chair_s": paired_delta(base["chair"], rec["chair"], "chair", "chair_s"),
            }
        bench_name = {"CLVA": "CLVA", "PAI": "PAI (with guidance)", "VCD": "VCD"}.get(method.name)
        row["time_ratio"] = overhead["methods"][bench_name]["time_ratio"] if bench_name else 1.0
        row["memory_ratio"] = overhead["methods"][bench_name]["memory_ratio"] if bench_name else 1.0
        row["method"] = method.describe()
        table[method.name] = row

    summary = {
        "model": "toy", "test_scenes": n_scenes, "evaluated_on": "test",
        "fitted_on": {"head_classes": heads.source, "head_criterion": sweep["split"], "alpha_beta": sweep["split"]},
        "head_criterion": criterion,
        "alpha_beta_grid": {
            "alphas": list(ALPHAS), "betas": list(BETAS), "criteria": sweep["criteria"], "split": sweep["split"],
            "chosen_by": f"{sweep['rule']} ({CALIBRATION_SCENES} calibration scenes)",
            "pope_adversarial_f1_by_criterion": {c: sweep["values"][k].tolist()
                                                 for k, c in enumerate(sweep["criteria"])},
            "pope_adversarial_f1": sweep["values"][sweep["criteria"].index(criterion)].tolist(),
            "chosen": [alpha, beta], "chosen_criterion": criterion,
            "chair_s": chair_sweep["values"].tolist(), "chair_s_split": chair_sweep["split"],
            "chair_s_captions": CHAIR_CALIBRATION_SCENES, "chair_s_lowest_at": list(chair_sweep["best"]),
        },
        "table": table, "overhead": overhead,
    }
    summary["verdicts"] = delta_verdicts(table)
    phase("scoring")
    summary["seconds_by_phase"] = phases
    summary["seconds"] = round(time.time() - start, 1)
    markdown = render_table(summary)
    (out / "table.md").write_text(markdown)
    (out / "table.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(markdown)
    summary["files"] = {"table": str(out / "table.md"), "json": str(out / "table.json"),
                        "figure": str(out / "alpha_beta_calibration.png"),
                        "figure_chair_s": str(out / "alpha_beta_chair_s_calibration.png"),
                        "records": str(out / "records")}
    return summary


def pope_grid(loaded, heads, out: Path) -> dict:
    """Head criterion x alpha x beta scored by POPE-adversarial F1 on ``CALIBRATION_SCENES`` calibration scenes:
    this picks CLVA's criterion and alpha/beta (``sweep["best"]``, ``sweep["heads"]``). Saves
    ``alpha_beta_calibration.png``; values (criteria, alphas, betas)."""
    items = question_items(pope_questions(Split.CALIBRATION, CALIBRATION_SCENES, "adversarial"))
    sweep = choose_on_calibration(loaded, heads, items, alphas=ALPHAS, betas=BETAS, batch_size=BATCH_SIZE)
    figure = criterion_grid(sweep, title="POPE-adversarial F1 on the calibration split (chosen cell outlined)")
    figure.savefig(out / "alpha_beta_calibration.png", dpi=120)
    plt.close(figure)
    return sweep


def chair_grid(loaded, heads, out: Path) -> dict:
    """The chosen criterion's grid scored by CHAIR_s on ``CHAIR_CALIBRATION_SCENES`` calibration captions (24 new
    tokens each),
    shown for the caption side of the trade-off; it does not choose alpha/beta. Saves
    ``alpha_beta_chair_s_calibration.png``."""
    items = caption_items(Split.CALIBRATION, CHAIR_CALIBRATION_SCENES)
    sweep = sweep_weights(loaded, heads, items, ALPHAS, BETAS, benchmark="chair", metric="chair_s",
                          max_new_tokens=24, batch_size=BATCH_SIZE)
    _save_grid(sweep, f"CHAIR_s ({CHAIR_CALIBRATION_SCENES} calibration captions)",
               out / "alpha_beta_chair_s_calibration.png")
    return sweep


def _save_grid(sweep: dict, metric: str, path: Path) -> None:
    figure = weight_grid(sweep["values"], sweep["alphas"], sweep["betas"], metric=metric, answers=sweep["n_items"])
    figure.savefig(path, dpi=120)
    plt.close(figure)


def render_table(summary: dict) -> str:
    alpha, beta = summary["alpha_beta_grid"]["chosen"]
    lines = [
        f"# clva-lite main job: toy model, test split ({summary['test_scenes']} scenes per benchmark)",
        "",
        f"Head classes, the head criterion ({summary['head_criterion']!r}) and CLVA's alpha={alpha:g}, beta={beta:g} "
        "were fitted on the calibration split; every number below is from the test split. Cells: value % [95 % "
        "bootstrap CI over scenes]. Deltas are paired (method minus vanilla, same questions).",
        "",
        f"Choice rule: {summary['alpha_beta_grid']['chosen_by']}. POPE-adversarial F1 per criterion:",
        "",
        *criterion_table(summary["alpha_beta_grid"]),
        "",
        f"The chosen criterion's grid, with CHAIR_s ({summary['alpha_beta_grid']['chair_s_captions']} calibration "
        "captions) shown for the trade-off only:",
        "",
        *grid_table(summary["alpha_beta_grid"]),
        "",
        "| method | POPE random acc | POPE popular acc | POPE adversarial acc | POPE adversarial F1 | CHAIR_s | "
        "CHAIR_i | caption recall | time x | memory x |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for name, row in summary["table"].items():
        p, c = row["pope"], row["chair"]
        lines.append(
            f"| {name} | {format_ci(p['random']['accuracy'])} | {format_ci(p['popular']['accuracy'])} | "
            f"{format_ci(p['adversarial']['accuracy'])} | {format_ci(p['adversarial']['f1'])} | "
            f"{format_ci(c['chair_s'])} | {format_ci(c['chair_i'])} | {format_ci(c['recall'])} | "
            f"{row['time_ratio']:.2f} | {row['memory_ratio']:.3f} |")
    lines += ["", "| method | Δ F1 random | Δ F1 popular | Δ F1 adversarial | Δ CHAIR_s |",
              "| --- | --- | --- | --- | --- |"]
    for name, row in summary["table"].items():
        if "delta_vs_vanilla" in row:
            d = row["delta_vs_vanilla"]
            lines.append(f"| {name} | {format_ci(d['pope_random_f1'])} | {format_ci(d['pope_popular_f1'])} | "
                         f"{format_ci(d['pope_adversarial_f1'])} | {format_ci(d['chair_s'])} |")
    lines += ["", f"Verdicts: 'better' / 'worse' only where Holm's procedure over all {len(summary['verdicts'])} "
              "deltas above rejects 'no difference' at family-wise error 5 % (paired bootstrap p-values):", "", "```",
              *summary["verdicts"], "```"]
    overhead = summary["overhead"]
    lines += ["", f"Overhead: generate time and peak memory vs stock SDPA, {overhead['new_tokens']} new tokens, "
              f"median of {overhead['repeats']} interleaved runs on {overhead['device']}. "
              f"Total wall time {summary['seconds']} s.", ""]
    return "\n".join(lines)


def delta_verdicts(table: dict) -> list[str]:
    """One verdict line per paired delta in the table, Holm-corrected over all of them (see ``verdicts``)."""
    import pandas as pd

    from .comparison import verdicts

    rows = [{"method": name, "metric": metric.replace("pope_", "Δ ").replace("_f1", " f1") if metric != "chair_s"
             else "Δ chair_s", **{k: 100 * delta[k] for k in ("value", "low", "high")}, "p": delta["p"]}
            for name, row in table.items() for metric, delta in row.get("delta_vs_vanilla", {}).items()]
    return verdicts(pd.DataFrame(rows))


def criterion_table(grid: dict) -> list[str]:
    """Markdown rows: calibration POPE-adversarial F1 for each criterion and (alpha, beta), the chosen one marked."""
    lines = ["| criterion | " + " | ".join(f"α={a:g}, β={b:g}" for a in grid["alphas"] for b in grid["betas"]) + " |",
             "| --- |" + " --- |" * (len(grid["alphas"]) * len(grid["betas"]))]
    for criterion, values in grid["pope_adversarial_f1_by_criterion"].items():
        cells = []
        for i, a in enumerate(grid["alphas"]):
            for j, b in enumerate(grid["betas"]):
                chosen = criterion == grid["chosen_criterion"] and [a, b] == list(grid["chosen"])
                cells.append(f"**{values[i][j]:.3f}**" if chosen else f"{values[i][j]:.3f}")
        lines.append(f"| {criterion} | " + " | ".join(cells) + " |")
    return lines


def grid_table(grid: dict) -> list[str]:
    """Markdown rows: for each (alpha, beta), calibration POPE-adversarial F1 and CHAIR_s (chosen point marked)."""
    lines = ["| alpha \\ beta | " + " | ".join(f"{b:g}" for b in grid["betas"]) + " |",
             "| --- |" + " --- |" * len(grid["betas"])]
    for i, a in enumerate(grid["alphas"]):
        cells = []
        for j, b in enumerate(grid["betas"]):
            mark = " (chosen)" if [a, b] == list(grid["chosen"]) else ""
            cells.append(f"F1 {grid['pope_adversarial_f1'][i][j]:.3f}, CHAIR_s {grid['chair_s'][i][j]:.3f}{mark}")
        lines.append(f"| {a:g} | " + " | ".join(cells) + " |")
    return lines
