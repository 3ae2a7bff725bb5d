"""The options of SFT and DPO (`SFTOptions`, `DPOOptions`), with their help and checks.

`tlcr sft` and `tlcr dpo` derive their command-line options from these classes (core.config_cli). What
both share is `PolicyTrainingOptions`; each subclass adds its own fields and changes only the defaults
that differ. Nothing heavy is imported here, so `tlcr --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlcr.core.data.splits import PartChoice, check_part
from tlcr.trainer.training_options import TrainingOptions


@dataclass
class PolicyTrainingOptions(TrainingOptions):
    source: str = field(default="controlled", metadata={
        "help": "Pairs: 'controlled', a local .jsonl/.jsonl.gz, or a Hub id."})
    data_limit: int | None = field(default=None, metadata={"help": "Load at most this many pairs before splitting."})
    data_seed: int = field(default=42, metadata={"help": "Seed of the controlled task and of the 20/40/40 split."})
    split_part: PartChoice = field(default="sft", metadata={"help": "Paper split part to train on."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: float = field(default=0.0, metadata={"help": "Warm-up steps, or a fraction of all steps when < 1."})
    max_length: int = field(default=512, metadata={"help": "Most prompt + response tokens (longer: cut at the end)."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    dtype: str = field(default="auto", metadata={
        "help": "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimizer steps."})
    report_to: str = field(default="tensorboard", metadata={"help": "Trainer loggers: tensorboard, none, wandb..."})

    def __post_init__(self) -> None:
        check_part(self.split_part)
        super().__post_init__()
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")


@dataclass
class SFTOptions(PolicyTrainingOptions):
    """`tlcr sft`: defaults follow the paper (2 epochs, lr 1e-5, cosine, batch 16)."""

    model: str = field(metadata={"help": "Base causal LM: local path or Hub id."})
    output_dir: str = field(metadata={"help": "Output directory of the SFT checkpoint (HF format)."})
    noisy_fraction: float = field(default=0.0, metadata={
        "help": "Fraction of SFT targets replaced by the rejected response (controlled task: gives the SFT policy "
                "faults for PPO to fix)."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.noisy_fraction <= 1.0:
            raise ValueError(f"noisy_fraction must be in [0, 1], got {self.noisy_fraction}")
        super().__post_init__()


@dataclass
class DPOOptions(PolicyTrainingOptions):
    """`tlcr dpo`: from the SFT checkpoint, on the preference (rm) part of the split."""

    model: str = field(metadata={"help": "The SFT checkpoint (also the frozen reference)."})
    output_dir: str = field(metadata={"help": "Output directory of the DPO policy (HF format)."})
    split_part: str = field(default="rm", metadata={
        "help": "Paper split part: rm (the preference data), sft, ppo or all."})
    epochs: float = field(default=1.0, metadata={"help": "Epochs."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate."})
    beta: float = field(default=0.1, metadata={"help": "DPO beta."})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        super().__post_init__()
