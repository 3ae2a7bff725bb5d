"""Both trainers under `accelerate launch`: two CPU processes joined by gloo (DDP), and the GPU configs parse."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tests.support import processes
from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import write_jsonl
from tlcr.core.models import is_discriminator_config, load_tokenizer
from tlcr.labeling.records import build_labelled_record

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "accelerate"


def test_accelerate_configs_parse() -> None:
    cpu = load_config_from_file(str(CONFIGS / "cpu_ddp_2proc.yaml"))
    assert cpu.num_processes == 2 and cpu.distributed_type == DistributedType.MULTI_GPU and not cpu.use_cpu
    for name, stage in (("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)):
        ds = load_config_from_file(str(CONFIGS / name))
        assert ds.distributed_type == DistributedType.DEEPSPEED and ds.mixed_precision == "bf16"
        assert ds.deepspeed_config["zero_stage"] == stage
        # left "auto" so the Trainer fills them from the command's options
        assert "gradient_accumulation_steps" not in ds.deepspeed_config
    assert load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config["zero3_save_16bit_model"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_ddp_2proc.yaml"),
               "--main_process_port", str(_free_port()), "-m", "tlcr.cli", *args]
    return processes.run(command, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_both_trainers_run_as_two_gloo_processes(tmp_path: Path, controlled_task: ControlledTask,
                                                 tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = controlled_task.pairs(40, seed=11)
    labelled = tmp_path / "labelled.jsonl"
    write_jsonl(labelled, [build_labelled_record(p, p.chosen, tokenizer, reviser="chosen", instruction_version="t",
                                                 tokenizer_name=str(tiny_model_dir)) for p in pairs])
    batch = 4

    disc = tmp_path / "disc"
    run = _launch(["train-discriminator", "--source", str(labelled), "--model", str(tiny_model_dir),
                   "--output-dir", str(disc),
                   "--preset", "tiny", "--epochs", "1", "--batch-size", str(batch), "--eval-fraction", "0.1",
                   "--max-length", "128"], cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((disc / "discriminator_metrics.json").read_text())
    assert metrics["world_size"] == 2
    # each optimizer step consumes `batch` sequences on each of the two ranks
    assert metrics["train"]["global_step"] == math.ceil(metrics["data"]["train_sequences"] / (2 * batch))
    assert metrics["eval"]["n_records"] == 4
    assert is_discriminator_config(disc)

    rm = tmp_path / "rm"
    run = _launch(["train-reward-model", "--source", str(labelled), "--model", str(tiny_model_dir),
                   "--output-dir", str(rm),
                   "--preset", "tiny", "--epochs", "1", "--batch-size", str(batch), "--eval-fraction", "0.1"],
                  cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((rm / "reward_model_metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train"]["global_step"] == math.ceil(metrics["data"]["train_pairs"] / (2 * batch))
    assert metrics["eval"]["n_pairs"] == 4
