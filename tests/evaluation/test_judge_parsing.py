import os
from pathlib import Path

import pytest

from tlcr.core.data.jsonl import DataError
from tlcr.evaluation.judge import JudgeParseError, parse_pairwise_verdict, parse_rating, win_rate
from tlcr.evaluation.mt_bench import conversation_prompt, load_mt_bench

# ../shared beside the checkout (as tests/conftest.py finds it; the old parents[4] looked one folder too high, so
# this test always skipped), or TLCR_SHARED_DIR.
SHARED = Path(os.environ.get("TLCR_SHARED_DIR") or Path(__file__).resolve().parents[3] / "shared")
MT_BENCH_QUESTIONS = SHARED / "data" / "mt_bench" / "question.jsonl"


def test_pairwise_verdict() -> None:
    assert parse_pairwise_verdict("A is concise.\n[[A]]") == "A"
    assert parse_pairwise_verdict("first [[A]] then on reflection [[C]]") == "C"
    with pytest.raises(JudgeParseError, match="no \\[\\[A\\]\\]"):
        parse_pairwise_verdict("B is better")


def test_rating() -> None:
    assert parse_rating("Good.\nRating: [[7]]") == 7.0
    assert parse_rating("Rating: [[8.5]]") == 8.5
    with pytest.raises(JudgeParseError, match="outside"):
        parse_rating("Rating: [[11]]")
    with pytest.raises(JudgeParseError):
        parse_rating("7/10")


def test_win_rate() -> None:
    assert win_rate([1, 0.5, 0, 1]) == 0.625


def test_mt_bench_questions_and_prompts(tmp_path: Path) -> None:
    if not MT_BENCH_QUESTIONS.exists():
        pytest.skip("shared MT-Bench questions not found")
    questions = load_mt_bench(MT_BENCH_QUESTIONS)
    assert len(questions) == 80 and all(len(q.turns) == 2 for q in questions)
    prompt = conversation_prompt(questions[0].turns, ["first answer"])
    assert prompt.startswith("\n\nHuman: ") and " first answer\n\nHuman: " in prompt
    assert prompt.endswith("\n\nAssistant:")
    with pytest.raises(ValueError, match="nothing left"):
        conversation_prompt(("q",), ["a"])
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "turns": []}\n')
    with pytest.raises(DataError, match=r"q\.jsonl:1: 'turns'"):
        load_mt_bench(bad)
