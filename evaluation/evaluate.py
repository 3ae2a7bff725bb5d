"""`tlcr eval`: generate with each policy on held-out prompts, then score every response with
(a) the sequence reward model, (b) the sum of fixed token rewards, (c) the sum of continuous token rewards
(the paper's Fig. 6, all through the reward service), plus the controlled task's oracle and, when a judge
endpoint is configured, pairwise win rate against a baseline and MT-Bench single-answer grading."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import encode_prompt_response, load_causal_lm, load_tokenizer
from tlcr.core.reward_modes import RewardMode
from tlcr.evaluation.judge import Judge, JudgeConfig
from tlcr.evaluation.mt_bench import conversation_prompt, load_mt_bench
from tlcr.evaluation.report import HeatmapSample
from tlcr.service.client import TokenRewardClient
from tlcr.trainer.rollout import generate_rollout


@dataclass
class EvalConfig:
    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False  # greedy by default: comparable across policies and reruns
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0
    device: str | None = None
    heatmap_samples: int = 3
    judge: JudgeConfig | None = None
    judge_baseline: str | None = None  # policy name the others are compared against
    mt_bench_path: Path | None = None
    mt_bench_limit: int | None = None


@dataclass
class PolicyEval:
    name: str
    responses: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    per_item: list[dict[str, Any]] = field(default_factory=list)


def generate_responses(policy: str | Path, prompts: Sequence[str], config: EvalConfig) -> list[str]:
    """Response texts for `prompts`, generated the way PPO rollouts are (stops at EOS or max_new_tokens)."""
    return generate_responses_with_lengths(policy, prompts, config)[0]


@torch.no_grad()
def generate_responses_with_lengths(policy: str | Path, prompts: Sequence[str],
                                    config: EvalConfig) -> tuple[list[str], list[int]]:
    """Response texts and their lengths in policy tokens (EOS not counted)."""
    tokenizer = load_tokenizer(policy)
    model = load_causal_lm(policy, device=config.device).eval()
    torch.manual_seed(config.seed)
    generation = GenerationConfig(do_sample=config.do_sample, max_new_tokens=config.max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **({"temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
                                     if config.do_sample else {}))
    prompt_ids = [encode_prompt_response(tokenizer, p, "")[0] for p in prompts]
    rollout = generate_rollout(model, prompts, prompt_ids, generation, pad_token_id=tokenizer.pad_token_id,
                               eos_token_ids=tokenizer.eos_token_id, batch_size=config.batch_size)
    texts = [tokenizer.decode(row[:length], skip_special_tokens=True)
             for row, length in zip(rollout.response_ids.tolist(), rollout.lengths.tolist(), strict=True)]
    lengths = (rollout.lengths - rollout.ended.long()).tolist()
    return texts, lengths


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def score_with_service(client: TokenRewardClient, prompts: Sequence[str], responses: Sequence[str],
                       use_sequence_model: bool) -> list[dict[str, Any]]:
    """Per item: continuous and fixed token-reward sums, token strings and rewards, and the sequence score."""
    rows: list[dict[str, Any]] = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
    scorable = [i for i, r in enumerate(responses) if r]
    items = [{"prompt": prompts[i], "response": responses[i]} for i in scorable]
    if items:
        continuous = client.token_rewards(items, mode=RewardMode.continuous, return_tokens=True)
        fixed = client.token_rewards(items, mode=RewardMode.fixed)
        sequence = client.sequence_rewards(items) if use_sequence_model else [math.nan] * len(items)
        for i, cont, fix, seq in zip(scorable, continuous, fixed, sequence, strict=True):
            rows[i].update(continuous_token_reward_sum=sum(cont.rewards), fixed_token_reward_sum=sum(fix.rewards),
                           sequence_reward=seq, tokens=cont.tokens or [], rewards=cont.rewards)
    for row in rows:  # an empty response has no token to reward: it scores zero, not NaN
        row.setdefault("continuous_token_reward_sum", 0.0)
        row.setdefault("fixed_token_reward_sum", 0.0)
        row.setdefault("sequence_reward", math.nan)
        row.setdefault("tokens", [])
        row.setdefault("rewards", [])
    return rows


def evaluate_policies(policies: Mapping[str, str | Path], prompts: Sequence[str], client: TokenRewardClient,
                      config: EvalConfig, task: ControlledTask | None = None) -> list[PolicyEval]:
    use_seq = client.info().sequence_model is not None
    results = []
    for name, path in policies.items():
        responses, lengths = generate_responses_with_lengths(path, prompts, config)
        rows = score_with_service(client, prompts, responses, use_seq)
        for row, length in zip(rows, lengths, strict=True):
            row["policy_tokens"] = length
        metrics = {key: _mean([r[key] for r in rows]) for key in
                   ("sequence_reward", "fixed_token_reward_sum", "continuous_token_reward_sum")}
        metrics["response_tokens"] = _mean([float(r["policy_tokens"]) for r in rows])  # as the policy counts them
        if task is not None:
            scores = [task.oracle(r["prompt"], r["response"]) for r in rows]
            for row, score in zip(rows, scores, strict=True):
                row["oracle"] = score.to_dict()
            metrics["oracle_score"] = _mean([o.score for o in scores])
            metrics["oracle_helpful"] = _mean([float(o.helpful) for o in scores])
            # the oracle's parts (docs/results.md): what a token reward can change, and what it cannot
            metrics["oracle_style_faults"] = _mean([float(o.style_faults) for o in scores])
            metrics["oracle_details"] = _mean([o.details_share for o in scores])
            metrics["oracle_wrong_facts"] = _mean([float(o.wrong) for o in scores])
        results.append(PolicyEval(name, responses, metrics, rows))
    if config.judge is not None:
        asyncio.run(_judge(results, prompts, policies, config))
    return results


async def _judge(results: list[PolicyEval], prompts: Sequence[str], policies: Mapping[str, str | Path],
                 config: EvalConfig) -> None:
    assert config.judge is not None
    judge = Judge(config.judge)
    try:
        baseline = next((r for r in results if r.name == config.judge_baseline), results[0])
        for result in results:
            if result is not baseline:
                result.metrics[f"win_rate_vs_{baseline.name}"] = await judge.pairwise_win_rate(
                    prompts, result.responses, baseline.responses)
        if config.mt_bench_path is not None:
            questions = load_mt_bench(config.mt_bench_path)[: config.mt_bench_limit]
            for result in results:
                convs: list[list[str]] = [[] for _ in questions]
                graded_prompts, graded_answers = [], []
                for turn in range(max(len(q.turns) for q in questions)):
                    asked = [i for i, q in enumerate(questions) if turn < len(q.turns)]
                    turn_prompts = [conversation_prompt(questions[i].turns, convs[i]) for i in asked]
                    answers = generate_responses(policies[result.name], turn_prompts, config)
                    for i, prompt, answer in zip(asked, turn_prompts, answers, strict=True):
                        convs[i].append(answer)
                        graded_prompts.append(prompt)
                        graded_answers.append(answer)
                result.metrics["mt_bench_score"] = await judge.mean_rating(graded_prompts, graded_answers)
        if judge.failures:
            for result in results:
                result.metrics["judge_parse_failures"] = float(len(judge.failures))
    finally:
        await judge.aclose()


def heatmap_samples(results: Sequence[PolicyEval], n: int) -> list[HeatmapSample]:
    """The first `n` scored responses of every policy, on the same prompts, for side-by-side heatmaps."""
    samples = []
    for i in range(n):
        for result in results:
            if i < len(result.per_item) and result.per_item[i]["tokens"]:
                row = result.per_item[i]
                samples.append(HeatmapSample(result.name, row["prompt"], row["tokens"], row["rewards"],
                                             row.get("oracle", {}).get("score")))
    return samples
