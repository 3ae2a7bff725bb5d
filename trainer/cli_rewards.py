"""`tlcr train-discriminator` and `tlcr train-reward-model`.

Both run unchanged under `accelerate launch` (DDP, DeepSpeed; see configs/accelerate/) because the
transformers Trainer underneath reads the launcher's environment. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.core.presets import presets_dir
from tlcr.trainer.reward_options import DiscriminatorOptions, RewardModelOptions


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(ExitCode.BAD_INPUT)


def _print_metrics(title: str, rows: list[tuple[str, Any]], metrics_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    console.print(f"metrics written to {metrics_path}")


@config_command(DiscriminatorOptions, presets=presets_dir("discriminator"))
def train_discriminator_command(config: DiscriminatorOptions) -> None:
    """Train the token discriminator D (soft-target BCE over response tokens) and report held-out metrics."""
    from tlcr.core.data.jsonl import DataError
    from tlcr.core.models import ModelLoadError
    from tlcr.trainer.discriminator import METRICS_FILE, train_discriminator

    out = Path(config.output_dir)
    try:
        training_config = config.training_config()
        result = train_discriminator(config.source, config.model, training_config, eval_data=config.eval_source,
                                     dtype=config.dtype, on_error=config.on_error)
    except (DataError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    if result["eval"] is None:
        if training_config.process_index == 0:
            typer.echo(f"discriminator saved to {out}; no held-out records, no evaluation")
        return
    metrics = result["eval"]
    per_class = metrics["per_class"]
    _print_metrics(f"discriminator {out} on {metrics['n_records']} held-out records", [
        ("accuracy on edited tokens", metrics["edited_token_accuracy"]),
        ("positive precision", per_class["positive"]["precision"]),
        ("positive recall", per_class["positive"]["recall"]),
        ("negative precision", per_class["negative"]["precision"]),
        ("negative recall", per_class["negative"]["recall"]),
        ("mean D on neutral tokens", metrics["mean_d_neutral"]),
        ("ECE (edited tokens)", metrics["ece_edited"]),
        ("pairwise accuracy (Σ r_t)", metrics["pairwise_accuracy"]),
        ("edited / neutral tokens", f"{metrics['n_edited_tokens']} / {metrics['n_neutral_tokens']}"),
        ("train loss", result["train"]["loss"]),
    ], out / METRICS_FILE)


@config_command(RewardModelOptions, presets=presets_dir("reward_model"))
def train_reward_model_command(config: RewardModelOptions) -> None:
    """Train a Bradley–Terry sequence reward model (TRL RewardTrainer) and report held-out pairwise accuracy."""
    from tlcr.core.data.jsonl import DataError
    from tlcr.core.models import ModelLoadError
    from tlcr.trainer.reward_model import METRICS_FILE, train_reward_model

    out = Path(config.output_dir)
    try:
        training_config = config.training_config()
        result = train_reward_model(config.source, config.model, training_config, eval_source=config.eval_source,
                                    dtype=config.dtype, on_error=config.on_error, limit=config.data_limit,
                                    data_seed=config.data_seed, part=config.split_part)
    except (DataError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    if result["eval"] is None:
        if training_config.process_index == 0:
            typer.echo(f"reward model saved to {out}; no held-out pairs, no evaluation")
        return
    metrics = result["eval"]
    _print_metrics(f"reward model {out} on {metrics['n_pairs']} held-out pairs", [
        ("pairwise accuracy", metrics["pairwise_accuracy"]),
        ("mean reward, chosen", metrics["mean_chosen_reward"]),
        ("mean reward, rejected", metrics["mean_rejected_reward"]),
        ("train loss", result["train"]["loss"]),
    ], out / METRICS_FILE)


def register(app: typer.Typer) -> None:
    app.command("train-discriminator")(train_discriminator_command)
    app.command("train-reward-model")(train_reward_model_command)

