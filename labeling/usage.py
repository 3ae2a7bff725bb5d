"""Token usage ledger per reviser model: calls, cache hits, retries, errors and tokens.

The ledger file (`<out>.usage.json`) keeps one entry per run plus the totals over all runs, so the cost
of a labelling job resumed many times is still known. It is rewritten atomically, periodically during a
run and at its end; a `kill -9` loses at most the usage since the last save.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COUNTS = ("requests", "answers", "cache_hits", "retries", "prompt_tokens", "completion_tokens")  # ModelUsage's
MESSAGE_MAX_CHARS = 500  # an endpoint's error message as kept in a record's reason_detail
_CLASS_MAX_CHARS = 160
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE = re.compile(r"\s+")


def cut_message(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters with an ellipsis."""
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def message_class(text: str) -> str:
    """A message with its numbers replaced by N, so that "context length is 512 tokens, your prompt has 513"
    and "... has 700" count as one kind of error."""
    return cut_message(_NUMBER.sub("N", text), _CLASS_MAX_CHARS)


@dataclass
class ModelUsage:
    requests: int = 0            # HTTP attempts, including failed ones
    answers: int = 0             # successful (paid) answers
    cache_hits: int = 0          # answers served from the cache instead of paid again
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error kind (http_<status>, timeout...) -> count
    # "<kind>: <message class>" -> count, for errors whose endpoint sent a message
    error_messages: dict[str, int] = field(default_factory=dict)

    def add(self, other: ModelUsage) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors = dict(Counter(self.errors) + Counter(other.errors))
        self.error_messages = dict(Counter(self.error_messages) + Counter(other.error_messages))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class UsageLedger:
    by_model: dict[str, ModelUsage] = field(default_factory=dict)

    def model(self, name: str) -> ModelUsage:
        return self.by_model.setdefault(name, ModelUsage())

    def error(self, name: str, kind: str, message: str | None = None) -> None:
        usage = self.model(name)
        usage.errors[kind] = usage.errors.get(kind, 0) + 1
        if message:
            key = f"{kind}: {message_class(message)}"
            usage.error_messages[key] = usage.error_messages.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {name: {**asdict(u), "total_tokens": u.total_tokens} for name, u in sorted(self.by_model.items())}

    def summary(self) -> str:
        if not self.by_model:
            return "no reviser calls"
        lines = []
        for name, u in sorted(self.by_model.items()):
            errors = ", ".join(f"{k}={v}" for k, v in sorted(u.errors.items())) or "none"
            lines.append(f"{name}: {u.answers} answers, {u.cache_hits} cache hits, {u.requests} requests, "
                         f"{u.retries} retries, tokens {u.prompt_tokens} prompt + {u.completion_tokens} "
                         f"completion, errors: {errors}")
            top = sorted(u.error_messages.items(), key=lambda item: (-item[1], item[0]))[:5]
            lines.extend(f"  {count} x {key}" for key, count in top)
        return "\n".join(lines)


def _usage_from_dict(data: dict[str, Any]) -> ModelUsage:
    fields = {k: v for k, v in data.items() if k in ModelUsage.__dataclass_fields__}
    return ModelUsage(**fields)


class LedgerFile:
    """The on-disk ledger: previous runs are kept, this run's entry is replaced on each save."""

    def __init__(self, path: str | os.PathLike[str], ledger: UsageLedger, run_info: dict[str, Any]) -> None:
        self.path = Path(path)
        self.ledger = ledger
        self.previous_runs: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                self.previous_runs = list(json.loads(self.path.read_text(encoding="utf-8"))["runs"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}: unreadable usage ledger ({exc}); move it away to start anew") \
                    from exc
        self.run_info = {**run_info, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save(self) -> None:
        runs = [*self.previous_runs, {**self.run_info, "usage": self.ledger.to_dict()}]
        totals: dict[str, ModelUsage] = {}
        for run in runs:
            for name, data in run.get("usage", {}).items():
                totals.setdefault(name, ModelUsage()).add(_usage_from_dict(data))
        doc = {"totals": UsageLedger(totals).to_dict(), "runs": runs}
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)
