import gzip
import json
from pathlib import Path

import pytest

from tlcr.core.data.jsonl import DataError, SkipReport
from tlcr.core.data.pairs import PreferencePair, split_transcript
from tlcr.core.data.sources import load_preference_pairs
from tlcr.core.data.splits import paper_split


def test_split_transcript_keeps_last_assistant_marker_in_prompt() -> None:
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this."
    prompt, response = split_transcript(text)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:"
    assert response == " like this."


def test_split_transcript_without_assistant_turn_fails() -> None:
    with pytest.raises(ValueError, match="Assistant"):
        split_transcript("\n\nHuman: hi")


def test_loads_real_harmless_sample_and_reports_skips(hh_harmless_test: Path) -> None:
    report = SkipReport()
    pairs = load_preference_pairs(hh_harmless_test, on_error="skip", report=report)
    assert len(pairs) + report.skipped == 2312
    assert len(pairs) > 2250
    assert all(p.prompt.endswith("\n\nAssistant:") and p.chosen.strip() and p.rejected.strip() for p in pairs)
    assert "empty chosen response" in report.summary()


def test_strict_loading_names_file_and_line(hh_harmless_test: Path) -> None:
    with pytest.raises(DataError, match=r"test\.jsonl\.gz:87: empty chosen response"):
        load_preference_pairs(hh_harmless_test)


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"chosen": "x"', "malformed JSON"),
        (b'["a"]', "expected a JSON object"),
        (b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}', "missing key 'rejected'"),
        (b'{"prompt": "p", "chosen": "a", "rejected": 3}', "'rejected' must be a string"),
        (b'{"prompt": "p", "chosen": " ", "rejected": "b"}', "empty chosen response"),
        (b'{"prompt": "p", "chosen": "a", "rejected": "\xff"}', "not valid UTF-8"),
    ],
)
def test_bad_lines_raise_with_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    good = b'{"prompt": "p", "chosen": "a", "rejected": "b"}'
    path = _write(tmp_path / "pairs.jsonl", [good, line, good])
    with pytest.raises(DataError, match=rf"pairs\.jsonl:2: .*{message}"):
        load_preference_pairs(path)
    report = SkipReport()
    pairs = load_preference_pairs(path, on_error="skip", report=report)
    assert len(pairs) == 2 and report.skipped == 1 and "pairs.jsonl:2" in report.reasons[0]


def test_gzip_and_prompt_format(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Q?", "chosen": " yes", "rejected": " no", "id": "a1"}) + "\n")
    [pair] = load_preference_pairs(path)
    assert pair == PreferencePair(prompt="Q?", chosen=" yes", rejected=" no", id="a1")


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "Q", "chosen": "a", "rejected": "b"}\n' * 50)[:40])
    with pytest.raises(DataError, match="cannot read"):
        load_preference_pairs(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_preference_pairs(tmp_path / "nope.jsonl")


def test_paper_split_is_deterministic_and_disjoint() -> None:
    pairs = [PreferencePair(prompt=f"p{i}", chosen="a", rejected="b") for i in range(100)]
    a, b = paper_split(pairs, seed=1), paper_split(pairs, seed=1)
    assert {k: len(v) for k, v in a.items()} == {"sft": 20, "rm": 40, "ppo": 40}
    assert a == b
    ids = [p.id for part in a.values() for p in part]
    assert sorted(ids) == sorted(p.id for p in pairs)
    assert paper_split(pairs, seed=2)["sft"] != a["sft"]
    with pytest.raises(ValueError, match="sum to 1"):
        paper_split(pairs, fractions=(0.5, 0.5, 0.5))


def test_hub_code_path_on_a_local_dataset_repo(tmp_path: Path, hh_harmless_test: Path) -> None:
    """The same `datasets.load_dataset(id, data_dir=..., split=...)` call as for Anthropic/hh-rlhf on the Hub."""
    import shutil

    repo = tmp_path / "hh-rlhf"
    (repo / "harmless-base").mkdir(parents=True)
    shutil.copy(hh_harmless_test, repo / "harmless-base" / "test.jsonl.gz")
    report = SkipReport()
    pairs = load_preference_pairs(repo, split="test", data_dir="harmless-base", on_error="skip", report=report,
                                  limit=100)
    from_file = load_preference_pairs(hh_harmless_test, on_error="skip", limit=100)
    assert pairs == from_file
    assert report.skipped == 1 and "hh-rlhf[test][86]: empty chosen response" in report.reasons[0]
    with pytest.raises(DataError, match="cannot load dataset"):
        load_preference_pairs(repo, split="train", data_dir="harmless-base")


def test_select_part_is_one_part_of_the_paper_split_or_every_pair_and_refuses_other_names():
    from tlcr.core.data.splits import PART_CHOICES, check_part, select_part

    pairs = [PreferencePair(prompt=f"p{i}", chosen="c", rejected="r") for i in range(10)]
    assert PART_CHOICES == ("all", "sft", "rm", "ppo")
    assert select_part(pairs, "all") == pairs
    parts = {part: select_part(pairs, part, seed=3) for part in ("sft", "rm", "ppo")}
    assert parts == paper_split(pairs, seed=3)
    assert sorted(p.prompt for ps in parts.values() for p in ps) == sorted(p.prompt for p in pairs)
    with pytest.raises(ValueError, match="split part must be one of all, sft, rm, ppo, not 'train'"):
        check_part("train")
