"""The DPO baseline (the paper's DPO row): TRL `DPOTrainer` on preference pairs.

TRL tokenizes prompt + response jointly; here the dataset is tokenized with `encode_prompt_response`
(prompt and response each alone, EOS after each response) like every other stage, so DPO, SFT and PPO
policies are trained on the same token sequences.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trl import DPOTrainer

from tlcr.trainer.build_lock_watchdog import watch_build_locks
from tlcr.trainer.policy_options import DPOOptions
from tlcr.trainer.sft import load_split, mixed_precision_flags

DPO_INFO = "tlcr_dpo.json"


def dpo_example(tokenizer: Any, prompt: str, chosen: str, rejected: str) -> dict[str, list[int]]:
    """{prompt_ids, chosen_ids, rejected_ids} with EOS closing each response."""
    from tlcr.core.models import encode_prompt_response

    prompt_ids, chosen_ids = encode_prompt_response(tokenizer, prompt, chosen)
    _, rejected_ids = encode_prompt_response(tokenizer, prompt, rejected)
    eos = tokenizer.eos_token_id
    return {"prompt_ids": prompt_ids, "chosen_ids": [*chosen_ids, eos], "rejected_ids": [*rejected_ids, eos]}


class SplitTokenizationDPOTrainer(DPOTrainer):
    """DPOTrainer whose dataset preparation tokenizes prompt and responses separately."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        dataset = dataset.map(lambda ex: dpo_example(tokenizer, ex["prompt"], ex["chosen"], ex["rejected"]),
                              remove_columns=dataset.column_names, desc=f"Tokenizing {dataset_name} dataset")
        if args.max_length is not None:
            # As TRL does: a prompt that alone fills max_length leaves no response token to learn from.
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
        return dataset


def train_dpo(options: DPOOptions) -> Path:
    """DPO from `options.model` (also the reference); saves the policy with tokenizer to output_dir."""
    watch_build_locks()  # DeepSpeed may JIT-build an op here: a stale build lock is reported, not silent
    from datasets import Dataset
    from trl import DPOConfig

    from tlcr.core.models import load_causal_lm, load_tokenizer, resolve_device

    pairs = load_split(options.source, limit=options.data_limit, seed=options.data_seed, part=options.split_part)
    if not pairs:
        raise ValueError(f"no pairs in the {options.split_part!r} part of {options.source!r}")
    tokenizer = load_tokenizer(options.model)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    model = load_causal_lm(options.model, dtype=options.dtype)
    ref_model = load_causal_lm(options.model, dtype=options.dtype)
    args = DPOConfig(
        output_dir=options.output_dir, beta=options.beta, num_train_epochs=options.epochs,
        learning_rate=options.learning_rate, lr_scheduler_type=options.lr_scheduler,
        warmup_steps=options.warmup_steps, per_device_train_batch_size=options.per_device_batch_size,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        max_length=options.max_length, seed=options.seed, activation_checkpointing=options.gradient_checkpointing,
        logging_steps=options.logging_steps, save_strategy="no", report_to=options.report_to,
        use_cpu=resolve_device(None).type == "cpu", dataloader_num_workers=0,
        **mixed_precision_flags(options.dtype))
    trainer = SplitTokenizationDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                                          processing_class=tokenizer)
    result = trainer.train()
    out = Path(options.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    history = [row for row in trainer.state.log_history if "loss" in row]
    info = {"options": asdict(options), "pairs": len(pairs), "train_loss": result.training_loss,
            "log_history": history}
    (out / DPO_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return out
