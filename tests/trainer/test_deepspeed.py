"""DeepSpeed ZeRO-2 and ZeRO-3 for real: the discriminator trainer on two CPU processes (DeepSpeed's CPU
accelerator, gloo) through `accelerate launch`, checked for gradient synchronisation: after training, both
processes hold the same weights, equal (within float tolerance) to one process trained on the same global
batches. Runs where deepspeed is installed (tlcr[dev] has it).

DeepSpeed JIT-builds its `deepspeed_shm_comm` op on the first ZeRO run on CPU, in torch's extensions cache. The
tests build it in a folder of their own session (TORCH_EXTENSIONS_DIR), so a stale build lock in the user's cache
(left by an interrupted build) cannot hang them; one test plants such a lock and checks the run names it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.support import processes
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import write_jsonl
from tlcr.core.models import load_tokenizer
from tlcr.labeling.records import build_labelled_record

pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[2]
RUN = Path(__file__).with_name("deepspeed_discriminator_run.py")
GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extensions: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(extensions),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run(command: list[str], cwd: Path, extensions: Path) -> None:
    run = processes.run(command, cwd=cwd, env=_env(extensions), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]


def _zero_launch(stage: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "configs" / "accelerate" / f"cpu_deepspeed_zero{stage}_2proc.yaml"),
            "--main_process_port", str(_free_port())]


@pytest.fixture(scope="session")
def torch_extensions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's torch extensions cache: the first ZeRO run builds deepspeed_shm_comm there."""
    return tmp_path_factory.mktemp("torch-extensions")


def _weights(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights" / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, controlled_task: ControlledTask, tiny_model_dir: Path,
          torch_extensions: Path) -> tuple[Path, Path, Path]:
    """(labelled data, base model without dropout, the one-process run's output)."""
    root = tmp_path_factory.mktemp("deepspeed")
    base = root / "base"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["classifier_dropout"] = 0.0  # no random masks, so runs with different process counts can agree
    (base / "config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(base)
    data = root / "labelled.jsonl"
    write_jsonl(data, [build_labelled_record(p, p.chosen, tokenizer, reviser="chosen", instruction_version="t",
                                             tokenizer_name=str(base)) for p in controlled_task.pairs(40, seed=11)])
    one = root / "one"
    _run([sys.executable, str(RUN), str(data), str(base), str(one), str(GLOBAL_BATCH)], cwd=root,
         extensions=torch_extensions)
    return data, base, one


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_on_two_cpu_processes_synchronises_gradients(setup: tuple[Path, Path, Path], torch_extensions: Path,
                                                           stage: int) -> None:
    data, base, one = setup
    out = one.parent / f"zero{stage}"
    _run([*_zero_launch(stage), str(RUN), str(data), str(base), str(out), str(GLOBAL_BATCH // 2)], cwd=out.parent,
         extensions=torch_extensions)
    rank0, rank1, single = _weights(out, 0), _weights(out, 1), _weights(one, 0)
    assert rank0.keys() == rank1.keys() == single.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # the processes agree exactly
        assert torch.allclose(rank0[name], single[name], atol=1e-5, rtol=1e-4), name
    from tlcr.core.models import load_token_classifier

    base_model = load_token_classifier(base, num_labels=1, device="cpu", dtype="float32")
    moved = max((rank0[n] - p.detach()).abs().max().item() for n, p in base_model.named_parameters()
                if n in rank0 and "score" not in n)
    assert moved > 1e-3  # training moved the weights well beyond the tolerance above
    metrics = json.loads((out / "discriminator_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["eval"]["n_records"] == 4
    assert metrics["train"]["global_step"] == json.loads((one / "discriminator_metrics.json").read_text())[
        "train"]["global_step"]
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")  # the whole checkpoint (ZeRO-3: gathered from both shards)
    assert saved.keys() & rank0.keys() and all(torch.allclose(saved[n], rank0[n]) for n in saved if n in rank0)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_ppo_under_zero_on_two_cpu_processes(setup: tuple[Path, Path, Path], tiny_model_dir: Path,
                                             torch_extensions: Path, stage: int) -> None:
    """PPO (trainer.ppo.PPOTrainer, policy + value as one DeepSpeed engine) for two steps. The processes
    sample different prompts with different seeds, so only agreement between them is checked here; the
    equivalence with one process is the discriminator test's."""
    from tlcr.core.models import load_causal_lm

    out = setup[2].parent / f"ppo-zero{stage}"
    _run([*_zero_launch(stage), str(RUN.with_name("deepspeed_ppo_run.py")), str(tiny_model_dir), str(out)],
         cwd=out.parent, extensions=torch_extensions)
    rank0, rank1 = _weights(out, 0), _weights(out, 1)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[n], rank1[n]) for n in rank0)
    initial = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    assert max((rank0[f"policy.{n}"] - p.detach()).abs().max().item() for n, p in initial.named_parameters()) > 1e-3
    assert json.loads((out / "ppo_config.json").read_text())["num_processes"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    exported = load_causal_lm(out / "policy", device="cpu", dtype="float32")  # gathered from both processes
    assert all(torch.allclose(p.detach(), rank0[f"policy.{n}"]) for n, p in exported.named_parameters())


@pytest.mark.slow
def test_a_stale_build_lock_is_named_and_the_hung_run_leaves_no_process(setup: tuple[Path, Path, Path],
                                                                         tmp_path: Path) -> None:
    """What an interrupted first ZeRO run leaves in torch's extensions cache: the next run waits on the lock
    forever; the trainer's watchdog names it (here after 3 s), and the test's kill takes the ranks too."""
    data, base, _ = setup
    extensions = tmp_path / "extensions"
    lock = extensions / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    log = tmp_path / "run.log"
    with log.open("w") as sink, processes.started(
            [*_zero_launch(2), str(RUN), str(data), str(base), str(tmp_path / "out"), str(GLOBAL_BATCH // 2)],
            cwd=tmp_path, env={**_env(extensions), "TLCR_BUILD_LOCK_WARN_S": "3"}, stdout=sink,
            stderr=subprocess.STDOUT) as launcher:
        deadline = time.monotonic() + 300
        while f"for {lock} to disappear" not in log.read_text():
            assert launcher.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "no message about the lock:\n" + log.read_text()[-5000:]
            time.sleep(0.5)
        tree = processes.process_tree(launcher.pid)
        assert len(tree) >= 3, tree  # the launcher and both ranks are still waiting
    assert f"delete {lock}" in log.read_text()
    assert not processes.wait_until_gone(tree, timeout_s=10), "ranks outlived the test"
