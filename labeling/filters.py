"""Quality filters on labelled records, and the end-of-run summary (counts per reason, class balance).

A record that fails a filter keeps its labels but gets status "filtered" and the filter's reason, so it
can be inspected; only status "ok" trains the discriminator. Filters, in order:

- `unchanged`: the revision tokenizes exactly like the rejected response (nothing to learn);
- `refusal`: the revision refuses the task while neither the chosen nor the rejected response is a
  refusal (in harmlessness data a refusal is often the right, minimal fix, so it is kept then);
- `edit_ratio`: edit distance / rejected tokens above `max_edit_ratio` (not a minimal edit).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from labeling.token_labels import NEGATIVE, NEUTRAL, POSITIVE

UNCHANGED = "unchanged"
REFUSAL = "refusal"
EDIT_RATIO = "edit_ratio"

_REFUSAL_RE = re.compile(
    r"\bI(?:'m|’m| am) sorry,? but I (?:can(?:'|’|no)?t|cannot|won(?:'|’)t|am unable|(?:'m|’m) unable)"
    r"|\bI (?:can(?:'|’|no)?t|cannot|won(?:'|’)t|am not able to|(?:'m|’m) not able to|am unable to|"
    r"(?:'m|’m) unable to) (?:help|assist|comply|fulfil|fulfill|do that|modify|edit|revise|rewrite|provide)"
    r"|\bAs an AI(?: language model)?,"
    r"|\bI must (?:decline|refuse)\b",
    re.IGNORECASE)


def looks_like_refusal(text: str | None) -> bool:
    return bool(text) and _REFUSAL_RE.search(text or "") is not None


@dataclass(frozen=True)
class FilterConfig:
    max_edit_ratio: float = 1.0
    drop_unchanged: bool = True
    drop_refusals: bool = True


def apply_filters(record: dict[str, Any], config: FilterConfig) -> dict[str, Any]:
    """Set status "filtered" and the reason on a status-"ok" record that fails a filter; returns it."""
    if record["status"] != "ok":
        return record
    reason = None
    if config.drop_unchanged and record["revised_token_ids"] == record["rejected_token_ids"]:
        reason = UNCHANGED
    elif (config.drop_refusals and looks_like_refusal(record["revision"])
          and not looks_like_refusal(record["chosen"]) and not looks_like_refusal(record["rejected"])):
        reason = REFUSAL
    elif record["edit_ratio"] > config.max_edit_ratio:
        reason = EDIT_RATIO
    if reason is not None:
        record["status"], record["reason"] = "filtered", reason
    return record


@dataclass
class LabelSummary:
    """Counts per status and reason, and the token-label class balance of the "ok" records."""

    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    label_counts: Counter[str] = field(default_factory=Counter)  # negative / neutral / positive tokens
    edit_ratio_sum: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.by_status[record["status"]] += 1
        if record["reason"]:
            self.by_reason[record["reason"]] += 1
        if record["status"] != "ok":
            return
        self.edit_ratio_sum += record["edit_ratio"]
        names = {NEGATIVE: "negative", NEUTRAL: "neutral", POSITIVE: "positive"}
        for label in (*record["rejected_labels"], *record["revised_labels"]):
            self.label_counts[names[label]] += 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def to_dict(self) -> dict[str, Any]:
        tokens = sum(self.label_counts.values())
        ok = self.by_status["ok"]
        return {
            "records": self.total,
            "status": dict(sorted(self.by_status.items())),
            "reasons": dict(sorted(self.by_reason.items())),
            "label_counts": {k: self.label_counts[k] for k in ("negative", "neutral", "positive")},
            "label_fractions": {k: (self.label_counts[k] / tokens if tokens else 0.0)
                                for k in ("negative", "neutral", "positive")},
            "mean_edit_ratio_ok": self.edit_ratio_sum / ok if ok else None,
        }

    def format(self) -> str:
        d = self.to_dict()
        status = ", ".join(f"{k} {v}" for k, v in d["status"].items()) or "none"
        reasons = ", ".join(f"{k} {v}" for k, v in d["reasons"].items()) or "none"
        fr = d["label_fractions"]
        mean = d["mean_edit_ratio_ok"]
        return (f"{d['records']} records: {status}\n"
                f"failure/filter reasons: {reasons}\n"
                f"token labels of ok records: negative {d['label_counts']['negative']} ({fr['negative']:.1%}), "
                f"neutral {d['label_counts']['neutral']} ({fr['neutral']:.1%}), "
                f"positive {d['label_counts']['positive']} ({fr['positive']:.1%})"
                + (f"; mean edit ratio {mean:.3f}" if mean is not None else ""))
