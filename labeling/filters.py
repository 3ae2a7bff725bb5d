"""Quality filters on labelled records, and the end-of-run summary (counts per reason, class balance).

A record that fails a filter keeps its labels but gets status "filtered" and the filter's reason, so it
can be inspected; only status "ok" trains the discriminator. Filters, in order:

- `too_long`: the prompt, chosen, rejected or revised text has more than `max_chars` characters (checked
  before tokenizing, and for the input before the reviser is called), or a response more than
  `max_tokens` tokens; such a record carries no token ids or labels;
- `unchanged`: the revision tokenizes exactly like the rejected response (nothing to learn);
- `refusal`: the revision refuses the task while neither the chosen nor the rejected response is a
  refusal (in harmlessness data a refusal is often the right, minimal fix, so it is kept then);
- `rewrite`: the revision keeps less than `min_kept_share` of the rejected tokens AND less than that share
  of its own tokens come from the rejected response (kept = tokens the Levenshtein alignment matches).
  A minimal edit keeps most of the rejected response (an insert-heavy addition keeps all of it) or
  consists mostly of it (a deletion-heavy fix); an unrelated answer does neither, whatever its length.
  Deleting the whole response (an empty revision) is a minimal edit: all rejected tokens negative;
- `edit_ratio` (off unless `max_edit_ratio` is set): edit distance / rejected tokens above it.

Measured on the 2,303 readable HH-RLHF harmless-base test pairs with the Llama 2 tokenizer, taking the
chosen response as the "revision" of the rejected one (mostly a different answer): the edit-ratio rule
(<= 1.0) let 61.9 % pass, the kept-share rule (0.5) 9.7 %. Appending the chosen text to the rejected one
(an insert-heavy addition) passes in 100 % of the pairs, keeping a 30 % run of its words (a deletion) in
97.6 % (the rest are responses of a few words); the controlled task's exact minimal edits in 100 % (500
pairs, tiny test tokenizer and Llama 2).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tlcr.core.data.labelled import NEGATIVE, NEUTRAL, POSITIVE
from tlcr.labeling.usage import message_class

UNCHANGED = "unchanged"
REFUSAL = "refusal"
REWRITE = "rewrite"
EDIT_RATIO = "edit_ratio"
TOO_LONG = "too_long"

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
    min_kept_share: float = 0.5
    max_edit_ratio: float | None = None
    max_chars: int = 20_000  # per text (prompt, chosen, rejected, revision)
    max_tokens: int = 4_096  # per response (rejected, revision)
    drop_unchanged: bool = True
    drop_refusals: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_kept_share <= 1.0:
            raise ValueError(f"min_kept_share must be in [0, 1], got {self.min_kept_share}")
        if self.max_chars < 1 or self.max_tokens < 1:
            raise ValueError(f"max_chars and max_tokens must be >= 1, got {self.max_chars}, {self.max_tokens}")


def too_long_texts(texts: dict[str, str | None], max_chars: int) -> str | None:
    """Why the texts are too long to label ('rejected: 52,428,800 characters > 20,000'), or None."""
    over = [f"{name}: {len(text):,} characters > {max_chars:,}" for name, text in texts.items()
            if text is not None and len(text) > max_chars]
    return "; ".join(over) or None


def kept_shares(record: dict[str, Any]) -> tuple[float, float]:
    """(share of the rejected tokens the revision keeps, share of the revision's tokens that are kept ones)."""
    kept = sum(1 for label in record["rejected_labels"] if label == NEUTRAL)
    return kept / max(len(record["rejected_token_ids"]), 1), kept / max(len(record["revised_token_ids"]), 1)


def is_rewrite(record: dict[str, Any], min_kept_share: float) -> bool:
    if not record["revised_token_ids"]:
        return False  # the whole response deleted: a minimal edit (all rejected tokens negative)
    return max(kept_shares(record)) < min_kept_share


def apply_filters(record: dict[str, Any], config: FilterConfig) -> dict[str, Any]:
    """Set status "filtered" and the reason on a status-"ok" record that fails a filter; returns it."""
    if record["status"] != "ok":
        return record
    reason = None
    longest = max(len(record["rejected_token_ids"]), len(record["revised_token_ids"]))
    if longest > config.max_tokens:
        reason = TOO_LONG
        record["meta"]["too_long"] = f"{longest:,} tokens in a response > {config.max_tokens:,}"
        for key in ("rejected_token_ids", "rejected_labels", "revised_token_ids", "revised_labels"):
            record[key] = []
    elif config.drop_unchanged and record["revised_token_ids"] == record["rejected_token_ids"]:
        reason = UNCHANGED
    elif (config.drop_refusals and looks_like_refusal(record["revision"])
          and not looks_like_refusal(record["chosen"]) and not looks_like_refusal(record["rejected"])):
        reason = REFUSAL
    elif is_rewrite(record, config.min_kept_share):
        reason = REWRITE
    elif config.max_edit_ratio is not None and record["edit_ratio"] > config.max_edit_ratio:
        reason = EDIT_RATIO
    if reason is not None:
        record["status"], record["reason"] = "filtered", reason
    return record


@dataclass
class LabelSummary:
    """Counts per status and reason, and the token-label class balance of the "ok" records."""

    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_failed_reason: Counter[str] = field(default_factory=Counter)  # the reasons of "failed" records only
    label_counts: Counter[str] = field(default_factory=Counter)  # negative / neutral / positive tokens
    edit_ratio_sum: float = 0.0
    # failed records' messages (reason_detail), counted by (reason, message class); the first one seen of each
    by_message: Counter[tuple[str, str]] = field(default_factory=Counter)
    message_example: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        self.by_status[record["status"]] += 1
        if record["reason"]:
            self.by_reason[record["reason"]] += 1
            if record["status"] == "failed":
                self.by_failed_reason[record["reason"]] += 1
        if record.get("reason_detail"):
            key = (record["reason"] or "", message_class(record["reason_detail"]))
            self.by_message[key] += 1
            self.message_example.setdefault(key, record["reason_detail"])
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
            "failure_messages": [{"reason": reason, "count": count, "message": self.message_example[(reason, kind)]}
                                 for (reason, kind), count in self.top_messages()],
        }

    def top_messages(self, n: int = 5) -> list[tuple[tuple[str, str], int]]:
        """The `n` most frequent (reason, message class) of failed records, most frequent first."""
        return sorted(self.by_message.items(), key=lambda item: (-item[1], item[0]))[:n]

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
                + (f"; mean edit ratio {mean:.3f}" if mean is not None else "")
                + ("\nmost frequent failure messages (count x reason: the first message of its kind):"
                   if d["failure_messages"] else "")
                + "".join(f"\n  {m['count']} x {m['reason']}: {m['message']}" for m in d["failure_messages"]))
