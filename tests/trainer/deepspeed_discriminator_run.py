"""Launched by tests/trainer/test_deepspeed.py, alone or under `accelerate launch` (DeepSpeed ZeRO-2/3 on CPU):
trains a discriminator with trainer.discriminator.train_discriminator and, just before the trainer saves,
writes every process's full parameters to <out>/rank<r>.pt (ZeRO-3 shards gathered first).

usage: deepspeed_discriminator_run.py DATA BASE OUT BATCH_SIZE
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

import tlcr.trainer.discriminator as discriminator


def dump_module(model: Any, rank: int, out: Path) -> None:
    """Write `model`'s full parameters on this process to out/rank<rank>.pt (every process must call it)."""
    parameters = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in parameters):  # ZeRO-3: each process holds a shard
        import deepspeed

        with deepspeed.zero.GatheredParameters(parameters):
            state = {name: p.detach().clone() for name, p in model.named_parameters()}
    else:
        state = {name: p.detach().clone() for name, p in model.named_parameters()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"rank{rank}.pt")


def main(data: str, base: str, out: str, batch_size: str) -> None:
    original = discriminator.train_and_release

    def train_dump_and_release(trainer: Any, output_dir: Any) -> Any:
        output = trainer.train()
        dump_module(trainer.model, trainer.args.process_index, Path(out) / "weights")
        trainer.train = lambda: output  # already trained: train_and_release saves, syncs and frees
        return original(trainer, output_dir)

    discriminator.train_and_release = train_dump_and_release
    config = discriminator.DiscriminatorConfig(
        output_dir=out, per_device_train_batch_size=int(batch_size), num_train_epochs=1, learning_rate=3e-3,
        weight_decay=0.0, max_length=128, eval_fraction=0.1, logging_steps=1, seed=0,
        train_sampling_strategy="sequential")  # the same examples in each global batch, whatever the process count
    discriminator.train_discriminator(data, base, config)


if __name__ == "__main__":
    main(*sys.argv[1:])
