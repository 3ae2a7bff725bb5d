"""Token discriminator training: input validation, loss, collation, Trainer wiring, CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, Trainer
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import DataError, SkipReport, write_jsonl
from tlcr.core.models import ModelLoadError, is_discriminator_config, load_token_classifier, load_tokenizer
from tlcr.labeling.records import build_labelled_record
from tlcr.trainer.discriminator import (
    IGNORE_INDEX,
    METRICS_FILE,
    DataCollatorForTokenDiscriminator,
    DiscriminatorConfig,
    LabelledRecord,
    build_training_examples,
    discriminator_loss,
    load_labelled_records,
    prepare_discriminator_data,
    soft_bce_loss,
    split_records,
    training_example,
)

runner = CliRunner()


def labelled_records(task: ControlledTask, model_dir: Path, n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Controlled-task records with revision := chosen (exact ground-truth token labels)."""
    tokenizer = load_tokenizer(model_dir)
    return [build_labelled_record(p, p.chosen, tokenizer, reviser="chosen", instruction_version="test",
                                  tokenizer_name=str(model_dir)) for p in task.pairs(n, seed=seed)]


@pytest.fixture(scope="module")
def records(controlled_task: ControlledTask, tiny_model_dir: Path) -> list[dict[str, Any]]:
    return labelled_records(controlled_task, tiny_model_dir, 40)


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]]) -> Path:
    path = tmp_path_factory.mktemp("labelled") / "labelled.jsonl"
    write_jsonl(path, records)
    return path


def write_variant(tmp_path: Path, records: list[dict[str, Any]], index: int = 0, **changes: Any) -> Path:
    rows = [dict(r) for r in records[:5]]
    for key, value in changes.items():
        if value is _DELETE:
            del rows[index][key]
        else:
            rows[index][key] = value
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, rows)
    return path


_DELETE = object()


# ----------------------------------------------------------------------------------------------- bad input
def test_valid_file_loads_ok_records_and_counts_statuses(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    rows = [dict(r) for r in records[:4]]
    rows[1] = {**rows[1], "status": "failed", "reason": "parse", "rejected_token_ids": [], "rejected_labels": []}
    rows[2] = {**rows[2], "status": "filtered", "reason": "edit_ratio"}
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, rows)
    data = load_labelled_records(path, vocab_size=512)
    assert [r.id for r in data.records] == [rows[0]["id"], rows[3]["id"]]
    assert dict(data.statuses) == {"ok": 2, "failed": 1, "filtered": 1}


@pytest.mark.parametrize(("changes", "message"), [
    ({"rejected_labels": _DELETE}, r"bad\.jsonl:1 \(record '.+'\): missing field 'rejected_labels'"),
    ({"prompt": _DELETE}, r"bad\.jsonl:1: missing field 'prompt'"),
    ({"rejected_labels": [0.5]}, r"bad\.jsonl:1 \(record '.+'\): \d+ rejected_token_ids but 1 rejected_labels"),
    ({"rejected_labels": "0.5"}, r"field 'rejected_labels' must be a list"),
    ({"status": "done"}, r"status must be one of ok, failed, filtered, got 'done'"),
    ({"rejected_token_ids": [], "rejected_labels": []}, r"rejected_token_ids is empty"),
])
def test_bad_records_name_file_line_and_record(tmp_path: Path, records: list[dict[str, Any]],
                                               changes: dict[str, Any], message: str) -> None:
    path = write_variant(tmp_path, records, **changes)
    with pytest.raises(DataError, match=message):
        load_labelled_records(path, vocab_size=512)


def test_label_out_of_range_is_rejected(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    bad = list(records[0]["rejected_labels"])
    bad[1] = 2.0
    path = write_variant(tmp_path, records, rejected_labels=bad)
    with pytest.raises(DataError, match=r"rejected_labels\[1\] = 2.0 is not a label in \[0, 1\]"):
        load_labelled_records(path, vocab_size=512)


def test_token_id_outside_the_vocabulary_is_rejected(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    ids = list(records[0]["revised_token_ids"])
    ids[2] = 99999
    path = write_variant(tmp_path, records, revised_token_ids=ids)
    with pytest.raises(DataError, match=r"revised_token_ids\[2\] = 99999 is not a token id .*size 512"):
        load_labelled_records(path, vocab_size=512)


def test_skip_mode_counts_bad_records(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = write_variant(tmp_path, records, index=2, rejected_labels=[0.5])
    with open(path, "a") as f:
        f.write("{not json\n")
    report = SkipReport()
    data = load_labelled_records(path, vocab_size=512, on_error="skip", report=report)
    assert len(data.records) == 4
    assert report.skipped == 2
    assert any("bad.jsonl:3" in r for r in report.reasons) and any("bad.jsonl:6" in r for r in report.reasons)


def test_empty_dataset_is_an_error(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no status 'ok' records to train on \(no records"):
        load_labelled_records(empty, vocab_size=512)
    only_failed = tmp_path / "failed.jsonl"
    write_jsonl(only_failed, [{**records[0], "status": "failed"}, {**records[1], "status": "filtered"}])
    with pytest.raises(DataError, match=r"no status 'ok' records to train on \(1 failed, 1 filtered"):
        load_labelled_records(only_failed, vocab_size=512)
    with pytest.raises(DataError, match="not found"):
        load_labelled_records(tmp_path / "missing.jsonl", vocab_size=512)


def test_records_from_another_tokenizer_are_rejected(tmp_path: Path, controlled_task: ControlledTask,
                                                     tiny_gpt2_dir: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "gpt2-labelled.jsonl"
    write_jsonl(path, labelled_records(controlled_task, tiny_gpt2_dir, 3))
    config = DiscriminatorConfig(output_dir=str(tmp_path / "out"), eval_fraction=0.0)
    with pytest.raises(DataError, match=r"gpt2-labelled\.jsonl:1 \(record .+\): rejected_token_ids are not the "
                                        r"tokens of the base model's tokenizer .*tlcr label --tokenizer"):
        prepare_discriminator_data(path, str(tiny_model_dir), config)


def test_unloadable_base_fails_before_training(tmp_path: Path, labelled_file: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["train-discriminator", "--source", str(labelled_file), "--model",
                                 str(tmp_path / "no-such-model"), "--output-dir", str(out), "--preset", "tiny"])
    assert result.exit_code == 2
    assert "no-such-model" in result.output and "cannot load tokenizer" in result.output
    assert not out.exists()
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_token_classifier(tmp_path / "no-such-model", num_labels=1)


def test_bad_data_via_cli_exits_2_with_the_record(tmp_path: Path, records: list[dict[str, Any]],
                                                  tiny_model_dir: Path) -> None:
    path = write_variant(tmp_path, records, index=1, revised_labels=[1.0])
    result = runner.invoke(app, ["train-discriminator", "--source", str(path), "--model", str(tiny_model_dir),
                                 "--output-dir", str(tmp_path / "out"), "--preset", "tiny"])
    assert result.exit_code == 2
    assert f"bad.jsonl:2 (record '{records[1]['id']}')" in result.output


# ----------------------------------------------------------------------------------------------- maths and data
def test_soft_bce_loss_by_hand() -> None:
    logits = torch.tensor([[[0.0], [math.log(3.0)], [5.0]], [[-math.log(3.0)], [1.0], [2.0]]])
    labels = torch.tensor([[0.5, 1.0, IGNORE_INDEX], [0.0, IGNORE_INDEX, IGNORE_INDEX]])
    # BCE(σ(0), 0.5) = ln 2; BCE(σ(ln 3) = 3/4, 1) = ln(4/3); BCE(σ(−ln 3) = 1/4, 0) = ln(4/3)
    total = math.log(2.0) + 2 * math.log(4.0 / 3.0)
    assert soft_bce_loss(logits, labels).item() == pytest.approx(total / 3, rel=1e-6)
    assert soft_bce_loss(logits, labels, num_items_in_batch=6).item() == pytest.approx(total / 6, rel=1e-6)
    assert soft_bce_loss(logits[..., 0], labels, torch.tensor(3)).item() == pytest.approx(total / 3, rel=1e-6)
    assert soft_bce_loss(logits, torch.full((2, 3), float(IGNORE_INDEX))).item() == 0.0


def test_training_example_masks_prompt_and_cuts_prompt_first() -> None:
    assert training_example([1, 2, 3], [4, 5], [0.0, 0.5], max_length=4) == {
        "input_ids": [2, 3, 4, 5], "labels": [-100.0, -100.0, 0.0, 0.5]}
    assert training_example([1, 2], [4, 5, 6], [1.0, 0.5, 0.0], max_length=2) == {
        "input_ids": [4, 5], "labels": [1.0, 0.5]}
    assert training_example([1], [], [], max_length=4) is None


def test_collator_pads_right_masks_labels_and_adds_positions() -> None:
    batch = DataCollatorForTokenDiscriminator(pad_token_id=9)([
        {"input_ids": [1, 2, 3], "labels": [-100.0, 1.0, 0.5]}, {"input_ids": [4], "labels": [0.0]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100.0, 1.0, 0.5], [0.0, -100.0, -100.0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    collate_wide = DataCollatorForTokenDiscriminator(pad_token_id=9, pad_to_multiple_of=4)
    wide = collate_wide([{"input_ids": [1], "labels": [1.0]}])
    assert wide["input_ids"].tolist() == [[1, 9, 9, 9]] and wide["labels"][0, 1:].eq(-100).all()


def _record(record_id: str) -> LabelledRecord:
    return LabelledRecord(id=record_id, where="x", prompt="p", chosen="c", rejected="r", revision="c", tokenizer="t",
                          rejected_token_ids=[1], rejected_labels=[0.0], revised_token_ids=[2], revised_labels=[1.0])


def test_split_is_deterministic_disjoint_and_keeps_ids_together() -> None:
    recs = [_record(f"id-{i}") for i in range(50)] + [_record("id-7")]
    train, held = split_records(recs, 0.2, seed=1)
    assert split_records(recs, 0.2, seed=1) == (train, held)
    assert len({r.id for r in held}) == 10
    assert not {r.id for r in train} & {r.id for r in held}
    assert len(train) + len(held) == len(recs)
    assert split_records(recs, 0.0, seed=1) == (recs, [])
    with pytest.raises(DataError, match="cannot hold out"):
        split_records([_record("only")], 0.1, seed=1)


def test_two_sequences_per_record(records: list[dict[str, Any]], tiny_model_dir: Path, labelled_file: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    data = load_labelled_records(labelled_file, vocab_size=len(tokenizer))
    examples = build_training_examples(data.records[:3], tokenizer, max_length=512)
    assert len(examples) == 6
    prompt_ids = tokenizer(records[0]["prompt"], add_special_tokens=False)["input_ids"]
    assert examples[0]["input_ids"] == prompt_ids + records[0]["rejected_token_ids"]
    assert examples[0]["labels"][len(prompt_ids):] == records[0]["rejected_labels"]
    assert examples[1]["labels"][len(prompt_ids):] == records[0]["revised_labels"]


def test_trainer_loss_is_the_soft_bce_over_response_tokens(tmp_path: Path, labelled_file: Path,
                                                         tiny_model_dir: Path) -> None:
    config = DiscriminatorConfig(output_dir=str(tmp_path), eval_fraction=0.0)
    prepared = prepare_discriminator_data(labelled_file, str(tiny_model_dir), config)
    model = load_token_classifier(tiny_model_dir, num_labels=1, device="cpu", dtype="float32").eval()
    trainer = Trainer(model=model, args=config, compute_loss_func=discriminator_loss,
                      data_collator=DataCollatorForTokenDiscriminator(prepared.tokenizer.pad_token_id))
    batch = DataCollatorForTokenDiscriminator(prepared.tokenizer.pad_token_id)(prepared.train_examples[:4])
    with torch.no_grad():
        expected = soft_bce_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 batch["labels"])
        got = trainer.compute_loss(model, dict(batch))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 < got.item() < 2.0


# ----------------------------------------------------------------------------------------------- end to end
def test_cli_trains_saves_a_marked_checkpoint_and_writes_metrics(tmp_path: Path, labelled_file: Path,
                                                                 tiny_model_dir: Path) -> None:
    out = tmp_path / "disc"
    result = runner.invoke(app, ["train-discriminator", "--source", str(labelled_file), "--model",
                                 str(tiny_model_dir), "--output-dir", str(out), "--preset", "tiny", "--max-steps", "3",
                                 "--batch-size", "8", "--eval-fraction", "0.25", "--max-length", "64"])
    assert result.exit_code == 0, result.output
    assert "accuracy on edited tokens" in result.output
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["train"]["global_step"] == 3
    assert metrics["data"]["train_records"] == 30 and metrics["data"]["eval_records"] == 10
    assert metrics["config"]["max_length"] == 64 and metrics["config"]["learning_rate"] == 3e-3
    ev = metrics["eval"]
    assert 0.0 <= ev["edited_token_accuracy"] <= 1.0 and 0.0 <= ev["pairwise_accuracy"] <= 1.0
    assert ev["n_pairs"] == 10 and ev["n_edited_tokens"] > 0
    # the service loads it with Auto classes alone
    assert is_discriminator_config(out)
    assert AutoConfig.from_pretrained(out).tlcr["max_length"] == 64
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    assert AutoTokenizer.from_pretrained(out).pad_token_id == model.config.pad_token_id


def test_paper_defaults() -> None:
    config = DiscriminatorConfig(output_dir="unused")
    assert (config.learning_rate, config.weight_decay, config.num_train_epochs) == (1e-5, 0.1, 2.0)
    assert str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type)) == "cosine"
    assert (config.warmup_steps, config.per_device_train_batch_size, config.max_length) == (0, 16, 512)
    assert (config.adam_beta1, config.adam_beta2) == (0.9, 0.95)
    with pytest.raises(ValueError, match="eval_fraction"):
        DiscriminatorConfig(output_dir="unused", eval_fraction=1.0)
