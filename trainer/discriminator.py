"""Token discriminator training (TLCR): soft-target BCE over response tokens with the transformers Trainer.

Each status-"ok" labelled record gives two training sequences, prompt + rejected response (labels 0 /
0.5) and prompt + revised response (labels 1 / 0.5). The model is a one-logit token classifier
initialised from any causal-LM checkpoint; D = sigmoid(logit) at a token's own position is the
probability that the token is positive. Prompt and padding positions carry label -100 and no loss.

The saved checkpoint is plain `save_pretrained` output (model, tokenizer, config marked with
`mark_discriminator_config`), evaluated after saving by reloading it the way the reward service does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import SchedulerType

from tlcr.core.data.jsonl import DataError, OnError
from tlcr.core.data.labelled import LabelledRecord, load_labelled_records
from tlcr.core.models import check_max_length, load_token_classifier, load_tokenizer, mark_discriminator_config
from tlcr.core.scoring import fit_prompt_response, pad_sequences, position_ids_from_attention_mask
from tlcr.core.tokenization import encode_prompt_response_batch
from tlcr.trainer.build_lock_watchdog import watch_build_locks
from tlcr.trainer.discriminator_metrics import discriminator_metrics, reward_sum
from tlcr.trainer.reward_training import apply_hardware_defaults, held_out_split, train_and_release, write_metrics

IGNORE_INDEX = -100
METRICS_FILE = "discriminator_metrics.json"


@dataclass
class DiscriminatorConfig(TrainingArguments):
    """Training arguments of the token discriminator; defaults follow the TLCR paper.

    Paper: lr 1e-5, weight decay 0.1, cosine schedule without warm-up, 2 epochs, batch 16 (sequences per
    device), max length 512, Adam β = (0.9, 0.95). The command line sets it through
    `tlcr.trainer.reward_options`; presets for tiny offline models are in configs/discriminator/.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (paper: 1e-5)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (paper: 0.1)."})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "LR schedule (paper: cosine)."})
    warmup_steps: float = field(default=0, metadata={"help": "Warm-up steps (paper: none)."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs (paper: 2)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Sequences per device step (paper: 16)."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Sequences per evaluation forward."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam β1 (paper: 0.9)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "Adam β2 (paper: 0.95)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(default="no", metadata={"help": "Intermediate checkpoints (final one: always)."})
    report_to: str | list[str] | None = field(default="none", metadata={"help": "Trackers to report to."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "False: the collator needs every column."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "Every parameter is used."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on where CUDA has bf16."})

    max_length: int = field(default=512, metadata={"help": "Max prompt + response tokens (paper: 512); "
                                                            "the prompt is cut from the left first."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of ok records held out for evaluation "
                                                                "(ignored when an eval file is given)."})
    threshold: float = field(default=0.5, metadata={"help": "D >= threshold counts as a positive prediction."})

    def __post_init__(self) -> None:
        apply_hardware_defaults(self)
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        super().__post_init__()


# ----------------------------------------------------------------------------------------------- data
def check_tokenization(records: Sequence[LabelledRecord], tokenizer: PreTrainedTokenizerBase,
                       tokenizer_name: str) -> None:
    """Raise DataError if a record's token ids are not what `tokenizer` makes of its texts.

    Labels index tokens, so ids made by another tokenizer would silently train on nonsense.
    """
    checks = [(record, "rejected_token_ids", record.rejected, record.rejected_token_ids) for record in records]
    checks += [(record, "revised_token_ids", record.revision, record.revised_token_ids)
               for record in records if record.revision is not None]
    chunk = 1024  # batched tokenization is far faster than one call per text
    for start in range(0, len(checks), chunk):
        part = checks[start:start + chunk]
        encoded = encode_prompt_response_batch(tokenizer, [record.prompt for record, _, _, _ in part],
                                               [text for _, _, text, _ in part])
        for (record, key, _, ids), actual in zip(part, encoded, strict=True):
            if actual.response_ids != ids:
                raise DataError(
                    f"{record.where}: {key} are not the tokens of the base model's tokenizer {tokenizer_name!r} "
                    f"(the record was labelled with tokenizer {record.tokenizer!r}); relabel the data with "
                    f"`tlcr label --tokenizer {tokenizer_name}`")


def split_records(records: Sequence[LabelledRecord], eval_fraction: float,
                  seed: int) -> tuple[list[LabelledRecord], list[LabelledRecord]]:
    """(train, held out), by a hash of (seed, id): deterministic, and records sharing an id stay together."""
    return held_out_split(records, eval_fraction, seed, noun="record", alternative="an eval file")


def training_example(prompt_ids: Sequence[int], response_ids: Sequence[int], response_labels: Sequence[float],
                     max_length: int) -> dict[str, list[Any]] | None:
    """input_ids and labels (-100 on the prompt) of one sequence cut to `max_length`; None if no response is left."""
    prompt, response = fit_prompt_response(prompt_ids, response_ids, max_length)
    if not response:
        return None
    return {"input_ids": prompt + response,
            "labels": [float(IGNORE_INDEX)] * len(prompt) + [float(x) for x in response_labels[:len(response)]]}


def prompt_ids_of(records: Sequence[LabelledRecord], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Each record's prompt ids as the joint prompt + rejected encoding splits them (`tlcr.core.tokenization`)."""
    encoded = encode_prompt_response_batch(tokenizer, [r.prompt for r in records], [r.rejected for r in records])
    return [e.prompt_ids for e in encoded]


def build_training_examples(records: Sequence[LabelledRecord], tokenizer: PreTrainedTokenizerBase,
                            max_length: int) -> list[dict[str, list[Any]]]:
    """Two sequences per record (prompt + rejected, prompt + revised); an empty revision adds nothing."""
    prompt_ids = prompt_ids_of(records, tokenizer)
    examples = []
    for record, prompt in zip(records, prompt_ids, strict=True):
        for ids, labels in ((record.rejected_token_ids, record.rejected_labels),
                            (record.revised_token_ids, record.revised_labels)):
            example = training_example(prompt, ids, labels, max_length)
            if example is not None:
                examples.append(example)
    return examples


@dataclass
class DataCollatorForTokenDiscriminator:
    """Right-pads input_ids (pad id), labels (-100) and attention_mask; adds position_ids from the mask."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [list(e["input_ids"]) for e in examples]
        input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id, "right")
        width = input_ids.shape[1]
        if self.pad_to_multiple_of and width % self.pad_to_multiple_of:
            extra = self.pad_to_multiple_of - width % self.pad_to_multiple_of
            input_ids = F.pad(input_ids, (0, extra), value=self.pad_token_id)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
        labels = torch.full(input_ids.shape, float(IGNORE_INDEX), dtype=torch.float32)
        for row, example in enumerate(examples):
            labels[row, :len(example["labels"])] = torch.tensor(example["labels"], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": position_ids_from_attention_mask(attention_mask), "labels": labels}


# ----------------------------------------------------------------------------------------------- loss
def soft_bce_loss(logits: torch.Tensor, labels: torch.Tensor,
                  num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Σ over labelled tokens of BCE(sigmoid(logit), soft target), divided by the labelled-token count.

    `logits`: [batch, length] or [batch, length, 1]; `labels`: soft targets in [0, 1], -100 = no loss.
    `num_items_in_batch`, when the Trainer gives it, is the labelled-token count of the whole (accumulated,
    all-process) batch, so gradient accumulation and DDP average over tokens, not over micro-batches.
    """
    if logits.dim() == labels.dim() + 1:
        logits = logits.squeeze(-1)
    mask = labels != IGNORE_INDEX
    targets = torch.where(mask, labels, torch.zeros_like(labels)).to(torch.float32)
    per_token = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    total = (per_token * mask).sum()
    if num_items_in_batch is None:
        return total / mask.sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def discriminator_loss(outputs: Any, labels: torch.Tensor,
                       num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """`compute_loss_func` for the Trainer: the model's own loss is bypassed (it is not soft BCE)."""
    return soft_bce_loss(outputs.logits, labels, num_items_in_batch)


# ----------------------------------------------------------------------------------------------- evaluation
def evaluate_discriminator(model: Any, tokenizer: PreTrainedTokenizerBase, records: Sequence[LabelledRecord], *,
                           max_length: int, batch_size: int = 16, threshold: float = 0.5) -> dict[str, Any]:
    """Token metrics on held-out records' rejected and revised sequences, pairwise accuracy on their
    chosen vs rejected responses (Σ r_t with r_t = 2D − 1)."""
    from tlcr.core.scoring import response_token_probabilities

    model.eval()
    prompts = prompt_ids_of(records, tokenizer)
    chosen = [e.response_ids for e in encode_prompt_response_batch(tokenizer, [r.prompt for r in records],
                                                                   [r.chosen for r in records])]
    items: list[tuple[list[int], list[int]]] = []
    labels: list[list[float]] = []
    for record, prompt in zip(records, prompts, strict=True):
        for ids, seq_labels in ((record.rejected_token_ids, record.rejected_labels),
                                (record.revised_token_ids, record.revised_labels)):
            items.append((prompt, ids))
            labels.append(seq_labels)
    pair_items = [(p, c) for p, c in zip(prompts, chosen, strict=True)]
    pad = tokenizer.pad_token_id
    token_probs = response_token_probabilities(model, pad, items, max_length=max_length, batch_size=batch_size)
    chosen_probs = response_token_probabilities(model, pad, pair_items, max_length=max_length,
                                                batch_size=batch_size)
    # the rejected response's probabilities are the rejected sequences above (every other item)
    rejected_probs = token_probs[0::2]
    labels = [seq[:len(p)] for seq, p in zip(labels, token_probs, strict=True)]  # truncated responses
    metrics = discriminator_metrics(token_probs, labels, chosen_reward_sums=[reward_sum(p) for p in chosen_probs],
                                    rejected_reward_sums=[reward_sum(p) for p in rejected_probs],
                                    threshold=threshold)
    metrics["n_records"] = len(records)
    return metrics


# ----------------------------------------------------------------------------------------------- training
@dataclass
class PreparedDiscriminatorData:
    tokenizer: PreTrainedTokenizerBase
    train_records: list[LabelledRecord]
    eval_records: list[LabelledRecord]
    train_examples: list[dict[str, list[Any]]]
    summary: dict[str, Any]


def prepare_discriminator_data(data: str | os.PathLike[str], base_model: str, config: DiscriminatorConfig, *,
                               eval_data: str | os.PathLike[str] | None = None,
                               on_error: OnError = "raise") -> PreparedDiscriminatorData:
    """Load, validate and split the labelled data; every input problem surfaces here, before training."""
    tokenizer = load_tokenizer(base_model, padding_side="right")
    vocab_size = len(tokenizer)
    labelled = load_labelled_records(data, vocab_size=vocab_size, on_error=on_error)
    check_tokenization(labelled.records, tokenizer, str(base_model))
    if eval_data is not None:
        held_out = load_labelled_records(eval_data, vocab_size=vocab_size, on_error=on_error)
        check_tokenization(held_out.records, tokenizer, str(base_model))
        train_records, eval_records = labelled.records, held_out.records
    else:
        train_records, eval_records = split_records(labelled.records, config.eval_fraction, config.seed)
    examples = build_training_examples(train_records, tokenizer, config.max_length)
    if not examples:
        raise DataError(f"{data}: no training sequence has a response token within max_length {config.max_length}")
    summary = {"data": str(data), "eval_data": str(eval_data) if eval_data else None,
               "statuses": dict(labelled.statuses), "skipped": labelled.skipped.skipped,
               "train_records": len(train_records), "eval_records": len(eval_records),
               "train_sequences": len(examples),
               "train_labelled_tokens": sum(sum(x != IGNORE_INDEX for x in e["labels"]) for e in examples)}
    return PreparedDiscriminatorData(tokenizer, train_records, eval_records, examples, summary)


def train_discriminator(data: str | os.PathLike[str], base_model: str, config: DiscriminatorConfig, *,
                        eval_data: str | os.PathLike[str] | None = None, dtype: str = "float32",
                        on_error: OnError = "raise") -> dict[str, Any]:
    """Train, save to `config.output_dir`, reload the saved checkpoint and evaluate it on held-out records.

    Returns the metrics (also written to `<output_dir>/discriminator_metrics.json` by the main process).
    Runs unchanged under `accelerate launch` / torchrun: the Trainer handles DDP and DeepSpeed.
    """
    watch_build_locks()  # DeepSpeed may JIT-build an op here: a stale build lock is reported, not silent
    from datasets import Dataset

    prepared = prepare_discriminator_data(data, base_model, config, eval_data=eval_data, on_error=on_error)
    set_seed(config.seed)  # the fresh one-logit head is drawn at load time
    model = load_token_classifier(base_model, num_labels=1, device="cpu", dtype=dtype)
    check_max_length(model, config.max_length, base_model)
    model.config.pad_token_id = prepared.tokenizer.pad_token_id
    mark_discriminator_config(model.config, max_length=config.max_length, base_model=str(base_model))

    trainer = Trainer(
        model=model, args=config, train_dataset=Dataset.from_list(prepared.train_examples),
        data_collator=DataCollatorForTokenDiscriminator(prepared.tokenizer.pad_token_id),
        processing_class=prepared.tokenizer, compute_loss_func=discriminator_loss,
    )
    del model  # the trainer holds it until it is released
    train_output, is_main = train_and_release(trainer, config.output_dir)
    output_dir = Path(str(config.output_dir))

    result: dict[str, Any] = {
        "train": {"loss": train_output.training_loss, "global_step": train_output.global_step,
                  **train_output.metrics},
        "data": prepared.summary, "base_model": str(base_model),
        "config": {k: v for k, v in asdict(config).items()
                   if k in ("learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "num_train_epochs",
                            "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "adam_beta1",
                            "adam_beta2", "max_length", "eval_fraction", "seed", "threshold")},
        "world_size": config.world_size, "eval": None,
    }
    result["config"]["lr_scheduler_type"] = str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type))
    if not is_main:
        return result
    if prepared.eval_records:
        saved = load_token_classifier(output_dir, device=None if not config.use_cpu else "cpu", dtype="auto")
        result["eval"] = evaluate_discriminator(
            saved, prepared.tokenizer, prepared.eval_records, max_length=config.max_length,
            batch_size=config.per_device_eval_batch_size, threshold=config.threshold)
    write_metrics(output_dir / METRICS_FILE, result)
    return result

