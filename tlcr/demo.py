"""`tlcr demo`: the whole TLCR pipeline on the offline controlled task, with no network and no files.

tokenizer + tiny model → SFT (on partly faulty demonstrations, so PPO has something to fix) → labeling
(chosen reviser) → token discriminator and sequence reward model → the reward service on a free loopback
port → PPO with rewards fetched over HTTP → evaluation through the service → `runs/demo-*/` report.
The service is shut down however the run ends.
"""

from __future__ import annotations

import asyncio
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

# reward modes of `tlcr ppo` and their names in the report (the paper's rows)
MODE_NAMES = {"tlcr": "TLCR", "tlcr_fixed": "TLCR_fixed", "seq": "PPO_seq",
              "tlcr_positive_only": "TLCR w/o negative", "tlcr_negative_only": "TLCR w/o positive"}


@dataclass
class DemoConfig:
    """Sizes of every stage. The defaults fit ≤ 10 minutes on 2 CPU cores; `smoke()` fits CI."""

    out_root: Path = Path("runs")
    run_name: str | None = None  # default: demo-<timestamp>
    pairs: int = 3000  # controlled-task pairs, split 20/40/40 into SFT / reward models / PPO prompts
    data_seed: int = 42
    hidden_size: int = 128
    num_layers: int = 2
    vocab_size: int = 1024
    sft_noisy_fraction: float = 0.5  # the SFT demonstrator is faulty half of the time
    sft_epochs: float = 3.0
    sft_learning_rate: float = 1e-3
    discriminator_epochs: float = 6.0
    reward_model_epochs: float = 4.0
    modes: tuple[str, ...] = ("tlcr",)
    ppo_steps: int = 40
    ppo_rollout_batch: int = 32
    ppo_learning_rate: float = 1e-4
    ppo_epochs: int = 2
    ppo_kl_coef: float = 0.05
    max_new_tokens: int = 40
    eval_prompts: int = 96
    eval_seed: int = 12345
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoConfig:
        """A tiny budget for CI: every stage runs, numbers are not meaningful."""
        values: dict[str, Any] = dict(pairs=200, hidden_size=32, vocab_size=512, sft_epochs=1.0,
                                      discriminator_epochs=1.0, reward_model_epochs=1.0, ppo_steps=2,
                                      ppo_rollout_batch=8, ppo_epochs=1, max_new_tokens=12, eval_prompts=8)
        values.update(overrides)
        return cls(**values)


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


def _quiet_libraries(console: Console) -> None:
    """Keep the console to stage headers, training progress bars and PPO step lines."""
    import logging

    from rich.logging import RichHandler
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # checkpoint load reports ("score.weight MISSING" is expected here)
    hf_logging.disable_progress_bar()  # weight loading / shard writing bars
    handler = RichHandler(console=console, show_path=False, show_time=False)
    for name in ("trainer", "labeling", "service"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(isinstance(h, RichHandler) for h in logger.handlers):
            logger.addHandler(handler)


def run_demo(config: DemoConfig, console: Console | None = None) -> Path:
    """Run every stage; returns the run folder (report.html, metrics.json, PNGs, models, logs)."""
    console = console or Console()
    name = config.run_name or f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = config.out_root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} already exists and is not empty: choose another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_config.json").write_text(json.dumps(asdict(config), default=str, indent=2))
    log = StageLog(console)
    _quiet_libraries(console)
    console.print(f"[bold]tlcr demo[/bold] → {run_dir}")

    import torch

    from tlcr.data.controlled import ControlledTask
    from tlcr.data.jsonl import write_jsonl
    from tlcr.data.pairs import load_preference_pairs, paper_split
    from tlcr.models import build_tiny_model

    torch.manual_seed(config.seed)
    task = ControlledTask()
    models = run_dir / "models"
    extra: dict[str, Any] = {}

    with log.stage("1/8 tokenizer + tiny model"):
        base = build_tiny_model(task.corpus(), models / "base", vocab_size=config.vocab_size,
                                hidden_size=config.hidden_size, num_layers=config.num_layers, seed=config.seed)
        pairs = load_preference_pairs("controlled", limit=config.pairs, seed=config.data_seed)
        split = paper_split(pairs, seed=config.data_seed)
        for part, part_pairs in split.items():
            write_jsonl(run_dir / "data" / f"{part}.jsonl", [p.to_dict() for p in part_pairs])
        console.print(f"{len(pairs)} pairs: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))

    with log.stage("2/8 SFT"):
        from trainer.sft import SFTOptions, train_sft

        sft = train_sft(SFTOptions(
            model=str(base), output_dir=str(models / "sft"), source=str(run_dir / "data" / "sft.jsonl"), part="all",
            noisy_fraction=config.sft_noisy_fraction, epochs=config.sft_epochs,
            learning_rate=config.sft_learning_rate, batch_size=16, max_length=256, seed=config.seed,
            dtype="float32", logging_steps=50, report_to="none", data_seed=config.data_seed))

    with log.stage("3/8 labeling (chosen reviser)"):
        from labeling.revisers import ChosenReviser
        from labeling.worker import WorkerConfig, label_pairs
        from tlcr.models import load_tokenizer

        labels_path = run_dir / "data" / "labels.jsonl"
        result = asyncio.run(label_pairs(split["rm"], ChosenReviser(), load_tokenizer(sft),
                                         WorkerConfig(out=labels_path, tokenizer_name=str(sft), progress=False)))
        extra["labeling"] = {"status": dict(result.summary.by_status),
                             "labels": dict(result.summary.label_counts)}
        console.print(f"labels: {extra['labeling']}")

    with log.stage("4/8 token discriminator"):
        from trainer.discriminator import PRESETS, DiscriminatorConfig, train_discriminator

        disc_dir = models / "discriminator"
        settings = {**PRESETS["tiny"], "num_train_epochs": config.discriminator_epochs}
        disc_metrics = train_discriminator(
            labels_path, str(sft), DiscriminatorConfig(output_dir=str(disc_dir), seed=config.seed,
                                                       report_to="none", **settings))
        extra["discriminator"] = disc_metrics
        console.print(_short_metrics(disc_metrics.get("eval", {})))

    with log.stage("5/8 sequence reward model"):
        from trainer.reward_model import REWARD_PRESETS, RewardModelConfig, train_reward_model

        rm_dir = models / "reward_model"
        settings = {**REWARD_PRESETS["tiny"], "num_train_epochs": config.reward_model_epochs}
        rm_metrics = train_reward_model(
            run_dir / "data" / "rm.jsonl", str(sft), RewardModelConfig(output_dir=str(rm_dir), seed=config.seed,
                                                                       report_to="none", **settings))
        extra["reward_model"] = rm_metrics
        console.print(_short_metrics(rm_metrics.get("eval", {})))

    from service.client import TokenRewardClient
    from service.launcher import start_service

    with log.stage("6/8 reward service"):
        service = start_service(disc_dir, sequence_model=rm_dir, log_path=run_dir / "service.log",
                                extra_args=["--torch-threads", "1"])
        console.print(f"serving on {service.url} (log: {run_dir / 'service.log'})")
    try:
        ppo_runs: dict[str, Path] = {}
        with log.stage(f"7/8 PPO ({', '.join(config.modes)}) with rewards over HTTP"):
            from trainer.ppo import PPOConfig, PPOTrainer

            for mode in config.modes:
                out = run_dir / "ppo" / mode
                ppo_config = PPOConfig(
                    policy=str(sft), reward_url=service.url, reward_mode=mode, value_init="discriminator",
                    value_model=str(disc_dir), source=str(run_dir / "data" / "ppo.jsonl"), split_part="all",
                    data_seed=config.data_seed, max_new_tokens=config.max_new_tokens, num_steps=config.ppo_steps,
                    rollout_batch_size=config.ppo_rollout_batch, mini_batch_size=config.ppo_rollout_batch // 2,
                    micro_batch_size=config.ppo_rollout_batch // 2, forward_batch_size=config.ppo_rollout_batch,
                    ppo_epochs=config.ppo_epochs, learning_rate=config.ppo_learning_rate,
                    kl_coef=config.ppo_kl_coef, output_dir=str(out), seed=config.seed, dtype="float32",
                    save_steps=max(config.ppo_steps, 1), tensorboard=False)
                console.print(f"PPO mode {mode}: {config.ppo_steps} steps × {config.ppo_rollout_batch} rollouts")
                summary = PPOTrainer(ppo_config).train()
                ppo_runs[mode] = out
                console.print(_short_metrics(summary["metrics"]))

        with log.stage("8/8 evaluation through the service"):
            from tlcr.evaluation.evaluate import EvalConfig
            from tlcr.evaluation.run import run_evaluation

            eval_prompts = [p.prompt for p in task.pairs(config.eval_prompts, seed=config.eval_seed)]
            policies: dict[str, Path] = {"SFT": sft}
            policies.update({MODE_NAMES.get(m, m): ppo_runs[m] / "policy" for m in config.modes})
            with TokenRewardClient(service.url) as client:
                summary_table = run_evaluation(
                    policies, eval_prompts, client, EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=32),
                    run_dir, task=task, ppo_runs=list(ppo_runs.values()), title=f"tlcr demo — {name}",
                    notes=_notes(config), extra_metrics={"stages": extra, "timings": log.timings,
                                                         "config": asdict(config)})
    finally:
        service.stop()
    total = time.perf_counter() - log.started
    log.timings["total"] = round(total, 2)
    _rewrite_timings(run_dir, log.timings)
    _print_summary(console, summary_table, run_dir, total)
    return run_dir


def _notes(config: DemoConfig) -> list[str]:
    return [f"Offline controlled task: {config.pairs} generated pairs (20/40/40 SFT / reward models / PPO); "
            f"SFT targets are the faulty rejected response {config.sft_noisy_fraction:.0%} of the time. "
            f"Held-out prompts are freshly drawn (seed {config.eval_seed}) from the same knowledge base.",
            "oracle_score: (correct − wrong facts)/asked − 0.5·rude − 0.25·(repetitions + hedges); 1.0 is perfect."]


def _short_metrics(metrics: dict[str, Any]) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in list(flat.items())[:8])


def _rewrite_timings(run_dir: Path, timings: dict[str, float]) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["timings"] = timings
    path.write_text(json.dumps(metrics, indent=2, default=str))


def _print_summary(console: Console, summary: dict[str, dict[str, float]], run_dir: Path, total: float) -> None:
    columns = ("oracle_score", "oracle_helpful", "continuous_token_reward_sum", "fixed_token_reward_sum",
               "sequence_reward", "response_tokens")
    table = Table(title=f"tlcr demo — {total:.0f}s — {run_dir / 'report.html'}")
    table.add_column("policy")
    for col in columns:
        table.add_column(col, justify="right")
    for policy, row in summary.items():
        table.add_row(policy, *("nan" if math.isnan(row.get(c, math.nan)) else f"{row[c]:.3f}" for c in columns))
    console.print(table)
