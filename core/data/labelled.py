"""The labelled record: one line of `tlcr label`'s output and of `tlcr train-discriminator`'s input.

Defined once here: labeling builds records with `LabelledRecord(...).to_dict()`, the trainer reads them
with `load_labelled_records` / `parse_labelled_record`, which validate every field they use and name the
file, line, record and field of the first problem.

A status-"ok" record carries the token ids of the rejected and the revised response (the joint
prompt + response encoding of `tlcr.core.tokenization`) and one label per token: 0 = deleted or replaced
(negative), 1 = inserted or replacing (positive), 0.5 = kept. "failed" and "filtered" records keep the
texts and the reason, with empty token fields when nothing was tokenized.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tlcr.core.data.jsonl import DataError, OnError, SkipReport, iter_jsonl

Status = Literal["ok", "failed", "filtered"]
STATUSES: tuple[str, ...] = ("ok", "failed", "filtered")
_STRING_FIELDS = ("id", "prompt", "chosen", "rejected", "status")
# The three label values (the TLCR rule; tlcr.labeling.token_labels assigns them).
NEGATIVE = 0.0  # a rejected token the revision deleted or replaced
NEUTRAL = 0.5  # a token the revision kept
POSITIVE = 1.0  # a revised token the revision inserted or that replaces one

_SEQUENCE_FIELDS = (("rejected_token_ids", "rejected_labels"), ("revised_token_ids", "revised_labels"))


@dataclass(frozen=True)
class LabelledRecord:
    """One labelled pair. `where` (file:line and id, for error messages) is not written."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    revision: str | None
    tokenizer: str
    rejected_token_ids: list[int]
    rejected_labels: list[float]
    revised_token_ids: list[int]
    revised_labels: list[float]
    status: Status = "ok"
    reason: str | None = None
    reason_detail: str | None = None  # failed: the endpoint's message, why it was not sent, or the answer's start
    reviser: str = ""
    instruction_version: str = ""
    ops: dict[str, int] = field(default_factory=lambda: {"insert": 0, "delete": 0, "replace": 0})
    edit_distance: int = 0
    edit_ratio: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the output file (this key order, which resumed runs reproduce)."""
        return {
            "id": self.id, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
            "revision": self.revision, "status": self.status, "reason": self.reason,
            "reason_detail": self.reason_detail, "reviser": self.reviser,
            "instruction_version": self.instruction_version, "tokenizer": self.tokenizer,
            "rejected_token_ids": self.rejected_token_ids, "rejected_labels": self.rejected_labels,
            "revised_token_ids": self.revised_token_ids, "revised_labels": self.revised_labels,
            "ops": self.ops, "edit_distance": self.edit_distance, "edit_ratio": self.edit_ratio, "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str = "record", vocab_size: int | None = None) -> LabelledRecord:
        """A validated record; raises DataError naming `where`, the record and the field.

        Token ids must lie in [0, vocab_size) when `vocab_size` is given; labels in [0, 1].
        """
        _check_strings(obj, where)
        record_where = f"{where} (record {obj['id']!r})"
        for ids_key, labels_key in _SEQUENCE_FIELDS:
            _check_sequence(obj, record_where, ids_key, labels_key, vocab_size)
        if obj["status"] == "ok" and not obj["rejected_token_ids"]:
            raise DataError(f"{record_where}: rejected_token_ids is empty: no response token to train on")
        for key in ("revision", "reason", "reason_detail"):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise DataError(f"{record_where}: field {key!r} must be a string or null")
        for key, kind in (("ops", dict), ("meta", dict)):
            if key in obj and not isinstance(obj[key], kind):
                raise DataError(f"{record_where}: field {key!r} must be an object, got {type(obj[key]).__name__}")
        return cls(
            id=obj["id"], prompt=obj["prompt"], chosen=obj["chosen"], rejected=obj["rejected"],
            revision=obj.get("revision"), tokenizer=str(obj.get("tokenizer", "")),
            rejected_token_ids=list(obj["rejected_token_ids"]),
            rejected_labels=[float(x) for x in obj["rejected_labels"]],
            revised_token_ids=list(obj["revised_token_ids"]),
            revised_labels=[float(x) for x in obj["revised_labels"]],
            status=obj["status"], reason=obj.get("reason"), reason_detail=obj.get("reason_detail"),
            reviser=str(obj.get("reviser", "")),
            instruction_version=str(obj.get("instruction_version", "")),
            ops=dict(obj.get("ops") or {"insert": 0, "delete": 0, "replace": 0}),
            edit_distance=int(obj.get("edit_distance", 0)), edit_ratio=float(obj.get("edit_ratio", 0.0)),
            meta=dict(obj.get("meta") or {}), where=record_where)


def _check_strings(obj: dict[str, Any], where: str) -> None:
    for key in _STRING_FIELDS:
        if key not in obj:
            raise DataError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    if obj["status"] not in STATUSES:
        raise DataError(f"{where} (record {obj['id']!r}): status must be one of {', '.join(STATUSES)}, "
                        f"got {obj['status']!r}")


def _check_sequence(obj: dict[str, Any], where: str, ids_key: str, labels_key: str, vocab_size: int | None) -> None:
    for key in (ids_key, labels_key):
        if key not in obj:
            raise DataError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], list):
            raise DataError(f"{where}: field {key!r} must be a list, got {type(obj[key]).__name__}")
    ids, labels = obj[ids_key], obj[labels_key]
    if len(ids) != len(labels):
        raise DataError(f"{where}: {len(ids)} {ids_key} but {len(labels)} {labels_key}")
    limit = vocab_size if vocab_size is not None else float("inf")
    for i, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < limit:
            vocabulary = (f"the base model's vocabulary (size {vocab_size})" if vocab_size is not None
                          else "any vocabulary")
            raise DataError(f"{where}: {ids_key}[{i}] = {token!r} is not a token id of {vocabulary}")
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int | float) or not 0.0 <= label <= 1.0:
            raise DataError(f"{where}: {labels_key}[{i}] = {label!r} is not a label in [0, 1]")


def parse_labelled_record(obj: dict[str, Any], where: str, vocab_size: int) -> LabelledRecord | None:
    """A validated status-"ok" record; None for "failed"/"filtered" ones (their token fields are not read)."""
    _check_strings(obj, where)
    if obj["status"] != "ok":
        return None
    return LabelledRecord.from_dict(obj, where, vocab_size)


@dataclass
class LabelledData:
    records: list[LabelledRecord]
    statuses: Counter[str]
    skipped: SkipReport


def load_labelled_records(path: str | os.PathLike[str], *, vocab_size: int, on_error: OnError = "raise",
                          report: SkipReport | None = None) -> LabelledData:
    """Status-"ok" records of a labelled JSONL file, validated; raises DataError if there are none."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labelled data file not found")
    report = report if report is not None else SkipReport()
    records: list[LabelledRecord] = []
    statuses: Counter[str] = Counter()
    for lineno, obj in iter_jsonl(path, on_error=on_error, report=report):
        try:
            record = parse_labelled_record(obj, f"{path}:{lineno}", vocab_size)
        except DataError as exc:
            if on_error == "raise":
                raise
            report.add(str(exc))
            continue
        statuses[obj["status"]] += 1
        if record is not None:
            records.append(record)
    if not records:
        seen = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no records"
        raise DataError(f"{path}: no status 'ok' records to train on ({seen}; {report.summary()})")
    return LabelledData(records, statuses, report)
