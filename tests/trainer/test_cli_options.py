"""The trainer commands' options, derived from their config classes: one spelling per option across commands,
presets as YAML files, `--config` under command-line overrides, and the mapping onto TrainingArguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tlcr.cli import app
from tlcr.core.config_cli import load_config_file
from tlcr.core.presets import load_preset, preset_names, presets_dir
from tlcr.trainer.discriminator import DiscriminatorConfig
from tlcr.trainer.ppo_config import PPOConfig
from tlcr.trainer.reward_model import RewardModelConfig
from tlcr.trainer.reward_options import DiscriminatorOptions, RewardModelOptions

runner = CliRunner()

COMMANDS = ("sft", "dpo", "ppo", "train-discriminator", "train-reward-model")
# The spellings the commands had before their options came from their configs.
RETIRED = ("--out", "--lr", "--steps", "--limit", "--grad-accum", "--warmup", "--part", "--value-lr", "--base",
           "--data", "--pairs", "--eval-data", "--eval-pairs", "--center-rewards")
SHARED = {"--config", "--output-dir", "--source", "--data-limit", "--data-seed", "--split-part", "--seed",
          "--learning-rate", "--max-length", "--dtype", "--gradient-checkpointing"}


def options_of(command: str) -> set[str]:
    assert runner.invoke(app, [command, "--help"]).exit_code == 0
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {name for param in click_command.params for name in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("command", COMMANDS)
def test_one_spelling_per_option(command: str) -> None:
    options = options_of(command)
    assert not options & set(RETIRED), f"{command} still has {sorted(options & set(RETIRED))}"
    not_applicable = {"ppo": {"--max-length"}, "train-discriminator": {"--split-part", "--data-limit", "--data-seed"}}
    expected = SHARED - not_applicable.get(command, set())
    assert expected <= options, f"{command} lacks {sorted(expected - options)}"


def test_every_ppo_config_field_is_an_option_or_named_as_config_only() -> None:
    options = options_of("ppo")
    yaml_only = {"extra", "reward_backoff", "overlap_reward_fetch", "generation_batch_size", "weight_decay", "adam_eps"}
    fields = {"--" + name.replace("_", "-") for name in PPOConfig.__dataclass_fields__ if name not in yaml_only}
    assert fields <= options, sorted(fields - options)
    help_text = runner.invoke(app, ["ppo", "--help"], terminal_width=200).output
    assert "In --config files only: adam_eps, extra" in help_text
    assert "--num-steps" in options and "--kl-coef" in options and "--beta" not in options


@pytest.mark.parametrize("kind", ["ppo", "discriminator", "reward_model"])
def test_shipped_presets_load(kind: str) -> None:
    config_class = {"ppo": PPOConfig, "discriminator": DiscriminatorOptions, "reward_model": RewardModelOptions}[kind]
    assert preset_names(kind) == ["paper", "tiny"]
    for name in preset_names(kind):
        assert load_config_file(config_class, presets_dir(kind) / f"{name}.yaml")


REQUIRED = {"model": "m", "source": "s.jsonl", "output_dir": "out"}
COMPARED = ("learning_rate", "weight_decay", "num_train_epochs", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_length", "logging_steps", "warmup_steps", "seed", "max_steps",
            "activation_checkpointing", "eval_fraction", "report_to", "bf16", "adam_beta1", "adam_beta2")


def test_default_options_give_the_paper_training_arguments(tmp_path: Path) -> None:
    given = {**REQUIRED, "output_dir": str(tmp_path)}
    pairs = [(DiscriminatorOptions(**given).training_config(), DiscriminatorConfig(output_dir=str(tmp_path))),
             (RewardModelOptions(**given).training_config(), RewardModelConfig(output_dir=str(tmp_path)))]
    for derived, direct in pairs:
        for name in COMPARED:
            assert getattr(derived, name) == getattr(direct, name), name
    paper = load_preset(DiscriminatorOptions, "discriminator", "paper", given)
    assert paper == DiscriminatorOptions(**given)


def test_tiny_presets_keep_their_numbers(tmp_path: Path) -> None:
    given = {**REQUIRED, "output_dir": str(tmp_path)}
    disc = load_preset(DiscriminatorOptions, "discriminator", "tiny", given).training_config()
    assert (disc.learning_rate, disc.num_train_epochs, disc.per_device_train_batch_size, disc.weight_decay,
            disc.max_length, disc.logging_steps) == (3e-3, 6.0, 32, 0.0, 256, 20)
    rm = load_preset(RewardModelOptions, "reward_model", "tiny", given).training_config()
    assert (rm.learning_rate, rm.num_train_epochs, rm.per_device_train_batch_size, rm.weight_decay, rm.max_length,
            rm.logging_steps, rm.activation_checkpointing) == (1e-3, 4.0, 16, 0.0, 256, 20, False)


def test_batch_size_is_split_into_accumulation_steps() -> None:
    config = DiscriminatorOptions(**REQUIRED, batch_size=16, gradient_accumulation_steps=4).training_arguments()
    assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == (4, 4)
    with pytest.raises(ValueError, match=r"batch_size \(16\) must be a multiple of gradient_accumulation_steps"):
        RewardModelOptions(**REQUIRED, gradient_accumulation_steps=3)


def test_config_file_under_command_line_options(tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(f"model: {tmp_path / 'model-from-yaml'}\noutput_dir: {tmp_path / 'out'}\n", encoding="utf-8")
    result = runner.invoke(app, ["sft", "--config", str(config), "--data-limit", "10"])
    assert result.exit_code == 2 and "model-from-yaml" in result.output  # the file's model was used
    result = runner.invoke(app, ["sft", "--config", str(config), "--model", str(tmp_path / "model-from-cli"),
                                 "--data-limit", "10"])
    assert result.exit_code == 2 and "model-from-cli" in result.output and "model-from-yaml" not in result.output
    config.write_text("model: m\noutput_dir: o\nlearning_rte: 1\n", encoding="utf-8")
    result = runner.invoke(app, ["sft", "--config", str(config)])
    assert result.exit_code == 2 and "unknown key(s) 'learning_rte'" in result.output


def test_missing_required_options_exit_2() -> None:
    result = runner.invoke(app, ["train-discriminator", "--model", "m"])
    assert result.exit_code == 2 and "missing option(s) --output-dir, --source" in result.output
