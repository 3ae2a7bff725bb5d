"""Resumable checkpoints of a custom accelerate training loop: `checkpoint-<step>` folders in the run's output
directory, each written atomically, with the loop's own state beside accelerate's; and the RNG streams, so a
failed step can be rewound and re-run exactly.

A checkpoint is complete once its `trainer_state.json` exists: it is written last, inside a temporary folder
that is then renamed, so a run killed mid-save never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """The output directory's checkpoints do not fit the request (resume with none, or start over on some)."""


def capture_rng_state() -> dict[str, Any]:
    """The RNG streams accelerate checkpoints (python, numpy, torch, CUDA), to rewind a step that failed."""
    import numpy as np

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (their trainer state written last), oldest first."""
    found = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(child.name)
            if match and (child / TRAINER_STATE).exists():
                found.append((int(match.group(1)), child))
    return sorted(found)


def prepare_output_dir(accelerator: Any, output_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: checkpoints already there need `resume` (continue) or `overwrite` (deleted here)."""
    existing = list_checkpoints(output_dir)
    if existing and not (resume or overwrite):
        raise CheckpointError(f"{output_dir} already holds checkpoints (latest: {existing[-1][1].name}); "
                              "pass --resume to continue that run or --overwrite to start over")
    if resume and not existing:
        raise CheckpointError(f"--resume: no complete checkpoint in {output_dir}")
    if overwrite and accelerator.is_main_process:
        for _, path in existing:
            shutil.rmtree(path)
    accelerator.wait_for_everyone()


def write_checkpoint(accelerator: Any, output_dir: Path, step: int, trainer_state: dict[str, Any], *,
                    total_limit: int | None, write_exports: Callable[[Path], None] | None = None) -> Path:
    """Accelerate state (models, optimiser, registered objects, every process's RNG), `write_exports(folder)`
    (called on every process), then `trainer_state` with the step; keeps the `total_limit` newest checkpoints."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Pickled, not safetensors: tied embeddings share storage, which safetensors rejects.
    accelerator.save_state(str(tmp), safe_serialization=False)
    if write_exports is not None:
        write_exports(tmp)
    accelerator.wait_for_everyone()  # every process's RNG file is in `tmp` before it is renamed
    if accelerator.is_main_process:
        state = {"step": step, **trainer_state, "num_processes": accelerator.num_processes, "time": time.time()}
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if total_limit:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest_checkpoint(accelerator: Any, output_dir: Path) -> tuple[int, Path, dict[str, Any]]:
    """Load the newest complete checkpoint into `accelerator`; its step, folder and saved trainer state."""
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        raise CheckpointError(f"--resume: no complete checkpoint in {output_dir}")
    step, path = checkpoints[-1]
    saved = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    if saved.get("num_processes") != accelerator.num_processes:
        logger.warning("resuming a %s-process checkpoint on %s processes: prompts and RNG streams will differ",
                       saved.get("num_processes"), accelerator.num_processes)
    accelerator.load_state(str(path))
    logger.info("resumed from %s (step %d)", path, step)
    return step, path, dict(saved)
