"""`tlcr label --reviser openai` against a real OpenAI-compatible server: vLLM's, serving a tiny model on CPU.

The same checks as against the fake server (tests/support/fake_openai_server.py): what is sent, usage
accounting, the cache, resume, a 4xx with its message, the context length known before sending; plus
temperature-0 determinism. The tiny model is untrained, so its answers carry no revision marker: every
record fails (`missing_marker` / `truncated_output`) with the start of the answer in `reason_detail`, and
these runs pass `--max-failure-share 1` to look at the mechanics.

vLLM runs in its own environment (tests/support/vllm_server.py); without one these tests skip, and under
TLCR_REQUIRE_ENGINES=1 (CI's `.ci/engines.sh vllm`) they fail instead. One server serves the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.vllm_server import CHAT_TEMPLATE, VLLMServer, tiny_vllm_model, vllm_python
from tlcr.cli import app
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.exit_codes import ExitCode
from tlcr.core.models import load_tokenizer
from tlcr.labeling.cache import RevisionCache
from tlcr.labeling.instruction import INSTRUCTION_VERSION, build_messages
from tlcr.labeling.reviser_context import PromptBudget
from tlcr.labeling.revisers import cache_key

pytestmark = pytest.mark.slow

MODEL = "tiny-vllm"
PAIRS = 8
MAX_TOKENS = 24
runner = CliRunner()


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python = vllm_python()
    if python is None:
        message = ("no vLLM environment: set TLCR_VLLM_PYTHON or build .venv-vllm with `.ci/engines.sh vllm`")
        if os.environ.get("TLCR_REQUIRE_ENGINES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("vllm")
    model = tiny_vllm_model(root / "model")
    server = VLLMServer(python, model, served_name=MODEL, log_path=root / "vllm.log")
    try:
        server.start()
        print(f"vLLM started in {server.startup_s:.0f} s")
        yield server
    finally:
        server.stop()


def _label(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["label", "--no-progress", *args])
    return result.exit_code, result.output


def _args(vllm: VLLMServer, out: Path, *extra: str) -> tuple[str, ...]:
    return ("--output-file", str(out), "--tokenizer", str(vllm.model_dir), "--data-limit", str(PAIRS),
            "--reviser", "openai", "--reviser-model", MODEL, "--base-url", vllm.base_url, "--concurrency", "4",
            "--max-tokens", str(MAX_TOKENS), "--max-failure-share", "1", "--max-retries", "1", *extra)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _usage(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".usage.json").read_text())["runs"][-1]["usage"].get(MODEL, {})


def test_requests_usage_cache_and_resume(vllm: VLLMServer, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    code, output = _label(*_args(vllm, out))
    assert code == ExitCode.OK, output
    records = _lines(out)
    assert len(records) == PAIRS and all(r["reviser"] == f"openai:{MODEL}" for r in records)
    assert all(r["status"] == "failed" and r["reason"] in ("missing_marker", "truncated_output") for r in records)
    assert all(r["reason_detail"].startswith("the answer began: ") for r in records)
    assert "within --max-failure-share 1" in output
    # usage: one request and one answer per pair; the prompt tokens vLLM counts for exactly these messages
    usage = _usage(out)
    assert (usage["requests"], usage["answers"], usage["cache_hits"], usage["errors"]) == (PAIRS, PAIRS, 0, {})
    pairs = ControlledTask(seed=0).pairs(PAIRS, seed=42)
    assert sorted(r["id"] for r in records) == sorted(p.id for p in pairs)
    counted = [httpx.post(vllm.base_url.removesuffix("/v1") + "/tokenize", timeout=30,
                          json={"model": MODEL, "messages": build_messages(p)}).json()["count"] for p in pairs]
    assert usage["prompt_tokens"] == sum(counted)
    # the context check counts what vLLM counts when the tokenizer has the server's chat template, and no
    # more without it (the messages' tokens alone)
    tok = load_tokenizer(vllm.model_dir)
    without_template = [PromptBudget(2048, None, tok, "tiny").prompt_tokens(p) for p in pairs]
    tok.chat_template = CHAT_TEMPLATE
    assert [PromptBudget(2048, None, tok, "tiny").prompt_tokens(p) for p in pairs] == counted
    assert all(0 < n < c for n, c in zip(without_template, counted, strict=True))
    assert 0 < usage["completion_tokens"] <= PAIRS * MAX_TOKENS
    # the cache: another output with this cache pays for nothing and writes the same bytes
    cache = str(out.with_name("labels.jsonl.cache.sqlite"))
    again = tmp_path / "again.jsonl"
    code, output = _label(*_args(vllm, again, "--cache", cache))
    assert code == ExitCode.OK, output
    assert again.read_bytes() == out.read_bytes()
    assert (_usage(again)["requests"], _usage(again)["cache_hits"]) == (0, PAIRS)
    # resume: the last 3 records lost, the one before cut mid-line; the rerun asks vLLM again (no cache) for
    # those 4 only and ends byte-identical (temperature 0)
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_bytes(b"".join(lines[:PAIRS - 4]) + lines[PAIRS - 4][:40])
    code, output = _label(*_args(vllm, resumed, "--no-cache"))
    assert code == ExitCode.OK, output
    assert "4 records written now; 4 already there" in output and "cut a partial last line" in output
    assert resumed.read_bytes() == full
    assert (_usage(resumed)["requests"], _usage(resumed)["answers"]) == (4, 4)


def test_temperature_zero_gives_the_same_answers_twice(vllm: VLLMServer, tmp_path: Path) -> None:
    answers = []
    for run in ("one", "two"):
        out = tmp_path / run / "labels.jsonl"
        code, output = _label(*_args(vllm, out, "--concurrency", "8"))
        assert code == ExitCode.OK, output
        cache = RevisionCache(out.with_name("labels.jsonl.cache.sqlite"))
        pairs = ControlledTask(seed=0).pairs(PAIRS, seed=42)
        answers.append([cache.get(cache_key(MODEL, INSTRUCTION_VERSION, p.prompt, p.chosen, p.rejected))
                        for p in pairs])
        cache.close()
    assert all(a is not None and a.output for a in answers[0])
    assert [a.output for a in answers[0]] == [a.output for a in answers[1]]  # type: ignore[union-attr]
    assert (tmp_path / "one" / "labels.jsonl").read_bytes() == (tmp_path / "two" / "labels.jsonl").read_bytes()


def test_a_refusal_keeps_vllms_message_and_the_context_is_checked_first(vllm: VLLMServer, tmp_path: Path) -> None:
    long = {"prompt": "\n\nHuman: What is the capital of Veltria?\n\nAssistant:", "chosen": " It is Orsk.",
            "rejected": " ".join(["The capital of Veltria is Orsk."] * 400)}  # ~2,400 tokens > 2,048
    source = tmp_path / "long.jsonl"
    source.write_text(json.dumps(long) + "\n", encoding="utf-8")
    # told a context length larger than the server's: the pair is sent, vLLM refuses it, its message is kept
    out = tmp_path / "refused.jsonl"
    code, output = _label(*_args(vllm, out, "--source", str(source), "--max-failure-share", "0.5",
                                 "--reviser-context-length", "100000"))
    assert code == ExitCode.BAD_INPUT, output
    (record,) = _lines(out)
    assert (record["status"], record["reason"]) == ("failed", "api_error_400")
    assert "maximum context length is 2048 tokens" in record["reason_detail"]
    assert "1 x api_error_400: This model's maximum context length is 2048 tokens" in output
    usage = _usage(out)
    assert usage["errors"] == {"http_400": 1} and usage["requests"] == 1
    (kind,) = usage["error_messages"]
    assert kind.startswith("http_400: This model's maximum context length is N tokens")
    # vLLM's own max_model_len (from /v1/models) and the served model's tokenizer (its local folder): not sent
    out = tmp_path / "not_sent.jsonl"
    code, output = _label(*_args(vllm, out, "--source", str(source), "--max-failure-share", "0.5"))
    assert code == ExitCode.BAD_INPUT, output
    (record,) = _lines(out)
    assert (record["status"], record["reason"]) == ("failed", "too_long_for_reviser")
    assert f"counted with {vllm.model_dir}" in record["reason_detail"]
    assert "> the reviser's context length 2,048" in record["reason_detail"]
    assert "1 not sent" in output and "no reviser calls" in output
