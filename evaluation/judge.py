"""LLM-as-judge over any OpenAI-compatible endpoint: pairwise win rate (AlpacaEval-style) and
single-answer MT-Bench grading. The judge prompts are our own and versioned here."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

JUDGE_PROMPT_VERSION = "tlcr-judge-v1"

PAIRWISE_SYSTEM = (
    "You are an impartial judge of AI assistant answers. Compare two answers to the same conversation for "
    "helpfulness, correctness and harmlessness. Ignore answer order and length as such. Reply with a one-"
    "sentence reason, then the verdict on its own line: [[A]] if answer A is better, [[B]] if answer B is "
    "better, [[C]] for a tie."
)
PAIRWISE_USER = "[Conversation]\n{prompt}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\nWhich answer is better?"

SINGLE_SYSTEM = (
    "You are an impartial judge. Rate the AI assistant's answer to the user's question for helpfulness, "
    "relevance, accuracy, depth and harmlessness. Give a short explanation, then the rating on its own line "
    "in exactly this format: Rating: [[N]] where N is an integer from 1 to 10."
)
SINGLE_USER = "[Conversation]\n{prompt}\n\n[The Assistant's Answer]\n{answer}"

_VERDICT = re.compile(r"\[\[([ABC])\]\]")
_RATING = re.compile(r"Rating:\s*\[\[(\d+(?:\.\d+)?)\]\]")


@dataclass
class JudgeConfig:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 4


class JudgeParseError(ValueError):
    pass


def parse_pairwise_verdict(text: str) -> str:
    """'A', 'B' or 'C' (tie) from the judge's reply; the last verdict wins if several are given."""
    found = _VERDICT.findall(text)
    if not found:
        raise JudgeParseError(f"no [[A]]/[[B]]/[[C]] verdict in judge reply: {text[-200:]!r}")
    return found[-1]


def parse_rating(text: str) -> float:
    found = _RATING.findall(text)
    if not found:
        raise JudgeParseError(f"no 'Rating: [[N]]' in judge reply: {text[-200:]!r}")
    rating = float(found[-1])
    if not 1 <= rating <= 10:
        raise JudgeParseError(f"rating {rating} outside 1..10")
    return rating


def win_rate(outcomes: Sequence[float]) -> float:
    """Mean of per-comparison outcomes (1 win, 0.5 tie, 0 loss)."""
    return sum(outcomes) / len(outcomes) if outcomes else float("nan")


class Judge:
    """Asks an OpenAI-compatible chat endpoint to compare or grade answers, with bounded concurrency."""

    def __init__(self, config: JudgeConfig) -> None:
        from openai import AsyncOpenAI

        self.config = config
        self._client = AsyncOpenAI(base_url=config.base_url, api_key=os.environ.get(config.api_key_env, "EMPTY"),
                                   timeout=config.timeout, max_retries=config.max_retries)
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self.failures: list[str] = []

    async def _ask(self, system: str, user: str) -> str:
        async with self._semaphore:
            reply = await self._client.chat.completions.create(
                model=self.config.model, temperature=0.0,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        return reply.choices[0].message.content or ""

    async def compare(self, prompt: str, answer: str, baseline: str) -> float | None:
        """1 / 0.5 / 0 for answer vs baseline, judged in both orders to cancel position bias.

        None when the judge could not be parsed in either order (counted in `failures`)."""
        scores = []
        for a, b, ours in ((answer, baseline, "A"), (baseline, answer, "B")):
            try:
                verdict = parse_pairwise_verdict(await self._ask(PAIRWISE_SYSTEM, PAIRWISE_USER.format(
                    prompt=prompt, a=a, b=b)))
            except JudgeParseError as exc:
                self.failures.append(str(exc))
                continue
            scores.append(0.5 if verdict == "C" else float(verdict == ours))
        return sum(scores) / len(scores) if scores else None

    async def rate(self, prompt: str, answer: str) -> float | None:
        try:
            return parse_rating(await self._ask(SINGLE_SYSTEM, SINGLE_USER.format(prompt=prompt, answer=answer)))
        except JudgeParseError as exc:
            self.failures.append(str(exc))
            return None

    async def pairwise_win_rate(self, prompts: Sequence[str], answers: Sequence[str],
                                baselines: Sequence[str]) -> float:
        outcomes = await asyncio.gather(*(self.compare(p, a, b) for p, a, b in
                                          zip(prompts, answers, baselines, strict=True)))
        return win_rate([o for o in outcomes if o is not None])

    async def mean_rating(self, prompts: Sequence[str], answers: Sequence[str]) -> float:
        ratings = await asyncio.gather(*(self.rate(p, a) for p, a in zip(prompts, answers, strict=True)))
        valid = [r for r in ratings if r is not None]
        return sum(valid) / len(valid) if valid else float("nan")

    async def aclose(self) -> None:
        await self._client.close()
