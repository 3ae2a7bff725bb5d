"""Supervised fine-tuning of the policy on the SFT split's chosen responses (TRL `SFTTrainer`).

Examples are tokenized here with `encode_prompt_response` (prompt and response each alone, then EOS
after the response), the split every stage uses, so the SFT policy learns exactly the token sequences
PPO will later sample after a prompt. Labels are -100 on the prompt: the loss is on response tokens only.

`noisy_fraction` swaps that fraction of SFT targets for the rejected responses. On the controlled task
this gives the SFT policy some of the faults (wrong facts, rudeness, repetition, hedging) that PPO with
token-level rewards should then remove — the setting the demo uses.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from tlcr.core.data.pairs import PreferencePair
from tlcr.trainer.build_lock_watchdog import watch_build_locks
from tlcr.trainer.policy_options import SFTOptions

SFT_INFO = "tlcr_sft.json"


def noisy_indices(n: int, fraction: float, seed: int) -> set[int]:
    """round(fraction · n) distinct indices, chosen by `seed`."""
    k = round(fraction * n)
    return set(random.Random(f"noisy-{seed}").sample(range(n), k))


def sft_examples(pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase, *,
                 noisy: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """{input_ids, labels} per pair: prompt (label -100) + target response + EOS (labelled).

    The target is the chosen response, or the rejected one for indices in `noisy`.
    """
    from tlcr.core.models import encode_prompt_response

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: the policy could never learn to stop")
    examples = []
    for index, pair in enumerate(pairs):
        target = pair.rejected if index in noisy else pair.chosen
        prompt_ids, response_ids = encode_prompt_response(tokenizer, pair.prompt, target)
        response_ids = [*response_ids, eos]
        examples.append({"input_ids": prompt_ids + response_ids,
                         "labels": [-100] * len(prompt_ids) + response_ids})
    return examples


def load_split(source: str, *, limit: int | None, seed: int, part: str) -> list[PreferencePair]:
    from tlcr.core.data.sources import load_preference_pairs
    from tlcr.core.data.splits import select_part

    return select_part(load_preference_pairs(source, limit=limit, seed=seed), part, seed=seed)


def mixed_precision_flags(dtype: str) -> dict[str, bool]:
    """bf16 / fp16 training flags for TRL configs: only on CUDA, following `resolve_dtype`."""
    import torch

    from tlcr.core.models import resolve_device, resolve_dtype

    device = resolve_device(None)
    resolved = resolve_dtype(dtype, device)
    on_cuda = device.type == "cuda"
    return {"bf16": on_cuda and resolved == torch.bfloat16, "fp16": on_cuda and resolved == torch.float16}


def train_sft(options: SFTOptions) -> Path:
    """Fine-tune `options.model` and save it (with tokenizer) to `options.output_dir`; returns that path."""
    watch_build_locks()  # DeepSpeed may JIT-build an op here: a stale build lock is reported, not silent
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tlcr.core.models import load_causal_lm, load_tokenizer, resolve_device

    pairs = load_split(options.source, limit=options.data_limit, seed=options.data_seed, part=options.split_part)
    if not pairs:
        raise ValueError(f"no pairs in the {options.split_part!r} part of {options.source!r}")
    tokenizer = load_tokenizer(options.model)
    noisy = noisy_indices(len(pairs), options.noisy_fraction, options.data_seed)
    dataset = Dataset.from_list(sft_examples(pairs, tokenizer, noisy=noisy))
    model = load_causal_lm(options.model, dtype=options.dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    args = SFTConfig(
        output_dir=options.output_dir, num_train_epochs=options.epochs, learning_rate=options.learning_rate,
        lr_scheduler_type=options.lr_scheduler, warmup_steps=options.warmup_steps,
        per_device_train_batch_size=options.per_device_batch_size,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        max_length=options.max_length, seed=options.seed, activation_checkpointing=options.gradient_checkpointing,
        logging_steps=options.logging_steps, save_strategy="no", report_to=options.report_to,
        use_cpu=resolve_device(None).type == "cpu", dataloader_num_workers=0,
        **mixed_precision_flags(options.dtype))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    out = Path(options.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    info = {"options": asdict(options), "examples": len(pairs), "noisy_examples": len(noisy),
            "noisy_ids": sorted(pairs[i].id for i in noisy), "train_loss": result.training_loss}
    (out / SFT_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return out
