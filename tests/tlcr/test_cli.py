import json
from pathlib import Path

from typer.testing import CliRunner

from tlcr.cli import app

runner = CliRunner()


def test_data_command_writes_split(tmp_path: Path) -> None:
    out = tmp_path / "ppo.jsonl"
    result = runner.invoke(app, ["data", "--out", str(out), "--limit", "50", "--part", "ppo"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 20 and {"prompt", "chosen", "rejected", "id", "meta"} <= set(records[0])


def test_data_command_bad_file_exits_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    result = runner.invoke(app, ["data", "--out", str(tmp_path / "o.jsonl"), "--source", str(bad)])
    assert result.exit_code == 2
    assert "bad.jsonl:1: missing key 'rejected'" in result.output


def test_tiny_model_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tiny-model", "--out", str(tmp_path / "m"), "--vocab-size", "300",
                                 "--hidden-size", "16", "--num-layers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer.json").exists()
