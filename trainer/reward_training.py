"""Steps shared by the two reward models trained with a transformers Trainer, the token discriminator
(`tlcr.trainer.discriminator`) and the sequence reward model (`tlcr.trainer.reward_model`): running on CPU when the
machine has no accelerator, the held-out split by id, training then freeing memory before the saved
checkpoint is reloaded for evaluation, and writing the metrics as valid JSON."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from transformers import TrainingArguments

from tlcr.core.data.jsonl import DataError


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=HasId)


def running_without_accelerator() -> bool:
    """True on a CPU-only machine (no CUDA, MPS, XPU...)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.current_accelerator() is None
    return not torch.cuda.is_available()


def apply_hardware_defaults(args: TrainingArguments) -> None:
    """CPU on a CPU-only machine; bf16 mixed precision, unless set or fp16 is, only where CUDA has bf16 (TRL's
    configs would default to bf16 everywhere). Call before TrainingArguments.__post_init__."""
    # Without use_cpu, DDP on CPU (torchrun / accelerate launch) would not form a gloo process group.
    if running_without_accelerator():
        args.use_cpu = True
        args.dataloader_pin_memory = False
    if args.bf16 is None:
        args.bf16 = bool(not args.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def held_out_split(items: Sequence[Item], eval_fraction: float, seed: int, *, noun: str,
                   alternative: str) -> tuple[list[Item], list[Item]]:
    """(train, held out), by a hash of (seed, id): deterministic across runs and processes, and items sharing
    an id stay together. `noun` and `alternative` (another way to get evaluation data) word the error."""
    if eval_fraction <= 0:
        return list(items), []
    ids = sorted({item.id for item in items}, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    if len(ids) < 2:
        raise DataError(f"cannot hold out {eval_fraction:.0%} of {len(ids)} distinct {noun} id(s): give more "
                        f"{noun}s, {alternative}, or eval_fraction 0")
    held_out = set(ids[:min(len(ids) - 1, max(1, round(eval_fraction * len(ids))))])
    return [item for item in items if item.id not in held_out], [item for item in items if item.id in held_out]


def train_and_release(trainer: Any, output_dir: str | os.PathLike[str] | None) -> tuple[Any, bool]:
    """Train, save the model to `output_dir`, wait for every process, and free the trainer's memory
    before the saved checkpoint is reloaded for evaluation (as a whole model, also after ZeRO-3).
    Returns (train output, is main process)."""
    train_output = trainer.train()
    trainer.save_model(str(output_dir))
    is_main = trainer.is_world_process_zero()
    trainer.accelerator.wait_for_everyone()
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    # Under ZeRO-3, transformers would load the checkpoint reloaded for evaluation (main process only) as
    # shards with collectives, waiting for processes that have finished; the saved checkpoint is whole.
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    return train_output, is_main


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as None, so json.dumps writes valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """`metrics` as indented JSON, non-finite numbers as null."""
    path.write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
