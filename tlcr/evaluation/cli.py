"""`tlcr eval`: score policy checkpoints through the reward service and write the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.exit_codes import ExitCode


def parse_policy_option(values: list[str]) -> dict[str, str]:
    """NAME=PATH pairs (or bare paths, named after their folder), names unique."""
    policies: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name, value
        if not name or not path:
            raise typer.BadParameter(f"--policy expects NAME=PATH or PATH, got {value!r}")
        if name in policies:
            raise typer.BadParameter(f"--policy name {name!r} given twice")
        policies[name] = path
    return policies


def eval_command(
    policy: Annotated[list[str], typer.Option(help="Policy checkpoint as NAME=PATH (repeat for several).")],
    reward_url: Annotated[str, typer.Option(help="Reward service URL(s), comma-separated.")],
    out: Annotated[Path, typer.Option(help="Report folder: report.html, metrics.json, PNGs, responses.jsonl.")],
    source: Annotated[str, typer.Option(help="Held-out prompts: 'controlled', a pairs .jsonl(.gz), or a Hub id.")]
    = "controlled",
    split: Annotated[str, typer.Option(help="Hub split for held-out prompts (HH-RLHF: test).")] = "test",
    limit: Annotated[int, typer.Option(help="Number of held-out prompts.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for held-out controlled prompts (use one unseen in training).")]
    = 12345,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    sample: Annotated[bool, typer.Option(help="Sample (top-p 0.9, T=1) instead of greedy decoding.")] = False,
    api_key_env: Annotated[str, typer.Option(help="Env var holding the reward service API key.")]
    = "TLCR_API_KEY",
    ppo_run: Annotated[list[str] | None, typer.Option(help="PPO run folders to plot Fig. 7 curves from.")] = None,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible judge base URL (optional).")] = None,
    judge_model: Annotated[str, typer.Option(help="Judge model name.")] = "gpt-4o",
    judge_api_key_env: str = "OPENAI_API_KEY",
    judge_baseline: Annotated[str | None, typer.Option(help="Policy name others are compared to (win rate).")]
    = None,
    mt_bench: Annotated[Path | None, typer.Option(help="MT-Bench question.jsonl to grade (needs a judge).")] = None,
    mt_bench_limit: int | None = None,
    heatmaps: Annotated[int, typer.Option(help="Sample responses per policy shown as token heatmaps.")] = 3,
) -> None:
    """Generate with each policy on held-out prompts; score with the sequence RM, Σ fixed and Σ continuous
    token rewards (Fig. 6) via the service, the oracle on the controlled task, and optional LLM judges."""
    import os

    from service.client import RewardServiceError, RewardServiceUnavailable, TokenRewardClient
    from tlcr.data.jsonl import DataError
    from tlcr.data.pairs import CONTROLLED, load_preference_pairs
    from tlcr.evaluation.evaluate import EvalConfig
    from tlcr.evaluation.judge import JudgeConfig
    from tlcr.evaluation.run import run_evaluation
    from tlcr.models import ModelLoadError

    policies = parse_policy_option(policy)
    if mt_bench is not None and judge_url is None:
        raise typer.BadParameter("--mt-bench needs --judge-url (MT-Bench answers are graded by a judge)")
    if judge_baseline is not None and judge_baseline not in policies:
        raise typer.BadParameter(f"--judge-baseline {judge_baseline!r} is not one of the --policy names")
    try:
        pairs = load_preference_pairs(source, split=split, limit=limit, seed=seed, on_error="skip")
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    prompts = [p.prompt for p in pairs]
    task = None
    if source == CONTROLLED:
        from tlcr.data.controlled import ControlledTask

        task = ControlledTask()
    judge = JudgeConfig(base_url=judge_url, model=judge_model, api_key_env=judge_api_key_env) if judge_url else None
    config = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=sample, seed=seed,
                        heatmap_samples=heatmaps, judge=judge, judge_baseline=judge_baseline,
                        mt_bench_path=mt_bench, mt_bench_limit=mt_bench_limit)
    try:
        with TokenRewardClient(reward_url, api_key=os.environ.get(api_key_env)) as client:
            summary = run_evaluation(policies, prompts, client, config, out, task=task, ppo_runs=ppo_run or [])
    except RewardServiceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from exc
    except (RewardServiceError, ModelLoadError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"report: {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
