"""SFT: examples (response-only labels, EOS, shared tokenization), noisy targets, a real TRL run, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.models import encode_prompt_response, load_causal_lm, load_tokenizer
from tlcr.trainer.policy_options import SFTOptions
from tlcr.trainer.sft import load_split, noisy_indices, sft_examples, train_sft


def test_examples_label_only_the_response_and_its_eos(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = [PreferencePair(prompt="\n\nHuman: Flag of Kalo?\n\nAssistant:", chosen=" The flag of Kalo is red.",
                            rejected=" The flag of Kalo is blue."),
             PreferencePair(prompt="\n\nHuman: Capital of Venmar?\n\nAssistant:", chosen=" It is Lotri.",
                            rejected=" It is Lotri. Stop wasting my time.")]
    examples = sft_examples(pairs, tokenizer, noisy={1})
    for example, pair, target in zip(examples, pairs, (pairs[0].chosen, pairs[1].rejected), strict=True):
        prompt_ids, response_ids = encode_prompt_response(tokenizer, pair.prompt, target)
        assert example["input_ids"] == prompt_ids + response_ids + [tokenizer.eos_token_id]
        assert example["labels"] == [-100] * len(prompt_ids) + response_ids + [tokenizer.eos_token_id]


def test_noisy_indices_are_a_seeded_fraction() -> None:
    assert len(noisy_indices(40, 0.25, seed=1)) == 10
    assert noisy_indices(40, 0.25, seed=1) == noisy_indices(40, 0.25, seed=1)
    assert noisy_indices(40, 0.25, seed=1) != noisy_indices(40, 0.25, seed=2)
    assert noisy_indices(40, 0.0, seed=1) == set()
    assert noisy_indices(7, 1.0, seed=1) == set(range(7))


def response_nll(model_dir: Path | str, tokenizer_dir: Path, examples: list[dict]) -> float:
    model = load_causal_lm(model_dir, device="cpu", dtype="float32")
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            labels = torch.tensor([example["labels"]])
            logits = model(input_ids=ids).logits[0, :-1]
            target = labels[0, 1:]
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def test_train_sft_lowers_response_loss_and_records_noise(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    options = SFTOptions(model=str(tiny_model_dir), output_dir=str(out), data_limit=100, epochs=2, learning_rate=3e-3,
                         batch_size=8, noisy_fraction=0.25, report_to="none", logging_steps=100)
    train_sft(options)
    info = json.loads((out / "tlcr_sft.json").read_text())
    assert info["examples"] == 20 and info["noisy_examples"] == 5 and len(info["noisy_ids"]) == 5
    tokenizer = load_tokenizer(out)
    pairs = load_split("controlled", limit=100, seed=42, part="sft")
    examples = sft_examples(pairs, tokenizer)
    assert response_nll(out, tiny_model_dir, examples) < response_nll(tiny_model_dir, tiny_model_dir, examples) - 0.3
    assert load_causal_lm(out, device="cpu").generation_config.eos_token_id == tokenizer.eos_token_id


def test_sft_options_and_cli_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="noisy_fraction must be in"):
        SFTOptions(model="m", output_dir="o", noisy_fraction=1.5)
    with pytest.raises(ValueError, match=r"batch_size \(16\) must be a multiple"):
        SFTOptions(model="m", output_dir="o", gradient_accumulation_steps=3)
    result = CliRunner().invoke(app, ["sft", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "x"),
                                      "--noisy-fraction", "2"])
    assert result.exit_code == 2 and "noisy_fraction must be in [0, 1]" in result.output
    result = CliRunner().invoke(app, ["sft", "--model", str(tmp_path / "no-model"), "--output-dir", str(tmp_path / "x"),
                                      "--data-limit", "20"])
    assert result.exit_code == 2 and "no-model" in result.output
