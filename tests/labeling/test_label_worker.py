"""The labelling pipeline: records, filters, resume, partial lines, shards, retries left for a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script
from tlcr.core.data.controlled import INSERTION_FAULTS, OMISSION_FAULTS
from tlcr.core.data.jsonl import DataError
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.retry import RetryPolicy
from tlcr.labeling.cache import RevisionCache
from tlcr.labeling.filters import FilterConfig
from tlcr.labeling.revisers import ChosenReviser, OpenAIReviser, Revision
from tlcr.labeling.usage import UsageLedger
from tlcr.labeling.worker import (
    WorkerConfig,
    cut_partial_last_line,
    dedupe_pairs,
    label_pairs,
    make_record,
    output_lock,
    parse_shard,
    select_shard,
)

SCHEMA_KEYS = {"id", "prompt", "chosen", "rejected", "revision", "status", "reason", "reason_detail", "reviser",
               "instruction_version", "tokenizer", "rejected_token_ids", "rejected_labels", "revised_token_ids",
               "revised_labels", "ops", "edit_distance", "edit_ratio", "meta"}


def _config(out: Path, **kwargs: object) -> WorkerConfig:
    return WorkerConfig(out=out, tokenizer_name="tiny", progress=False, **kwargs)  # type: ignore[arg-type]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_chosen_reviser_labels_controlled_pairs_exactly(controlled_pairs: list[PreferencePair],
                                                              label_tokenizer: PreTrainedTokenizerBase,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    result = await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(out))
    records = _records(out)
    assert [r["id"] for r in records] == [p.id for p in controlled_pairs]
    assert result.written == 12 and result.complete and result.summary.by_status["ok"] == 12
    for record, pair in zip(records, controlled_pairs, strict=True):
        assert set(record) == SCHEMA_KEYS
        assert record["revision"] == pair.chosen and record["tokenizer"] == "tiny"
        assert record["reviser"] == "chosen" and record["instruction_version"] == "none"
        assert len(record["rejected_labels"]) == len(record["rejected_token_ids"])
        assert len(record["revised_labels"]) == len(record["revised_token_ids"])
        faults = set(pair.meta["faults"])
        if faults <= set(INSERTION_FAULTS):
            # rude / hedge / repetition faults are pure insertions in rejected: the fix only deletes
            assert set(record["revised_labels"]) == {0.5}
            assert record["ops"] == {"insert": 0, "delete": len(record["rejected_token_ids"])
                                     - len(record["revised_token_ids"]), "replace": 0}
        elif faults <= set(OMISSION_FAULTS):
            # a left-out fact or detail: the fix only adds, so only the revision has edited (positive) tokens
            assert set(record["rejected_labels"]) == {0.5} and 1.0 in record["revised_labels"]
            assert record["ops"] == {"insert": len(record["revised_token_ids"])
                                     - len(record["rejected_token_ids"]), "delete": 0, "replace": 0}
        else:
            assert 1.0 in record["revised_labels"]


async def test_output_loads_with_datasets(controlled_pairs: list[PreferencePair],
                                          label_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "labels.jsonl"
    pairs = [*controlled_pairs[:3], PreferencePair(prompt="\n\nHuman: hi\n\nAssistant:", chosen=" ",
                                                   rejected=" Go away.", id="empty-chosen")]
    await label_pairs(pairs, ChosenReviser(), label_tokenizer, _config(out))
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert set(ds.column_names) == SCHEMA_KEYS and len(ds) == 4
    deleted = ds[3]  # an empty revision deletes the whole response: all rejected tokens negative
    assert (deleted["status"], deleted["reason"], deleted["revision"]) == ("ok", None, "")
    assert set(deleted["rejected_labels"]) == {0.0} and deleted["revised_token_ids"] == []


async def test_resume_skips_done_ids_and_ends_identical(controlled_pairs: list[PreferencePair],
                                                        label_tokenizer: PreTrainedTokenizerBase,
                                                        tmp_path: Path) -> None:
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(full))
    # an interrupted run: some records in append order, the last one cut mid-line by a kill
    lines = full.read_bytes().splitlines(keepends=True)
    resumed.write_bytes(lines[5] + lines[2] + lines[7][: len(lines[7]) // 2])
    result = await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(resumed))
    assert result.cut_partial_line and result.already_done == 2 and result.written == 10
    assert resumed.read_bytes() == full.read_bytes()
    again = await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(resumed))
    assert again.written == 0 and again.already_done == 12
    assert resumed.read_bytes() == full.read_bytes()


async def test_bad_existing_output_is_an_error_not_overwritten(controlled_pairs: list[PreferencePair],
                                                               label_tokenizer: PreTrainedTokenizerBase,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    await label_pairs(controlled_pairs[:3], ChosenReviser(), label_tokenizer, _config(out))
    good = out.read_bytes()
    with pytest.raises(DataError, match=r"labels\.jsonl:1: written with tokenizer 'tiny' but this run uses 'other'"):
        await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer,
                          WorkerConfig(out=out, tokenizer_name="other", progress=False))
    lines = good.splitlines(keepends=True)
    out.write_bytes(lines[0] + b"{broken\n" + lines[2])
    with pytest.raises(DataError, match=r"labels\.jsonl:2: corrupt output line"):
        await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(out))
    out.write_bytes(lines[0] + lines[0])
    with pytest.raises(DataError, match=r"labels\.jsonl:2: id .* appears twice"):
        await label_pairs(controlled_pairs, ChosenReviser(), label_tokenizer, _config(out))
    assert out.read_bytes() == lines[0] + lines[0]  # left as found


def test_shards_partition_the_pairs(controlled_pairs: list[PreferencePair]) -> None:
    shards = [select_shard(controlled_pairs, i, 3) for i in range(3)]
    ids = [p.id for shard in shards for p in shard]
    assert sorted(ids) == sorted(p.id for p in controlled_pairs) and len(set(ids)) == len(ids)
    assert all(shards)  # 12 pairs over 3 shards: none empty for these ids
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_duplicates_dropped_and_conflicting_ids_rejected(controlled_pairs: list[PreferencePair]) -> None:
    unique, dropped = dedupe_pairs([*controlled_pairs[:3], controlled_pairs[1]])
    assert len(unique) == 3 and dropped == 1
    clash = PreferencePair(prompt="x", chosen="y", rejected="z", id=controlled_pairs[0].id)
    with pytest.raises(DataError, match="used by two different pairs"):
        dedupe_pairs([controlled_pairs[0], clash])


def test_one_worker_per_output_file(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    with output_lock(out), pytest.raises(RuntimeError, match="being written by another"), output_lock(out):
        pass


def _openai(server: FakeOpenAIServer, tmp_path: Path, max_retries: int = 1, concurrency: int = 4) -> OpenAIReviser:
    return OpenAIReviser("fake-reviser", api_key="k", base_url=server.base_url,
                         retry=RetryPolicy(max_retries=max_retries, backoff_s=0.01, max_backoff_s=0.01),
                         cache=RevisionCache(tmp_path / "cache.sqlite"), ledger=UsageLedger(),
                         concurrency=concurrency)


async def test_pairs_failing_all_retries_stay_for_the_rerun(fake_llm: FakeOpenAIServer,
                                                            controlled_pairs: list[PreferencePair],
                                                            label_tokenizer: PreTrainedTokenizerBase,
                                                            tmp_path: Path) -> None:
    victim = controlled_pairs[4]
    fake_llm.set_script(Script(rules=[Rule("500", match=victim.rejected.strip())]))
    out = tmp_path / "labels.jsonl"
    reviser = _openai(fake_llm, tmp_path)
    result = await label_pairs(controlled_pairs, reviser, label_tokenizer, _config(out, concurrency=4))
    await reviser.aclose()
    assert result.unfinished == [victim.id] and not result.complete
    assert victim.id not in {r["id"] for r in _records(out)} and len(_records(out)) == 11
    fake_llm.set_script(Script())  # the endpoint recovers
    reviser = _openai(fake_llm, tmp_path)
    again = await label_pairs(controlled_pairs, reviser, label_tokenizer, _config(out, concurrency=4))
    await reviser.aclose()
    assert again.complete and again.written == 1
    assert fake_llm.stats()["requests"] == 1  # only the victim is asked again
    records = _records(out)
    assert [r["id"] for r in records] == [p.id for p in controlled_pairs]
    assert all(r["status"] == "ok" and r["reviser"] == "openai:fake-reviser" for r in records)
    assert all(r["revision"] == p.chosen for r, p in zip(records, controlled_pairs, strict=True))


async def test_concurrency_is_bounded_and_used(fake_llm: FakeOpenAIServer, controlled_pairs: list[PreferencePair],
                                               label_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    fake_llm.set_script(Script(latency_s=0.2))
    reviser = _openai(fake_llm, tmp_path, concurrency=10)
    await label_pairs(controlled_pairs, reviser, label_tokenizer, _config(tmp_path / "o.jsonl", concurrency=10))
    await reviser.aclose()
    stats = fake_llm.stats()
    assert stats["requests"] == 12 and stats["max_in_flight"] == 10


@pytest.mark.parametrize(("content", "kept"), [
    (b"", b""),
    (b'{"a": 1}\n', b'{"a": 1}\n'),
    (b'{"a": 1', b""),
    (b'{"a": 1}\n{"b": 2}\n{"c', b'{"a": 1}\n{"b": 2}\n'),
    (b'{"a": 1}\n' + b"x" * 200_000, b'{"a": 1}\n'),  # partial line longer than one search chunk
])
def test_cut_partial_last_line(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(content)
    with open(path, "rb+") as f:
        assert cut_partial_last_line(f) == len(content) - len(kept)
    assert path.read_bytes() == kept


class CountingChosenReviser(ChosenReviser):
    """The chosen reviser, counting the pairs it was asked to revise."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def revise(self, pair: PreferencePair) -> Revision:
        self.asked.append(pair.id)
        return await super().revise(pair)


async def test_oversized_texts_are_filtered_before_the_reviser_and_tokenizer(
        label_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    prompt = "\n\nHuman: hi\n\nAssistant:"
    pairs = [PreferencePair(prompt=prompt, chosen=" Hi.", rejected=" Hi. Go away.", id="fine"),
             PreferencePair(prompt=prompt, chosen=" Hi.", rejected=" x" * 600, id="long-rejected"),
             PreferencePair(prompt=prompt, chosen=" y" * 600, rejected=" Go away.", id="long-chosen")]
    reviser = CountingChosenReviser()
    out = tmp_path / "labels.jsonl"
    await label_pairs(pairs, reviser, label_tokenizer, _config(out, filters=FilterConfig(max_chars=1000)))
    by_id = {r["id"]: r for r in _records(out)}
    assert reviser.asked == ["fine"]
    assert by_id["fine"]["status"] == "ok"
    for pair_id, text in (("long-rejected", "rejected"), ("long-chosen", "chosen")):
        record = by_id[pair_id]
        assert (record["status"], record["reason"], record["rejected_token_ids"]) == ("filtered", "too_long", [])
        assert record["meta"]["too_long"] == f"{text}: 1,200 characters > 1,000"
    # a revision over the limit (the input was fine) is not tokenized either
    record = make_record(pairs[0], Revision(" z" * 600), label_tokenizer, reviser="r", instruction_version="v",
                         tokenizer_name="t", filters=FilterConfig(max_chars=1000))
    assert (record["reason"], record["revision"], record["revised_token_ids"]) == ("too_long", " z" * 600, [])
