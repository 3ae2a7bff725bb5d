"""benchmarks/grpo_scoring.py end to end at a tiny size (its own process, our servers on loopback): every
target measured on workloads a and b, no request failed, the ratios agree with the rates; the workload has
the shape asked (n responses per prompt, prompts near their length)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grpo_scoring.py"


@pytest.mark.slow
def test_tiny_run_measures_every_target_without_errors(tmp_path: Path,
                                                       load_benchmark: Callable[[str], ModuleType]) -> None:
    if not load_benchmark("grpo_scoring").HH_SAMPLE.is_file():
        pytest.skip("the HH sample (../shared/data/hh-rlhf) is not here")
    out = tmp_path / "grpo.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--models", "demo", "--workloads", "a,b", "--duration", "0.4",
               "--rounds", "1", "--prompts", "4", "--clients", "2", "--threads", "1", "--no-vllm",
               "--service-env", "OMP_WAIT_POLICY=PASSIVE", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    targets = {(r["workload"], r["target"]) for r in results["results"]}
    assert targets == {(w, t) for w in "ab" for t in ("in-process unshared", "in-process shared",
                                                      "ours unshared", "ours shared padded", "ours shared")}
    rate = {(r["workload"], r["target"]): r["response_tokens_per_s"] for r in results["results"]}
    for row in results["results"]:
        assert row["errors"] == 0 and row["response_tokens_per_s"] > 0, row
        if row["target"].startswith("ours"):
            assert row["requests"] > 0 and row["p50_ms"] <= row["p99_ms"], row
    assert results["ratios"]["demo/b: ours shared / ours unshared"] == pytest.approx(
        rate[("b", "ours shared")] / rate[("b", "ours unshared")])
    assert results["ratios"]["demo/b: ours shared / ours shared padded"] == pytest.approx(
        rate[("b", "ours shared")] / rate[("b", "ours shared padded")])
    assert "vLLM: skipped" in done.stdout and "demo/a: ours shared / ours unshared =" in done.stdout
    # one round: the per-round ratio is the ratio itself (from rates rounded to 0.1 token/s)
    assert results["ratios_per_round"]["demo/a: ours shared / ours unshared"] == pytest.approx(
        [results["ratios"]["demo/a: ours shared / ours unshared"]], rel=1e-3)


def test_workload_groups_have_n_responses_and_prompts_near_their_length(
        tmp_path: Path, load_benchmark: Callable[[str], ModuleType], tiny_token_classifier_dir: Path) -> None:
    grpo = load_benchmark("grpo_scoring")
    prompts = ["\n\nHuman: " + "word " * k + "\n\nAssistant:" for k in range(1, 30)]
    responses = [" answer " * k for k in range(1, 30)]
    groups = grpo.build_groups(tiny_token_classifier_dir, (prompts, responses), 5, 8, 40, 10, seed=0)
    assert len(groups) == 5 and all(len(g.responses) == 8 for g in groups)
    assert all(32 <= len(g.prompt) <= 48 for g in groups)
    assert all(5 <= len(r) <= 15 for g in groups for r in g.responses)
    bodies = grpo.request_bodies(groups, split=False, vllm_model=None)
    assert len(bodies) == 5 and bodies[0][1] == groups[0].response_tokens
    first = json.loads(bodies[0][0])["items"]
    assert len(first) == 8 and all(item["prompt_token_ids"] == groups[0].prompt for item in first)
    split = grpo.request_bodies(groups, split=True, vllm_model="m")
    assert len(split) == 40
    assert json.loads(split[0][0]) == {"model": "m", "task": "token_classify",
                                       "input": [groups[0].prompt + groups[0].responses[0]]}


def test_service_env_takes_key_value_pairs(load_benchmark: Callable[[str], ModuleType]) -> None:
    grpo = load_benchmark("grpo_scoring")
    assert grpo.env_assignment("OMP_WAIT_POLICY=PASSIVE") == ("OMP_WAIT_POLICY", "PASSIVE")
    assert grpo.env_assignment("A=b=c") == ("A", "b=c")
    for bad in ("PASSIVE", "=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            grpo.env_assignment(bad)
