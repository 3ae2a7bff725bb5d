"""`tlcr label --reviser openai` when the endpoint refuses pairs: its message kept, exit codes, context length."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script
from tlcr.cli import app
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.exit_codes import ExitCode
from tlcr.core.models import load_tokenizer
from tlcr.labeling.instruction import build_messages
from tlcr.labeling.reviser_context import ESTIMATE_BYTES_PER_TOKEN, PromptBudget
from tlcr.labeling.revisers import endpoint_message
from tlcr.labeling.usage import MESSAGE_MAX_CHARS, message_class

runner = CliRunner()
CONTEXT_MESSAGE = "This model's maximum context length is 512 tokens. However, your prompt contains at least"


def _label(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["label", "--no-progress", *args])
    return result.exit_code, result.output


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _args(fake_llm: FakeOpenAIServer, tiny_model_dir: Path, out: Path, limit: int = 6) -> tuple[str, ...]:
    return ("--output-file", str(out), "--tokenizer", str(tiny_model_dir), "--data-limit", str(limit),
            "--reviser", "openai", "--reviser-model", "fake-reviser", "--base-url", fake_llm.base_url,
            "--concurrency", "3", "--backoff", "0.01", "--max-retries", "1")


def _status_error(status: int, body: object) -> openai.APIStatusError:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, request=request, json=body) if not isinstance(body, str) else \
        httpx.Response(status, request=request, text=body)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body)


def test_endpoint_message_reads_every_error_body_shape() -> None:
    assert endpoint_message(_status_error(400, {"error": {"message": "too long", "type": "x"}})) == "too long"
    assert endpoint_message(_status_error(400, {"object": "error", "message": "old vLLM"})) == "old vLLM"
    assert endpoint_message(_status_error(422, {"detail": "FastAPI says no"})) == "FastAPI says no"
    assert endpoint_message(_status_error(400, "plain\n  text body")) == "plain text body"
    assert endpoint_message(_status_error(400, {"unexpected": 1})) == "Error code: 400"
    long = endpoint_message(_status_error(400, {"error": {"message": "x" * 5000}}))
    assert len(long) == MESSAGE_MAX_CHARS and long.endswith("…")
    assert message_class("context length is 512 tokens, prompt has 1,513") == \
        message_class("context length is 2048 tokens, prompt has 700")


def test_a_refused_run_keeps_the_message_and_exits_2(fake_llm: FakeOpenAIServer, tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("400")]))
    out = tmp_path / "labels.jsonl"
    code, output = _label(*_args(fake_llm, tiny_model_dir, out))
    assert code == ExitCode.BAD_INPUT, output
    records = _lines(out)
    assert len(records) == 6 and all(r["status"] == "failed" and r["reason"] == "api_error_400" for r in records)
    assert all(r["reason_detail"].startswith(CONTEXT_MESSAGE) for r in records)
    assert len({r["reason_detail"] for r in records}) == 6  # each carries its own token count...
    assert f"6 x api_error_400: {CONTEXT_MESSAGE}" in output  # ...and the summary counts them as one kind
    assert "6 of 6 records" in output and "--max-failure-share 0.5" in output
    summary = json.loads(out.with_name("labels.jsonl.summary.json").read_text())
    assert summary["failure_messages"][0]["count"] == 6
    assert summary["failure_messages"][0]["message"].startswith(CONTEXT_MESSAGE)
    usage = json.loads(out.with_name("labels.jsonl.usage.json").read_text())["totals"]["fake-reviser"]
    assert usage["errors"] == {"http_400": 6}
    assert usage["error_messages"] == {f"http_400: {message_class(records[0]['reason_detail'])}": 6}
    assert fake_llm.stats()["requests"] == 6  # a 400 is not retried
    # rerun: the failed records are final; the exit code stays 2 (judged over the whole output file)
    code, output = _label(*_args(fake_llm, tiny_model_dir, out))
    assert code == ExitCode.BAD_INPUT and "0 records written now; 6 already there" in output
    assert fake_llm.stats()["requests"] == 6


def test_unavailable_is_3_and_mixed_outcomes_follow_max_failure_share(fake_llm: FakeOpenAIServer,
                                                                       tiny_model_dir: Path, tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("500")]))
    code, output = _label(*_args(fake_llm, tiny_model_dir, tmp_path / "down.jsonl"))
    assert code == ExitCode.UNAVAILABLE and "6 pairs left unlabelled" in output
    assert "server error (scripted)" in output  # the last error's message, in the retry warnings and the end
    usage = json.loads((tmp_path / "down.jsonl.usage.json").read_text())["totals"]["fake-reviser"]
    assert usage["errors"] == {"http_500": 12} and usage["error_messages"] == {"http_500: server error (scripted)": 12}
    # 2 of 6 refused: exit 0, saying how many and why
    pairs = ControlledTask(seed=0).pairs(6, seed=42)
    rules = [Rule("400", match=pairs[0].rejected.strip()), Rule("400", match=pairs[1].rejected.strip())]
    fake_llm.set_script(Script(rules=rules))
    out = tmp_path / "mixed.jsonl"
    code, output = _label(*_args(fake_llm, tiny_model_dir, out))
    assert code == ExitCode.OK, output
    assert "note: 2 of 6 records" in output and "api_error_400 2" in output and "within --max-failure-share" in output
    assert [r["status"] for r in _lines(out)].count("failed") == 2
    # the same output judged by a stricter share
    code, output = _label(*_args(fake_llm, tiny_model_dir, out), "--max-failure-share", "0.2")
    assert code == ExitCode.BAD_INPUT and "2 of 6 records" in output and "--max-failure-share 0.2" in output
    code, output = _label(*_args(fake_llm, tiny_model_dir, out), "--max-failure-share", "1.5")
    assert code == ExitCode.BAD_INPUT and "--max-failure-share must be in [0, 1]" in output


def test_pairs_that_cannot_fit_the_context_are_not_sent(fake_llm: FakeOpenAIServer, tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    pairs = ControlledTask(seed=0).pairs(6, seed=42)
    tok = load_tokenizer(tiny_model_dir)
    counted = PromptBudget(10**6, None, tok, "tiny").prompt_tokens
    lengths = sorted(counted(p) for p in pairs)
    context = lengths[3] + 16  # the 4 shortest prompts fit with --max-tokens 16, the 2 longest do not
    assert lengths[3] < lengths[4]
    # the endpoint reports the context length (as vLLM's /v1/models does); --reviser-tokenizer counts
    fake_llm.set_script(Script(models={"fake-reviser": context}))
    out = tmp_path / "labels.jsonl"
    code, output = _label(*_args(fake_llm, tiny_model_dir, out), "--max-tokens", "16",
                          "--reviser-tokenizer", str(tiny_model_dir))
    assert code == ExitCode.OK, output
    records = _lines(out)
    too_long = [r for r in records if r["reason"] == "too_long_for_reviser"]
    assert len(too_long) == 2 and all(r["status"] == "failed" for r in too_long)
    assert all(f"> the reviser's context length {context:,}" in r["reason_detail"] for r in too_long)
    assert "2 not sent: too long for the reviser's context" in output
    assert fake_llm.stats()["requests"] == 4  # never sent
    summary = json.loads(out.with_name("labels.jsonl.summary.json").read_text())
    assert summary["reasons"]["too_long_for_reviser"] == 2
    # --reviser-context-length overrides what the endpoint reports
    code, output = _label(*_args(fake_llm, tiny_model_dir, tmp_path / "small.jsonl"), "--max-tokens", "16",
                          "--reviser-tokenizer", str(tiny_model_dir), "--reviser-context-length", "20")
    assert code == ExitCode.BAD_INPUT and "6 not sent" in output
    # no tokenizer given or found: the estimate, which never counts more tokens than the real ones
    estimate = PromptBudget(10**6, None).prompt_tokens
    assert all(estimate(p) <= counted(p) for p in pairs)
    assert estimate(pairs[0]) == -(-sum(len(m["content"].encode()) for m in build_messages(pairs[0]))
                                   // ESTIMATE_BYTES_PER_TOKEN)
    code, output = _label(*_args(fake_llm, tiny_model_dir, tmp_path / "estimated.jsonl"), "--max-tokens", "16",
                          "--reviser-context-length", str(estimate(pairs[0]) + 15))
    records = _lines(tmp_path / "estimated.jsonl")
    assert any(r["reason"] == "too_long_for_reviser" and "estimated as UTF-8 bytes / 8" in r["reason_detail"]
               for r in records)
    code, output = _label(*_args(fake_llm, tiny_model_dir, tmp_path / "x.jsonl"), "--reviser-context-length", "0")
    assert code == ExitCode.BAD_INPUT and "--reviser-context-length must be >= 1" in output
    code, output = _label(*_args(fake_llm, tiny_model_dir, tmp_path / "y.jsonl"),
                          "--reviser-tokenizer", str(tmp_path / "no-such-tokenizer"))
    assert code == ExitCode.BAD_INPUT and "--reviser-tokenizer" in output


@pytest.mark.parametrize("behaviour", ["no_marker", "refusal"])
def test_an_unusable_answer_is_shown_in_the_record(fake_llm: FakeOpenAIServer, tiny_model_dir: Path,
                                                    tmp_path: Path, behaviour: str) -> None:
    fake_llm.set_script(Script(rules=[Rule(behaviour)]))
    out = tmp_path / "labels.jsonl"
    code, output = _label(*_args(fake_llm, tiny_model_dir, out, limit=2), "--max-failure-share", "1")
    assert code == ExitCode.OK, output
    for record in _lines(out):
        assert record["status"] == "failed" and record["reason_detail"].startswith("the answer began: ")
    expected = "The preferred reply is better" if behaviour == "no_marker" else "I'm sorry, but I can't help"
    assert expected in _lines(out)[0]["reason_detail"]


def test_worker_processes_keep_the_message_and_count_it(fake_llm: FakeOpenAIServer, tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    pairs = ControlledTask(seed=0).pairs(6, seed=42)
    fake_llm.set_script(Script(rules=[Rule("400", match=p.rejected.strip()) for p in pairs[:4]]))
    out = tmp_path / "labels.jsonl"
    code, output = _label(*_args(fake_llm, tiny_model_dir, out), "--workers", "2", "--worker-start", "fork")
    assert code == ExitCode.BAD_INPUT, output  # 4 of 6 failed > 0.5
    failed = [r for r in _lines(out) if r["status"] == "failed"]
    assert len(failed) == 4 and all(r["reason_detail"].startswith(CONTEXT_MESSAGE) for r in failed)
    usage = json.loads(out.with_name("labels.jsonl.usage.json").read_text())["totals"]["fake-reviser"]
    assert usage["errors"] == {"http_400": 4} and sum(usage["error_messages"].values()) == 4
    assert "4 x api_error_400" in output and "4 of 6 records" in output
