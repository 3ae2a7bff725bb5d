"""The paper's comparison, tuned alike and evaluated on held-out questions: SFT, DPO, PPO_seq, TLCR_fixed,
TLCR, TLCR w/o negative (positive rewards only), TLCR w/o positive (negative rewards only).

Per seed, the `tlcr.pipeline` stages (the same as `tlcr demo`) build one SFT policy, chosen-reviser labels,
one discriminator and one sequence reward model, served by ONE reward service; every method starts from
that SFT policy.

Held out: the controlled task splits its questions (entity × relations) once into train / validation /
test (`ControlledTask.question_split`). Every SFT, reward-model and PPO prompt is a train question;
validation questions are used only to tune, test questions only for the final numbers.

Tuning, the same budget for every method: a 2 × 2 grid (PPO modes: lr × KL coefficient β; DPO: lr × β),
trained on the first seed and scored on the validation questions by the oracle; the best point of each
method is then trained on every seed and evaluated once on the test questions. PPO_seq's sequence-RM
scores are z-scored by the SFT policy's samples (`PPOConfig.normalize_sequence_scores`), as is standard.

Reported: per method the test oracle, helpfulness, completeness, response length and KL to SFT (mean
over seeds); paired bootstrap 95 % intervals over test prompts and seeds for the differences vs SFT and
vs TLCR, with a sentence per ordering the paper claims; the oracle at a common KL from each method's
validation oracle-vs-KL curve; response length over PPO steps per mode (Fig. 7); reward sanity of the
served discriminator. Times are printed against the 30-minute budget.

    python benchmarks/compare_methods.py --seeds 0,1,2 --out runs/compare          # ≈ budget: see docs/results.md
    python benchmarks/compare_methods.py --budget smoke --seeds 0 --methods tlcr --out runs/compare-smoke

Writes `<out>/comparison.json` (every number), `comparison.md`, `comparison.png`, `fig7_length.png`,
`oracle_vs_kl.png`. Finished runs are reused (`result.json` per run), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, where benchmarks/service.py would hide the
# `service` package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tlcr.core.reward_modes import PolicyRewardMode  # noqa: E402
from tlcr.demo import DemoConfig, StageLog, quiet_libraries  # noqa: E402
from tlcr.evaluation.bootstrap import Interval, paired_bootstrap  # noqa: E402

METHODS = ("sft", "dpo", "seq", "tlcr_fixed", "tlcr", "tlcr_positive_only", "tlcr_negative_only")
METHOD_NAMES = {"sft": "SFT", "dpo": "DPO", **{m.value: m.label for m in PolicyRewardMode}}
PPO_GRID = {"ppo_learning_rate": (5e-5, 1.5e-4), "ppo_kl_coef": (0.05, 0.2)}
DPO_GRID = {"dpo_learning_rate": (1e-5, 4e-5), "dpo_beta": (0.1, 0.3)}
BUDGET_MINUTES = 30
# (claim, method a, method b, metric): "a > b" on the test split
CLAIMS = (("TLCR > SFT", "tlcr", "sft", "oracle"), ("TLCR > PPO_seq", "tlcr", "seq", "oracle"),
          ("PPO_seq > SFT", "seq", "sft", "oracle"), ("TLCR_fixed > PPO_seq", "tlcr_fixed", "seq", "oracle"),
          ("TLCR ≥ TLCR_fixed", "tlcr", "tlcr_fixed", "oracle"), ("TLCR > DPO", "tlcr", "dpo", "oracle"),
          ("w/o negative longer than TLCR", "tlcr_positive_only", "tlcr", "length"),
          ("TLCR longer than w/o positive", "tlcr", "tlcr_negative_only", "length"),
          # the mechanisms behind the oracle: negative rewards remove inserted faults, positive ones add details
          ("TLCR: fewer style faults than SFT", "sft", "tlcr", "style faults"),
          ("TLCR: more details than w/o positive", "tlcr", "tlcr_negative_only", "details"))
PER_RESPONSE = {"oracle": "oracle_score", "helpful": "helpful", "complete": "complete", "length": "tokens",
                "wrong facts": "wrong", "style faults": "style_faults", "details": "details"}


def budget_config(budget: str, seed: int) -> DemoConfig:
    """`full`: the demo's recipe; `smoke`: the demo's CI budget."""
    seeds = {"seed": seed, "data_seed": 42 + seed}
    if budget == "full":
        return DemoConfig(**seeds)
    if budget == "smoke":
        return DemoConfig.smoke(**seeds)
    raise ValueError(f"unknown budget {budget!r}: choose full or smoke")


def grid(method: str, budget: str) -> list[dict[str, float]]:
    """The tuning grid of a method (one point for SFT; the first point alone for the smoke budget)."""
    if method == "sft":
        return [{}]
    space = DPO_GRID if method == "dpo" else PPO_GRID
    points = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    return points[:1] if budget == "smoke" else points


def point_name(point: Mapping[str, float]) -> str:
    return "-".join(f"{key.split('_', 1)[1]}{value:g}" for key, value in point.items()) or "base"


# ------------------------------------------------------------------------------------------------ one seed

@dataclass
class SeedBase:
    config: DemoConfig
    dir: Path
    data: Any
    sft: Path
    discriminator: Path
    reward_model: Path
    stages: dict[str, Any]


def build_seed(config: DemoConfig, seed_dir: Path, log: StageLog) -> SeedBase:
    """The seed's shared stages, or the ones an interrupted run of the same seed already finished."""
    from tlcr import pipeline

    done = seed_dir / "base.json"
    if done.exists():
        saved = json.loads(done.read_text())
        data = pipeline.PreparedData(Path(saved["base"]), {}, {k: Path(v) for k, v in saved["files"].items()})
        return SeedBase(config, seed_dir, data, Path(saved["sft"]), Path(saved["discriminator"]),
                        Path(saved["reward_model"]), saved["stages"])
    with log.stage(f"seed {config.seed}: data, SFT, labels, discriminator, reward model"):
        data, _ = pipeline.prepare_data(config, seed_dir)
        sft = pipeline.sft_stage(config, data, seed_dir)
        labels_path, labeling = pipeline.label_stage(data, sft, seed_dir)
        disc, disc_metrics = pipeline.discriminator_stage(config, labels_path, sft, seed_dir)
        rm, rm_metrics = pipeline.reward_model_stage(config, data, sft, seed_dir)
    stages = {"labeling": labeling, "discriminator": disc_metrics.get("eval", {}),
              "reward_model": rm_metrics.get("eval", {})}
    done.write_text(json.dumps({"base": str(data.base), "files": {k: str(v) for k, v in data.files.items()},
                                "sft": str(sft), "discriminator": str(disc), "reward_model": str(rm),
                                "stages": stages}, indent=1, default=str))
    return SeedBase(config, seed_dir, data, sft, disc, rm, stages)


def train_method(base: SeedBase, method: str, point: Mapping[str, float], reward_url: str) -> Path:
    """The policy of `method` trained with the grid point's settings (SFT: the SFT policy itself)."""
    from tlcr import pipeline

    if method == "sft":
        return base.sft
    config = replace(base.config, **point)
    out = base.dir / "runs" / method / point_name(point)
    trained = out / "models" / "dpo" if method == "dpo" else out / "ppo" / "policy"
    if (trained / "config.json").exists():  # the tuning seed's chosen point, trained while tuning
        return trained
    if method == "dpo":
        return pipeline.dpo_stage(config, base.sft, base.data, out)
    run, _ = pipeline.ppo_stage(config, method, base.sft, reward_url, base.discriminator, base.data.files["ppo"],
                                out / "ppo")
    return run / "policy"


def evaluate_policy(policy: Path, sft: Path, prompts: Sequence[str], config: DemoConfig) -> dict[str, Any]:
    """Per response: oracle score, helpful, complete, length in policy tokens; and the policy's KL to SFT."""
    from tlcr import pipeline
    from tlcr.evaluation.evaluate import EvalConfig, generate_responses_with_lengths

    task = pipeline.controlled_task()
    eval_config = EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=64, do_sample=config.eval_do_sample,
                             top_p=config.eval_top_p, seed=config.seed)
    texts, lengths = generate_responses_with_lengths(policy, prompts, eval_config)
    rows = [response_row(task, prompt, text, length) for prompt, text, length in zip(prompts, texts, lengths,
                                                                                      strict=True)]
    kl = 0.0 if policy == sft else pipeline.policy_kl(policy, sft, prompts, max_new_tokens=config.max_new_tokens,
                                                      seed=config.seed)
    summary = {key: statistics.fmean(r[key] for r in rows) for key in PER_RESPONSE.values()}
    return {"rows": rows, "summary": {**summary, "kl_to_sft": kl}}


def response_row(task: Any, prompt: str, text: str, length: float) -> dict[str, Any]:
    """One evaluated response: the oracle's score and the parts it is made of, and the length in policy tokens."""
    score = task.oracle(prompt, text)
    return {"prompt": prompt, "response": text, "oracle_score": score.score, "helpful": float(score.helpful),
            "complete": float(score.complete), "tokens": float(length), "wrong": float(score.wrong),
            "style_faults": float(score.rude + score.repetitions + score.hedges),
            "details": score.details / score.asked}


def cached(path: Path, compute: Any) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def run_seed(config: DemoConfig, methods: Sequence[str], chosen: dict[str, dict[str, float]] | None,
             budget: str, seed_dir: Path, console: Console) -> dict[str, Any]:
    """Tune (when `chosen` is None) on validation questions, then evaluate each method's chosen point on test."""
    from tlcr import pipeline
    from tlcr.core.models import load_tokenizer
    from tlcr.evaluation.reward_sanity import reward_sanity, sanity_rows
    from tlcr.service.client import TokenRewardClient

    log = StageLog(console)
    base = build_seed(config, seed_dir, log)
    validation = pipeline.held_out_prompts("validation", config.eval_samples_per_prompt, config.eval_prompts)
    test = pipeline.held_out_prompts("test", config.eval_samples_per_prompt, config.eval_prompts)
    tuning: dict[str, list[dict[str, Any]]] = {}
    service = pipeline.start_reward_service(base.discriminator, base.reward_model, seed_dir)
    try:
        with TokenRewardClient(service.url) as client:
            sanity = reward_sanity(client, load_tokenizer(base.discriminator), pipeline.controlled_task(),
                                   part="validation", seed=config.seed)
        for label, value in sanity_rows(sanity):
            console.print(f"  reward sanity — {label}: {value}")
        if chosen is None:
            chosen = {}
            for method in methods:
                with log.stage(f"seed {config.seed}: tune {METHOD_NAMES[method]} on validation"):
                    tuning[method] = []
                    for point in grid(method, budget):
                        run_dir = seed_dir / "runs" / method / point_name(point)
                        result = cached(run_dir / "validation.json", lambda m=method, p=point: evaluate_policy(
                            train_method(base, m, p, service.url), base.sft, validation, config))
                        tuning[method].append({"point": point, **result["summary"]})
                        console.print(f"  {point_name(point)}: oracle {result['summary']['oracle_score']:.3f}, "
                                      f"KL {result['summary']['kl_to_sft']:.2f}")
                    chosen[method] = max(tuning[method], key=lambda r: r["oracle_score"])["point"]
        test_results = {}
        for method in methods:
            with log.stage(f"seed {config.seed}: {METHOD_NAMES[method]} ({point_name(chosen[method])}) on test"):
                run_dir = seed_dir / "runs" / method / point_name(chosen[method])
                test_results[method] = cached(run_dir / "test.json", lambda m=method: evaluate_policy(
                    train_method(base, m, chosen[m], service.url), base.sft, test, config))
    finally:
        service.stop()
    return {"seed": config.seed, "chosen": chosen, "tuning": tuning, "test": test_results, "sanity": sanity,
            "stages": base.stages, "timings": log.timings, "config": asdict(config)}


# ------------------------------------------------------------------------------------------------ statistics

def per_prompt(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean of `key` over the samples of each prompt."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row["prompt"], []).append(float(row[key]))
    return {prompt: statistics.fmean(values) for prompt, values in groups.items()}


def matrix(per_seed: Sequence[Mapping[str, Any]], method: str, key: str) -> np.ndarray:
    """[seeds, prompts] of per-prompt means, prompts in one shared order."""
    tables = [per_prompt(result["test"][method]["rows"], key) for result in per_seed]
    prompts = sorted(tables[0])
    return np.array([[table[p] for p in prompts] for table in tables])


def differences(per_seed: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> Interval:
    key = PER_RESPONSE[metric]
    return paired_bootstrap(matrix(per_seed, a, key) - matrix(per_seed, b, key))


def add_oracle_parts(per_seed: Sequence[Mapping[str, Any]]) -> None:
    """Rows saved before the oracle's parts were recorded get them from their prompt and response."""
    from tlcr import pipeline

    task = pipeline.controlled_task()
    for result in per_seed:
        for evaluated in result["test"].values():
            for i, row in enumerate(evaluated["rows"]):
                if "style_faults" not in row:
                    evaluated["rows"][i] = response_row(task, row["prompt"], row["response"], row["tokens"])


def summary_table(per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        cells = {}
        for key in (*PER_RESPONSE.values(), "kl_to_sft"):
            values = [r["test"][method]["summary"]["kl_to_sft"] if key == "kl_to_sft" else
                      statistics.fmean(row[key] for row in r["test"][method]["rows"]) for r in per_seed]
            cells[key] = {"mean": statistics.fmean(values), "per_seed": values}
        if method != "sft":
            cells["oracle_vs_sft"] = differences(per_seed, method, "sft", "oracle").to_dict()
        if method != "tlcr" and "tlcr" in methods:
            cells["oracle_vs_tlcr"] = differences(per_seed, method, "tlcr", "oracle").to_dict()
            cells["length_vs_tlcr"] = differences(per_seed, method, "tlcr", "length").to_dict()
        table[method] = cells
    return table


def claims(per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Each ordering the paper claims: the paired difference, its interval, and a sentence."""
    out = []
    for claim, a, b, metric in CLAIMS:
        if a not in methods or b not in methods:
            continue
        interval = differences(per_seed, a, b, metric)
        weak = claim.startswith("TLCR ≥")  # "≥": holds unless significantly reversed
        if interval.significant:
            verdict = "holds (significant)" if interval.mean > 0 else "is reversed (significant)"
        else:
            verdict = "not significant: the interval includes 0" + (", so it is not contradicted" if weak else "")
        unit = {"oracle": "oracle", "length": "tokens", "details": "details per asked fact"}.get(metric, "per response")
        sentence = (f"{claim}: {METHOD_NAMES[a]} − {METHOD_NAMES[b]} = {interval.mean:+.3f} {unit} "
                    f"[95 % CI {interval.low:+.3f}, {interval.high:+.3f}] — {verdict}.")
        out.append({"claim": claim, "a": a, "b": b, "metric": metric, **interval.to_dict(), "sentence": sentence})
    return out


def matched_kl(tuning: Mapping[str, Sequence[Mapping[str, Any]]], sft_oracle: float) -> dict[str, Any]:
    """Validation oracle of each method at one common KL, interpolated along its grid points (KL 0 is SFT).

    The common KL is the smallest of the methods' largest grid KLs, so every method reaches it."""
    curves = {}
    for method, points in tuning.items():
        if method == "sft" or not points:
            continue
        pts = sorted([(0.0, sft_oracle)] + [(p["kl_to_sft"], p["oracle_score"]) for p in points])
        curves[method] = pts
    if not curves:
        return {"kl": math.nan, "oracle": {}, "curves": {}}
    common = min(max(k for k, _ in pts) for pts in curves.values())
    oracle = {m: float(np.interp(common, [k for k, _ in pts], [o for _, o in pts])) for m, pts in curves.items()}
    return {"kl": common, "oracle": oracle, "curves": curves}


# ------------------------------------------------------------------------------------------------ output

def fmt_interval(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return "—"
    star = "*" if cell["significant"] else ""
    return f"{cell['mean']:+.3f} [{cell['low']:+.3f}, {cell['high']:+.3f}]{star}"


def table_rows(table: Mapping[str, Mapping[str, Any]], kl_match: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for method, cells in table.items():
        at_kl = kl_match["oracle"].get(method)
        rows.append([METHOD_NAMES[method], f"{cells['oracle_score']['mean']:.3f}",
                     fmt_interval(cells.get("oracle_vs_sft")), fmt_interval(cells.get("oracle_vs_tlcr")),
                     f"{cells['helpful']['mean']:.2f}", f"{cells['wrong']['mean']:.2f}",
                     f"{cells['style_faults']['mean']:.3f}", f"{cells['details']['mean']:.2f}",
                     f"{cells['tokens']['mean']:.1f}", fmt_interval(cells.get("length_vs_tlcr")),
                     f"{cells['kl_to_sft']['mean']:.2f}", "—" if at_kl is None else f"{at_kl:.3f}"])
    return rows


HEADERS = ["method", "oracle", "Δ oracle vs SFT", "Δ oracle vs TLCR", "helpful", "wrong facts", "style faults",
           "details", "length", "Δ length vs TLCR", "KL", "oracle @ common KL (val.)"]


def markdown(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plot_comparison(table: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    """Test oracle and length per method, error bars = paired 95 % interval of the difference vs SFT."""
    from tlcr.evaluation.report import plt

    methods = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "oracle_score", "oracle (test)"), (axes[1], "tokens", "length (tokens)")):
        means = [table[m][key]["mean"] for m in methods]
        errs = None
        if key == "oracle_score":
            errs = np.array([[0.0, 0.0] if m == "sft" else
                             [table[m]["oracle_vs_sft"]["mean"] - table[m]["oracle_vs_sft"]["low"],
                              table[m]["oracle_vs_sft"]["high"] - table[m]["oracle_vs_sft"]["mean"]]
                             for m in methods]).T
        ax.bar(range(len(methods)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(methods)), [METHOD_NAMES[m] for m in methods], rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_length_curves(per_seed: Sequence[Mapping[str, Any]], out_root: Path, path: Path) -> dict[str, list[float]]:
    """Fig. 7 (response length over PPO steps) per reward mode, mean over seeds, of the test runs."""
    from tlcr.evaluation.report import plt
    from tlcr.trainer.metrics_log import read_metrics

    curves: dict[str, list[float]] = {}
    for method in per_seed[0]["chosen"]:
        if method not in set(PolicyRewardMode):
            continue
        runs = [read_metrics(out_root / f"seed-{r['seed']}" / "runs" / method / point_name(r["chosen"][method])
                             / "ppo") for r in per_seed]
        steps = min(len(rows) for rows in runs)
        curves[method] = [statistics.fmean(rows[i]["response_length"] for rows in runs) for i in range(steps)]
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for method, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, label=METHOD_NAMES[method])
        ax.set_xlabel("PPO step")
        ax.set_ylabel("response length (tokens)")
        ax.set_title(f"Fig. 7 — response length, mean of {len(per_seed)} seed(s)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return curves


def plot_oracle_vs_kl(kl_match: Mapping[str, Any], path: Path) -> None:
    from tlcr.evaluation.report import plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, pts in kl_match["curves"].items():
        ax.plot([k for k, _ in pts], [o for _, o in pts], marker="o", label=METHOD_NAMES[method])
    if not math.isnan(kl_match["kl"]):
        ax.axvline(kl_match["kl"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("KL to SFT (nats per response, validation)")
    ax.set_ylabel("oracle (validation)")
    ax.set_title("Oracle vs KL over each method's tuning grid (first seed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; the first one tunes (default 0,1,2)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (SFT is always evaluated)")
    parser.add_argument("--budget", default="full", choices=("smoke", "full"))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args(argv)
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        parser.error(f"--seeds needs distinct seeds, got {args.seeds!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    args.method_list = ["sft", *(m for m in METHODS if m in methods and m != "sft")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    quiet_libraries(console)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_seed: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, float]] | None = None
    reused = 0
    for seed in args.seed_list:
        seed_dir = args.out / f"seed-{seed}"
        if (seed_dir / "results.json").exists():
            console.print(f"seed {seed}: reusing {seed_dir / 'results.json'}")
            reused += 1
        result = cached(seed_dir / "results.json", lambda s=seed, d=seed_dir, c=chosen: run_seed(
            budget_config(args.budget, s), args.method_list, c, args.budget, d, console))
        chosen = chosen or result["chosen"]
        per_seed.append(result)
    add_oracle_parts(per_seed)
    table = summary_table(per_seed, args.method_list)
    tuning = per_seed[0]["tuning"]
    sft_val = statistics.fmean(r["oracle_score"] for r in tuning.get("sft", [])) if tuning.get("sft") else math.nan
    kl_match = matched_kl(tuning, sft_val)
    found = claims(per_seed, args.method_list)
    wall = time.perf_counter() - started
    seeds = ",".join(str(r["seed"]) for r in per_seed)
    title = (f"controlled task, test questions — budget {args.budget} — seeds {seeds} "
             f"(tuned on seed {args.seed_list[0]})")

    rich_table = Table(title=title)
    for header in HEADERS:
        rich_table.add_column(header, justify="left" if header == "method" else "right")
    rows = table_rows(table, kl_match)
    for row in rows:
        rich_table.add_row(*row)
    console.print(rich_table)
    console.print("Δ: paired bootstrap over test prompts and seeds, 95 % CI; * = interval excludes 0. "
                  f"Common KL for the matched column: {kl_match['kl']:.2f} nats.")
    console.print("Chosen points: " + ", ".join(f"{METHOD_NAMES[m]} {point_name(p)}" for m, p in chosen.items()))
    for claim in found:
        console.print("  " + claim["sentence"])
    plot_comparison(table, args.out / "comparison.png", title)
    curves = plot_length_curves(per_seed, args.out, args.out / "fig7_length.png")
    plot_oracle_vs_kl(kl_match, args.out / "oracle_vs_kl.png")
    console.print(f"time: {wall / 60:.1f} min wall for this invocation, budget {BUDGET_MINUTES} min → "
                  f"{'within' if wall <= BUDGET_MINUTES * 60 else 'OVER'} budget"
                  + (f" ({reused} seed(s) reused from disk, not re-timed)" if reused else ""))
    (args.out / "comparison.json").write_text(json.dumps(
        {"title": title, "args": {k: str(v) for k, v in vars(args).items()}, "table": table, "claims": found,
         "matched_kl": kl_match, "length_curves": curves, "chosen": chosen,
         "sanity": {r["seed"]: r["sanity"] for r in per_seed}, "wall_s": round(wall, 1),
                  "per_seed": [{k: v for k, v in r.items() if k != "test"} for r in per_seed]}, indent=1, default=str))
    (args.out / "comparison.md").write_text(
        f"{title}\n\n{markdown(rows)}\n\n" + "\n".join(f"- {c['sentence']}" for c in found) + "\n")
    console.print(f"→ {args.out / 'comparison.json'}, comparison.md, comparison.png, fig7_length.png, oracle_vs_kl.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
