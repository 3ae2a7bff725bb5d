"""Acceptance: the default offline pipeline trains a discriminator to >= 0.9 accuracy on edited tokens.

tlcr tiny-model → tlcr label (controlled task, chosen reviser: exact labels) → tlcr train-discriminator
--preset tiny, all with their defaults; accuracy is measured on held-out pairs by the command itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlcr.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_default_offline_pipeline_reaches_090_on_edited_tokens(tmp_path: Path) -> None:
    model_dir, labelled, out = tmp_path / "tiny", tmp_path / "labelled.jsonl", tmp_path / "disc"
    for args in (["tiny-model", "--output-dir", str(model_dir)],
                 ["label", "--output-file", str(labelled), "--tokenizer", str(model_dir)],
                 ["train-discriminator", "--source", str(labelled), "--model", str(model_dir),
                  "--output-dir", str(out),
                  "--preset", "tiny"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"tlcr {args[0]} failed:\n{result.output}"
    metrics = json.loads((out / "discriminator_metrics.json").read_text())
    assert metrics["eval"]["n_records"] >= 100
    assert metrics["eval"]["edited_token_accuracy"] >= 0.9, metrics["eval"]
    assert metrics["eval"]["pairwise_accuracy"] >= 0.9, metrics["eval"]
