"""`tlcr sft`, `tlcr ppo`, `tlcr dpo`, `tlcr plot`: policy training and its curves (docs/trainer.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.core.presets import presets_dir
from tlcr.trainer.policy_options import DPOOptions, SFTOptions
from tlcr.trainer.ppo_config import PPOConfig


def register(app: typer.Typer) -> None:
    app.command("sft")(sft_command)
    app.command("ppo")(ppo_command)
    app.command("dpo")(dpo_command)
    app.command("plot")(plot_command)


def _fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _input_errors() -> tuple[type[BaseException], ...]:
    from tlcr.core.data.jsonl import DataError
    from tlcr.core.models import ModelLoadError
    from tlcr.service.client import RewardServiceError
    from tlcr.trainer.ppo_config import PPOConfigError

    return (DataError, ModelLoadError, PPOConfigError, RewardServiceError, ValueError, FileNotFoundError)


@config_command(SFTOptions)
def sft_command(config: SFTOptions) -> None:
    """Supervised fine-tuning on the SFT split's chosen responses (loss on response tokens only)."""
    from tlcr.trainer.sft import train_sft

    try:
        path = train_sft(config)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"SFT policy saved to {path}")


@config_command(DPOOptions)
def dpo_command(config: DPOOptions) -> None:
    """The DPO baseline: TRL DPOTrainer on the preference part of the split."""
    from tlcr.trainer.dpo import train_dpo

    try:
        path = train_dpo(config)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"DPO policy saved to {path}")


# Rarely changed fields stay in config files (as before options came from PPOConfig), keeping --help shorter.
@config_command(PPOConfig, presets=presets_dir("ppo"), yaml_only=(
    "extra", "reward_backoff", "overlap_reward_fetch", "generation_batch_size", "weight_decay", "adam_eps"))
def ppo_command(config: PPOConfig) -> None:
    """PPO with dense per-token rewards from the reward service (runs under `accelerate launch` too)."""
    from tlcr.service.client import RewardServiceUnavailable
    from tlcr.trainer.ppo import TrainingStopped, train_ppo

    try:
        summary = train_ppo(config)
    except (TrainingStopped, RewardServiceUnavailable) as exc:  # the latter: down before the first step
        _fail(str(exc), ExitCode.UNAVAILABLE)
    except _input_errors() as exc:
        _fail(str(exc))
    if not summary["is_main_process"]:
        return  # under `accelerate launch`, one summary line is enough
    metrics = summary["metrics"]
    typer.echo(f"PPO done: {summary['steps']} steps; policy saved to {summary['policy']}; last step: "
               f"reward {metrics.get('reward/sequence', float('nan')):.3f}, kl {metrics.get('kl', float('nan')):.3f}")


def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="PPO run directories (each with metrics.jsonl).")],
    output_file: Annotated[Path | None, typer.Option(
        help="PNG path (default: RUN/curves.png for one run, else fig7.png beside the first run).")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Metric to plot, repeatable (default: perplexity, response_length, kl — the paper's Fig. 7).")] = None,
    label: Annotated[list[str] | None, typer.Option(
        help="Legend label per run, repeatable, in run order (default: the run's reward mode).")] = None,
    smooth: Annotated[float, typer.Option(help="EMA smoothing weight in [0, 1).")] = 0.0,
) -> None:
    """Training curves as PNG (default: Fig. 7 — perplexity, response length, KL; one line per run)."""
    from tlcr.trainer.plot import FIG7_METRICS, plot_runs

    if output_file is None:
        output_file = runs[0] / "curves.png" if len(runs) == 1 else runs[0].parent / "fig7.png"
    try:
        path = plot_runs(runs, output_file, metrics=metric or FIG7_METRICS, smooth=smooth, labels=label)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")
