"""The paper's comparison: SFT, DPO, PPO_seq, TLCR_fixed, TLCR, TLCR w/o negative, TLCR w/o positive.

Per seed: one pipeline (tiny model, SFT, labels with the chosen reviser, discriminator + sequence reward
model, `tlcr.pipeline` stages — the same as `tlcr demo`), ONE reward service serving that seed's
discriminator and reward model, then every method from the same SFT policy with the same budget (PPO
modes: same steps, rollouts, epochs, lr, KL coefficient; DPO: the reward models' preference part). Each
policy is scored on held-out prompts by `tlcr eval`'s machinery (`run_evaluation`: Fig. 6 scores through
the service, response length, the oracle on the controlled task) plus its KL to the SFT reference.

    python benchmarks/compare_methods.py --seeds 0,1,2 --budget full --out runs/compare
    python benchmarks/compare_methods.py --source ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz \
        --budget hh-small --seeds 0 --out runs/compare-hh

Prints the mean ± std table over seeds, writes `<out>/comparison.json` (every number, per seed and
aggregated) and `<out>/comparison.png`. A seed whose `results.json` exists is reused (reruns resume).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, where benchmarks/service.py would hide the
# `service` package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tlcr.demo import DemoConfig, StageLog, quiet_libraries  # noqa: E402
from tlcr.pipeline import MODE_NAMES  # noqa: E402

METHODS = ("sft", "dpo", "seq", "tlcr_fixed", "tlcr", "tlcr_positive_only", "tlcr_negative_only")
METHOD_NAMES = {"sft": "SFT", "dpo": "DPO", **MODE_NAMES}
METRICS = ("oracle_score", "oracle_helpful", "continuous_token_reward_sum", "fixed_token_reward_sum",
           "sequence_reward", "response_tokens", "kl_to_sft")
SHORT = {"oracle_score": "oracle", "oracle_helpful": "helpful", "continuous_token_reward_sum": "Σ r_t cont.",
         "fixed_token_reward_sum": "Σ r_t fixed", "sequence_reward": "seq. RM", "response_tokens": "length",
         "kl_to_sft": "KL to SFT"}


def budget_config(budget: str, seed: int) -> DemoConfig:
    """`full`: the demo's recipe; `smoke`: the demo's CI budget; `hh-small`: harmless-base on 2 CPU cores."""
    seeds = {"seed": seed, "data_seed": 42 + seed}
    if budget == "full":
        return DemoConfig(**seeds)
    if budget == "smoke":
        return DemoConfig.smoke(**seeds)
    if budget == "hh-small":
        return DemoConfig(**seeds, pairs=1000, discriminator_epochs=3.0, reward_model_epochs=2.0,
                          ppo_steps=30, ppo_rollout_batch=16, max_new_tokens=32, eval_prompts=48)
    raise ValueError(f"unknown budget {budget!r}: choose full, smoke or hh-small")


def eval_prompts(config: DemoConfig, source: str, held_out: Sequence[Any], tokenizer_dir: Path,
                 max_length: int = 256) -> list[str]:
    """Held-out prompts: fresh controlled-task questions, or the source's held-out pairs whose prompt
    plus a full response (and 8 tokens of re-tokenization slack) fits the service's max_length (422 beyond it)."""
    if source == "controlled":
        from tlcr.pipeline import controlled_task

        return [p.prompt for p in controlled_task().pairs(config.eval_prompts, seed=config.eval_seed)]
    from tlcr.models import encode_prompt_response, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    fits = [p.prompt for p in held_out
            if len(encode_prompt_response(tokenizer, p.prompt, "")[0]) + config.max_new_tokens + 8 <= max_length]
    return fits[: config.eval_prompts]


def run_seed(config: DemoConfig, methods: Sequence[str], source: str, seed_dir: Path,
             console: Console) -> dict[str, Any]:
    """Train every method for one seed and evaluate them; returns {policy: metrics} plus timings."""
    from service.client import TokenRewardClient
    from tlcr import pipeline
    from tlcr.evaluation.evaluate import EvalConfig
    from tlcr.evaluation.run import run_evaluation

    log = StageLog(console)
    controlled = source == "controlled"
    with log.stage(f"seed {config.seed}: data + tiny model"):
        data, held_out = pipeline.prepare_data(config, seed_dir, source,
                                               holdout=0 if controlled else 4 * config.eval_prompts)
    with log.stage(f"seed {config.seed}: SFT"):
        sft = pipeline.sft_stage(config, data, seed_dir)
    with log.stage(f"seed {config.seed}: labels + discriminator + reward model"):
        labels_path, labeling = pipeline.label_stage(data, sft, seed_dir)
        disc_dir, disc_metrics = pipeline.discriminator_stage(config, labels_path, sft, seed_dir)
        rm_dir, rm_metrics = pipeline.reward_model_stage(config, data, sft, seed_dir)
    policies: dict[str, Path] = {"SFT": sft}
    if "dpo" in methods:
        with log.stage(f"seed {config.seed}: DPO"):
            policies["DPO"] = pipeline.dpo_stage(config, sft, data, seed_dir)
    service = pipeline.start_reward_service(disc_dir, rm_dir, seed_dir)
    try:
        ppo_runs = []
        for mode in (m for m in methods if m in MODE_NAMES):
            with log.stage(f"seed {config.seed}: PPO {mode}"):
                out, _ = pipeline.ppo_stage(config, mode, sft, service.url, disc_dir, data.files["ppo"],
                                            seed_dir / "ppo" / mode)
                policies[MODE_NAMES[mode]] = out / "policy"
                ppo_runs.append(out)
        with log.stage(f"seed {config.seed}: evaluation"):
            prompts = eval_prompts(config, source, held_out, sft)
            eval_config = EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=32,
                                     do_sample=config.eval_do_sample, top_p=config.eval_top_p, seed=config.seed)
            with TokenRewardClient(service.url) as client:
                summary = run_evaluation(policies, prompts, client, eval_config, seed_dir / "eval",
                                         task=pipeline.controlled_task() if controlled else None,
                                         ppo_runs=ppo_runs, title=f"comparison — seed {config.seed}")
            for name, path in policies.items():
                summary[name]["kl_to_sft"] = (0.0 if name == "SFT" else pipeline.policy_kl(
                    path, sft, prompts, max_new_tokens=config.max_new_tokens, seed=config.seed))
    finally:
        service.stop()
    return {"seed": config.seed, "policies": summary, "n_prompts": len(prompts), "timings": log.timings,
            "stages": {"labeling": labeling, "discriminator": disc_metrics.get("eval", {}),
                       "reward_model": rm_metrics.get("eval", {})}, "config": asdict(config)}


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{policy: {metric: {mean, std, n}}} over seeds (std is the sample std; 0 with one seed)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for result in per_seed:
        for policy, metrics in result["policies"].items():
            for metric, value in metrics.items():
                table.setdefault(policy, {}).setdefault(metric, {"values": []})["values"].append(value)  # type: ignore[arg-type]
    for metrics in table.values():
        for cell in metrics.values():
            values = [v for v in cell.pop("values") if not math.isnan(v)]  # type: ignore[arg-type]
            cell["mean"] = statistics.fmean(values) if values else math.nan
            cell["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            cell["n"] = len(values)
    return table


def print_table(console: Console, table: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> None:
    metrics = [m for m in METRICS if any(m in row for row in table.values())]
    rich_table = Table(title=title)
    rich_table.add_column("method")
    for metric in metrics:
        rich_table.add_column(SHORT[metric], justify="right")
    for policy, row in table.items():
        rich_table.add_row(policy, *(_cell(row.get(m)) for m in metrics))
    console.print(rich_table)


def _cell(cell: Mapping[str, float] | None) -> str:
    if cell is None or math.isnan(cell["mean"]):
        return "—"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def markdown_table(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    metrics = [m for m in METRICS if any(m in row for row in table.values())]
    lines = ["| method | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "| --- |" + " --- |" * len(metrics)]
    lines += [f"| {policy} | " + " | ".join(_cell(row.get(m)) for m in metrics) + " |"
              for policy, row in table.items()]
    return "\n".join(lines)


def plot(table: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path, title: str) -> Path:
    """One bar panel per metric, mean ± std over seeds."""
    from tlcr.evaluation.report import plt

    metrics = [m for m in METRICS if any(not math.isnan(row.get(m, {}).get("mean", math.nan))
                                         for row in table.values())]
    policies = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = [table[p].get(metric, {}).get("mean", math.nan) for p in policies]
        stds = [table[p].get(metric, {}).get("std", 0.0) for p in policies]
        ax.bar(range(len(policies)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(policies)), policies, rotation=60, ha="right", fontsize=7)
        ax.set_title(SHORT[metric], fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (SFT is always evaluated)")
    parser.add_argument("--budget", default="full", choices=("smoke", "full", "hh-small"))
    parser.add_argument("--source", default="controlled", help="controlled, or a pairs .jsonl[.gz] (HH format)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args(argv)
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown or not args.seed_list:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}" if unknown else "no seeds")
    if args.source != "controlled" and not Path(args.source).is_file():
        parser.error(f"--source {args.source}: not 'controlled' and not a file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    quiet_libraries(console)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_seed = []
    for seed in args.seed_list:
        seed_dir = args.out / f"seed-{seed}"
        results_path = seed_dir / "results.json"
        if results_path.exists():
            console.print(f"seed {seed}: reusing {results_path}")
            per_seed.append(json.loads(results_path.read_text()))
            continue
        if seed_dir.exists():
            raise SystemExit(f"{seed_dir} exists without results.json (an interrupted run): remove it first")
        result = run_seed(budget_config(args.budget, seed), args.method_list, args.source, seed_dir, console)
        results_path.write_text(json.dumps(result, indent=2, default=str))
        per_seed.append(result)
    table = aggregate(per_seed)
    title = (f"{args.source if args.source == 'controlled' else Path(args.source).name} — budget {args.budget} — "
             f"seeds {','.join(str(r['seed']) for r in per_seed)} — mean ± std")
    print_table(console, table, title)
    plot(table, args.out / "comparison.png", title)
    (args.out / "comparison.json").write_text(json.dumps(
        {"title": title, "args": {k: str(v) for k, v in vars(args).items()}, "aggregate": table,
         "per_seed": per_seed, "wall_s": round(time.perf_counter() - started, 1)}, indent=2, default=str))
    (args.out / "comparison.md").write_text(markdown_table(table) + "\n")
    console.print(f"→ {args.out / 'comparison.json'}, {args.out / 'comparison.png'}, {args.out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
