"""`tlcr plot`: Fig. 7 curves from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.data.jsonl import DataError
from tlcr.trainer.metrics_log import JSONLTracker
from tlcr.trainer.plot import ema, plot_runs, run_label


def make_run(directory: Path, mode: str, steps: int = 5) -> Path:
    metrics_file = JSONLTracker(directory)
    metrics_file.start()
    for step in range(1, steps + 1):
        metrics_file.log({"perplexity": 10.0 - step, "response_length": 20 + step, "kl": 0.1 * step}, step=step)
    metrics_file.finish()
    (directory / "ppo_config.json").write_text(json.dumps({"reward_mode": mode}))
    return directory


def test_plot_runs_writes_a_png_per_request(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "tlcr", "tlcr"), make_run(tmp_path / "b", "seq")]
    out = plot_runs(runs, tmp_path / "fig" / "fig7.png", smooth=0.5)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [run_label(r) for r in runs] == ["tlcr", "seq (b)"]


def test_plot_names_a_missing_metric_or_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "tlcr")
    with pytest.raises(DataError, match="no run logged metric 'oracle_score'"):
        plot_runs([run], tmp_path / "x.png", metrics=["oracle_score"])
    with pytest.raises(DataError, match="no metrics file"):
        plot_runs([tmp_path / "nothing"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        plot_runs([run], tmp_path / "x.png", labels=["a", "b"])


def test_ema_by_hand() -> None:
    assert ema([1.0, 3.0, None, 5.0], 0.5) == [1.0, 2.0, 2.0, 3.5]
    assert ema([1.0, 2.0], 0.0) == [1.0, 2.0]
    with pytest.raises(ValueError, match="smoothing weight"):
        ema([1.0], 1.0)


def test_cli_plot_defaults_and_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "tlcr_fixed")
    runner = CliRunner()
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").exists()
    other = make_run(tmp_path / "other", "seq")
    result = runner.invoke(app, ["plot", str(run), str(other), "--metric", "kl", "--label", "A", "--label", "B"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fig7.png").exists()
    result = runner.invoke(app, ["plot", str(run), "--output-file", str(tmp_path / "mine.png")])
    assert result.exit_code == 0 and (tmp_path / "mine.png").exists(), result.output
    result = runner.invoke(app, ["plot", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no metrics file" in result.output
    assert json.loads((run / "ppo_config.json").read_text())["reward_mode"] == "tlcr_fixed"
