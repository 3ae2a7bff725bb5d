"""The answer cache and the quality filters with the end-of-run summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.cache import CachedAnswer, RevisionCache, cache_key
from tlcr.labeling.filters import FilterConfig, LabelSummary, apply_filters, looks_like_refusal
from tlcr.labeling.records import build_labelled_record
from tlcr.labeling.worker import failed_record


def test_cache_persists_across_reopen_and_keys_on_every_field(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    fields = ("gpt-x", "v1", "prompt", "chosen", "rejected")
    key = cache_key(*fields)
    answer = CachedAnswer(output="<Start of Modified Response>\nhi", finish_reason="stop", prompt_tokens=5,
                          completion_tokens=2, model="gpt-x")
    cache = RevisionCache(path)
    assert cache.get(key) is None
    cache.put(key, answer)
    cache.close()
    reopened = RevisionCache(path)
    assert reopened.get(key) == answer and len(reopened) == 1
    for i in range(len(fields)):  # changing any one field changes the key
        changed = list(fields)
        changed[i] += "!"
        assert cache_key(*changed) != key
    # field boundaries are unambiguous
    assert cache_key("a", "b", "c|d", "e", "f") != cache_key("a", "b", "c", "d|e", "f")


def test_corrupt_cache_entry_is_a_counted_miss(tmp_path: Path) -> None:
    cache = RevisionCache(tmp_path / "c.sqlite")
    cache._db.execute("INSERT INTO answers (key, value, created) VALUES ('k', 'not json', 0)")
    assert cache.get("k") is None and cache.corrupt_entries == 1


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a usable revision cache"):
        RevisionCache(bad)


PAIR = PreferencePair(prompt="\n\nHuman: Capital of Kalo?\n\nAssistant:", chosen=" The capital of Kalo is Tri.",
                      rejected=" Ugh. The capital of Kalo is Ven.", id="p1")


def _record(revision: str, tokenizer: PreTrainedTokenizerBase, pair: PreferencePair = PAIR) -> dict:
    return build_labelled_record(pair, revision, tokenizer, reviser="r", instruction_version="v",
                                 tokenizer_name="t")


def test_filters(label_tokenizer: PreTrainedTokenizerBase) -> None:
    config = FilterConfig(max_edit_ratio=0.5)
    ok = apply_filters(_record(PAIR.chosen, label_tokenizer), config)
    assert (ok["status"], ok["reason"]) == ("ok", None)
    unchanged = apply_filters(_record(PAIR.rejected, label_tokenizer), config)
    assert (unchanged["status"], unchanged["reason"]) == ("filtered", "unchanged")
    refusal = apply_filters(_record(" I'm sorry, but I can't help with that.", label_tokenizer),
                            FilterConfig(max_edit_ratio=100))
    assert (refusal["status"], refusal["reason"]) == ("filtered", "refusal")
    rewrite = apply_filters(_record(" Completely different words that share nothing here.", label_tokenizer),
                            config)
    assert (rewrite["status"], rewrite["reason"]) == ("filtered", "rewrite")
    # the optional edit-ratio rule still applies to a record that is not a rewrite
    many_edits = apply_filters(_record(" Ugh. The capital of Kalo is Tri, and it is lovely in May and June.",
                                       label_tokenizer), config)
    assert (many_edits["status"], many_edits["reason"]) == ("filtered", "edit_ratio")
    assert apply_filters(_record(" Ugh. The capital of Kalo is Tri, and it is lovely in May and June.",
                                 label_tokenizer), FilterConfig())["status"] == "ok"


# Shorter and longer than the 12-token rejected reply. (The tiny test tokenizer splits rare words into
# characters, which any two texts share; texts of a few characters are left to the real-tokenizer test.)
UNRELATED = [" Paris is lovely in spring, with long walks by the river.",
             " I would rather talk about cooking: boil the pasta for nine minutes, then drain it.",
             " Maybe tomorrow.",
             " The weather tomorrow looks sunny with a light breeze from the west, and no rain at all."]


@pytest.mark.parametrize("revision", UNRELATED)
def test_unrelated_rewrites_of_any_length_are_filtered(label_tokenizer: PreTrainedTokenizerBase,
                                                      revision: str) -> None:
    record = apply_filters(_record(revision, label_tokenizer), FilterConfig())
    assert (record["status"], record["reason"]) == ("filtered", "rewrite"), revision


def test_insert_heavy_and_deletion_heavy_minimal_edits_are_kept(label_tokenizer: PreTrainedTokenizerBase) -> None:
    # A human correction adding missing information: three times the rejected length, edit ratio > 1.
    added = (" Ugh. The capital of Kalo is Ven, a port on the northern coast, founded in 1203 and home to the "
             "old royal library and the national parliament.")
    record = apply_filters(_record(added, label_tokenizer), FilterConfig())
    assert record["edit_ratio"] > 1.0 and (record["status"], record["reason"]) == ("ok", None)
    assert set(record["rejected_labels"]) == {0.5} and 1.0 in record["revised_labels"]
    # Most of the response removed: the revision is made of kept tokens.
    deleted = apply_filters(_record(" The capital", label_tokenizer), FilterConfig())
    assert (deleted["status"], deleted["reason"]) == ("ok", None) and 0.0 in deleted["rejected_labels"]


def test_hh_chosen_answers_mostly_fail_as_rewrites_of_the_rejected(hh_harmless_test: Path) -> None:
    """Real HH-RLHF pairs, Llama 2 tokenizer: the chosen reply is usually a different answer, not an edit of
    the rejected one, so most fail the kept-share rule while most passed the old edit-ratio rule."""
    from tlcr.core.data.sources import load_preference_pairs
    from tlcr.core.models import load_tokenizer

    llama2 = hh_harmless_test.parents[3] / "tokenizers" / "llama2"
    if not llama2.exists():
        pytest.skip(f"shared Llama 2 tokenizer not found at {llama2}")
    tokenizer = load_tokenizer(llama2)
    pairs = load_preference_pairs(hh_harmless_test, on_error="skip", limit=300)
    records = [_record(p.chosen, tokenizer, p) for p in pairs if p.chosen.strip() != p.rejected.strip()]
    rewrites = sum(apply_filters(r, FilterConfig(drop_refusals=False))["reason"] == "rewrite" for r in records)
    old_rule = sum(r["edit_ratio"] > 1.0 for r in records)
    assert rewrites > 0.8 * len(records) and old_rule < 0.5 * len(records)
    appended = [_record(p.rejected + p.chosen, tokenizer, p) for p in pairs[:100]]
    assert all(apply_filters(r, FilterConfig(drop_refusals=False))["status"] == "ok" for r in appended)


def test_refusal_is_kept_when_the_preferred_reply_refuses_too(label_tokenizer: PreTrainedTokenizerBase) -> None:
    harmless = PreferencePair(prompt="\n\nHuman: How do I pick a lock?\n\nAssistant:",
                              chosen=" I'm sorry, but I can't help with that.",
                              rejected=" Sure, I can help with that: use a pin.")
    record = apply_filters(_record(" I'm sorry, but I can't help with that.", label_tokenizer, harmless),
                           FilterConfig(max_edit_ratio=100))
    assert record["status"] == "ok"
    assert looks_like_refusal("As an AI language model, I cannot do that.")
    assert not looks_like_refusal("The capital of Kalo is Tri.")


def test_summary_counts_reasons_and_class_balance(label_tokenizer: PreTrainedTokenizerBase) -> None:
    summary = LabelSummary()
    ok = {"status": "ok", "reason": None, "edit_ratio": 0.25, "rejected_labels": [0.5, 0.0, 0.0, 0.5],
          "revised_labels": [0.5, 1.0, 0.5]}
    summary.add(ok)
    summary.add({**ok, "edit_ratio": 0.75})
    summary.add({"status": "filtered", "reason": "unchanged", "edit_ratio": 0.0,
                 "rejected_labels": [0.5], "revised_labels": [0.5]})
    summary.add(failed_record(PAIR, "missing_marker", reviser="r", instruction_version="v", tokenizer_name="t"))
    d = summary.to_dict()
    assert d["records"] == 4
    assert d["status"] == {"failed": 1, "filtered": 1, "ok": 2}
    assert d["reasons"] == {"missing_marker": 1, "unchanged": 1}
    # two ok records: 4 negative, 8 neutral, 2 positive tokens (filtered/failed records not counted)
    assert d["label_counts"] == {"negative": 4, "neutral": 8, "positive": 2}
    assert d["label_fractions"]["positive"] == pytest.approx(2 / 14)
    assert d["mean_edit_ratio_ok"] == pytest.approx(0.5)
    assert "missing_marker 1" in summary.format()
