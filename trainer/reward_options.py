"""What a user sets to train a reward model: the options of `tlcr train-discriminator` and `tlcr
train-reward-model`, mapped onto the transformers/TRL training arguments (`DiscriminatorConfig`,
`RewardModelConfig`, which hold hundreds of fields nobody sets from the command line).

Defaults follow the TLCR paper; configs/discriminator/ and configs/reward_model/ hold the presets
(`--preset tiny` for tiny offline models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tlcr.core.data.splits import PartChoice
from tlcr.trainer.training_options import TrainingOptions

if TYPE_CHECKING:
    from tlcr.trainer.discriminator import DiscriminatorConfig
    from tlcr.trainer.reward_model import RewardModelConfig


@dataclass
class RewardTrainingOptions(TrainingOptions):
    """The options both reward models share."""

    model: str = field(metadata={"help": "Causal-LM checkpoint to start from, Hub id or path (paper: the SFT model)."})
    output_dir: str = field(metadata={"help": "Output directory of the checkpoint (save_pretrained)."})
    eval_source: str | None = field(default=None, metadata={
        "help": "Held-out data (default: hold out --eval-fraction of --source)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share held out when there is no --eval-source."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (paper: 1e-5)."})
    epochs: float = field(default=2.0, metadata={"help": "Training epochs (paper: 2)."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Stop after N optimizer steps (overrides --epochs)."})
    max_length: int = field(default=512, metadata={
        "help": "Max prompt + response tokens, the prompt cut from the left first (paper: 512)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (paper: 0.1)."})
    warmup_steps: int = field(default=0, metadata={"help": "Warm-up steps (paper: 0)."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimizer steps."})
    seed: int = field(default=42, metadata={"help": "Seed of head init, shuffling and the held-out split."})
    dtype: str = field(default="float32", metadata={
        "help": "Weights dtype: float32 (mixed precision via --bf16) or bfloat16 (with DeepSpeed)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (default: on if CUDA has it)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    report_to: str = field(default="none", metadata={"help": "Trackers, e.g. tensorboard, or none."})
    on_error: Literal["raise", "skip"] = field(default="raise", metadata={
        "help": "raise: stop at the first bad record; skip: count and skip bad records."})

    def training_arguments(self) -> dict[str, Any]:
        """The transformers TrainingArguments these options set (bf16 only when given: the configs decide
        from the hardware otherwise)."""
        arguments: dict[str, Any] = dict(
            output_dir=self.output_dir, eval_fraction=self.eval_fraction, learning_rate=self.learning_rate,
            num_train_epochs=self.epochs, max_steps=-1 if self.max_steps is None else self.max_steps,
            per_device_train_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, max_length=self.max_length,
            weight_decay=self.weight_decay, warmup_steps=self.warmup_steps, logging_steps=self.logging_steps,
            seed=self.seed, activation_checkpointing=self.gradient_checkpointing, report_to=self.report_to)
        if self.bf16 is not None:
            arguments["bf16"] = self.bf16
        return arguments


@dataclass
class DiscriminatorOptions(RewardTrainingOptions):
    """`tlcr train-discriminator`: the token discriminator D from labelled records."""

    source: str = field(metadata={"help": "Labelled JSONL from `tlcr label` (status 'ok' records train)."})
    eval_source: str | None = field(default=None, metadata={
        "help": "Held-out labelled JSONL (default: hold out --eval-fraction of --source)."})

    def training_config(self) -> DiscriminatorConfig:
        from tlcr.trainer.discriminator import DiscriminatorConfig

        return DiscriminatorConfig(**self.training_arguments())


@dataclass
class RewardModelOptions(RewardTrainingOptions):
    """`tlcr train-reward-model`: the Bradley–Terry sequence reward model (the PPO_seq baseline's reward)."""

    source: str = field(metadata={
        "help": "Preference pairs: 'controlled', a .jsonl(.gz) of pairs or labelled records, or a Hub id."})
    eval_source: str | None = field(default=None, metadata={
        "help": "Held-out pairs (default: hold out --eval-fraction of --source)."})
    gradient_checkpointing: bool = field(default=True, metadata={
        "help": "Recompute activations to save memory (paper scale: on)."})
    data_limit: int | None = field(default=None, metadata={
        "help": "Use at most this many pairs (controlled: how many to make)."})
    split_part: PartChoice = field(default="all", metadata={"help": "Paper split part to train on."})
    data_seed: int = field(default=42, metadata={"help": "Seed of the controlled task and of the 20/40/40 split."})
    center_rewards_coefficient: float | None = field(default=None, metadata={
        "help": "Weight of the term pushing rewards to mean zero (TRL center_rewards_coefficient)."})

    def training_config(self) -> RewardModelConfig:
        from tlcr.trainer.reward_model import RewardModelConfig

        arguments = self.training_arguments()
        if self.center_rewards_coefficient is not None:
            arguments["center_rewards_coefficient"] = self.center_rewards_coefficient
        return RewardModelConfig(**arguments)
