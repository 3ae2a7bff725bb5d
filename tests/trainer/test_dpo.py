"""DPO baseline: the shared tokenization inside TRL's DPOTrainer, a real run that learns the preference, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.models import encode_prompt_response, load_causal_lm, load_tokenizer
from tlcr.trainer.dpo import SplitTokenizationDPOTrainer, dpo_example, train_dpo
from tlcr.trainer.policy_options import DPOOptions
from tlcr.trainer.sft import load_split


def test_dpo_example_uses_the_shared_split_and_eos(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    prompt, chosen, rejected = "\n\nHuman: Flag of Kalo?\n\nAssistant:", " It is red.", " It is red. Ugh."
    example = dpo_example(tokenizer, prompt, chosen, rejected)
    prompt_ids, chosen_ids = encode_prompt_response(tokenizer, prompt, chosen)
    _, rejected_ids = encode_prompt_response(tokenizer, prompt, rejected)
    eos = tokenizer.eos_token_id
    assert example == {"prompt_ids": prompt_ids, "chosen_ids": [*chosen_ids, eos],
                       "rejected_ids": [*rejected_ids, eos]}


def test_trainer_dataset_is_tokenized_our_way(tiny_model_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import DPOConfig

    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = load_split("controlled", limit=20, seed=42, part="rm")
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    model = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=16,
                     activation_checkpointing=False,
                     per_device_train_batch_size=2)
    trainer = SplitTokenizationDPOTrainer(model=model, ref_model=load_causal_lm(tiny_model_dir, device="cpu",
                                                                                dtype="float32"),
                                          args=args, train_dataset=dataset, processing_class=tokenizer)
    rows = list(trainer.train_dataset)
    kept = [p for p in pairs if len(encode_prompt_response(tokenizer, p.prompt, "")[0]) < 16]
    assert len(rows) == len(kept)  # prompts that fill max_length alone are dropped, as TRL does
    for row, pair in zip(rows, kept, strict=True):
        assert row["prompt_ids"] == dpo_example(tokenizer, pair.prompt, pair.chosen, pair.rejected)["prompt_ids"]


def implicit_margin(policy_dir: Path, ref_dir: Path, examples: list[dict]) -> float:
    """Mean over pairs of [log π/π_ref (chosen) − log π/π_ref (rejected)]: > 0 once DPO learned the preference."""
    policy = load_causal_lm(policy_dir, device="cpu", dtype="float32")
    ref = load_causal_lm(ref_dir, device="cpu", dtype="float32")

    def logp(model: torch.nn.Module, prompt: list[int], response: list[int]) -> float:
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).sum())

    margins = []
    for ex in examples:
        chosen = logp(policy, ex["prompt_ids"], ex["chosen_ids"]) - logp(ref, ex["prompt_ids"], ex["chosen_ids"])
        rejected = (logp(policy, ex["prompt_ids"], ex["rejected_ids"])
                    - logp(ref, ex["prompt_ids"], ex["rejected_ids"]))
        margins.append(chosen - rejected)
    return sum(margins) / len(margins)


def test_train_dpo_learns_the_preference(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    train_dpo(DPOOptions(model=str(tiny_model_dir), output_dir=str(out), data_limit=60, epochs=2,
                         learning_rate=2e-3, batch_size=8, report_to="none", logging_steps=1))
    info = json.loads((out / "tlcr_dpo.json").read_text())
    assert info["pairs"] == 24 and info["log_history"]
    tokenizer = load_tokenizer(out)
    pairs = load_split("controlled", limit=60, seed=42, part="rm")
    examples = [dpo_example(tokenizer, p.prompt, p.chosen, p.rejected) for p in pairs]
    assert implicit_margin(out, tiny_model_dir, examples) > 1.0


def test_dpo_option_and_cli_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="beta must be positive"):
        DPOOptions(model="m", output_dir="o", beta=0)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be at least 1"):
        DPOOptions(model="m", output_dir="o", gradient_accumulation_steps=0)
    result = CliRunner().invoke(app, ["dpo", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "x"),
                                      "--split-part", "everything"])
    assert result.exit_code == 2 and "split part must be one of all, sft, rm, ppo" in result.output
