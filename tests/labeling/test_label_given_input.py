"""Input files carrying revisions (the `given` reviser), including the official TLCR release format."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from tlcr.core.data.jsonl import DataError, SkipReport
from tlcr.labeling.given_input import load_given_input
from tlcr.labeling.revisers import GivenReviser

PROMPT = "\n\nHuman: Capital of Kalo?\n\nAssistant:"


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _revise_all(path: Path) -> dict[str, tuple[str | None, str | None]]:
    given = load_given_input(path)
    reviser = GivenReviser(given.revisions)
    return {p.id: (r.revision, r.failure) for p in given.pairs
            for r in [asyncio.run(reviser.revise(p))]}


def test_plain_records_with_revision_and_null_revision(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "g.jsonl", [
        {"id": "a", "prompt": PROMPT, "chosen": " Tri.", "rejected": " Ven.", "revision": " Tri!"},
        {"id": "b", "prompt": PROMPT, "chosen": " Tri.", "rejected": " Ugh.", "revision": None},
        {"id": "c", "prompt": PROMPT, "chosen": " Tri.", "rejected": " Ugh.", "revision": "  "},
    ])
    assert _revise_all(path) == {"a": (" Tri!", None), "b": (None, "no_given_revision"),
                                 "c": (None, "empty_revision")}


def test_hh_transcripts_with_transcript_revision(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "hh.jsonl.gz", [])
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"chosen": PROMPT + " Tri.", "rejected": PROMPT + " Ugh, Ven.",
                            "revision": PROMPT + " Tri, Ven."}) + "\n")
    given = load_given_input(path)
    assert given.pairs[0].prompt == PROMPT and given.pairs[0].rejected == " Ugh, Ven."
    assert list(_revise_all(path).values()) == [(" Tri, Ven.", None)]


def test_official_release_format_json_array(tmp_path: Path) -> None:
    path = tmp_path / "release.json"
    path.write_text(json.dumps([
        {"prompt": PROMPT, "reject_response": " Ugh. It is Ven.",
         "raw_response": "The rejected reply is rude.\n<|Start Of Modified Response|>\nIt is Tri."},
        {"prompt": PROMPT, "reject_response": " It is Ven.", "raw_response": "no marker here"},
    ]), encoding="utf-8")
    given = load_given_input(path)
    assert [p.rejected for p in given.pairs] == [" Ugh. It is Ven.", " It is Ven."]
    assert given.pairs[0].chosen == ""
    assert sorted(_revise_all(path).values(), key=str) == sorted(
        [(" It is Tri.", None), (None, "missing_marker")], key=str)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": PROMPT, "chosen": " a", "rejected": " b"}], r"g\.jsonl:1: no 'revision' or 'raw_response'"),
        ([{"prompt": PROMPT, "chosen": " a", "rejected": " b", "revision": 3}], r"g\.jsonl:1: 'revision' must be"),
        ([{"reject_response": " b", "raw_response": "x"}], r"g\.jsonl:1: TLCR release record without 'prompt'"),
        ([{"prompt": PROMPT, "chosen": " a", "revision": " c"}], r"g\.jsonl:1: missing key 'rejected'"),
        ([{"id": "x", "prompt": PROMPT, "chosen": " a", "rejected": " b", "revision": " c"},
          {"id": "x", "prompt": PROMPT, "chosen": " a", "rejected": " b", "revision": " d"}],
         r"g\.jsonl:2: id 'x' already used at .*g\.jsonl:1"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, rows: list[object], message: str) -> None:
    path = _write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(DataError, match=message):
        load_given_input(path)


def test_skip_mode_counts_bad_records_and_exact_duplicates(tmp_path: Path) -> None:
    good = {"id": "a", "prompt": PROMPT, "chosen": " a", "rejected": " b", "revision": " c"}
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"".join([json.dumps(good).encode() + b"\n", b"{not json\n", b"\xff\xfe\n",
                               json.dumps(good).encode() + b"\n",
                               json.dumps({"prompt": PROMPT, "chosen": " a"}).encode() + b"\n"]))
    report = SkipReport()
    given = load_given_input(path, on_error="skip", report=report)
    assert [p.id for p in given.pairs] == ["a"] and given.duplicates == 1
    assert report.skipped == 3
    assert any("g.jsonl:2: malformed JSON" in r for r in report.reasons)
    assert any("g.jsonl:3: not valid UTF-8" in r for r in report.reasons)


def test_json_that_is_not_an_array_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON array"):
        load_given_input(path)
    with pytest.raises(DataError, match="file not found"):
        load_given_input(tmp_path / "missing.jsonl")
