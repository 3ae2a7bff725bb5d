"""Sequence reward model (TRL RewardTrainer): tokenization, bad input, CLI end to end, accuracy (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import DataError, write_jsonl
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.models import SEQUENCE_RM_KIND, load_tokenizer
from tlcr.core.presets import load_preset
from tlcr.trainer.reward_model import (
    METRICS_FILE,
    RewardModelConfig,
    load_pairs,
    split_pairs,
    tokenize_pairs,
    train_reward_model,
)
from tlcr.trainer.reward_options import RewardModelOptions

runner = CliRunner()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory, controlled_task: ControlledTask) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_jsonl(path, [p.to_dict() for p in controlled_task.pairs(40, seed=5)])
    return path


def test_pairs_are_tokenized_with_the_shared_split_and_no_eos(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    pair = PreferencePair(prompt="\n\nHuman: Hi?\n\nAssistant:", chosen=" The flag is red.", rejected=" Ugh.")
    row = tokenize_pairs([pair], tokenizer, max_length=512)[0]

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert row["chosen_ids"] == ids(pair.prompt) + ids(pair.chosen)
    assert row["rejected_ids"] == ids(pair.prompt) + ids(pair.rejected)
    assert tokenizer.eos_token_id not in row["chosen_ids"]
    short = tokenize_pairs([pair], tokenizer, max_length=len(ids(pair.chosen)) + 1)[0]
    assert short["chosen_ids"] == ids(pair.prompt)[-1:] + ids(pair.chosen)  # prompt cut from the left


def test_split_pairs_is_deterministic_and_disjoint(controlled_task: ControlledTask) -> None:
    pairs = controlled_task.pairs(30, seed=1)
    train, held = split_pairs(pairs, 0.2, seed=3)
    assert (train, held) == split_pairs(pairs, 0.2, seed=3)
    assert len(held) == 6 and not {p.id for p in train} & {p.id for p in held}


def test_bad_pairs_are_reported_with_file_and_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing key 'rejected'"):
        load_pairs(bad, on_error="raise")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no preference pairs"):
        load_pairs(empty, on_error="raise")
    result = runner.invoke(app, ["train-reward-model", "--source", str(bad), "--model", str(tiny_model_dir),
                                 "--output-dir", str(tmp_path / "rm"), "--preset", "tiny"])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output
    result = runner.invoke(app, ["train-reward-model", "--source", "controlled", "--model",
                                 str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "rm"), "--preset", "tiny"])
    assert result.exit_code == 2 and "nothing" in result.output
    assert not (tmp_path / "rm").exists()


def test_cli_trains_and_saves_a_one_label_sequence_classifier(tmp_path: Path, pairs_file: Path,
                                                              tiny_model_dir: Path) -> None:
    out = tmp_path / "rm"
    result = runner.invoke(app, ["train-reward-model", "--source", str(pairs_file), "--model",
                                 str(tiny_model_dir), "--output-dir", str(out), "--preset", "tiny", "--max-steps", "3",
                                 "--batch-size", "4", "--eval-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    assert "pairwise accuracy" in result.output
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["train"]["global_step"] == 3
    assert metrics["data"]["train_pairs"] == 30 and metrics["eval"]["n_pairs"] == 10
    assert 0.0 <= metrics["eval"]["pairwise_accuracy"] <= 1.0
    config = AutoConfig.from_pretrained(out)
    assert config.tlcr["kind"] == SEQUENCE_RM_KIND and config.num_labels == 1
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "LlamaForSequenceClassification"


@pytest.mark.slow
def test_tiny_reward_model_learns_the_controlled_preferences(tmp_path: Path, tiny_model_dir: Path) -> None:
    options = load_preset(RewardModelOptions, "reward_model", "tiny", {
        "model": str(tiny_model_dir), "source": "controlled", "output_dir": str(tmp_path / "rm")})
    config = RewardModelConfig(**options.training_arguments(), disable_tqdm=True)
    result = train_reward_model("controlled", str(tiny_model_dir), config, limit=800)
    assert result["eval"]["n_pairs"] == 80
    assert result["eval"]["pairwise_accuracy"] >= 0.85


def test_part_keeps_one_part_of_the_paper_split(tmp_path: Path, tiny_model_dir: Path) -> None:
    rm_part, _ = load_pairs("controlled", on_error="raise", limit=100, part="rm")
    sft_part, _ = load_pairs("controlled", on_error="raise", limit=100, part="sft")
    assert (len(rm_part), len(sft_part)) == (40, 20)
    assert not {p.id for p in rm_part} & {p.id for p in sft_part}
    result = runner.invoke(app, ["train-reward-model", "--source", "controlled", "--model", str(tiny_model_dir),
                                 "--output-dir", str(tmp_path / "rm"), "--split-part", "middle"])
    assert result.exit_code == 2 and "'middle' is not one of" in result.output
