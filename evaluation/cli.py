"""`tlcr eval`: score policy checkpoints through the reward service and write the report."""

from __future__ import annotations

import json

import typer

from tlcr.core.config_cli import config_command
from tlcr.core.exit_codes import ExitCode
from tlcr.evaluation.options import EvalOptions


@config_command(EvalOptions)
def eval_command(config: EvalOptions) -> None:
    """Generate with each policy on held-out prompts; score with the sequence RM, Σ fixed and Σ continuous
    token rewards (Fig. 6) via the service, the oracle on the controlled task, and optional LLM judges."""
    import os

    from tlcr.core.data.jsonl import DataError, SkipReport
    from tlcr.core.data.sources import CONTROLLED
    from tlcr.core.models import ModelLoadError
    from tlcr.evaluation.evaluate import EvalConfig
    from tlcr.evaluation.judge import JudgeConfig
    from tlcr.evaluation.run import run_evaluation
    from tlcr.service.client import RewardServiceError, RewardServiceUnavailable, TokenRewardClient

    try:
        pairs = config.select_part(config.load_pairs(SkipReport()))
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    prompts = [p.prompt for p in pairs]
    task = None
    if config.source == CONTROLLED:
        from tlcr.core.data.controlled import ControlledTask

        task = ControlledTask()
    judge = JudgeConfig(base_url=config.judge_url, model=config.judge_model,
                        api_key_env=config.judge_api_key_env) if config.judge_url else None
    eval_config = EvalConfig(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                             do_sample=config.sample, seed=config.seed, heatmap_samples=config.heatmaps, judge=judge,
                             judge_baseline=config.judge_baseline, mt_bench_path=config.mt_bench,
                             mt_bench_limit=config.mt_bench_limit)
    try:
        with TokenRewardClient(config.reward_url, api_key=os.environ.get(config.reward_api_key_env),
                               deadline=config.reward_deadline) as client:
            summary = run_evaluation(config.policies(), prompts, client, eval_config, config.output_dir, task=task,
                                     ppo_runs=config.ppo_run)
    except RewardServiceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from exc
    except (RewardServiceError, ModelLoadError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"report: {config.output_dir / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
