import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from tlcr.cli import app

runner = CliRunner()


def test_data_command_writes_split(tmp_path: Path) -> None:
    out = tmp_path / "ppo.jsonl"
    result = runner.invoke(app, ["data", "--output-file", str(out), "--data-limit", "50", "--split-part", "ppo"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 20 and {"prompt", "chosen", "rejected", "id", "meta"} <= set(records[0])


def test_data_command_bad_file_exits_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    result = runner.invoke(app, ["data", "--output-file", str(tmp_path / "o.jsonl"), "--source", str(bad)])
    assert result.exit_code == 2
    assert "bad.jsonl:1: missing key 'rejected'" in result.output


def test_tiny_model_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tiny-model", "--output-dir", str(tmp_path / "m"), "--vocab-size", "300",
                                 "--hidden-size", "16", "--num-layers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer.json").exists()


def test_tiny_model_command_on_a_real_tokenizer(tmp_path: Path, real_tokenizer_dir: Callable[[str], Path]) -> None:
    from tlcr.core.models import load_causal_lm, load_tokenizer

    llama2 = real_tokenizer_dir("llama2")
    result = runner.invoke(app, ["tiny-model", "--output-dir", str(tmp_path / "m"), "--tokenizer", str(llama2),
                                 "--hidden-size", "16", "--num-layers", "1"])
    assert result.exit_code == 0, result.output
    model = load_causal_lm(tmp_path / "m", device="cpu")
    assert model.config.vocab_size == 32000 and model.config.eos_token_id == 2
    text = "\n\nHuman: 你好 😁\n\nAssistant: Cửa Việt"
    assert (load_tokenizer(tmp_path / "m")(text, add_special_tokens=False)["input_ids"]
            == load_tokenizer(llama2)(text, add_special_tokens=False)["input_ids"])
    assert json.loads((tmp_path / "m" / "tlcr_tiny.json").read_text())["tokenizer"] == str(llama2)


def test_tiny_model_command_names_a_folder_without_a_tokenizer(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tiny-model", "--output-dir", str(tmp_path / "m"), "--tokenizer", str(tmp_path)])
    assert result.exit_code == 2
    assert f"folder '{tmp_path}' holds no tokenizer" in result.output


def test_data_options_from_a_config_file_under_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(f"output_file: {tmp_path / 'from-file.jsonl'}\ndata_limit: 50\nsplit_part: sft\n")
    result = runner.invoke(app, ["data", "--config", str(config), "--split-part", "rm"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "from-file.jsonl").read_text().splitlines()) == 20  # rm: 40% of 50
    bad = runner.invoke(app, ["data", "--output-file", str(tmp_path / "x.jsonl"), "--split-part", "middle"])
    assert bad.exit_code == 2 and "middle" in bad.output


def test_demo_refuses_an_unknown_reward_mode_before_running(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--preset", "smoke", "--modes", "tlcr,bogus", "--out-root", str(tmp_path)])
    assert result.exit_code == 2 and "unknown reward mode 'bogus'; choose from tlcr, tlcr_fixed, seq" in result.output
    assert not any(tmp_path.iterdir())
