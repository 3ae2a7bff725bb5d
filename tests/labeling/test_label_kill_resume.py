"""SIGKILL a real `tlcr label` worker mid-run; the resumed run must end with exactly the records of an
uninterrupted run (compared byte for byte: the final file is in input order) and pay at most the calls
that were in flight when it was killed. With --workers 2 the killed process is the one owning the output,
and its worker processes must exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.labeling.test_label_processes import worker_pids
from tests.support import processes
from tests.support.fake_openai_server import FakeOpenAIServer, Script
from tests.support.processes import wait_until_gone
from tlcr.cli import app

N_PAIRS = 80
CONCURRENCY = 4


def _args(out: Path, tokenizer: Path, base_url: str, workers: int, start: str | None = None) -> list[str]:
    return ["label", "--workers", str(workers), *(["--worker-start", start] if start else []), "--no-progress",
            "--output-file", str(out),
            "--tokenizer", str(tokenizer), "--data-limit", str(N_PAIRS),
            "--reviser", "openai", "--reviser-model", "fake-reviser", "--base-url", base_url, "--api-key-env",
            "TLCR_TEST_KEY", "--concurrency", str(CONCURRENCY), "--data-seed", "7"]


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize(("workers", "start"), [(1, None), (2, "fork"), (2, "spawn")])
def test_sigkill_mid_run_then_resume_equals_uninterrupted(fake_llm: FakeOpenAIServer, tiny_model_dir: Path,
                                                          tmp_path: Path, workers: int, start: str | None) -> None:
    fake_llm.set_script(Script(latency_s=0.05))  # 80 pairs / 4 in flight * 0.05 s: a 1 s window to kill in
    env = {**os.environ, "TLCR_TEST_KEY": "k", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    reference = tmp_path / "reference" / "labels.jsonl"
    result = CliRunner(env={"TLCR_TEST_KEY": "k"}).invoke(app, _args(reference, tiny_model_dir, fake_llm.base_url, 1))
    assert result.exit_code == 0, result.output
    assert _count_lines(reference) == N_PAIRS

    fake_llm.set_script(Script(latency_s=0.05))  # resets the request counters
    out = tmp_path / "killed" / "labels.jsonl"
    args = _args(out, tiny_model_dir, fake_llm.base_url, workers, start)
    with processes.started([sys.executable, "-m", "tlcr.cli", *args],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as worker:
        deadline = time.monotonic() + 120
        while _count_lines(out) < 15:
            assert worker.poll() is None, f"worker ended before the kill: {worker.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.005)
        children = worker_pids(worker.pid)
        assert len(children) == (workers if workers > 1 else 0)
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL, worker.stderr.read()  # type: ignore[union-attr]
        # checked before the group is killed on leaving: the product, not this test, must stop them
        assert not wait_until_gone(children), "worker processes outlived the killed main process"
    done_at_kill = _count_lines(out)
    assert 15 <= done_at_kill < N_PAIRS, f"the kill must land mid-run, not after {done_at_kill} records"

    resumed = CliRunner(env={"TLCR_TEST_KEY": "k"}).invoke(
        app, _args(out, tiny_model_dir, fake_llm.base_url, workers, start))
    assert resumed.exit_code == 0, resumed.output
    # the resume skips exactly the complete records the killed worker had written
    assert f"{done_at_kill} already there" in resumed.output, resumed.output
    assert out.read_bytes() == reference.read_bytes()  # none lost, none duplicated, same order
    # the killed run's answers came from the cache: at most the calls in flight were paid twice
    requests = fake_llm.stats()["requests"]
    assert N_PAIRS <= requests <= N_PAIRS + CONCURRENCY, (requests, done_at_kill, resumed.output)
