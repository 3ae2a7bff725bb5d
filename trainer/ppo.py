"""PPO with dense per-token rewards fetched over HTTP, on transformers + accelerate.

One step: sample a response for each prompt of the rollout batch; send the batch to the reward service
in one call (in a background thread) while the policy, value and reference forward passes run; shape
rewards r_t = −β·KL_t + dense_t; GAE; several epochs of clipped PPO updates over minibatches; log
metrics; checkpoint every `save_steps`. TRL ≥ 1.13 has no PPO trainer; the structure follows TRL 1.12's
experimental PPOTrainer (one config dataclass, policy and value wrapped in one module for DDP/DeepSpeed).

Runs as is on one process, or under `accelerate launch` (DDP, DeepSpeed ZeRO-2/3): each process samples
its own share of the prompts and fetches its own rewards; gradients are averaged by accelerate.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcr.trainer import ppo_math
from tlcr.trainer.build_lock_watchdog import watch_build_locks
from tlcr.trainer.checkpoints import (
    capture_rng_state,
    load_latest_checkpoint,
    prepare_output_dir,
    restore_rng_state,
    write_checkpoint,
)
from tlcr.trainer.metrics_log import JSONLTracker, finish_tracking, start_tracking, tracker_names, tracking_project
from tlcr.trainer.ppo_config import PPOConfig, PPOConfigError
from tlcr.trainer.rollout import (
    FetchedRewards,
    RewardBackend,
    Rollout,
    fetch_rewards,
    forward_rollout,
    generate_rollout,
    logprobs_from_logits,
    response_values,
    sampling_config,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "ppo_config.json"


class TrainingStopped(RuntimeError):
    """The run stopped early (reward service unavailable past its deadline) after saving a checkpoint."""

    def __init__(self, message: str, *, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


# --------------------------------------------------------------------------------------------- data


def load_prompts(config: PPOConfig) -> list[str]:
    """Distinct prompts of the configured split part, in a fixed order."""
    from tlcr.core.data.sources import load_preference_pairs
    from tlcr.core.data.splits import select_part

    pairs = load_preference_pairs(config.source, limit=config.data_limit, seed=config.data_seed)
    part = select_part(pairs, config.split_part, seed=config.data_seed)
    prompts = list(dict.fromkeys(p.prompt for p in part))
    if not prompts:
        raise PPOConfigError(f"no prompts in the {config.split_part!r} part of {config.source!r}")
    return prompts


def batch_indices(step: int, n_prompts: int, batch_size: int, rank: int, world_size: int, seed: int) -> list[int]:
    """Prompt indices for (0-based) `step` on process `rank`: a pure function of the step, so a resumed
    run draws exactly the prompts the original run would have. Each epoch is a fresh permutation; the
    processes take disjoint slices of each global batch."""
    global_size = batch_size * world_size
    first = step * global_size + rank * batch_size
    out: list[int] = []
    cache: dict[int, list[int]] = {}
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, n_prompts)
        if epoch not in cache:
            order = list(range(n_prompts))
            random.Random(f"{seed}-{epoch}").shuffle(order)
            cache[epoch] = order
        out.append(cache[epoch][offset])
    return out


# --------------------------------------------------------------------------------------------- models


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so DDP / DeepSpeed wrap (and one optimizer steps) both."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    # TRL's unwrap_model_for_generation turns gradient checkpointing off around generate() with these.
    @property
    def is_gradient_checkpointing(self) -> bool:
        # transformers 5 renamed the flag (the old name warns); read whichever this version has.
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
            if hasattr(type(self.policy), name):
                return bool(getattr(self.policy, name))
        return False

    def gradient_checkpointing_disable(self) -> None:
        self.policy.gradient_checkpointing_disable()  # type: ignore[operator]

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        self.policy.gradient_checkpointing_enable(  # type: ignore[operator]
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).logits
        values = self.value_model(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids).logits[..., 0]
        return logits, values


def resolve_token_input(option: str, service_fingerprint: str | None, policy_tokenizer: Any) -> str:
    """'ids' when the service's tokenizer tokenizes as the policy's does (same `tokenizer_fingerprint`, which
    the service's /info reports), else 'text' + offsets. Nothing is loaded by the service's name or path:
    /info gives names only, and the service may run on another machine."""
    if option in ("ids", "text"):
        return option
    if not service_fingerprint:
        return "text"
    from tlcr.core.tokenization import tokenizer_fingerprint

    return "ids" if tokenizer_fingerprint(policy_tokenizer) == service_fingerprint else "text"


# --------------------------------------------------------------------------------------------- trainer


@dataclass
class CollectedRollout:
    """A rollout with its no-grad forwards; its rewards are still being fetched."""

    rollout: Rollout
    logprobs: torch.Tensor  # policy log-probs at sampling time (the "old" policy)
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    bootstrap_values: torch.Tensor  # V after the last action
    entropy: float
    timings: dict[str, float]
    rewards: Future[FetchedRewards]


@dataclass
class StepBatch:
    """Everything the PPO update needs from one rollout."""

    rollout: Rollout
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the reward service stayed unreachable past the client's deadline"."""
    from tlcr.service.client import RewardServiceUnavailable

    return (RewardServiceUnavailable,)


class PPOTrainer:
    """Build with a config (and optionally a reward backend), then `train()`."""

    def __init__(self, config: PPOConfig, reward_backend: RewardBackend | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from tlcr.core.models import load_tokenizer

        watch_build_locks()  # DeepSpeed may JIT-build an op here: a stale build lock is reported, not silent
        self.config = config
        if not config.policy:
            raise PPOConfigError("policy is required (the SFT checkpoint to start from)")
        accumulation = config.mini_batch_size // config.micro_batch_size
        cpu = config.device == "cpu" or not torch.cuda.is_available()
        self.output_dir = Path(config.output_dir)
        self.metrics_file = JSONLTracker(self.output_dir)
        self.accelerator = Accelerator(gradient_accumulation_steps=accumulation, cpu=cpu,
                                       log_with=[self.metrics_file, *tracker_names(config.report_to)],
                                       project_config=tracking_project(self.output_dir))
        prepare_output_dir(self.accelerator, self.output_dir, resume=config.resume, overwrite=config.overwrite)
        set_seed(config.seed + self.accelerator.process_index)

        self.tokenizer = load_tokenizer(config.policy, padding_side="left")
        all_prompts = load_prompts(config)
        tokenized = self._tokenize_prompts(all_prompts)
        self.prompts = [p for p, ids in zip(all_prompts, tokenized, strict=True) if ids is not None]
        self.prompt_ids: list[list[int]] = [ids for ids in tokenized if ids is not None]
        if len(self.prompts) < len(all_prompts):
            logger.warning("dropped %d of %d prompts longer than max_prompt_length=%d tokens",
                           len(all_prompts) - len(self.prompts), len(all_prompts), config.max_prompt_length)
        if not self.prompts:
            raise PPOConfigError(f"every prompt is longer than max_prompt_length={config.max_prompt_length}")

        self.client_owned = reward_backend is None
        self._client_closed = False
        self.reward_backend = reward_backend if reward_backend is not None else self._make_client()
        try:
            self._build(config)
        except BaseException:
            self._close_client()
            raise

    def _build(self, config: PPOConfig) -> None:
        """Models, optimizer and helpers (after the reward client exists, so a failure here can close it)."""
        from tlcr.core.models import load_causal_lm, load_token_classifier

        service_info = self._service_info()
        self.token_input = resolve_token_input(
            config.token_input, getattr(service_info, "tokenizer_fingerprint", None), self.tokenizer)
        if config.reward_mode == "seq" and service_info is not None and not service_info.sequence_model:
            raise PPOConfigError("reward_mode 'seq' needs a service started with a sequence reward model "
                                 f"(--sequence-model); {config.reward_url} has none")
        if service_info is not None:  # /sequence_rewards enforces the same max_length as /token_rewards
            self._fit_service_length(service_info.max_length)

        device = str(self.accelerator.device)
        policy = load_causal_lm(config.policy, device=device, dtype=config.dtype)
        self.ref_model = load_causal_lm(config.reference or config.policy, device=device, dtype=config.dtype)
        self.ref_model.eval().requires_grad_(False)
        self.ref_model.config.use_cache = False
        value_source = self._value_source(service_info)
        value_model = load_token_classifier(value_source, num_labels=1, device=device, dtype=config.dtype)
        self.value_source = value_source
        from trl.trainer.utils import disable_dropout_in_model

        for model in (policy, self.ref_model, value_model):
            disable_dropout_in_model(model)  # dropout would make old and new log-probs disagree
        if config.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
            value_model.gradient_checkpointing_enable()

        eos_ids = policy.generation_config.eos_token_id
        eos_list = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos_list:
            eos_list.append(self.tokenizer.eos_token_id)
        if not eos_list:
            raise PPOConfigError(f"{config.policy}: neither the tokenizer nor the generation config has an EOS token")
        self.eos_token_ids: list[int] = eos_list
        self.generation_config = sampling_config(self.tokenizer, max_new_tokens=config.max_new_tokens,
                                                 temperature=config.temperature, top_p=config.top_p)
        self.generation_config.eos_token_id = eos_list

        wrapper = PolicyAndValue(policy, value_model)
        value_lr = config.value_learning_rate or config.learning_rate
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
             {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr}],
            lr=config.learning_rate, betas=tuple(config.adam_betas), eps=config.adam_eps,
            weight_decay=config.weight_decay)
        from transformers import get_scheduler

        updates_per_step = config.ppo_epochs * (config.rollout_batch_size // config.mini_batch_size)
        # Not passed to accelerator.prepare: it would step it once per process; checkpointed explicitly.
        self.scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                                       num_training_steps=config.num_steps * updates_per_step)
        self._configure_deepspeed()
        self.model, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        if self.accelerator.state.deepspeed_plugin is not None:
            from trl.models.utils import prepare_deepspeed

            self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)

        self.oracle = self._oracle()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-fetch")
        self.step = 0
        self.last_checkpoint_step = -1
        self.sequence_score_stats: tuple[float, float] | None = None  # (mean, std) of the SFT samples' scores

    # ----------------------------------------------------------------------------------------- setup

    def _tokenize_prompts(self, prompts: Sequence[str]) -> list[list[int] | None]:
        """Prompt token ids (the prompt alone: what the joint split gives with no response); None if too long."""
        from tlcr.core.models import encode_prompt_response

        out: list[list[int] | None] = []
        for prompt in prompts:
            ids, _ = encode_prompt_response(self.tokenizer, prompt, "")
            out.append(ids if 0 < len(ids) <= self.config.max_prompt_length else None)
        return out

    def _configure_deepspeed(self) -> None:
        """Fill DeepSpeed's batch size and clipping: without a dataloader accelerate cannot infer them."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        ds_config = plugin.deepspeed_config
        if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds_config["train_micro_batch_size_per_gpu"] = self.config.micro_batch_size
        if ds_config.get("gradient_clipping", "auto") == "auto":
            ds_config["gradient_clipping"] = self.config.max_grad_norm

    def _fit_service_length(self, service_max_length: int) -> None:
        """Keep prompts whose tokens plus a full-length response fit the discriminator's max_length.

        The service refuses longer items (422), which would stop the run mid-way; in text mode the
        service's token counts differ from the policy's, so this is only checked approximately (warned).
        """
        room = service_max_length - self.config.max_new_tokens
        too_long = [i for i, ids in enumerate(self.prompt_ids) if len(ids) > room]
        if not too_long:
            return
        if self.token_input == "text":
            logger.warning("%d prompts plus max_new_tokens=%d may exceed the service's max_length=%d",
                           len(too_long), self.config.max_new_tokens, service_max_length)
            return
        if len(too_long) == len(self.prompt_ids):
            raise PPOConfigError(f"no prompt fits the service's max_length={service_max_length} with "
                                 f"max_new_tokens={self.config.max_new_tokens}; lower max_new_tokens")
        logger.warning("dropped %d prompts: with max_new_tokens=%d they would exceed the service's max_length=%d",
                       len(too_long), self.config.max_new_tokens, service_max_length)
        dropped = set(too_long)
        self.prompts = [p for i, p in enumerate(self.prompts) if i not in dropped]
        self.prompt_ids = [ids for i, ids in enumerate(self.prompt_ids) if i not in dropped]

    def _make_client(self) -> RewardBackend:
        from tlcr.service.client import TokenRewardClient

        return TokenRewardClient(self.config.reward_url, api_key=self.config.reward_api_key,
                                 timeout=self.config.reward_timeout, max_retries=self.config.reward_max_retries,
                                 backoff=self.config.reward_backoff, deadline=self.config.reward_deadline)

    def _service_info(self) -> Any:
        info = getattr(self.reward_backend, "info", None)
        if info is None:
            return None
        result = info()
        logger.info("reward service: model %s, tokenizer %s, sequence model %s", result.model, result.tokenizer,
                    result.sequence_model)
        return result

    def _value_source(self, service_info: Any) -> str:
        if self.config.value_init == "sft":
            return self.config.policy
        # The trainer's own option, never the service's /info: that names the model, not where it is, and the
        # service may run on another machine.
        source = self.config.value_model
        if not source:
            raise PPOConfigError("value_init 'discriminator' needs the discriminator checkpoint: pass value_model "
                                 "(--value-model PATH or Hub id), or use value_init 'sft'")
        from tlcr.core.models import load_tokenizer
        from tlcr.core.tokenization import tokenizer_fingerprint

        if tokenizer_fingerprint(load_tokenizer(source)) != tokenizer_fingerprint(self.tokenizer):
            raise PPOConfigError(f"value_init 'discriminator': {source} uses a different tokenizer than the policy "
                                 f"{self.config.policy}, so it cannot read the policy's tokens; use value_init 'sft'")
        return str(source)

    def _oracle(self) -> Callable[[str, str], float] | None:
        """The controlled task's oracle score, when every prompt is one of its questions (any source)."""
        from tlcr.core.data.controlled import ControlledTask

        task = ControlledTask()  # the fixed KB that load_preference_pairs("controlled") draws from
        if not all(task.parse_prompt(prompt) is not None for prompt in self.prompts):
            return None
        return lambda prompt, response: task.oracle(prompt, response).score

    # ----------------------------------------------------------------------------------------- one step

    def _collect(self, step: int) -> CollectedRollout:
        """Sample; start the reward fetch in the background; run the no-grad forwards meanwhile."""
        config = self.config
        acc = self.accelerator
        indices = batch_indices(step, len(self.prompts), config.rollout_batch_size, acc.process_index,
                                acc.num_processes, config.seed)
        prompts = [self.prompts[i] for i in indices]
        prompt_ids = [self.prompt_ids[i] for i in indices]
        from trl.models.utils import unwrap_model_for_generation

        timings: dict[str, float] = {}
        started = time.perf_counter()
        self.model.eval()
        with unwrap_model_for_generation(self.model, acc) as unwrapped:
            rollout = generate_rollout(unwrapped.policy, prompts, prompt_ids, self.generation_config,
                                       pad_token_id=self.tokenizer.pad_token_id, eos_token_ids=self.eos_token_ids,
                                       batch_size=config.generation_batch_size)
        timings["time/generate"] = time.perf_counter() - started

        rewards = self.executor.submit(
            fetch_rewards, self.reward_backend, self.tokenizer, prompts=rollout.prompts,
            prompt_ids=rollout.prompt_ids, text_token_ids=rollout.text_token_ids(),
            width=rollout.response_ids.shape[1], reward_mode=config.reward_mode, token_input=self.token_input,
            threshold=config.reward_threshold)
        if not config.overlap_reward_fetch:
            started = time.perf_counter()
            concurrent.futures.wait([rewards])
            timings["time/reward_wait"] = time.perf_counter() - started

        started = time.perf_counter()
        policy_out = forward_rollout(self.model, rollout, temperature=config.temperature,
                                     batch_size=config.forward_batch_size, with_values=True, with_entropy=True)
        ref_out = forward_rollout(self.ref_model, rollout, temperature=config.temperature,
                                  batch_size=config.forward_batch_size, with_values=False, with_entropy=False)
        timings["time/forward"] = time.perf_counter() - started
        assert policy_out.values is not None and policy_out.bootstrap_values is not None
        assert policy_out.entropy is not None
        return CollectedRollout(rollout=rollout, logprobs=policy_out.logprobs, ref_logprobs=ref_out.logprobs,
                                values=policy_out.values, bootstrap_values=policy_out.bootstrap_values,
                                entropy=float(ppo_math.masked_mean(policy_out.entropy, rollout.mask)),
                                timings=timings, rewards=rewards)

    def _advantages(self, collected: CollectedRollout,
                    rewards: FetchedRewards) -> tuple[StepBatch, dict[str, float]]:
        """Shape rewards (−β·KL + dense or sequence score), GAE, optional whitening; rollout metrics."""
        config = self.config
        rollout = collected.rollout
        mask = rollout.mask
        kl = ppo_math.kl_per_token(collected.logprobs, collected.ref_logprobs, mask,
                                   config.kl_estimator)  # type: ignore[arg-type]
        scores = self._normalized_scores(rewards.scores) if rewards.scores is not None else None
        if config.missing_eos_penalty is not None:
            penalty = config.missing_eos_penalty * (~rollout.ended).float()
            scores = penalty if scores is None else scores + penalty
        shaped = ppo_math.shape_rewards(kl, mask, config.kl_coef, dense_rewards=rewards.dense,
                                        sequence_scores=scores)
        if config.whiten_rewards:
            shaped = ppo_math.masked_whiten(shaped, mask, shift_mean=False)
        bootstrap = collected.bootstrap_values * (~rollout.ended).float() if config.truncation_bootstrap else None
        advantages, returns = ppo_math.gae_advantages(shaped, collected.values, mask, config.gamma, config.lam,
                                                      bootstrap_values=bootstrap)
        if config.whiten_advantages:
            advantages = ppo_math.masked_whiten(advantages, mask)

        lengths = rollout.lengths.float()
        task_reward = torch.zeros(len(lengths))
        if rewards.dense is not None:
            task_reward = task_reward + (rewards.dense * mask).sum(1)
        if rewards.scores is not None:
            task_reward = task_reward + rewards.scores
        metrics = {
            "reward/sequence": float(task_reward.mean()),
            "reward/total": float(shaped.sum(1).mean()),
            "kl": float(kl.sum(1).mean()),
            "kl/per_token": float(ppo_math.masked_mean(kl, mask)),
            "response_length": float(lengths.mean()),
            "eos_fraction": float(rollout.ended.float().mean()),
            "perplexity": math.exp(-float(ppo_math.masked_mean(collected.logprobs, mask))),
            "ref_perplexity": math.exp(-float(ppo_math.masked_mean(collected.ref_logprobs, mask))),
            "entropy": collected.entropy,
            "value/mean": float(ppo_math.masked_mean(collected.values, mask)),
            "reward/cut_short": float(rewards.cut_short),
            "time/reward_fetch": rewards.latency_s,
        }
        if rewards.dense is not None:
            # Per text token: the final EOS action never gets a dense reward, so it is not counted.
            text_mask = ppo_math.mask_from_lengths(rollout.lengths - rollout.ended.long(), mask.shape[1])
            metrics["reward/token_mean"] = float(ppo_math.masked_mean(rewards.dense, text_mask))
        if self.oracle is not None:
            texts = self.tokenizer.batch_decode(rollout.text_token_ids(), skip_special_tokens=True)
            scores_ = [self.oracle(p, r) for p, r in zip(rollout.prompts, texts, strict=True)]
            metrics["oracle_score"] = sum(scores_) / len(scores_)
        batch = StepBatch(rollout=rollout, old_logprobs=collected.logprobs, old_values=collected.values,
                          advantages=advantages, returns=returns)
        return batch, metrics

    def _normalized_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Sequence scores z-scored by the first rollout batch's statistics (over every process), if enabled."""
        if not self.config.normalize_sequence_scores:
            return scores.clone()
        if self.sequence_score_stats is None:
            gathered = self.accelerator.gather(scores.to(self.accelerator.device)).float().cpu()
            std = float(gathered.std()) if gathered.numel() > 1 else 0.0
            self.sequence_score_stats = (float(gathered.mean()), std)
            logger.info("sequence scores of the SFT samples: mean %.4f, std %.4f (used to normalise)",
                        *self.sequence_score_stats)
        mean, std = self.sequence_score_stats
        return (scores - mean) / max(std, 1e-6)

    def _update(self, batch: StepBatch) -> dict[str, float]:
        """PPO epochs over shuffled minibatches, micro-batches accumulated by accelerate."""
        config = self.config
        acc = self.accelerator
        device = acc.device
        self.model.train()
        sums: dict[str, float] = {}
        count = 0
        n_rows = batch.rollout.response_ids.shape[0]
        for _ in range(config.ppo_epochs):
            order = torch.randperm(n_rows)
            for mini_start in range(0, n_rows, config.mini_batch_size):
                mini = order[mini_start:mini_start + config.mini_batch_size]
                for micro_start in range(0, len(mini), config.micro_batch_size):
                    rows = mini[micro_start:micro_start + config.micro_batch_size]
                    part = batch.rollout.select(rows)
                    width = part.response_ids.shape[1]
                    mask = part.mask.to(device)
                    with acc.accumulate(self.model):
                        input_ids, attention_mask, position_ids = (t.to(device) for t in part.model_inputs())
                        logits, value_logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                                          position_ids=position_ids)
                        new_logprobs = logprobs_from_logits(logits, part, config.temperature)
                        new_values, _ = response_values(value_logits.float(), part)
                        pg_loss, pg_clip, approx_kl = ppo_math.clipped_policy_loss(
                            new_logprobs, batch.old_logprobs[rows, :width].to(device),
                            batch.advantages[rows, :width].to(device), mask, config.clip_range)
                        vf_loss, vf_clip = ppo_math.clipped_value_loss(
                            new_values, batch.old_values[rows, :width].to(device),
                            batch.returns[rows, :width].to(device), mask, config.clip_range_value)
                        loss = pg_loss + config.vf_coef * vf_loss
                        acc.backward(loss)
                        if acc.sync_gradients and config.max_grad_norm > 0:
                            acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                    if acc.sync_gradients:
                        self.scheduler.step()
                    for key, value in (("loss/policy", pg_loss), ("loss/value", vf_loss), ("clipfrac/policy", pg_clip),
                                       ("clipfrac/value", vf_clip), ("approx_kl", approx_kl)):
                        sums[key] = sums.get(key, 0.0) + float(value.detach())
                    count += 1
        metrics = {key: value / max(count, 1) for key, value in sums.items()}
        metrics["explained_variance"] = float(ppo_math.explained_variance(batch.old_values, batch.returns,
                                                                          batch.rollout.mask))
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    def _reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """Means over processes (every process logs the same keys in the same order)."""
        if self.accelerator.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        reduced = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, reduced.cpu().tolist(), strict=True))

    # ----------------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, step: int) -> Path:
        """Accelerate state (policy + value weights, optimiser, RNG), scheduler, step, and HF exports."""
        state = {"num_steps": self.config.num_steps, "reward_mode": self.config.reward_mode,
                 "sequence_score_stats": self.sequence_score_stats}
        final = write_checkpoint(self.accelerator, self.output_dir, step, state,
                                 total_limit=self.config.save_total_limit, write_exports=self.export_hf)
        self.last_checkpoint_step = step
        return final

    def export_hf(self, directory: Path) -> None:
        """Policy (with tokenizer) and value model in Hugging Face format under directory/policy, /value."""
        acc = self.accelerator
        state = acc.get_state_dict(self.model)  # gathers ZeRO-3 shards; every process must call it
        if not acc.is_main_process:
            return
        unwrapped = acc.unwrap_model(self.model)
        for name, module in (("policy", unwrapped.policy), ("value", unwrapped.value_model)):
            prefix = f"{name if name == 'policy' else 'value_model'}."
            sub_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            module.save_pretrained(directory / name, state_dict=sub_state)
            self.tokenizer.save_pretrained(directory / name)

    def _resume(self) -> int:
        step, _, saved = load_latest_checkpoint(self.accelerator, self.output_dir)
        stats = saved.get("sequence_score_stats")
        self.sequence_score_stats = (float(stats[0]), float(stats[1])) if stats else None
        self.last_checkpoint_step = step
        return step

    # ----------------------------------------------------------------------------------------- loop

    def train(self) -> dict[str, Any]:
        """Run (or resume) to `num_steps`; returns the last step's metrics and where outputs went.

        Closes the trainer's reward client and fetch thread when done (or stopped)."""
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> dict[str, Any]:
        config = self.config
        acc = self.accelerator
        start_step = self._resume() if config.resume else 0
        start_tracking(acc, self.output_dir, self.metrics_file, start_step if config.resume else None)
        self._write_run_file(CONFIG_FILE, {**config.to_dict(), "token_input_resolved": self.token_input,
                                           "value_source": self.value_source, "num_processes": acc.num_processes})
        last: dict[str, float] = {}
        try:
            for step in range(start_step + 1, config.num_steps + 1):
                self.step = step
                step_started = time.perf_counter()
                rng_at_step_start = capture_rng_state()
                collected = self._collect(step - 1)
                wait_started = time.perf_counter()
                failure: BaseException | None = None
                try:
                    fetched = collected.rewards.result()
                except unavailable_errors() as exc:
                    failure = exc
                reward_wait = time.perf_counter() - wait_started + collected.timings.pop("time/reward_wait", 0.0)
                self._stop_if_any_failed(failure, step, rng_at_step_start)
                batch, rollout_metrics = self._advantages(collected, fetched)
                started = time.perf_counter()
                update_metrics = self._update(batch)
                update_time = time.perf_counter() - started
                step_metrics = {**rollout_metrics, **update_metrics, **collected.timings,
                                "time/reward_wait": reward_wait, "time/update": update_time,
                                "time/step": time.perf_counter() - step_started}
                last = self._reduce(step_metrics)
                acc.log(last, step=step)
                if acc.is_main_process:
                    logger.info("step %d/%d  reward %.3f  kl %.3f  len %.1f  ppl %.2f  (%.2fs, reward fetch %.2fs)",
                                step, config.num_steps, last["reward/sequence"], last["kl"], last["response_length"],
                                last["perplexity"], last["time/step"], last["time/reward_fetch"])
                if step % config.save_steps == 0 or step == config.num_steps:
                    self.save_checkpoint(step)
        finally:
            finish_tracking(acc)
        self.export_hf(self.output_dir)
        summary = {"steps": config.num_steps, "output_dir": str(self.output_dir), "metrics": last,
                   "policy": str(self.output_dir / "policy"), "value": str(self.output_dir / "value"),
                   "is_main_process": acc.is_main_process}
        self._write_run_file("run_summary.json", summary)
        return summary

    def _write_run_file(self, name: str, payload: dict[str, Any]) -> None:
        """A small JSON file in the run directory (config, summary), written atomically by the main process."""
        if not self.accelerator.is_main_process:
            return
        path = self.output_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def _stop_if_any_failed(self, failure: BaseException | None, step: int, rng_state: dict[str, Any]) -> None:
        """All processes agree: if any one lost the reward service, all checkpoint and stop together.

        The checkpoint is of the last completed step, RNG included (rewound to before this step's sampling),
        so a resumed run continues exactly as an uninterrupted one would have."""
        flag = torch.tensor([1.0 if failure is not None else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.gather(flag)
        if float(flag.max()) == 0.0:
            return
        completed = step - 1
        checkpoint = None
        restore_rng_state(rng_state)
        if completed >= 1:
            checkpoint = (self.save_checkpoint(completed) if self.last_checkpoint_step != completed
                          else self.output_dir / f"checkpoint-{completed}")
        where = f"checkpoint {checkpoint} saved; rerun with --resume to continue" if checkpoint else \
            "no step had completed, nothing to resume"
        raise TrainingStopped(f"step {step}: the reward service is unavailable "
                              f"({failure or 'on another process'}); {where}", step=completed,
                              checkpoint=checkpoint)

    def close(self) -> None:
        """Stop the fetch thread and close the reward client this trainer made (idempotent)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._close_client()

    def _close_client(self) -> None:
        if self.client_owned and not self._client_closed:
            self._client_closed = True
            close = getattr(self.reward_backend, "close", None)
            if close is not None:
                close()


def train_ppo(config: PPOConfig, reward_backend: RewardBackend | None = None) -> dict[str, Any]:
    """Build a PPOTrainer and run it (see `PPOTrainer.train`)."""
    return PPOTrainer(config, reward_backend).train()
