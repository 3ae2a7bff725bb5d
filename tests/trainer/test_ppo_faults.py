"""PPO under faults, against real services on loopback: the service restarting mid-run, the service gone
past the deadline (checkpoint + stop + resume), a killed run resumed from the command line, and two
DDP processes under `accelerate launch`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import processes
from tests.support.ports import unused_port
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service
from tlcr.trainer.ppo import TrainingStopped, train_ppo
from tlcr.trainer.ppo_config import PPOConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVICE_ARGS = ["--torch-threads", "1", "--max-wait-ms", "2"]


def read_rows(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    stop = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > stop:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def config(policy: Path, out: Path, url: str, **overrides: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        policy=str(policy), output_dir=str(out), reward_url=url, value_init="sft", num_steps=5, rollout_batch_size=4,
        mini_batch_size=2, micro_batch_size=2, forward_batch_size=4, ppo_epochs=1, max_new_tokens=10,
        learning_rate=1e-3, data_limit=60, save_steps=2, report_to="none", reward_backoff=0.2)
    values.update(overrides)
    return PPOConfig(**values)


class TrainingThread(threading.Thread):
    def __init__(self, ppo_config: PPOConfig) -> None:
        super().__init__(daemon=True)
        self.ppo_config = ppo_config
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            train_ppo(self.ppo_config)
        except BaseException as exc:
            self.error = exc


class FetchGate:
    """Holds the trainer's n-th reward fetch until the test has stopped the service, then lets the real client
    make it against the stopped service. Steps take ~50 ms on a fast machine, so without the hold a run can
    finish before the service is down (seen in CI)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold_call: int) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        real = TokenRewardClient.token_rewards

        def token_rewards(client: TokenRewardClient, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == hold_call:
                self.reached.set()
                if not self.release.wait(timeout=120):
                    raise AssertionError("the test never released the held reward fetch")
            return real(client, *args, **kwargs)

        monkeypatch.setattr(TokenRewardClient, "token_rewards", token_rewards)

    def stop_service_while_held(self, service: ServiceProcess, trainer: threading.Thread) -> None:
        wait_for(lambda: self.reached.is_set() or not trainer.is_alive(), 120, "the held reward fetch")
        assert trainer.is_alive(), "the run ended before its held reward fetch"
        service.stop()
        self.release.set()


def test_service_restart_mid_run_then_outage_past_deadline(tiny_model_dir: Path, tiny_token_classifier_dir: Path,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    logs = tmp_path / "logs"
    first = start_service(tiny_token_classifier_dir, extra_args=SERVICE_ARGS, log_path=logs / "1.log")
    port = first.port
    second: ServiceProcess | None = None
    try:
        # 1. The service restarts while the run is going: the client retries and training goes on.
        run = tmp_path / "run"
        caplog.set_level(logging.WARNING, logger="tlcr.service.client")
        gate = FetchGate(monkeypatch, hold_call=3)
        trainer = TrainingThread(config(tiny_model_dir, run, first.url, reward_deadline=180.0))
        trainer.start()
        gate.stop_service_while_held(first, trainer)
        # Back only once the fetch has failed and is retrying, so the restart falls inside that fetch.
        wait_for(lambda: any("retry 1 of" in r.getMessage() for r in caplog.records) or not trainer.is_alive(), 120,
                 "a reward fetch retrying")
        time.sleep(1.0)
        second = start_service(tiny_token_classifier_dir, port=port, extra_args=SERVICE_ARGS,
                               log_path=logs / "2.log")
        trainer.join(timeout=240)
        assert not trainer.is_alive() and trainer.error is None, trainer.error
        rows = read_rows(run)
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
        assert max(r["time/reward_fetch"] for r in rows) > 1.0  # one fetch waited out the restart

        # 2. The service goes away for longer than the deadline: checkpoint the last step, stop clearly.
        longer = tmp_path / "longer"
        gate = FetchGate(monkeypatch, hold_call=4)
        trainer = TrainingThread(config(tiny_model_dir, longer, second.url, num_steps=20, save_steps=100,
                                        reward_deadline=3.0))
        trainer.start()
        gate.stop_service_while_held(second, trainer)
        trainer.join(timeout=120)
        assert isinstance(trainer.error, TrainingStopped), trainer.error
        stopped_at = trainer.error.step
        assert stopped_at == 3 and trainer.error.checkpoint == longer / f"checkpoint-{stopped_at}"
        assert f"127.0.0.1:{port}" in str(trainer.error) and "--resume" in str(trainer.error)

        # 3. Back up: --resume continues from that checkpoint to the end, each step logged once.
        second = start_service(tiny_token_classifier_dir, port=port, extra_args=SERVICE_ARGS,
                               log_path=logs / "3.log")
        train_ppo(config(tiny_model_dir, longer, second.url, num_steps=stopped_at + 2, save_steps=100,
                         resume=True))
        assert [r["step"] for r in read_rows(longer)] == list(range(1, stopped_at + 3))
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.fixture(scope="module")
def service(tiny_token_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("fault-service") / "service.log"
    with start_service(tiny_token_classifier_dir, extra_args=SERVICE_ARGS, log_path=log) as running:
        yield running


def cli_args(policy: Path, run: Path, url: str, steps: int) -> list[str]:
    # the value model from the SFT policy: these tests are about faults, and need no discriminator path
    return ["ppo", "--policy", str(policy), "--value-init", "sft", "--reward-url", url, "--output-dir", str(run),
            "--num-steps", str(steps),
            "--rollout-batch-size", "4", "--mini-batch-size", "2", "--micro-batch-size", "1", "--ppo-epochs", "1",
            "--max-new-tokens", "10", "--learning-rate", "1e-3", "--data-limit", "60", "--save-steps", "2",
            "--report-to", "none"]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def test_killed_run_resumes_from_its_last_checkpoint(service: ServiceProcess, tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tlcr.cli", *cli_args(tiny_model_dir, run, service.url, steps=8)]
    with processes.started(args, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE) as process:
        wait_for(lambda: (run / "checkpoint-2").exists() or process.poll() is not None, 180, "checkpoint-2")
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    logged_before_kill = [r["step"] for r in read_rows(run)]
    assert logged_before_kill[:2] == [1, 2]
    resumed = processes.run([*args, "--resume"], cwd=REPO, env=child_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert [r["step"] for r in read_rows(run)] == list(range(1, 9))  # steps re-run after the kill logged once
    assert json.loads((run / "checkpoint-8" / "trainer_state.json").read_text())["step"] == 8


def test_accelerate_launch_two_cpu_processes(service: ServiceProcess, tiny_model_dir: Path, tmp_path: Path) -> None:
    accelerate_config = REPO / "configs" / "accelerate" / "cpu_ddp_2proc.yaml"
    assert accelerate_config.exists(), f"{accelerate_config} missing"
    port = unused_port()
    run = tmp_path / "ddp"
    args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
            "--main_process_port", str(port), "-m", "tlcr.cli", *cli_args(tiny_model_dir, run, service.url, steps=3)]
    result = processes.run(args, cwd=REPO, env=child_env(), timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("PPO done: 3 steps") == 1  # one summary, from the main process
    assert json.loads((run / "ppo_config.json").read_text())["num_processes"] == 2
    assert [r["step"] for r in read_rows(run)] == [1, 2, 3]
    checkpoint = run / "checkpoint-3"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    assert (run / "policy" / "config.json").exists()
