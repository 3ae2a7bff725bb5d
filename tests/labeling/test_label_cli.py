"""`tlcr label` end to end: offline default, OpenAI-compatible endpoint, given revisions, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script
from tlcr.cli import app
from tlcr.core.exit_codes import ExitCode

runner = CliRunner()


def _label(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["label", "--no-progress", *args])
    return result.exit_code, result.output


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_offline_default_labels_the_controlled_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--data-limit", "20")
    assert code == 0, output
    records = _lines(out)
    assert len(records) == 20 and all(r["status"] == "ok" and r["reviser"] == "chosen" for r in records)
    assert "20 records: ok 20" in output and "negative" in output
    summary = json.loads(out.with_name("labels.jsonl.summary.json").read_text())
    assert summary["records"] == 20 and summary["label_counts"]["negative"] > 0
    # the rm part of the paper split, in two shards with their own outputs
    for shard in ("0/2", "1/2"):
        code, output = _label("--output-file", str(tmp_path / f"rm{shard[0]}.jsonl"),
                              "--tokenizer", str(tiny_model_dir), "--data-limit", "20", "--split-part", "rm",
                              "--shard", shard)
        assert code == 0, output
    assert len(_lines(tmp_path / "rm0.jsonl")) + len(_lines(tmp_path / "rm1.jsonl")) == 8


def test_openai_reviser_through_the_cli(fake_llm: FakeOpenAIServer, tiny_model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REVISER_KEY", "secret")
    fake_llm.set_script(Script(rules=[Rule("429", times=2), Rule("no_marker", match="Ugh", times=1)]))
    out = tmp_path / "labels.jsonl"
    args = ("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--data-limit", "10", "--reviser", "openai",
            "--reviser-model", "fake-reviser", "--base-url", fake_llm.base_url, "--api-key-env", "TEST_REVISER_KEY",
            "--concurrency", "4", "--backoff", "0.01")
    code, output = _label(*args)
    assert code == 0, output
    records = _lines(out)
    assert len(records) == 10 and all(r["reviser"] == "openai:fake-reviser" for r in records)
    assert all(r["instruction_version"] == "tlcr-revise-v1" for r in records)
    assert sum(r["reason"] == "missing_marker" for r in records) <= 1
    usage = json.loads(out.with_name("labels.jsonl.usage.json").read_text())
    assert usage["totals"]["fake-reviser"]["answers"] == 10
    assert usage["totals"]["fake-reviser"]["errors"] == {"http_429": 2}
    assert "fake-reviser: 10 answers" in output
    requests = fake_llm.stats()["requests"]
    code, output = _label(*args)  # rerun: nothing to do, nothing paid
    assert code == 0 and "0 records written now; 10 already there" in output
    assert fake_llm.stats()["requests"] == requests
    # a new output with the same cache pays nothing either
    code, output = _label(*args[:1], str(tmp_path / "again.jsonl"), *args[2:], "--cache",
                          str(out.with_name("labels.jsonl.cache.sqlite")))
    assert code == 0, output
    assert fake_llm.stats()["requests"] == requests
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()


def test_openai_errors_exit_codes(fake_llm: FakeOpenAIServer, tiny_model_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    base = ("--tokenizer", str(tiny_model_dir), "--data-limit", "3", "--reviser", "openai", "--reviser-model", "m")
    code, output = _label("--output-file", str(tmp_path / "a.jsonl"), *base)
    assert code == 2 and "needs an API key in $OPENAI_API_KEY" in output
    code, output = _label("--output-file", str(tmp_path / "a.jsonl"), "--tokenizer", str(tiny_model_dir),
                          "--reviser", "openai")
    assert code == 2 and "needs --reviser-model" in output
    code, output = _label("--output-file", str(tmp_path / "a.jsonl"), *base, "--concurrency", "1001")
    assert code == 2 and "--concurrency must be <= 1000 with --reviser openai" in output
    fake_llm.set_script(Script(rules=[Rule("401")]))
    code, output = _label("--output-file", str(tmp_path / "b.jsonl"), *base, "--base-url", fake_llm.base_url)
    assert code == ExitCode.BAD_INPUT and "HTTP 401" in output
    fake_llm.set_script(Script(rules=[Rule("500")]))
    code, output = _label("--output-file", str(tmp_path / "c.jsonl"), *base, "--base-url", fake_llm.base_url,
                          "--max-retries", "1", "--backoff", "0.01")
    assert code == ExitCode.UNAVAILABLE and "3 pairs left unlabelled after retries" in output and "rerun" in output


def test_bad_input_names_file_and_line_or_is_skipped_and_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "pairs.jsonl"
    good = {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello.", "rejected": " Go away."}
    bad.write_bytes(json.dumps(good).encode() + b"\n{oops\n" + json.dumps({**good, "chosen": ""}).encode() + b"\n")
    out = tmp_path / "labels.jsonl"
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--source", str(bad))
    assert code == 2 and "pairs.jsonl:2: malformed JSON" in output
    assert not out.exists()
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--source", str(bad),
                          "--on-error", "skip")
    assert code == 0, output
    assert "2 records skipped" in output and "pairs.jsonl:3: empty chosen response" in output
    assert len(_lines(out)) == 1
    code, output = _label("--output-file", str(out), "--tokenizer", str(tmp_path / "no-such-tokenizer"))
    assert code == 2 and "cannot load tokenizer" in output


def test_given_release_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    release = tmp_path / "release.json"
    release.write_text(json.dumps([
        {"id": "r1", "prompt": "\n\nHuman: Capital of Kalo?\n\nAssistant:", "reject_response": " Ugh. It is Ven.",
         "raw_response": "Rude and wrong.\n<|Start Of Modified Response|>\nIt is Tri."},
        {"id": "r2", "prompt": "\n\nHuman: Capital of Kalo?\n\nAssistant:", "reject_response": " It is Ven.",
         "raw_response": "I'm sorry, but I can't help with modifying this response."},
    ]))
    out = tmp_path / "labels.jsonl"
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--source", str(release),
                          "--reviser", "given")
    assert code == 0, output
    r1, r2 = _lines(out)
    assert (r1["status"], r1["revision"], r1["reviser"]) == ("ok", " It is Tri.", "given")
    assert (r2["status"], r2["reason"], r2["revision"]) == ("failed", "refusal", None)
    # relabel the labelled file itself with another tokenizer: revisions are reused verbatim
    relabelled = tmp_path / "relabelled.jsonl"
    code, output = _label("--output-file", str(relabelled), "--tokenizer", str(tiny_model_dir), "--source", str(out),
                          "--reviser", "given")
    assert code == 0, output
    again = _lines(relabelled)
    assert [(r["id"], r["revision"], r["rejected_labels"]) for r in again] == [
        (r["id"], r["revision"], r["rejected_labels"]) for r in (r1, r2)]
    assert again[1]["reason"] == "no_given_revision"


def test_real_hh_pairs_with_chosen_reviser(hh_harmless_test: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hh.jsonl"
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir),
                          "--source", str(hh_harmless_test), "--data-limit", "40", "--max-edit-ratio", "0.8")
    assert code == 0, output
    records = _lines(out)
    assert len(records) == 40
    # HH chosen responses are rarely minimal edits of the rejected ones: the rewrite filter says so (and
    # the optional edit-ratio filter, given here, catches more among the rest)
    filtered = [r for r in records if r["status"] == "filtered"]
    assert filtered and all(r["reason"] in ("rewrite", "edit_ratio", "unchanged", "refusal") for r in filtered)
    assert sum(r["reason"] == "rewrite" for r in records) > len(records) / 2
    assert all(r["edit_ratio"] > 0.8 for r in filtered if r["reason"] == "edit_ratio")
    assert "rewrite" in output


def test_no_usable_input_is_an_error_not_an_empty_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, output = _label("--output-file", str(tmp_path / "a.jsonl"), "--tokenizer", str(tiny_model_dir),
                          "--source", str(empty))
    assert code == 2 and f"no usable pairs in {empty}" in output
    unusable = tmp_path / "unusable.jsonl"
    unusable.write_text('{"prompt": "p", "chosen": "", "rejected": "r"}\nnot json\n', encoding="utf-8")
    code, output = _label("--output-file", str(tmp_path / "b.jsonl"), "--tokenizer", str(tiny_model_dir),
                          "--source", str(unusable), "--on-error", "skip")
    assert code == 2 and "no usable pairs" in output and "2 records skipped" in output
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()


def test_length_guard_skips_oversized_pairs_with_a_clear_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello there.", "rejected": " Hello there, go away."},
            {"prompt": "\n\nHuman: long\n\nAssistant:", "chosen": " Fine.", "rejected": " word" * 50_000}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    code, output = _label("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--source", str(source))
    assert code == 0, output
    short, long = _lines(out)
    assert short["status"] == "ok"
    assert (long["status"], long["reason"]) == ("filtered", "too_long") and long["rejected_token_ids"] == []
    assert long["meta"]["too_long"] == "rejected: 250,000 characters > 20,000"
    assert "too_long 1" in output
    # the token guard: a response with more tokens than --max-response-tokens
    code, output = _label("--output-file", str(tmp_path / "tokens.jsonl"), "--tokenizer", str(tiny_model_dir),
                          "--source", str(source), "--max-chars", "300000", "--max-response-tokens", "3")
    records = _lines(tmp_path / "tokens.jsonl")
    assert code == 0 and all(r["reason"] == "too_long" and "tokens in a response > 3" in r["meta"]["too_long"]
                             for r in records)


def test_documented_hh_command_runs_on_the_real_file(hh_harmless_test: Path, fake_llm: FakeOpenAIServer,
                                                     tiny_model_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/labeling.md's harmless-base command, as written, except: the local copy of the file instead of
    the Hub, the fake endpoint and the tiny tokenizer (no network), and the first 300 pairs."""
    import shlex

    doc = (Path(__file__).resolve().parents[2] / "docs" / "labeling.md").read_text(encoding="utf-8")
    command = doc.split("tlcr label --source Anthropic/hh-rlhf", 1)[1].split("--output-file", 1)[0]
    args = shlex.split(command.replace("\\\n", " "))
    replaced = {"--tokenizer": str(tiny_model_dir)}
    for i, arg in enumerate(args[:-1]):
        if arg in replaced:
            args[i + 1] = replaced[arg]
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    out = tmp_path / "hh-rm.jsonl"
    code, output = _label("--source", str(hh_harmless_test), *args, "--base-url", fake_llm.base_url,
                          "--data-limit", "300", "--output-file", str(out))
    assert code == 0, output
    assert "--on-error" in args and "empty chosen response" in output  # line 87 reported, not fatal
    assert len(_lines(out)) > 0


def test_options_from_a_config_file_under_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "label.yaml"
    config.write_text(f"output_file: {tmp_path / 'labels.jsonl'}\ntokenizer: {tiny_model_dir}\ndata_limit: 50\n"
                      "split_part: sft\nconcurrency: 2\n")
    code, output = _label("--config", str(config), "--data-limit", "20")
    assert code == 0, output
    assert len(_lines(tmp_path / "labels.jsonl")) == 4  # the SFT part (20%) of 20 pairs
    config.write_text("concurrency: 0\n")
    code, output = _label("--config", str(config), "--output-file", str(tmp_path / "x.jsonl"),
                          "--tokenizer", str(tiny_model_dir))
    assert code == 2 and "concurrency must be >= 1, not 0" in output
