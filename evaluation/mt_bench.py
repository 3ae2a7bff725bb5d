"""MT-Bench questions (question.jsonl: question_id, category, turns) as HH-format conversations."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tlcr.core.data.jsonl import DataError, iter_jsonl


@dataclass(frozen=True)
class MTBenchQuestion:
    question_id: int
    category: str
    turns: tuple[str, ...]


def load_mt_bench(path: str | os.PathLike[str]) -> list[MTBenchQuestion]:
    questions = []
    for lineno, obj in iter_jsonl(path):
        turns = obj.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError(f"{path}:{lineno}: 'turns' must be a non-empty list of non-empty strings")
        if "question_id" not in obj:
            raise DataError(f"{path}:{lineno}: missing key 'question_id'")
        questions.append(MTBenchQuestion(int(obj["question_id"]), str(obj.get("category", "")), tuple(turns)))
    if not questions:
        raise DataError(f"{path}: no questions")
    return questions


def conversation_prompt(turns: tuple[str, ...] | list[str], answers: list[str]) -> str:
    """The HH-format prompt for turn len(answers)+1, with the model's earlier answers in place."""
    if len(answers) >= len(turns):
        raise ValueError(f"{len(answers)} answers given for {len(turns)} turns: nothing left to ask")
    parts = []
    for i, question in enumerate(turns[: len(answers) + 1]):
        parts.append(f"\n\nHuman: {question}\n\nAssistant:")
        if i < len(answers):
            parts.append(answers[i] if answers[i].startswith(" ") else " " + answers[i])
    return "".join(parts)
