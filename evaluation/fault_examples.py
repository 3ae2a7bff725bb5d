"""One side-by-side example per fault kind of the controlled task: a baseline (SFT) response with the fault and
another policy's response to the same test question, both with their token rewards.

The example of a kind is the first baseline response (in prompt order) with that fault whose counterpart, the
other policy's response at the same index (same question, same sample number), has fewer of it; when none
has fewer, the first with the fault. So the examples show what a change looks like, not how often it happens:
each example carries how many responses of either policy have the fault, over all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tlcr.core.data.controlled import OracleScore
from tlcr.evaluation.report import FaultExample, HeatmapSample

# (name, how many times a response has it) — the rejected responses' faults (core/data/controlled.py)
FAULT_KINDS: tuple[tuple[str, Callable[[OracleScore], int]], ...] = (
    ("rude sentence", lambda o: o.rude),
    ("hedge", lambda o: o.hedges),
    ("repeated sentence", lambda o: o.repetitions),
    ("wrong fact", lambda o: o.wrong),
    ("left-out fact", lambda o: o.omitted_facts),
    ("left-out detail", lambda o: o.missing_details),
)


def _sample(policy: str, row: dict[str, Any]) -> HeatmapSample:
    return HeatmapSample(policy, row["prompt"], row["tokens"], row["rewards"], row["oracle"]["score"])


def fault_examples(baseline: str, baseline_rows: Sequence[dict[str, Any]], policy: str,
                   policy_rows: Sequence[dict[str, Any]]) -> list[FaultExample]:
    """One `FaultExample` per kind in FAULT_KINDS, from rows scored by the oracle (`row["oracle"]`) and the
    service (`tokens`, `rewards`), both policies' rows in the same prompt order."""
    if len(baseline_rows) != len(policy_rows):
        raise ValueError(f"{baseline} has {len(baseline_rows)} responses, {policy} {len(policy_rows)}: "
                         "examples need both policies' responses to the same prompts")
    for a, b in zip(baseline_rows, policy_rows, strict=True):
        if a["prompt"] != b["prompt"]:
            raise ValueError(f"{baseline} and {policy} responses are not to the same prompts")
    base_scores = [OracleScore(**r["oracle"]) for r in baseline_rows]
    other_scores = [OracleScore(**r["oracle"]) for r in policy_rows]
    examples = []
    for kind, count in FAULT_KINDS:
        base_counts = [count(o) for o in base_scores]
        other_counts = [count(o) for o in other_scores]
        with_fault = [i for i, n in enumerate(base_counts) if n > 0 and baseline_rows[i]["tokens"]]
        fewer = [i for i in with_fault if other_counts[i] < base_counts[i]]
        chosen = (fewer or with_fault or [None])[0]
        examples.append(FaultExample(
            kind=kind, n_responses=len(base_counts),
            baseline_with_fault=sum(n > 0 for n in base_counts), policy_with_fault=sum(n > 0 for n in other_counts),
            baseline=None if chosen is None else _sample(baseline, baseline_rows[chosen]),
            policy=None if chosen is None else _sample(policy, policy_rows[chosen]),
            baseline_count=0 if chosen is None else base_counts[chosen],
            policy_count=0 if chosen is None else other_counts[chosen]))
    return examples
