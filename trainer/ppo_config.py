"""Every option of a PPO run (`PPOConfig`), its validation, and loading it from YAML with overrides on top."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from tlcr.core.config_cli import ConfigError, build_config
from tlcr.core.data.splits import PART_CHOICES
from tlcr.core.reward_modes import PolicyRewardMode


class PPOConfigError(ValueError):
    """A PPO option is invalid; the message names the option."""


@dataclass
class PPOConfig:
    """Every option of a PPO run (TRL style: one config per trainer). Defaults follow the TLCR paper."""

    # Models
    policy: str = field(default="", metadata={
        "help": "SFT checkpoint to start from (path or Hub id); also the frozen reference unless --reference.",
        "panel": "Models"})
    reference: str | None = field(default=None, metadata={
        "help": "Reference model (default: the policy).", "panel": "Models"})
    value_init: str = field(default="discriminator", metadata={
        "help": "discriminator or sft: initial weights of the value model.", "panel": "Models"})
    value_model: str | None = field(default=None, metadata={
        "help": "Discriminator checkpoint (path or Hub id) for --value-init discriminator.", "panel": "Models"})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16, float16.", "panel": "Models"})
    device: str | None = field(default=None, metadata={
        "help": "cpu or cuda (single process; accelerate decides under `accelerate launch`).", "panel": "Models"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Trade compute for memory.", "panel": "Models"})
    # Rewards
    reward_url: str = field(default="http://127.0.0.1:8000", metadata={
        "help": "Reward service URL(s), comma-separated for replicas (balanced, failed over).",
        "panel": "Reward service"})
    reward_mode: str = field(default="tlcr", metadata={
        "help": " | ".join(m.value for m in PolicyRewardMode) + ".", "panel": "Reward service"})
    reward_threshold: float = field(default=0.6, metadata={"help": "tau of tlcr_fixed.", "panel": "Reward service"})
    reward_api_key: str | None = field(default=None, metadata={
        "help": "Bearer key of the reward service.", "envvar": "TLCR_API_KEY", "panel": "Reward service"})
    token_input: str = field(default="auto", metadata={
        "help": "auto | ids | text: send token ids (shared tokenizer) or text + character "
                "offsets of the policy's tokens; auto compares tokenizer fingerprints.", "panel": "Reward service"})
    reward_timeout: float = field(default=60.0, metadata={
        "help": "Seconds per HTTP attempt.", "panel": "Reward service"})
    reward_max_retries: int = field(default=8, metadata={"help": "Retries per reward call.", "panel": "Reward service"})
    reward_backoff: float = field(default=0.5, metadata={
        "help": "Retry delay base in seconds (doubled per retry, jittered, at most 30 s).", "panel": "Reward service"})
    reward_deadline: float = field(default=600.0, metadata={
        "help": "Seconds one reward call may keep retrying; then the run checkpoints and stops (exit 3).",
        "panel": "Reward service"})
    overlap_reward_fetch: bool = field(default=True, metadata={
        "help": "Fetch rewards while the forward passes run (else one after the other).", "panel": "Reward service"})
    # Prompts
    source: str = field(default="controlled", metadata={
        "help": "Prompts: 'controlled', a pairs file or a Hub id.", "panel": "Prompts"})
    data_limit: int | None = field(default=None, metadata={
        "help": "Load at most this many pairs before splitting.", "panel": "Prompts"})
    data_seed: int = field(default=42, metadata={
        "help": "Seed of the controlled task and of the 20/40/40 split.", "panel": "Prompts"})
    split_part: str = field(default="ppo", metadata={
        "help": f"Prompts from split part: {', '.join(PART_CHOICES)}.", "panel": "Prompts"})
    max_prompt_length: int = field(default=256, metadata={
        "help": "Longer prompts are dropped (and counted), never cut.", "panel": "Prompts"})
    # Sampling
    max_new_tokens: int = field(default=128, metadata={"help": "Sampled response length limit.", "panel": "Sampling"})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature.", "panel": "Sampling"})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling.", "panel": "Sampling"})
    generation_batch_size: int | None = field(default=None, metadata={
        "help": "Rows per generate call (default: the whole rollout batch).", "panel": "Sampling"})
    # PPO
    num_steps: int = field(default=200, metadata={"help": "PPO steps (rollout + update).", "panel": "Optimiser"})
    rollout_batch_size: int = field(default=16, metadata={
        "help": "Prompts per process per step.", "panel": "Optimiser"})
    mini_batch_size: int = field(default=8, metadata={
        "help": "Rows per optimizer step per process.", "panel": "Optimiser"})
    micro_batch_size: int = field(default=4, metadata={
        "help": "Rows per forward/backward (gradient accumulation inside a minibatch).", "panel": "Optimiser"})
    forward_batch_size: int = field(default=16, metadata={
        "help": "Rows per no-grad forward during rollouts.", "panel": "Optimiser"})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch.", "panel": "Optimiser"})
    learning_rate: float = field(default=1e-6, metadata={
        "help": "Policy learning rate (paper: 1e-6).", "panel": "Optimiser"})
    value_learning_rate: float | None = field(default=None, metadata={
        "help": "Value learning rate (default: --learning-rate).", "panel": "Optimiser"})
    # The paper states no PPO schedule: constant, so the lr a run reports is the lr it trained at.
    lr_scheduler: str = field(default="constant", metadata={
        "help": "transformers scheduler name: constant, linear, cosine...", "panel": "Optimiser"})
    warmup_steps: int = field(default=0, metadata={"help": "Optimizer warm-up steps.", "panel": "Optimiser"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay.", "panel": "Optimiser"})
    adam_betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={
        "help": "AdamW betas (paper: 0.9,0.95).", "panel": "Optimiser"})
    adam_eps: float = field(default=1e-5, metadata={"help": "AdamW epsilon.", "panel": "Optimiser"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off).", "panel": "Optimiser"})
    kl_coef: float = field(default=0.1, metadata={"help": "beta of the -beta*KL_t reward term.", "panel": "PPO"})
    kl_estimator: str = field(default="k1", metadata={"help": "k1 (log-ratio) or k3.", "panel": "PPO"})
    gamma: float = field(default=1.0, metadata={"help": "GAE gamma.", "panel": "PPO"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda.", "panel": "PPO"})
    clip_range: float = field(default=0.2, metadata={"help": "Policy ratio clip.", "panel": "PPO"})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip.", "panel": "PPO"})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss weight.", "panel": "PPO"})
    whiten_advantages: bool = field(default=True, metadata={
        "help": "Whiten advantages per rollout batch.", "panel": "PPO"})
    whiten_rewards: bool = field(default=False, metadata={
        "help": "Scale shaped rewards per rollout batch.", "panel": "PPO"})
    # seq mode: z-score the sequence RM's scores with the mean and std of the first rollout batch (the SFT
    # policy's samples), fixed for the run, so one kl_coef means the same for a sequence RM and token rewards.
    normalize_sequence_scores: bool = field(default=True, metadata={
        "help": "seq mode: z-score RM scores by the SFT policy's first rollout batch.", "panel": "PPO"})
    truncation_bootstrap: bool = field(default=False, metadata={
        "help": "Responses cut at --max-new-tokens: bootstrap from the value (else treated as ended).", "panel": "PPO"})
    missing_eos_penalty: float | None = field(default=None, metadata={
        "help": "Added to the last action of responses cut without EOS (e.g. -1).", "panel": "PPO"})
    # Run
    output_dir: str = field(default="runs/ppo", metadata={"help": "Run directory.", "panel": "Run"})
    seed: int = field(default=0, metadata={"help": "Run seed.", "panel": "Run"})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps.", "panel": "Run"})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the N newest checkpoints.", "panel": "Run"})
    resume: bool = field(default=False, metadata={
        "help": "Continue from the newest checkpoint in --output-dir.", "panel": "Run"})
    overwrite: bool = field(default=False, metadata={
        "help": "Delete --output-dir's checkpoints and start over.", "panel": "Run"})
    # Trackers besides metrics.jsonl (always written): accelerate's names, as transformers' report_to
    # ("tensorboard", "wandb,mlflow", a list, "all" or "none").
    report_to: str | list[str] = field(default="tensorboard", metadata={
        "help": "Trackers besides <output-dir>/metrics.jsonl: tensorboard, wandb, mlflow... (comma-separated), "
                "all or none.", "panel": "Run"})
    extra: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Free-form notes saved with the run (YAML only)."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        # Imported here: these load torch, transformers and accelerate, which reading a config does not need.
        from tlcr.trainer.metrics_log import tracker_names

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise PPOConfigError(message)

        need(self.reward_mode in set(PolicyRewardMode),
             f"reward_mode must be one of {', '.join(m.value for m in PolicyRewardMode)}, not {self.reward_mode!r}")
        need(self.value_init in ("discriminator", "sft"),
             f"value_init must be 'discriminator' or 'sft', not {self.value_init!r}")
        need(self.token_input in ("auto", "ids", "text"),
             f"token_input must be auto, ids or text, not {self.token_input!r}")
        need(self.kl_estimator in ("k1", "k3"), f"kl_estimator must be k1 or k3, not {self.kl_estimator!r}")
        need(self.split_part in PART_CHOICES,
             f"split_part must be one of {', '.join(PART_CHOICES)}, not {self.split_part!r}")
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
        try:
            tracker_names(self.report_to)
        except ValueError as exc:
            raise PPOConfigError(str(exc)) from exc

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> PPOConfig:
        """Options from a YAML file, then `overrides` (e.g. command-line values) on top; an unknown key or a
        value of the wrong type is a PPOConfigError naming it and the file."""
        try:
            return build_config(cls, overrides, path)
        except ConfigError as exc:
            raise PPOConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data.get("reward_api_key"):
            data["reward_api_key"] = "***"  # never write secrets into the run directory
        return data
