"""One example per fault kind: the controlled task's faulty (rejected) answers against their minimal fixes."""

from __future__ import annotations

from typing import Any

import pytest

from tlcr.core.data.controlled import ControlledTask
from tlcr.evaluation.fault_examples import FAULT_KINDS, fault_examples


def rows(task: ControlledTask, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
    return [{"prompt": p, "response": r, "tokens": r.split(" "), "rewards": [0.0] * len(r.split(" ")),
             "oracle": task.oracle(p, r).to_dict()} for p, r in zip(prompts, responses, strict=True)]


def test_every_fault_kind_gets_an_example_the_fixed_policy_does_not_have(controlled_task: ControlledTask) -> None:
    pairs = controlled_task.pairs(80, seed=1, part="test")
    prompts = [p.prompt for p in pairs]
    faulty = rows(controlled_task, prompts, [p.rejected for p in pairs])
    fixed = rows(controlled_task, prompts, [p.chosen for p in pairs])
    examples = fault_examples("SFT", faulty, "TLCR", fixed)
    assert [e.kind for e in examples] == [kind for kind, _ in FAULT_KINDS]
    faults_by_kind = {"rude sentence": "rude", "hedge": "hedge", "repeated sentence": "repetition",
                      "wrong fact": "wrong_fact", "left-out fact": "missing_fact", "left-out detail": "missing_detail"}
    for example in examples:
        assert example.baseline is not None and example.policy is not None, example.kind
        assert example.baseline.prompt == example.policy.prompt  # the same question, side by side
        assert example.baseline_count >= 1 and example.policy_count == 0, example
        assert example.policy_with_fault == 0 and example.n_responses == 80
        having = sum(faults_by_kind[example.kind] in p.meta["faults"] for p in pairs)
        assert example.baseline_with_fault == having > 0, example.kind  # the oracle finds each injected fault
        pair = next(p for p in pairs if p.prompt == example.baseline.prompt and
                    " ".join(example.baseline.tokens) == p.rejected)
        assert faults_by_kind[example.kind] in pair.meta["faults"]


def test_a_fault_no_response_has_gets_no_example_and_unchanged_faults_still_show(
        controlled_task: ControlledTask) -> None:
    pairs = [p for p in controlled_task.pairs(40, seed=2, part="test") if p.meta["faults"] == ["repetition"]]
    prompts = [p.prompt for p in pairs]
    same = rows(controlled_task, prompts, [p.rejected for p in pairs])
    examples = {e.kind: e for e in fault_examples("SFT", same, "TLCR", same)}
    assert examples["rude sentence"].baseline is None and examples["rude sentence"].baseline_with_fault == 0
    repeated = examples["repeated sentence"]
    assert repeated.baseline is not None and repeated.policy_count == repeated.baseline_count >= 1  # none fewer


def test_policies_must_answer_the_same_prompts(controlled_task: ControlledTask) -> None:
    pairs = controlled_task.pairs(3, seed=3, part="test")
    a = rows(controlled_task, [p.prompt for p in pairs], [p.chosen for p in pairs])
    with pytest.raises(ValueError, match="SFT has 3 responses, TLCR 2"):
        fault_examples("SFT", a, "TLCR", a[:2])
    with pytest.raises(ValueError, match="not to the same prompts"):
        fault_examples("SFT", a, "TLCR", a[::-1])
