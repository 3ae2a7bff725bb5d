"""Every option of a PPO run (`PPOConfig`), its validation, and loading it from YAML with overrides on top."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PPOConfigError(ValueError):
    """A PPO option is invalid; the message names the option."""


@dataclass
class PPOConfig:
    """Every option of a PPO run (TRL style: one config per trainer). Defaults follow the TLCR paper."""

    # Models
    policy: str = ""  # the SFT checkpoint (path or Hub id); also the frozen reference unless `reference` is set
    reference: str | None = None
    value_init: str = "discriminator"  # "discriminator" or "sft": where the value model's weights come from
    value_model: str | None = None  # discriminator checkpoint (path or Hub id), required by value_init=discriminator
    dtype: str = "auto"
    device: str | None = None  # single-process runs only; accelerate decides under `accelerate launch`
    gradient_checkpointing: bool = False
    # Rewards
    reward_url: str = "http://127.0.0.1:8000"  # one URL or "u1,u2" (the client balances and fails over)
    reward_mode: str = "tlcr"  # tlcr | tlcr_fixed | seq | tlcr_positive_only | tlcr_negative_only
    reward_threshold: float = 0.6  # tau of tlcr_fixed
    reward_api_key: str | None = None
    token_input: str = "auto"  # auto | ids | text: send token ids (same tokenizer) or text + character offsets
    reward_timeout: float = 60.0
    reward_max_retries: int = 8
    reward_backoff: float = 0.5
    reward_deadline: float = 600.0  # seconds one reward call may keep retrying before the run checkpoints and stops
    overlap_reward_fetch: bool = True  # fetch rewards while the forwards run (False: one after the other)
    # Prompts
    source: str = "controlled"
    data_limit: int | None = None
    data_seed: int = 42  # seed of the controlled task and the paper's 20/40/40 split
    split_part: str = "ppo"
    max_prompt_length: int = 256  # longer prompts are dropped (and counted), never cut
    # Sampling
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 0.9
    generation_batch_size: int | None = None  # default: the whole rollout batch at once
    # PPO
    num_steps: int = 200
    rollout_batch_size: int = 16  # prompts per process per step
    mini_batch_size: int = 8  # rows per optimizer step, per process
    micro_batch_size: int = 4  # rows per forward/backward (gradient accumulation inside a minibatch)
    forward_batch_size: int = 16  # rows per no-grad forward during rollouts
    ppo_epochs: int = 4
    learning_rate: float = 1e-6
    value_learning_rate: float | None = None  # default: learning_rate
    # The paper states no PPO schedule: constant, so the lr a run reports is the lr it trained at.
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.95)  # the paper's AdamW betas
    adam_eps: float = 1e-5
    max_grad_norm: float = 1.0
    kl_coef: float = 0.1  # beta
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    # seq mode: z-score the sequence RM's scores with the mean and std of the first rollout batch (the SFT
    # policy's samples), fixed for the run, so one kl_coef means the same for a sequence RM and token rewards.
    normalize_sequence_scores: bool = True
    truncation_bootstrap: bool = False  # responses cut at max_new_tokens: bootstrap V (True) or treat as ended
    missing_eos_penalty: float | None = None  # added to the last action of responses cut without EOS
    # Run
    output_dir: str = "runs/ppo"
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int | None = 2
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the run

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        # Imported here: trainer.rollout loads torch and transformers, which reading a config does not need.
        from trainer.rollout import SERVICE_MODES

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise PPOConfigError(message)

        need(self.reward_mode in SERVICE_MODES,
             f"reward_mode must be one of {', '.join(SERVICE_MODES)}, not {self.reward_mode!r}")
        need(self.value_init in ("discriminator", "sft"),
             f"value_init must be 'discriminator' or 'sft', not {self.value_init!r}")
        need(self.token_input in ("auto", "ids", "text"),
             f"token_input must be auto, ids or text, not {self.token_input!r}")
        need(self.kl_estimator in ("k1", "k3"), f"kl_estimator must be k1 or k3, not {self.kl_estimator!r}")
        need(self.split_part in ("sft", "rm", "ppo", "all"),
             f"split_part must be sft, rm, ppo or all, not {self.split_part!r}")
        for name in ("num_steps", "rollout_batch_size", "mini_batch_size", "micro_batch_size", "forward_batch_size",
                     "ppo_epochs", "max_new_tokens", "max_prompt_length", "save_steps"):
            need(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        need(self.rollout_batch_size % self.mini_batch_size == 0,
             f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of mini_batch_size "
             f"({self.mini_batch_size})")
        need(self.mini_batch_size % self.micro_batch_size == 0,
             f"mini_batch_size ({self.mini_batch_size}) must be a multiple of micro_batch_size "
             f"({self.micro_batch_size})")
        need(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        need(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        need(0.5 < self.reward_threshold <= 1.0, f"reward_threshold must be in (0.5, 1], got {self.reward_threshold}")
        need(0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0, "gamma and lam must be in [0, 1]")
        need(self.clip_range > 0 and self.clip_range_value > 0, "clip ranges must be positive")
        need(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}")
        need(len(self.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in self.adam_betas),
             f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        need(self.reward_deadline > 0, f"reward_deadline must be positive, got {self.reward_deadline}")
        need(not (self.resume and self.overwrite), "resume and overwrite exclude each other")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> PPOConfig:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise PPOConfigError(f"{where}: unknown PPO option(s) {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> PPOConfig:
        """Options from a YAML file, then `overrides` (e.g. command-line values) on top."""
        import yaml

        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PPOConfigError(f"{path}: cannot read PPO config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise PPOConfigError(f"{path}: a PPO config must be a mapping of option: value")
        unknown = sorted(set(loaded) - set(cls.field_names()))
        if unknown:
            raise PPOConfigError(f"{path}: unknown PPO option(s) {', '.join(unknown)}")
        return cls(**{**loaded, **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data.get("reward_api_key"):
            data["reward_api_key"] = "***"  # never write secrets into the run directory
        return data
