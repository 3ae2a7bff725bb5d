"""What every trainer command's options share: the model to start from, the data, the output directory, and
the batch (sequences per optimizer step per device, split into gradient accumulation steps), with its checks.
Subclasses (`tlcr.trainer.policy_options`, `tlcr.trainer.reward_options`) redeclare a field only to change its help
or default."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainingOptions:
    model: str = field(metadata={"help": "Causal LM to start from: local path or Hub id."})
    output_dir: str = field(metadata={"help": "Output directory of the trained model (HF format)."})
    source: str = field(metadata={"help": "Training data."})
    batch_size: int = field(default=16, metadata={
        "help": "Sequences per optimizer step per device (split into --gradient-accumulation-steps; paper: 16)."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Gradient accumulation steps within --batch-size."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of gradient_accumulation_steps "
                             f"({self.gradient_accumulation_steps})")

    @property
    def per_device_batch_size(self) -> int:
        return self.batch_size // self.gradient_accumulation_steps
