"""`tlcr sft`, `tlcr ppo`, `tlcr dpo`, `tlcr plot`: policy training and its curves (docs/trainer.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from core.exit_codes import ExitCode


def register(app: typer.Typer) -> None:
    app.command("sft")(sft_command)
    app.command("ppo")(ppo_command)
    app.command("dpo")(dpo_command)
    app.command("plot")(plot_command)


def _fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _input_errors() -> tuple[type[BaseException], ...]:
    from service.client import RewardServiceError
    from tlcr.data.jsonl import DataError
    from tlcr.models import ModelLoadError
    from trainer.ppo_config import PPOConfigError

    return (DataError, ModelLoadError, PPOConfigError, RewardServiceError, ValueError, FileNotFoundError)


def sft_command(
    model: Annotated[str, typer.Option(help="Base causal LM: local path or Hub id.")],
    out: Annotated[Path, typer.Option(help="Output directory of the SFT checkpoint (HF format).")],
    source: Annotated[str, typer.Option(
        help="Pairs: 'controlled', a local .jsonl/.jsonl.gz, or a Hub id.")] = "controlled",
    part: Annotated[str, typer.Option(help="Paper split part to train on: sft, rm, ppo or all.")] = "sft",
    limit: Annotated[int | None, typer.Option(help="Load at most this many pairs before splitting.")] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the controlled task and of the 20/40/40 split.")] = 42,
    noisy_fraction: Annotated[float, typer.Option(
        help="Fraction of SFT targets replaced by the rejected response (controlled task: gives the SFT policy "
             "faults for PPO to fix).")] = 0.0,
    epochs: Annotated[float, typer.Option(help="Epochs (paper: 2).")] = 2.0,
    lr: Annotated[float, typer.Option(help="Learning rate (paper: 1e-5).")] = 1e-5,
    lr_scheduler: Annotated[str, typer.Option(help="transformers scheduler name (paper: cosine).")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Warm-up steps, or a fraction of all steps when < 1.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step per device (paper: 16).")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps within --batch-size.")] = 1,
    max_length: Annotated[int, typer.Option(help="Most prompt + response tokens (longer: cut at the end).")] = 512,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory (large models).")] = False,
    report_to: Annotated[str, typer.Option(help="Trainer loggers: tensorboard, none, wandb...")] = "tensorboard",
) -> None:
    """Supervised fine-tuning on the SFT split's chosen responses (loss on response tokens only)."""
    from trainer.sft import SFTOptions, train_sft

    try:
        options = SFTOptions(model=model, output_dir=str(out), source=source, part=part, data_limit=limit,
                             data_seed=data_seed, noisy_fraction=noisy_fraction, epochs=epochs, learning_rate=lr,
                             lr_scheduler=lr_scheduler, warmup=warmup, batch_size=batch_size,
                             gradient_accumulation_steps=grad_accum, max_length=max_length, seed=seed, dtype=dtype,
                             gradient_checkpointing=gradient_checkpointing, report_to=report_to)
        path = train_sft(options)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"SFT policy saved to {path}")


def dpo_command(
    model: Annotated[str, typer.Option(help="The SFT checkpoint (also the frozen reference).")],
    out: Annotated[Path, typer.Option(help="Output directory of the DPO policy (HF format).")],
    source: Annotated[str, typer.Option(
        help="Pairs: 'controlled', a local .jsonl/.jsonl.gz, or a Hub id.")] = "controlled",
    part: Annotated[str, typer.Option(
        help="Paper split part: rm (the preference data, default), sft, ppo or all.")] = "rm",
    limit: Annotated[int | None, typer.Option(help="Load at most this many pairs before splitting.")] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the controlled task and of the 20/40/40 split.")] = 42,
    beta: Annotated[float, typer.Option(help="DPO beta.")] = 0.1,
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-6,
    lr_scheduler: Annotated[str, typer.Option(help="transformers scheduler name.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Warm-up steps, or a fraction of all steps when < 1.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per optimizer step per device.")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps within --batch-size.")] = 1,
    max_length: Annotated[int, typer.Option(help="Most prompt + response tokens.")] = 512,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory (large models).")] = False,
    report_to: Annotated[str, typer.Option(help="Trainer loggers: tensorboard, none, wandb...")] = "tensorboard",
) -> None:
    """The DPO baseline: TRL DPOTrainer on the preference part of the split."""
    from trainer.dpo import DPOOptions, train_dpo

    try:
        options = DPOOptions(model=model, output_dir=str(out), source=source, part=part, data_limit=limit,
                             data_seed=data_seed, beta=beta, epochs=epochs, learning_rate=lr,
                             lr_scheduler=lr_scheduler, warmup=warmup, batch_size=batch_size,
                             gradient_accumulation_steps=grad_accum, max_length=max_length, seed=seed, dtype=dtype,
                             gradient_checkpointing=gradient_checkpointing, report_to=report_to)
        path = train_dpo(options)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"DPO policy saved to {path}")


def ppo_command(
    config: Annotated[Path | None, typer.Option(
        help="YAML file of PPO options (see configs/ppo/); command-line options override it.")] = None,
    policy: Annotated[str | None, typer.Option(help="SFT checkpoint to start from (path or Hub id).")] = None,
    out: Annotated[str | None, typer.Option("--out", "--output-dir", help="Run directory.")] = None,
    reward_url: Annotated[str | None, typer.Option(
        help="Reward service URL(s), comma-separated for several replicas.")] = None,
    reward_mode: Annotated[str | None, typer.Option(
        help="tlcr | tlcr_fixed | seq | tlcr_positive_only | tlcr_negative_only.")] = None,
    reward_threshold: Annotated[float | None, typer.Option(help="tau of tlcr_fixed (default 0.6).")] = None,
    reward_api_key: Annotated[str | None, typer.Option(
        envvar="TLCR_API_KEY", show_envvar=True, help="Bearer key of the reward service.")] = None,
    token_input: Annotated[str | None, typer.Option(
        help="auto | ids | text: send token ids (policy and discriminator share a tokenizer) or text + "
             "character offsets of the policy's tokens. auto checks the service's tokenizer.")] = None,
    reward_timeout: Annotated[float | None, typer.Option(help="Seconds per HTTP attempt.")] = None,
    reward_max_retries: Annotated[int | None, typer.Option(help="Retries per reward call.")] = None,
    reward_deadline: Annotated[float | None, typer.Option(
        help="Seconds one reward call may keep retrying; then the run checkpoints and stops (exit 3).")] = None,
    value_init: Annotated[str | None, typer.Option(
        help="discriminator (default) or sft: initial weights of the value model.")] = None,
    value_model: Annotated[str | None, typer.Option(
        help="Discriminator checkpoint for --value-init discriminator (default: the service's model path).")] = None,
    reference: Annotated[str | None, typer.Option(help="Reference model (default: the policy).")] = None,
    source: Annotated[str | None, typer.Option(help="Prompts: 'controlled', a pairs file or a Hub id.")] = None,
    limit: Annotated[int | None, typer.Option(help="Load at most this many pairs before splitting.")] = None,
    data_seed: Annotated[int | None, typer.Option(help="Seed of the controlled task and the split.")] = None,
    split_part: Annotated[str | None, typer.Option(
        help="Prompts from split part: ppo (default), sft, rm, all.")] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="Longer prompts are dropped.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Sampled response length limit.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (1.0).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling (0.9).")] = None,
    steps: Annotated[int | None, typer.Option(help="PPO steps (rollout + update).")] = None,
    rollout_batch_size: Annotated[int | None, typer.Option(help="Prompts per process per step.")] = None,
    mini_batch_size: Annotated[int | None, typer.Option(help="Rows per optimizer step per process.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="Rows per forward/backward.")] = None,
    forward_batch_size: Annotated[int | None, typer.Option(help="Rows per no-grad rollout forward.")] = None,
    ppo_epochs: Annotated[int | None, typer.Option(help="Passes over each rollout batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Policy learning rate (paper: 1e-6).")] = None,
    value_lr: Annotated[float | None, typer.Option(help="Value learning rate (default: --lr).")] = None,
    lr_scheduler: Annotated[str | None, typer.Option(help="constant (default), linear, cosine...")] = None,
    adam_betas: Annotated[str | None, typer.Option(help="AdamW betas as 'b1,b2' (paper: 0.9,0.95).")] = None,
    normalize_sequence_scores: Annotated[bool | None, typer.Option(
        "--normalize-sequence-scores/--no-normalize-sequence-scores",
        help="seq mode: z-score RM scores by the SFT policy's first rollout batch (default on).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Optimizer warm-up steps.")] = None,
    max_grad_norm: Annotated[float | None, typer.Option(help="Gradient clipping (0: off).")] = None,
    kl_coef: Annotated[float | None, typer.Option("--kl-coef", "--beta", help="beta of -beta*KL_t (0.1).")] = None,
    kl_estimator: Annotated[str | None, typer.Option(help="k1 (log-ratio) or k3.")] = None,
    gamma: Annotated[float | None, typer.Option(help="GAE gamma (1.0).")] = None,
    lam: Annotated[float | None, typer.Option(help="GAE lambda (0.95).")] = None,
    clip_range: Annotated[float | None, typer.Option(help="Policy ratio clip (0.2).")] = None,
    clip_range_value: Annotated[float | None, typer.Option(help="Value clip (0.2).")] = None,
    vf_coef: Annotated[float | None, typer.Option(help="Value loss weight (0.1).")] = None,
    whiten_advantages: Annotated[bool | None, typer.Option(
        "--whiten-advantages/--no-whiten-advantages", help="Whiten advantages per rollout batch.")] = None,
    whiten_rewards: Annotated[bool | None, typer.Option(
        "--whiten-rewards/--no-whiten-rewards", help="Scale shaped rewards per rollout batch.")] = None,
    truncation_bootstrap: Annotated[bool | None, typer.Option(
        "--truncation-bootstrap/--no-truncation-bootstrap",
        help="Responses cut at --max-new-tokens: bootstrap from the value (else treated as ended).")] = None,
    missing_eos_penalty: Annotated[float | None, typer.Option(
        help="Added to the last action of responses cut without EOS (e.g. -1).")] = None,
    save_steps: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    save_total_limit: Annotated[int | None, typer.Option(help="Keep the N newest checkpoints.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete --out's checkpoints and start over.")] = False,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu or cuda (single process; accelerate decides otherwise).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory.")] = None,
    tensorboard: Annotated[bool | None, typer.Option(
        "--tensorboard/--no-tensorboard", help="Also log to TensorBoard (<out>/tensorboard).")] = None,
) -> None:
    """PPO with dense per-token rewards from the reward service (runs under `accelerate launch` too)."""
    from trainer.ppo import TrainingStopped, train_ppo
    from trainer.ppo_config import PPOConfig

    given: dict[str, Any] = {
        "policy": policy, "output_dir": out, "reward_url": reward_url, "reward_mode": reward_mode,
        "reward_threshold": reward_threshold, "reward_api_key": reward_api_key, "token_input": token_input,
        "reward_timeout": reward_timeout, "reward_max_retries": reward_max_retries,
        "reward_deadline": reward_deadline, "value_init": value_init, "value_model": value_model,
        "reference": reference, "source": source, "data_limit": limit, "data_seed": data_seed,
        "split_part": split_part, "max_prompt_length": max_prompt_length, "max_new_tokens": max_new_tokens,
        "temperature": temperature, "top_p": top_p, "num_steps": steps, "rollout_batch_size": rollout_batch_size,
        "mini_batch_size": mini_batch_size, "micro_batch_size": micro_batch_size,
        "forward_batch_size": forward_batch_size, "ppo_epochs": ppo_epochs, "learning_rate": lr,
        "value_learning_rate": value_lr, "lr_scheduler": lr_scheduler, "warmup_steps": warmup_steps,
        "adam_betas": _betas(adam_betas), "normalize_sequence_scores": normalize_sequence_scores,
        "max_grad_norm": max_grad_norm, "kl_coef": kl_coef, "kl_estimator": kl_estimator, "gamma": gamma,
        "lam": lam, "clip_range": clip_range, "clip_range_value": clip_range_value, "vf_coef": vf_coef,
        "whiten_advantages": whiten_advantages, "whiten_rewards": whiten_rewards,
        "truncation_bootstrap": truncation_bootstrap, "missing_eos_penalty": missing_eos_penalty,
        "save_steps": save_steps, "save_total_limit": save_total_limit, "seed": seed, "dtype": dtype,
        "device": device, "gradient_checkpointing": gradient_checkpointing, "tensorboard": tensorboard,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    if resume:
        overrides["resume"] = True
    if overwrite:
        overrides["overwrite"] = True
    try:
        ppo_config = PPOConfig.from_yaml(config, **overrides) if config else PPOConfig(**overrides)
        summary = train_ppo(ppo_config)
    except TrainingStopped as exc:
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
    out: Annotated[Path | None, typer.Option(
        help="PNG path (default: RUN/curves.png for one run, else fig7.png beside the first run).")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Metric to plot, repeatable (default: perplexity, response_length, kl — the paper's Fig. 7).")] = None,
    label: Annotated[list[str] | None, typer.Option(
        help="Legend label per run, repeatable, in run order (default: the run's reward mode).")] = None,
    smooth: Annotated[float, typer.Option(help="EMA smoothing weight in [0, 1).")] = 0.0,
) -> None:
    """Training curves as PNG (default: Fig. 7 — perplexity, response length, KL; one line per run)."""
    from trainer.plot import FIG7_METRICS, plot_runs

    if out is None:
        out = runs[0] / "curves.png" if len(runs) == 1 else runs[0].parent / "fig7.png"
    try:
        path = plot_runs(runs, out, metrics=metric or FIG7_METRICS, smooth=smooth, labels=label)
    except _input_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


def _betas(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        b1, b2 = (float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--adam-betas takes two numbers like 0.9,0.95, not {text!r}") from None
    return b1, b2
