"""`tlcr demo`: the whole TLCR pipeline on the offline controlled task, with no network and no files.

tokenizer + tiny model → SFT (on partly faulty demonstrations, so PPO has something to fix) → labeling
(chosen reviser) → token discriminator and sequence reward model → the reward service on a free loopback
port → PPO with rewards fetched over HTTP → evaluation through the service → `runs/demo-*/` report.
The service is shut down however the run ends.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tlcr.core.logs import setup_logging
from tlcr.core.presets import load_preset
from tlcr.core.reward_modes import PolicyRewardMode
from tlcr.pipeline import PipelineConfig

__all__ = ["DemoConfig", "StageLog", "quiet_libraries", "run_demo"]


@dataclass
class DemoConfig(PipelineConfig):
    """The demo's run folder, PPO modes and evaluation, on top of every stage's sizes (`PipelineConfig`).

    The defaults fit ≤ 10 minutes of 2 unloaded CPU cores; `smoke()` fits CI.
    """

    out_root: Path = field(default=Path("runs"), metadata={"help": "Folder that receives the run folder."})
    run_name: str | None = field(default=None, metadata={"help": "Run folder name (default demo-<timestamp>)."})
    modes: tuple[str, ...] = field(default=("tlcr",), metadata={
        "help": f"PPO reward modes, comma-separated: {', '.join(m.value for m in PolicyRewardMode)}."})
    # Evaluation on the controlled task's test questions, which no training stage saw (question_split);
    # eval_prompts caps how many distinct questions (None: all 48), each sampled eval_samples_per_prompt times.
    eval_part: str = field(default="test", metadata={"help": "Controlled-task questions to evaluate on."})
    eval_prompts: int | None = field(default=None, metadata={"help": "Most distinct questions (default: all)."})
    eval_samples_per_prompt: int = field(default=4, metadata={"help": "Sampled responses per question."})
    # Held-out responses are sampled the way PPO samples (temperature 1, top-p 0.9): greedy decoding
    # would hide the faults the noisy SFT demonstrations put into the policy's distribution.
    eval_do_sample: bool = field(default=True, metadata={"help": "Sample held-out responses (else greedy)."})
    eval_top_p: float = field(default=0.9, metadata={"help": "Top-p of the sampled held-out responses."})

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError(f"no reward mode; choose from {', '.join(m.value for m in PolicyRewardMode)}")
        for mode in self.modes:
            PolicyRewardMode.parse(mode)

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoConfig:
        """A tiny budget for CI (configs/demo/smoke.yaml): every stage runs, numbers are not meaningful."""
        return load_preset(cls, "demo", "smoke", overrides)


class StageLog:
    """Stage headers and timings on the console, kept for the report."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        elapsed = time.perf_counter() - self.started
        self.console.rule(f"[bold]{name}[/bold]  [dim](t = {elapsed:.0f}s)[/dim]")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.console.print(f"[green]✓[/green] {name} in {self.timings[name]:.1f}s")


def quiet_libraries(console: Console, verbosity: int = 0) -> None:
    """Log to the demo's console; at the default verbosity keep it to stage headers, training progress bars and
    PPO step lines."""
    from transformers.utils import logging as hf_logging

    setup_logging(verbosity, console=console)
    if verbosity < 1:
        hf_logging.set_verbosity_error()  # checkpoint load reports ("score.weight MISSING" is expected here)
        hf_logging.disable_progress_bar()  # weight loading / shard writing bars


def run_demo(config: DemoConfig, console: Console | None = None, verbosity: int = 0) -> Path:
    """Run every stage; returns the run folder (report.html, metrics.json, PNGs, models, logs).

    `verbosity`: the global `tlcr -v/-q` count (core.logs.setup_logging)."""
    console = console or Console()
    name = config.run_name or f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = config.out_root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} already exists and is not empty: choose another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_config.json").write_text(json.dumps(asdict(config), default=str, indent=2))
    log = StageLog(console)
    quiet_libraries(console, verbosity)
    console.print(f"[bold]tlcr demo[/bold] → {run_dir}")

    import torch

    from tlcr import pipeline

    torch.manual_seed(config.seed)
    task = pipeline.controlled_task()
    extra: dict[str, Any] = {}

    with log.stage("1/8 tokenizer + tiny model"):
        data, _ = pipeline.prepare_data(config, run_dir)
        console.print(f"{config.pairs} pairs: " + ", ".join(f"{k} {len(v)}" for k, v in data.split.items()))

    with log.stage("2/8 SFT"):
        sft = pipeline.sft_stage(config, data, run_dir)

    with log.stage("3/8 labeling (chosen reviser)"):
        labels_path, extra["labeling"] = pipeline.label_stage(data, sft, run_dir)
        console.print(f"labels: {extra['labeling']}")

    with log.stage("4/8 token discriminator"):
        disc_dir, extra["discriminator"] = pipeline.discriminator_stage(config, labels_path, sft, run_dir)
        console.print(_short_metrics(extra["discriminator"].get("eval", {})))

    with log.stage("5/8 sequence reward model"):
        rm_dir, extra["reward_model"] = pipeline.reward_model_stage(config, data, sft, run_dir)
        console.print(_short_metrics(extra["reward_model"].get("eval", {})))

    from tlcr.service.client import TokenRewardClient

    with log.stage("6/8 reward service"):
        service = pipeline.start_reward_service(disc_dir, rm_dir, run_dir)
        console.print(f"serving on {service.url} (log: {run_dir / 'service.log'})")
    try:
        ppo_runs: dict[str, Path] = {}
        with log.stage(f"7/8 PPO ({', '.join(config.modes)}) with rewards over HTTP"):
            for mode in config.modes:
                console.print(f"PPO mode {mode}: {config.ppo_steps} steps × {config.ppo_rollout_batch} rollouts")
                ppo_runs[mode], summary = pipeline.ppo_stage(config, mode, sft, service.url, disc_dir,
                                                             data.files["ppo"], run_dir / "ppo" / mode)
                console.print(_short_metrics(summary["metrics"]))

        with log.stage("8/8 evaluation through the service"):
            from tlcr.evaluation.evaluate import EvalConfig
            from tlcr.evaluation.run import run_evaluation

            eval_prompts = pipeline.held_out_prompts(config.eval_part, config.eval_samples_per_prompt,
                                                     config.eval_prompts)
            policies: dict[str, Path] = {"SFT": sft}
            policies.update({PolicyRewardMode(m).label: ppo_runs[m] / "policy" for m in config.modes})
            eval_config = EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=32,
                                     do_sample=config.eval_do_sample, top_p=config.eval_top_p, seed=config.seed)
            from tlcr.core.models import load_tokenizer
            from tlcr.evaluation.reward_sanity import reward_sanity, sanity_rows

            with TokenRewardClient(service.url) as client:
                extra["reward_sanity"] = reward_sanity(client, load_tokenizer(disc_dir), task, part="validation",
                                                       seed=config.seed)
                for label, value in sanity_rows(extra["reward_sanity"]):
                    console.print(f"reward sanity (validation questions) — {label}: {value}")
                compare = ("SFT", _compared_policy(config))
                summary_table = run_evaluation(
                    policies, eval_prompts, client, eval_config, run_dir, task=task,
                    ppo_runs=list(ppo_runs.values()), title=f"tlcr demo — {name}", notes=_notes(config),
                    extra_metrics={"stages": extra, "timings": log.timings, "config": asdict(config)},
                    compare=compare, scope=_scope(config, compare[1], len(eval_prompts)))
    finally:
        service.stop()
    total = time.perf_counter() - log.started
    log.timings["total"] = round(total, 2)
    _rewrite_timings(run_dir, log.timings)
    _print_summary(console, summary_table, compare, run_dir, total)
    return run_dir


def _compared_policy(config: DemoConfig) -> str:
    """The policy set against SFT in the report: TLCR when it was trained, else the first mode's."""
    labels = [PolicyRewardMode(m).label for m in config.modes]
    return "TLCR" if "TLCR" in labels else labels[0]


def _scope(config: DemoConfig, policy: str, n_responses: int) -> list[str]:
    questions = n_responses // max(1, config.eval_samples_per_prompt)
    return [f"What it can show: what {policy} did to this one SFT policy (seed {config.seed}) on {questions} test "
            f"questions × {config.eval_samples_per_prompt} samples — which oracle parts moved, and, in the "
            "examples, which tokens the discriminator rewarded or penalised.",
            "What it cannot show: whether a change is larger than what another seed would give, or whether "
            f"{policy} beats other methods (PPO with a sequence reward model, fixed token rewards, DPO). One "
            "seed of one method has no confidence interval; a small change in the oracle can come from chance. "
            "The comparison of every method, each seed tuning every method alike on its own validation questions, "
            "with bootstrap intervals over seeds and prompts, is docs/results.md (benchmarks/compare_methods.py)."]


def _notes(config: DemoConfig) -> list[str]:
    return [f"Offline controlled task: {config.pairs} generated pairs (20/40/40 SFT / reward models / PPO); "
            f"SFT targets are the faulty rejected response {config.sft_noisy_fraction:.0%} of the time. "
            f"Evaluation: the task's {config.eval_part} questions (entity × relations), held out by question: "
            "no SFT, reward-model or PPO prompt asks any of them, while each fact they ask is stated in some "
            f"training question; {config.eval_samples_per_prompt} sampled response(s) per question; "
            + ("responses are sampled as in PPO (temperature 1, top-p "
               f"{config.eval_top_p}, seed {config.seed})." if config.eval_do_sample else "responses are greedy."),
            "oracle: (correct − wrong facts + ½·details)/(1.5·asked) − 0.5·rude "
            "− 0.25·(repetitions + hedges); 1.0 is perfect. Its parts: helpful = every asked fact right and none "
            "wrong; style faults = rude + repeated sentences + hedges per response; details = share of the asked "
            "relations whose supporting detail is stated; wrong facts = fact statements with a wrong value.",
            f"One seed ({config.seed}) of each method at one fixed PPO setting: this run shows what each method "
            "changes in this seed's SFT policy (style faults, details, wrong facts). It cannot rank methods: PPO "
            "modes differ by less than seeds and tuning picks do, and the best lr, β and length differ by seed. "
            "Rankings, with per-seed tuning and intervals: benchmarks/compare_methods.py (docs/results.md)."]


def _short_metrics(metrics: dict[str, Any]) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in list(flat.items())[:8])


def _rewrite_timings(run_dir: Path, timings: dict[str, float]) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["timings"] = timings
    path.write_text(json.dumps(metrics, indent=2, default=str))


def _print_summary(console: Console, summary: dict[str, dict[str, float]], compare: tuple[str, str],
                   run_dir: Path, total: float) -> None:
    from tlcr.evaluation.report import changes, metric_label, ordered_metrics

    baseline, policy = compare
    if baseline in summary and policy in summary:
        parts = Table(title=f"What {policy} changed — the oracle's parts on test questions, {baseline} → {policy}")
        for header in ("oracle part", baseline, policy, "change", ""):
            parts.add_column(header, justify="left" if header == "oracle part" else "right")
        for label, a, b, delta, verdict in changes(summary, baseline, policy):
            colour = {"better": "green", "worse": "red"}.get(verdict, "dim")
            parts.add_row(label, f"{a:.3f}", f"{b:.3f}", f"{delta:+.3f}", f"[{colour}]{verdict}[/{colour}]")
        console.print(parts)
    # one row per metric, one column per policy: readable names that fit an 80-column terminal
    table = Table(title=f"tlcr demo — {total:.0f}s")
    table.add_column("metric (test questions)")
    for name in summary:
        table.add_column(name, justify="right")
    for key in ordered_metrics(summary):
        table.add_row(metric_label(key), *("nan" if math.isnan(row.get(key, math.nan)) else f"{row[key]:.3f}"
                                           for row in summary.values()))
    console.print(table)
    console.print(f"report: {run_dir / 'report.html'}", soft_wrap=True)
    console.print("One seed of one method: the report says what this can and cannot show; the comparison of "
                  "all methods, tuned per seed, with confidence intervals is docs/results.md.")
