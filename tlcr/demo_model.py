"""`tlcr bootstrap-model`: the offline demo models a fresh `docker compose up` serves when none is configured.

It runs the first stages of `tlcr demo` (tlcr.pipeline) at a smaller budget, with no network: a tokenizer and
tiny causal LM trained on the controlled task's text, SFT on partly faulty demonstrations, labels from the
chosen reviser, and the token discriminator trained from the SFT model on them. The folder it writes:

    discriminator/   the demo discriminator; its config.json's `tlcr.demo` says it is one (the service
                     reports that in its log and in GET /info)
    policy/          the SFT model the discriminator was trained from (same tokenizer): a PPO policy
    ppo.yaml         a short PPO job (`tlcr ppo --config`) of that policy on the controlled task's prompts

The folder is assembled beside `out` and renamed into place when complete, so an interrupted run never
leaves a half-written model where the service would pick it up.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tlcr.pipeline import PipelineConfig

__all__ = ["DEMO_NOTE", "DemoModelConfig", "bootstrap_demo_model", "is_complete"]

DEMO_NOTE = ("offline demo discriminator from `tlcr bootstrap-model`: a tiny model trained on the controlled "
             "task's generated pairs, for trying the stack out, not for RLHF on real data")
FILES = ("discriminator/config.json", "policy/config.json", "ppo.yaml")


@dataclass
class DemoModelConfig(PipelineConfig):
    """The stage sizes of the demo model (see `PipelineConfig`), and the short PPO job it writes."""

    pairs: int = 1500
    hidden_size: int = 64
    sft_epochs: float = 8.0
    discriminator_epochs: float = 4.0
    ppo_steps: int = 4
    ppo_rollout_batch: int = 8
    max_new_tokens: int = 24


def is_complete(out: Path) -> bool:
    return all((out / name).is_file() for name in FILES)


def bootstrap_demo_model(out: Path, config: DemoModelConfig | None = None) -> dict[str, Any]:
    """Train the demo models into `out` (which must not exist yet); returns the discriminator's metrics."""
    from tlcr import pipeline

    config = config or DemoModelConfig()
    if out.exists():
        raise FileExistsError(f"{out} already exists: remove it to train the demo model again")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        run_dir = work / "run"
        data, _ = pipeline.prepare_data(config, run_dir)
        sft = pipeline.sft_stage(config, data, run_dir)
        labels, _ = pipeline.label_stage(data, sft, run_dir)
        discriminator, metrics = pipeline.discriminator_stage(config, labels, sft, run_dir)
        _mark_demo(discriminator)
        shutil.move(discriminator, work / "discriminator")
        shutil.move(sft, work / "policy")
        (work / "ppo.yaml").write_text(_ppo_yaml(config, out), encoding="utf-8")
        shutil.rmtree(run_dir)
        work.chmod(0o755)  # mkdtemp's 0700 would hide the folder from other users of the volume
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return metrics


def _mark_demo(discriminator: Path) -> None:
    from transformers import AutoConfig

    from tlcr.core.models import mark_demo_config

    model_config = AutoConfig.from_pretrained(discriminator)
    mark_demo_config(model_config, DEMO_NOTE)
    model_config.save_pretrained(discriminator)


def _ppo_yaml(config: DemoModelConfig, out: Path) -> str:
    from tlcr.core.presets import preset_values
    from tlcr.trainer.reward_options import DiscriminatorOptions

    batch = config.ppo_rollout_batch
    options = {
        "policy": str(out / "policy"), "value_init": "discriminator", "value_model": str(out / "discriminator"),
        "reward_mode": "tlcr", "source": "controlled", "split_part": "ppo", "data_seed": config.data_seed,
        "data_limit": config.pairs, "max_new_tokens": config.max_new_tokens,
        "max_prompt_length": preset_values(DiscriminatorOptions, "discriminator", "tiny")["max_length"]
        - config.max_new_tokens,
        "num_steps": config.ppo_steps, "rollout_batch_size": batch, "mini_batch_size": batch // 2,
        "micro_batch_size": batch // 2, "forward_batch_size": batch, "ppo_epochs": 1,
        "learning_rate": config.ppo_learning_rate, "value_learning_rate": config.ppo_value_learning_rate,
        "kl_coef": config.ppo_kl_coef, "dtype": "float32", "save_steps": config.ppo_steps, "report_to": "none",
        "seed": config.seed,
    }
    header = ("# A short PPO job of the demo policy against the demo discriminator (tlcr bootstrap-model).\n"
              f"#   tlcr ppo --config {out / 'ppo.yaml'} --reward-url URL --output-dir RUN_DIR\n")
    return header + yaml.safe_dump(options, sort_keys=False)
