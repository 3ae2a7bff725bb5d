import random

import pytest

from tlcr.core.data.controlled import (
    FAULT_KINDS,
    HEDGE_SENTENCES,
    INSERTION_FAULTS,
    OMISSION_FAULTS,
    RUDE_SENTENCES,
    ControlledTask,
    length_balance,
)
from tlcr.core.data.sources import load_preference_pairs


def test_task_is_deterministic_by_seed() -> None:
    assert ControlledTask(seed=3).kb == ControlledTask(seed=3).kb
    assert ControlledTask(seed=3).kb != ControlledTask(seed=4).kb
    assert ControlledTask(seed=3).pairs(20, seed=1) == ControlledTask(seed=3).pairs(20, seed=1)
    assert ControlledTask(seed=3).question_split() == ControlledTask(seed=3).question_split()


def test_chosen_is_perfect_and_rejected_is_penalised(controlled_task: ControlledTask) -> None:
    for pair in controlled_task.pairs(500, seed=0):
        assert 1 <= len(pair.meta["faults"]) <= 2
        assert pair.chosen != pair.rejected
        chosen = controlled_task.oracle(pair.prompt, pair.chosen)
        assert chosen.score == 1.0 and chosen.complete
        rejected = controlled_task.oracle(pair.prompt, pair.rejected)
        assert rejected.score < 1.0
        if {"wrong_fact", "missing_fact"} & set(pair.meta["faults"]):
            assert not rejected.helpful
        if "missing_detail" in pair.meta["faults"]:
            assert not rejected.complete


def test_faults_go_both_ways_and_length_is_no_shortcut(controlled_task: ControlledTask) -> None:
    pairs = controlled_task.pairs(2000, seed=0)
    faults = [f for p in pairs for f in p.meta["faults"]]
    assert set(faults) == set(FAULT_KINDS)
    insertions = sum(f in INSERTION_FAULTS for f in faults)
    omissions = sum(f in OMISSION_FAULTS for f in faults)
    assert 0.8 < insertions / omissions < 1.25
    balance = length_balance(pairs)
    assert 0.4 < balance["chosen_longer"] < 0.6
    assert abs(balance["mean_length_difference"]) < 5  # characters; a fact sentence is ~40


def test_omissions_are_added_back_by_the_minimal_fix(controlled_task: ControlledTask) -> None:
    entity = controlled_task.entities[2]
    rng = random.Random(1)
    for _ in range(50):
        rejected, faults = controlled_task.corrupt(entity, ("capital", "animal"), rng, n_faults=1)
        chosen = controlled_task.chosen_response(entity, ("capital", "animal"))
        if faults[0] in OMISSION_FAULTS:
            kept = rejected.split(". ")
            assert len(rejected) < len(chosen) and all(s.strip(" .") in chosen for s in kept)


def test_oracle_counts_each_fault_kind(controlled_task: ControlledTask) -> None:
    entity = controlled_task.entities[0]
    prompt = controlled_task.prompt(entity, ("capital", "color"))
    capital = controlled_task.kb[entity]["capital"]
    other = next(v for v in controlled_task.values["capital"] if v != capital)
    color = controlled_task.kb[entity]["color"]
    response = (f" {RUDE_SENTENCES[0]} The capital of {entity} is {other}. It is also the largest city."
                f" The flag of {entity} is {color}. The flag of {entity} is {color}. {HEDGE_SENTENCES[1]}")
    score = controlled_task.oracle(prompt, response)
    assert (score.asked, score.correct, score.wrong, score.missing) == (2, 1, 1, 1)
    assert (score.details, score.missing_details) == (1, 1)
    assert (score.rude, score.repetitions, score.hedges) == (1, 1, 1)
    assert score.score == pytest.approx((1 - 1 + 0.5 * 1) / 3 - 0.5 - 0.25 * 2)
    assert (score.style_faults, score.details_share, score.omitted_facts) == (3, 0.5, 0)  # the wrong fact is stated
    empty = controlled_task.oracle(prompt, " I like trains.")
    assert empty.missing == 2 and empty.score == 0.0 and not empty.helpful
    assert (empty.style_faults, empty.details_share, empty.omitted_facts) == (0, 0.0, 2)
    facts = f" The capital of {entity} is {capital}. The flag of {entity} is {color}."
    facts_only = controlled_task.oracle(prompt, facts)
    assert facts_only.helpful and not facts_only.complete and facts_only.score == pytest.approx(2 / 3)


def test_corruption_applies_requested_fault_count(controlled_task: ControlledTask) -> None:
    rng = random.Random(0)
    entity = controlled_task.entities[1]
    for n in (1, 2):
        _, faults = controlled_task.corrupt(entity, ("river",), rng, n_faults=n)
        assert len(faults) == n


def test_oracle_parses_every_question(controlled_task: ControlledTask) -> None:
    for entity, rels in controlled_task.questions():
        assert controlled_task.parse_prompt(controlled_task.prompt(entity, rels)) == (entity, rels)
    assert controlled_task.parse_prompt("\n\nHuman: tell me a joke\n\nAssistant:") is None


def test_question_split_holds_out_questions_whose_facts_are_still_taught(controlled_task: ControlledTask) -> None:
    split = controlled_task.question_split()
    parts = {name: set(qs) for name, qs in split.items()}
    assert sum(map(len, parts.values())) == len(controlled_task.questions())
    assert not parts["train"] & parts["validation"] and not parts["train"] & parts["test"]
    assert not parts["validation"] & parts["test"]
    assert len(parts["test"]) == len(parts["validation"]) == round(0.2 * len(controlled_task.questions()))
    # test is drawn before validation: enlarging validation leaves the test questions as they were
    narrower = ControlledTask(controlled_task.seed, validation_fraction=0.1).question_split()
    assert narrower["test"] == split["test"] and len(narrower["validation"]) == len(parts["validation"]) // 2
    taught = {(e, r) for e, rels in parts["train"] for r in rels}
    for entity, rels in parts["validation"] | parts["test"]:
        assert all((entity, r) in taught for r in rels)


def test_pairs_and_corpus_come_from_train_questions_only(controlled_task: ControlledTask) -> None:
    held_out = set(controlled_task.prompts("validation")) | set(controlled_task.prompts("test"))
    assert all(p.prompt not in held_out for p in controlled_task.pairs(1000, seed=3))
    corpus = "\n".join(controlled_task.corpus())
    assert not any(prompt in corpus for prompt in held_out)
    assert {p.prompt for p in controlled_task.pairs(50, seed=1, part="test")} <= set(controlled_task.prompts("test"))
    with pytest.raises(ValueError, match="question part"):
        controlled_task.prompts("dev")  # type: ignore[arg-type]


def test_controlled_source_needs_no_files() -> None:
    pairs = load_preference_pairs("controlled", limit=50, seed=5)
    assert len(pairs) == 50 and len({p.id for p in pairs}) == 50
