"""Training curves as PNG: by default the paper's Fig. 7 (perplexity, response length and KL over PPO steps,
one line per run, so runs with different reward modes compare side by side)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlcr.core.data.jsonl import DataError
from tlcr.trainer.metrics_log import read_metrics

FIG7_METRICS = ("perplexity", "response_length", "kl")
TITLES = {"perplexity": "Perplexity", "response_length": "Response length (tokens)",
          "kl": "KL(policy || reference)", "reward/sequence": "Sequence reward",
          "reward/token_mean": "Mean token reward", "oracle_score": "Oracle score", "entropy": "Entropy"}


def run_label(run_dir: Path) -> str:
    """The run's reward mode (and folder name when that is different), from its saved PPO config."""
    config_path = run_dir / "ppo_config.json"
    if config_path.exists():
        try:
            mode = json.loads(config_path.read_text(encoding="utf-8")).get("reward_mode")
        except json.JSONDecodeError:
            mode = None
        if mode:
            return mode if run_dir.name == mode else f"{mode} ({run_dir.name})"
    return run_dir.name


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average (TensorBoard-style smoothing); None gaps are carried over."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out: list[float | None] = []
    running: float | None = None
    for value in values:
        if value is None:
            out.append(running)
            continue
        running = value if running is None else weight * running + (1 - weight) * value
        out.append(running)
    return out


def plot_runs(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
              metrics: Sequence[str] = FIG7_METRICS, smooth: float = 0.0,
              labels: Sequence[str] | None = None) -> Path:
    """One panel per metric, one line per run; writes a PNG and returns its path.

    Raises DataError when a run has no metrics file or none of the runs logged a requested metric.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("give at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for i, run in enumerate(run_dirs):
        path = Path(run)
        runs.append((labels[i] if labels else run_label(path), read_metrics(path)))
    for metric in metrics:
        if not any(metric in row for _, rows in runs for row in rows):
            raise DataError(f"no run logged metric {metric!r} (runs: {', '.join(str(r) for r in run_dirs)})")

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, rows in runs:
            points = [(row["step"], row.get(metric)) for row in rows if metric in row]
            if not points:
                continue
            steps = [s for s, _ in points]
            ax.plot(steps, ema([v for _, v in points], smooth), label=label, linewidth=1.5)
        ax.set_title(TITLES.get(metric, metric))
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
