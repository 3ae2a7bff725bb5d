"""DeepSpeed ZeRO-2 and ZeRO-3 for real: the discriminator trainer on two CPU processes (DeepSpeed's CPU
accelerator, gloo) through `accelerate launch`, checked for gradient synchronisation: after training, both
processes hold the same weights, equal (within float tolerance) to one process trained on the same global
batches. Runs where deepspeed is installed (tlcr[dev] has it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "DS_ACCELERATOR": "cpu", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]


def _weights(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights" / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, controlled_task: ControlledTask,
          tiny_model_dir: Path) -> tuple[Path, Path, Path]:
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
    _run([sys.executable, str(RUN), str(data), str(base), str(one), str(GLOBAL_BATCH)], cwd=root)
    return data, base, one


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_on_two_cpu_processes_synchronises_gradients(setup: tuple[Path, Path, Path], stage: int) -> None:
    data, base, one = setup
    out = one.parent / f"zero{stage}"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(REPO / "configs" / "accelerate" / f"cpu_deepspeed_zero{stage}_2proc.yaml"),
          "--main_process_port", str(_free_port()), str(RUN), str(data), str(base), str(out),
          str(GLOBAL_BATCH // 2)], cwd=out.parent)
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
                                             stage: int) -> None:
    """PPO (trainer.ppo.PPOTrainer, policy + value as one DeepSpeed engine) for two steps. The processes
    sample different prompts with different seeds, so only agreement between them is checked here; the
    equivalence with one process is the discriminator test's."""
    from tlcr.core.models import load_causal_lm

    out = setup[2].parent / f"ppo-zero{stage}"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(REPO / "configs" / "accelerate" / f"cpu_deepspeed_zero{stage}_2proc.yaml"),
          "--main_process_port", str(_free_port()), str(RUN.with_name("deepspeed_ppo_run.py")),
          str(tiny_model_dir), str(out)], cwd=out.parent)
    rank0, rank1 = _weights(out, 0), _weights(out, 1)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[n], rank1[n]) for n in rank0)
    initial = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    assert max((rank0[f"policy.{n}"] - p.detach()).abs().max().item() for n, p in initial.named_parameters()) > 1e-3
    assert json.loads((out / "ppo_config.json").read_text())["num_processes"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    exported = load_causal_lm(out / "policy", device="cpu", dtype="float32")  # gathered from both processes
    assert all(torch.allclose(p.detach(), rank0[f"policy.{n}"]) for n, p in exported.named_parameters())
