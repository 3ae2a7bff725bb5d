import random

from tlcr.data.controlled import HEDGE_SENTENCES, RUDE_SENTENCES, ControlledTask
from tlcr.data.pairs import load_preference_pairs


def test_task_is_deterministic_by_seed() -> None:
    assert ControlledTask(seed=3).kb == ControlledTask(seed=3).kb
    assert ControlledTask(seed=3).kb != ControlledTask(seed=4).kb
    assert ControlledTask(seed=3).pairs(20, seed=1) == ControlledTask(seed=3).pairs(20, seed=1)


def test_chosen_is_perfect_and_rejected_is_penalised(controlled_task: ControlledTask) -> None:
    for pair in controlled_task.pairs(300, seed=0):
        assert 1 <= len(pair.meta["faults"]) <= 3
        assert pair.chosen != pair.rejected
        assert controlled_task.oracle(pair.prompt, pair.chosen).score == 1.0
        rejected = controlled_task.oracle(pair.prompt, pair.rejected)
        assert rejected.score < 1.0
        if "wrong_fact" in pair.meta["faults"]:
            assert rejected.wrong >= 1 and not rejected.helpful


def test_oracle_counts_each_fault_kind(controlled_task: ControlledTask) -> None:
    entity = controlled_task.entities[0]
    prompt = controlled_task.prompt(entity, ("capital", "color"))
    capital = controlled_task.kb[entity]["capital"]
    other = next(v for v in controlled_task.values["capital"] if v != capital)
    color = controlled_task.kb[entity]["color"]
    response = (f" {RUDE_SENTENCES[0]} The capital of {entity} is {other}. The flag of {entity} is {color}."
                f" The flag of {entity} is {color}. {HEDGE_SENTENCES[1]}")
    score = controlled_task.oracle(prompt, response)
    assert (score.asked, score.correct, score.wrong, score.missing) == (2, 1, 1, 1)
    assert (score.rude, score.repetitions, score.hedges) == (1, 1, 1)
    assert score.score == (1 - 1) / 2 - 0.5 - 0.25 * 2
    empty = controlled_task.oracle(prompt, " I like trains.")
    assert empty.missing == 2 and empty.score == 0.0 and not empty.helpful


def test_corruption_applies_requested_fault_count(controlled_task: ControlledTask) -> None:
    rng = random.Random(0)
    entity = controlled_task.entities[1]
    for n in (1, 2, 3):
        _, faults = controlled_task.corrupt(entity, ("river",), rng, n_faults=n)
        assert len(faults) == n


def test_oracle_parses_every_question(controlled_task: ControlledTask) -> None:
    for entity, rels in controlled_task.questions():
        assert controlled_task.parse_prompt(controlled_task.prompt(entity, rels)) == (entity, rels)
    assert controlled_task.parse_prompt("\n\nHuman: tell me a joke\n\nAssistant:") is None


def test_controlled_source_needs_no_files() -> None:
    pairs = load_preference_pairs("controlled", limit=50, seed=5)
    assert len(pairs) == 50 and len({p.id for p in pairs}) == 50
