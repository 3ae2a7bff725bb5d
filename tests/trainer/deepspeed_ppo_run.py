"""Launched by tests/trainer/test_deepspeed.py under `accelerate launch` (DeepSpeed ZeRO-2/3 on CPU): a few
PPO steps of trainer.ppo.PPOTrainer on the tiny policy (token rewards from the tests' ParityRewards backend),
then every process's full parameters (ZeRO-3 shards gathered) written to <out>/weights/rank<r>.pt.

usage: deepspeed_ppo_run.py POLICY OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from deepspeed_discriminator_run import dump_module
from test_ppo_loop import ParityRewards, tiny_config

from tlcr.trainer.ppo import PPOTrainer


def main(policy: str, out: str) -> None:
    trainer = PPOTrainer(tiny_config(Path(policy), Path(out), num_steps=2, save_steps=10), ParityRewards())
    trainer.train()
    dump_module(trainer.accelerator.unwrap_model(trainer.model), trainer.accelerator.process_index,
                Path(out) / "weights")


if __name__ == "__main__":
    main(*sys.argv[1:])
