"""`tlcr train-discriminator` and `tlcr train-reward-model`.

Both run unchanged under `accelerate launch` (DDP, DeepSpeed; see configs/accelerate/) because the
transformers Trainer underneath reads the launcher's environment. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from core.exit_codes import ExitCode


class Preset(str, Enum):
    paper = "paper"
    tiny = "tiny"


class OnErrorChoice(str, Enum):
    raise_ = "raise"
    skip = "skip"


def _overrides(**options: Any) -> dict[str, Any]:
    """Only the options the user gave: the preset supplies the rest."""
    return {k: v for k, v in options.items() if v is not None}


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


def train_discriminator_command(
    data: Annotated[Path, typer.Option(help="Labelled JSONL from `tlcr label` (status 'ok' records train).")],
    base: Annotated[str, typer.Option(help="Causal-LM checkpoint to start from, Hub id or path (paper: SFT model).")],
    out: Annotated[Path, typer.Option(help="Output directory of the discriminator checkpoint (save_pretrained).")],
    preset: Annotated[Preset, typer.Option(help="paper: the TLCR paper's settings; tiny: offline tiny models "
                                                "on CPU (use with `tlcr tiny-model`).")] = Preset.paper,
    eval_data: Annotated[Path | None, typer.Option(help="Held-out labelled JSONL (default: hold out "
                                                        "--eval-fraction of --data).")] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="Share of records held out (default: 0.1).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate (paper: 1e-5).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs (paper: 2).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per device and step (paper: 16).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps (default 1).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max prompt + response tokens (paper: 512).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay (paper: 0.1).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Warm-up steps (paper: 0).")] = None,
    logging_steps: Annotated[int | None, typer.Option(help="Log every N steps (default 10).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of head init, shuffling, held-out split (default 42).")] = None,
    dtype: Annotated[str, typer.Option(help="Weights dtype: float32 (mixed precision via --bf16) or bfloat16 "
                                            "(with DeepSpeed).")] = "float32",
    bf16: Annotated[bool | None, typer.Option(help="bf16 mixed precision (default: on if CUDA has it).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations to save memory.")] = False,
    report_to: Annotated[str | None, typer.Option(help="Trackers, e.g. tensorboard (default: none).")] = None,
    on_error: Annotated[OnErrorChoice, typer.Option(help="raise: stop at the first bad record; skip: count and "
                                                         "skip bad records.")] = OnErrorChoice.raise_,
) -> None:
    """Train the token discriminator D (soft-target BCE over response tokens) and report held-out metrics."""
    from tlcr.data.jsonl import DataError
    from tlcr.models import ModelLoadError
    from trainer.discriminator import METRICS_FILE, PRESETS, DiscriminatorConfig, train_discriminator

    settings = {**PRESETS[preset.value], **_overrides(
        eval_fraction=eval_fraction, learning_rate=learning_rate, num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum, max_length=max_length,
        weight_decay=weight_decay, warmup_steps=warmup_steps, logging_steps=logging_steps, seed=seed, bf16=bf16,
        report_to=report_to)}
    try:
        config = DiscriminatorConfig(output_dir=str(out), activation_checkpointing=gradient_checkpointing, **settings)
        result = train_discriminator(data, base, config, eval_data=eval_data, dtype=dtype,
                                     on_error=on_error.value)  # type: ignore[arg-type]
    except (DataError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    if result["eval"] is None:
        if config.process_index == 0:
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


def train_reward_model_command(
    pairs: Annotated[str, typer.Option(help="Preference pairs: 'controlled', a .jsonl(.gz) of pairs or labelled "
                                            "records, or a Hub id.")],
    base: Annotated[str, typer.Option(help="Causal-LM checkpoint to start from: Hub id or path.")],
    out: Annotated[Path, typer.Option(help="Output directory of the reward model checkpoint (save_pretrained).")],
    preset: Annotated[Preset, typer.Option(help="paper: the paper's optimisation settings; tiny: offline tiny "
                                                "models on CPU.")] = Preset.paper,
    eval_pairs: Annotated[str | None, typer.Option(help="Held-out pairs (default: hold out --eval-fraction).")] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="Share of pairs held out (default: 0.1).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most this many pairs (controlled: how many).")] = None,
    part: Annotated[str, typer.Option(help="Paper split part to train on: all, sft, rm or ppo.")] = "all",
    data_seed: Annotated[int, typer.Option(help="Seed of the controlled task and the 20/40/40 split.")] = 42,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate (paper: 1e-5).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs (paper: 2).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per device and step (paper: 16).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps (default 1).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max prompt + response tokens (paper: 512).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay (paper: 0.1).")] = None,
    center_rewards: Annotated[float | None, typer.Option(help="Coefficient pushing rewards to mean zero "
                                                              "(TRL center_rewards_coefficient).")] = None,
    logging_steps: Annotated[int | None, typer.Option(help="Log every N steps (default 10).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of head init, shuffling, held-out split (default 42).")] = None,
    dtype: Annotated[str, typer.Option(help="Weights dtype: float32 or bfloat16 (with DeepSpeed).")] = "float32",
    bf16: Annotated[bool | None, typer.Option(help="bf16 mixed precision (default: on if CUDA has it).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        help="Recompute activations to save memory (paper preset: on; tiny: off).")] = None,
    report_to: Annotated[str | None, typer.Option(help="Trackers, e.g. tensorboard (default: none).")] = None,
    on_error: Annotated[OnErrorChoice, typer.Option(help="raise: stop at the first bad record; skip: count and "
                                                         "skip bad records.")] = OnErrorChoice.raise_,
) -> None:
    """Train a Bradley–Terry sequence reward model (TRL RewardTrainer) and report held-out pairwise accuracy."""
    from tlcr.data.jsonl import DataError
    from tlcr.models import ModelLoadError
    from trainer.reward_model import METRICS_FILE, REWARD_PRESETS, RewardModelConfig, train_reward_model

    settings = {**REWARD_PRESETS[preset.value], **_overrides(
        eval_fraction=eval_fraction, learning_rate=learning_rate, num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum, max_length=max_length,
        weight_decay=weight_decay, center_rewards_coefficient=center_rewards, logging_steps=logging_steps,
        seed=seed, bf16=bf16, activation_checkpointing=gradient_checkpointing, report_to=report_to)}
    try:
        config = RewardModelConfig(output_dir=str(out), **settings)
        result = train_reward_model(pairs, base, config, eval_source=eval_pairs, dtype=dtype,
                                    on_error=on_error.value, limit=limit,  # type: ignore[arg-type]
                                    data_seed=data_seed, part=part)
    except (DataError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    if result["eval"] is None:
        if config.process_index == 0:
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

