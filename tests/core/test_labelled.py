"""The labelled record, defined once: what labeling writes is what the trainer reads, field for field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import DataError
from tlcr.core.data.labelled import LabelledRecord, load_labelled_records, parse_labelled_record
from tlcr.core.models import load_tokenizer
from tlcr.labeling.records import build_labelled_record
from tlcr.labeling.worker import failed_record

NAMES = {"reviser": "chosen", "instruction_version": "none", "tokenizer_name": "tiny"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_model_dir)


def test_what_labeling_writes_reads_back_identically(tokenizer: PreTrainedTokenizerBase,
                                                     controlled_task: ControlledTask, tmp_path: Path) -> None:
    pairs = controlled_task.pairs(3, seed=5)
    written = [build_labelled_record(p, p.chosen, tokenizer, **NAMES) for p in pairs]
    written.append(failed_record(pairs[0], "no_marker", **NAMES) | {"id": "failed-one"})
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in written))
    for lineno, obj in enumerate(written, start=1):
        record = LabelledRecord.from_dict(json.loads(json.dumps(obj)), f"{path}:{lineno}", len(tokenizer))
        assert record.to_dict() == obj
        assert list(record.to_dict()) == list(obj)  # the key order labeling writes
    data = load_labelled_records(path, vocab_size=len(tokenizer))
    assert [r.id for r in data.records] == [p.id for p in pairs]
    assert dict(data.statuses) == {"ok": 3, "failed": 1}
    assert data.records[0].where == f"{path}:1 (record {pairs[0].id!r})"


def _ok(**changes: Any) -> dict[str, Any]:
    record = LabelledRecord(id="r1", prompt="p", chosen="c", rejected="r", revision="c", tokenizer="t",
                            rejected_token_ids=[5, 6], rejected_labels=[0.0, 0.5], revised_token_ids=[7],
                            revised_labels=[1.0]).to_dict()
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


@pytest.mark.parametrize(("obj", "vocab_size", "message"), [
    (_ok(prompt=...), 10, r"f\.jsonl:4: missing field 'prompt'"),
    (_ok(status=1), 10, r"f\.jsonl:4: field 'status' must be a string, got int"),
    (_ok(status="done"), 10, r"f\.jsonl:4 \(record 'r1'\): status must be one of ok, failed, filtered"),
    (_ok(revised_labels=...), 10, r"\(record 'r1'\): missing field 'revised_labels'"),
    (_ok(rejected_labels=[0.0]), 10, r"2 rejected_token_ids but 1 rejected_labels"),
    (_ok(rejected_token_ids=[5, 10]), 10, r"rejected_token_ids\[1\] = 10 is not a token id .*\(size 10\)"),
    (_ok(rejected_token_ids=[5, True]), None, r"rejected_token_ids\[1\] = True is not a token id"),
    (_ok(revised_labels=[1.5]), 10, r"revised_labels\[0\] = 1.5 is not a label in \[0, 1\]"),
    (_ok(rejected_token_ids=[], rejected_labels=[]), 10, r"rejected_token_ids is empty"),
    (_ok(revision=3), 10, r"field 'revision' must be a string or null"),
    (_ok(meta=[]), 10, r"field 'meta' must be an object, got list"),
])
def test_bad_records_name_file_line_record_and_field(obj: dict[str, Any], vocab_size: int | None,
                                                      message: str) -> None:
    with pytest.raises(DataError, match=message):
        LabelledRecord.from_dict(obj, "f.jsonl:4", vocab_size)


def test_the_trainer_skips_non_ok_records_without_reading_their_tokens() -> None:
    assert parse_labelled_record(_ok(status="filtered", rejected_labels="not read"), "f.jsonl:1", 10) is None
    assert parse_labelled_record(_ok(), "f.jsonl:1", 10) == LabelledRecord.from_dict(_ok(), "x", 10)
    with pytest.raises(DataError, match="token id of the base model's vocabulary"):
        parse_labelled_record(_ok(), "f.jsonl:1", 6)
