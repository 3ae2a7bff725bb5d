"""`tlcr demo --preset smoke --tokenizer ../shared/tokenizers/llama2`: every stage on the real Llama 2 vocabulary,
as in the paper (slow: a second whole smoke demo)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlcr.cli import app


@pytest.mark.slow
def test_demo_runs_on_the_llama2_tokenizer(tmp_path: Path, real_tokenizer_dir: Callable[[str], Path]) -> None:
    from tlcr.core.models import load_tokenizer

    llama2 = real_tokenizer_dir("llama2")
    result = CliRunner().invoke(app, ["demo", "--preset", "smoke", "--out-root", str(tmp_path), "--run-name", "llama2",
                                      "--tokenizer", str(llama2)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "llama2"
    assert json.loads((run / "demo_config.json").read_text())["tokenizer"] == str(llama2)
    base = run / "models" / "base"
    assert json.loads((base / "config.json").read_text())["vocab_size"] == 32000
    text = "\n\nHuman: What is the capital of Kalo?\n\nAssistant: Venmar."
    assert (load_tokenizer(base)(text, add_special_tokens=False)["input_ids"]
            == load_tokenizer(llama2)(text, add_special_tokens=False)["input_ids"])
    labels = [json.loads(line) for line in (run / "data" / "labels.jsonl").read_text().splitlines()]
    assert labels
    for record in labels:  # labels on the joint split: no spurious "▁" (29871) opens a response
        assert record["rejected_token_ids"][:1] != [29871]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary and all(not isinstance(v, float) or math.isfinite(v) for v in summary.get("timings", {}).values())
