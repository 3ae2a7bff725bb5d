"""Checkpoints of a custom accelerate loop (trainer.checkpoints) on a real one-process CPU Accelerator: what
counts as complete, rotation, loading back, refusing to mix runs, and rewinding the RNG streams."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from tlcr.trainer.checkpoints import (
    TRAINER_STATE,
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_latest_checkpoint,
    prepare_output_dir,
    restore_rng_state,
    write_checkpoint,
)


@pytest.fixture
def prepared() -> tuple[Accelerator, torch.nn.Module]:
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    return accelerator, model


def test_write_rotates_and_load_restores(prepared: tuple[Accelerator, torch.nn.Module], tmp_path: Path) -> None:
    accelerator, model = prepared
    exported: list[Path] = []
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        final = write_checkpoint(accelerator, tmp_path, step, {"note": step}, total_limit=2,
                                 write_exports=exported.append)
        assert final == tmp_path / f"checkpoint-{step}"
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert [p.name for p in exported] == [".checkpoint-1.tmp", ".checkpoint-2.tmp", ".checkpoint-3.tmp"]
    assert not list(tmp_path.glob(".checkpoint-*"))

    with torch.no_grad():
        model.weight.zero_()
    step, path, saved = load_latest_checkpoint(accelerator, tmp_path)
    assert (step, path) == (3, tmp_path / "checkpoint-3")
    assert (saved["step"], saved["note"], saved["num_processes"]) == (3, 3, 1)
    assert torch.equal(model.weight, torch.full((2, 3), 3.0))


def test_only_folders_with_their_trainer_state_are_complete(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-5").mkdir()  # killed before its trainer state was written
    (tmp_path / ".checkpoint-6.tmp").mkdir()
    (tmp_path / ".checkpoint-6.tmp" / TRAINER_STATE).write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / TRAINER_STATE).write_text("{}")
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / TRAINER_STATE).write_text("{}")
    assert list_checkpoints(tmp_path) == [(4, tmp_path / "checkpoint-4"), (10, tmp_path / "checkpoint-10")]
    assert list_checkpoints(tmp_path / "missing") == []


def test_prepare_output_dir_refuses_to_mix_runs(prepared: tuple[Accelerator, torch.nn.Module],
                                                tmp_path: Path) -> None:
    accelerator, _ = prepared
    with pytest.raises(CheckpointError, match="--resume: no complete checkpoint"):
        prepare_output_dir(accelerator, tmp_path, resume=True, overwrite=False)
    with pytest.raises(CheckpointError, match="--resume: no complete checkpoint"):
        load_latest_checkpoint(accelerator, tmp_path)
    write_checkpoint(accelerator, tmp_path, 1, {}, total_limit=None)
    with pytest.raises(CheckpointError, match=r"latest: checkpoint-1\); pass --resume .* or --overwrite"):
        prepare_output_dir(accelerator, tmp_path, resume=False, overwrite=False)
    prepare_output_dir(accelerator, tmp_path, resume=True, overwrite=False)
    assert list_checkpoints(tmp_path)
    prepare_output_dir(accelerator, tmp_path, resume=False, overwrite=True)
    assert list_checkpoints(tmp_path) == []


def test_restore_rng_state_replays_every_stream() -> None:
    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
