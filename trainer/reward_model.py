"""Sequence-level Bradley–Terry reward model (the PPO_seq baseline's reward) with TRL's RewardTrainer.

Pairs are tokenized here, not by TRL, with the split every stage uses (`tlcr.core.tokenization`: prompt +
response tokenized jointly and split at the boundary, no special tokens, no EOS appended), so the reward
service can score a (prompt, response) exactly as the model was trained. The checkpoint is a one-label
AutoModelForSequenceClassification saved with `save_pretrained`; its score is read at the last token.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, set_seed
from transformers.trainer_utils import SchedulerType
from trl import RewardConfig, RewardTrainer

from tlcr.core.data.jsonl import DataError, OnError, SkipReport
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.data.sources import load_preference_pairs
from tlcr.core.data.splits import check_part, select_part
from tlcr.core.models import (
    check_max_length,
    load_sequence_classifier,
    load_tokenizer,
    mark_sequence_reward_model_config,
)
from tlcr.core.scoring import fit_prompt_response, prompt_response_scores
from tlcr.trainer.build_lock_watchdog import watch_build_locks
from tlcr.trainer.discriminator_metrics import pairwise_preference_accuracy
from tlcr.trainer.reward_training import apply_hardware_defaults, held_out_split, train_and_release, write_metrics

METRICS_FILE = "reward_model_metrics.json"


@dataclass
class RewardModelConfig(RewardConfig):
    """TRL's RewardConfig with the paper's optimisation defaults (as for the discriminator) and a held-out split.

    lr 1e-5, weight decay 0.1, cosine without warm-up, 2 epochs, batch 16 pairs per device, max length 512,
    Adam β = (0.9, 0.95). The command line sets it through `tlcr.trainer.reward_options`; presets for tiny
    offline models are in configs/reward_model/.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "LR schedule."})
    warmup_steps: float = field(default=0, metadata={"help": "Warm-up steps."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Pairs per device and step."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam β1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "Adam β2."})
    max_length: int | None = field(default=512, metadata={"help": "Max prompt + response tokens; the prompt is "
                                                                   "cut from the left first."})
    save_strategy: str = field(default="no", metadata={"help": "Intermediate checkpoints (the final one is saved)."})
    report_to: str | list[str] | None = field(default="none", metadata={"help": "Trackers to report to."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "Every parameter is used."})
    # TRL turns checkpointing on through the deprecated `gradient_checkpointing` name; set the current one instead.
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    activation_checkpointing: bool | None = field(default=True, metadata={"help": "Recompute activations to save "
                                                                                  "memory (7B scale)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of pairs held out for pairwise accuracy "
                                                                "(ignored when an eval source is given)."})

    def __post_init__(self) -> None:
        apply_hardware_defaults(self)
        if self.max_length is None or self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        super().__post_init__()


def split_pairs(pairs: Sequence[PreferencePair], eval_fraction: float,
                seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out) by a hash of (seed, pair id), so the split is stable across runs and processes."""
    return held_out_split(pairs, eval_fraction, seed, noun="pair", alternative="an eval source")


def tokenize_pairs(pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase,
                   max_length: int) -> list[dict[str, list[int]]]:
    """`chosen_ids` / `rejected_ids` (prompt + response, cut to max_length) in TRL's processed-dataset format."""
    chosen, rejected = _encode_pairs(pairs, tokenizer)
    rows = []
    for chosen_pair, rejected_pair in zip(chosen, rejected, strict=True):
        row = {}
        for key, (prompt, response) in (("chosen_ids", chosen_pair), ("rejected_ids", rejected_pair)):
            kept_prompt, kept_response = fit_prompt_response(prompt, response, max_length)
            row[key] = kept_prompt + kept_response
        rows.append(row)
    return rows


def _encode_pairs(pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase
                  ) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]]]:
    """(prompt ids, response ids) of prompt + chosen and of prompt + rejected, split as every stage does."""
    from tlcr.core.tokenization import encode_prompt_response_batch

    prompts = [p.prompt for p in pairs]
    chosen = encode_prompt_response_batch(tokenizer, prompts, [p.chosen for p in pairs])
    rejected = encode_prompt_response_batch(tokenizer, prompts, [p.rejected for p in pairs])
    return ([(e.prompt_ids, e.response_ids) for e in chosen], [(e.prompt_ids, e.response_ids) for e in rejected])


def evaluate_reward_model(model: Any, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair], *,
                          max_length: int, batch_size: int = 16) -> dict[str, Any]:
    """Pairwise accuracy (chosen scored above rejected; ties half) and mean scores on held-out pairs."""
    model.eval()
    chosen, rejected = _encode_pairs(pairs, tokenizer)
    pad = tokenizer.pad_token_id
    chosen_scores = prompt_response_scores(model, pad, chosen, max_length=max_length, batch_size=batch_size)
    rejected_scores = prompt_response_scores(model, pad, rejected, max_length=max_length, batch_size=batch_size)
    n = len(pairs)
    return {"pairwise_accuracy": pairwise_preference_accuracy(chosen_scores, rejected_scores),
            "mean_chosen_reward": sum(chosen_scores) / n if n else None,
            "mean_rejected_reward": sum(rejected_scores) / n if n else None,
            "n_pairs": n}


def load_pairs(source: str | os.PathLike[str], *, on_error: OnError, limit: int | None = None,
               seed: int = 42, part: str = "all") -> tuple[list[PreferencePair], SkipReport]:
    """Preference pairs from "controlled", a pairs/labelled JSONL file, or a Hub id; DataError if none.

    `part` keeps one part of the paper's 20/40/40 split (the paper trains reward models on "rm").
    """
    check_part(part)
    report = SkipReport()
    pairs = select_part(load_preference_pairs(source, on_error=on_error, report=report, limit=limit, seed=seed),
                        part, seed=seed)
    if not pairs:
        raise DataError(f"{source}: no preference pairs to train on ({report.summary()})")
    return pairs, report


def train_reward_model(source: str | os.PathLike[str], base_model: str, config: RewardModelConfig, *,
                       eval_source: str | os.PathLike[str] | None = None, dtype: str = "float32",
                       on_error: OnError = "raise", limit: int | None = None, data_seed: int = 42,
                       part: str = "all") -> dict[str, Any]:
    """Train with TRL's RewardTrainer, save to `config.output_dir`, reload it and report held-out pairwise accuracy.

    `data_seed`: seed of the controlled task and of the 20/40/40 split (42, as in `tlcr data`); `part`: which
    part of that split to train on (all, sft, rm, ppo). An eval source is used whole.
    Returns the metrics (also written to `<output_dir>/reward_model_metrics.json` by the main process).
    """
    watch_build_locks()  # DeepSpeed may JIT-build an op here: a stale build lock is reported, not silent
    from datasets import Dataset

    max_length = int(config.max_length or 512)
    tokenizer = load_tokenizer(base_model, padding_side="right")
    pairs, report = load_pairs(source, on_error=on_error, limit=limit, seed=data_seed, part=part)
    if eval_source is not None:
        train_pairs, eval_pairs = pairs, load_pairs(eval_source, on_error=on_error, seed=data_seed)[0]
    else:
        train_pairs, eval_pairs = split_pairs(pairs, config.eval_fraction, config.seed)
    rows = tokenize_pairs(train_pairs, tokenizer, max_length)
    set_seed(config.seed)  # the fresh score head is drawn at load time
    model = load_sequence_classifier(base_model, num_labels=1, device="cpu", dtype=dtype)
    check_max_length(model, max_length, str(base_model))
    model.config.pad_token_id = tokenizer.pad_token_id
    mark_sequence_reward_model_config(model.config, max_length=max_length, base_model=str(base_model))

    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)
    del model  # the trainer holds it until it is released
    train_output, is_main = train_and_release(trainer, config.output_dir)
    output_dir = Path(str(config.output_dir))

    result: dict[str, Any] = {
        "train": {"loss": train_output.training_loss, "global_step": train_output.global_step,
                  **train_output.metrics},
        "data": {"source": str(source), "part": part, "eval_source": str(eval_source) if eval_source else None,
                 "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "skipped": report.skipped},
        "base_model": str(base_model), "world_size": config.world_size, "eval": None,
        "config": {k: v for k, v in asdict(config).items()
                   if k in ("learning_rate", "weight_decay", "warmup_steps", "num_train_epochs", "max_steps",
                            "per_device_train_batch_size", "gradient_accumulation_steps", "adam_beta1",
                            "adam_beta2", "max_length", "eval_fraction", "seed", "center_rewards_coefficient")},
    }
    result["config"]["lr_scheduler_type"] = str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type))
    if not is_main:
        return result
    if eval_pairs:
        saved = load_sequence_classifier(output_dir, device="cpu" if config.use_cpu else None, dtype="auto")
        result["eval"] = evaluate_reward_model(saved, tokenizer, eval_pairs, max_length=max_length,
                                               batch_size=config.per_device_eval_batch_size)
    write_metrics(output_dir / METRICS_FILE, result)
    return result
