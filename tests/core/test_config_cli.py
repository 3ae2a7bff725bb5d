"""core.config_cli: typer options derived from a config class, `--config FILE.yaml`, command-line overrides."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings
import pytest
import typer
from typer.testing import CliRunner

from tlcr.core.config_cli import ConfigError, build_config, config_command, load_config_file

runner = CliRunner()


class Color(str, enum.Enum):
    red = "red"
    blue = "blue"


@dataclass
class RunOptions:
    model: str = field(metadata={"help": "Model to start from."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "How to run."})
    color: Color = field(default=Color.red, metadata={"help": "A colour."})
    data_limit: int | None = field(default=None, metadata={"help": "Most records."})
    whiten: bool = field(default=True, metadata={"help": "Whiten advantages.", "panel": "Shaping"})
    resume: bool = field(default=False, metadata={"help": "Continue the last run."})
    adam_betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={"help": "AdamW betas."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Tags."})
    api_key: str | None = field(default=None, metadata={"help": "Key.", "envvar": "CONFIG_CLI_TEST_KEY"})
    report_to: str | list[str] = field(default="none", metadata={"help": "Trackers."})
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": "Free-form notes."})

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.command("run")
    @config_command(RunOptions, yaml_only=("extra",))
    def run(config: RunOptions,
            name: Annotated[str, typer.Argument(help="A name of the command's own.")] = "x") -> None:
        """Run something."""
        values = asdict(config)
        values["color"] = config.color.value
        typer.echo(json.dumps({"name": name, **values}))

    @app.command("other")
    def other() -> None:
        """A second command, so `run` is a subcommand as in tlcr."""

    return app


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(make_app(), ["run", *args], env=env, terminal_width=200)


def run_config(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "options.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_help_lists_each_field_as_a_kebab_option_with_its_help_and_default() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    out = result.output
    for option, help_text in [("--model", "Model to start from."), ("--learning-rate", "Peak learning rate."),
                              ("--data-limit", "Most records."), ("--adam-betas", "AdamW betas."),
                              ("--config", "YAML file")]:
        assert option in out and help_text in out
    assert "--no-whiten" in out and "1e-05" in out and "fast|slow" in out and "CONFIG_CLI_TEST_KEY" in out
    assert "--resume" in out and "--no-resume" not in out  # a switch away from its False default
    assert "Shaping" in out  # the field's --help panel
    assert "--extra" not in out and "In --config files only: extra." in out  # yaml_only


def test_defaults_and_required_field() -> None:
    values = run_config("--model", "m")
    assert values == {"name": "x", "model": "m", "learning_rate": 1e-5, "mode": "fast", "color": "red",
                      "data_limit": None, "whiten": True, "resume": False, "adam_betas": [0.9, 0.95], "tags": [],
                      "api_key": None, "report_to": "none", "extra": {}}
    result = invoke()
    assert result.exit_code == 2
    assert "missing option(s) --model" in result.output


def test_each_kind_of_field_parses_from_the_command_line() -> None:
    values = run_config("--model", "m", "--learning-rate", "3e-4", "--mode", "slow", "--color", "blue",
                        "--data-limit", "7", "--no-whiten", "--resume", "--adam-betas", "0.8,0.99", "--tags", "a,b",
                        "--tags", "c", "--report-to", "a,b", "named")
    assert values["learning_rate"] == 3e-4 and values["mode"] == "slow" and values["color"] == "blue"
    assert values["data_limit"] == 7 and values["whiten"] is False and values["resume"] is True
    assert values["adam_betas"] == [0.8, 0.99] and values["tags"] == ["a", "b", "c"] and values["name"] == "named"
    assert values["report_to"] == "a,b"


@pytest.mark.parametrize("args, message", [
    (["--mode", "medium"], "'medium' is not one of"),
    (["--data-limit", "many"], "Invalid value for '--data-limit'"),
    (["--adam-betas", "0.8"], "--adam-betas: ['0.8'] is not a valid tuple[float, float]"),
    (["--learning-rate", "-1"], "error: learning_rate must be positive, got -1.0"),
])
def test_bad_command_line_values_exit_2_naming_the_option(args: list[str], message: str) -> None:
    result = invoke("--model", "m", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_yaml_overrides_defaults_and_the_command_line_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "model: from-yaml\nlearning_rate: 1e-4\nwhiten: false\nadam_betas: [0.5, 0.6]\n"
                           "tags: [t]\nextra: {note: kept}\ncolor: blue\nreport_to: [x, y]\n")
    values = run_config("--config", str(path), "--learning-rate", "2e-3")
    assert values["model"] == "from-yaml"
    assert values["learning_rate"] == 2e-3  # the command line wins
    assert values["whiten"] is False and values["adam_betas"] == [0.5, 0.6] and values["tags"] == ["t"]
    assert values["extra"] == {"note": "kept"} and values["color"] == "blue" and values["report_to"] == ["x", "y"]
    # A flag left at its default does not undo the file's value.
    assert run_config("--config", str(path))["learning_rate"] == 1e-4
    assert run_config("--config", str(path), "--whiten")["whiten"] is True


def test_an_environment_variable_counts_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\napi_key: from-yaml\n")
    assert run_config("--config", str(path))["api_key"] == "from-yaml"
    assert run_config("--config", str(path), env={"CONFIG_CLI_TEST_KEY": "from-env"})["api_key"] == "from-env"


@pytest.mark.parametrize("text, message", [
    ("model: m\nlerning_rate: 1e-4\n", "unknown key(s) 'lerning_rate'"),
    ("model: m\ndata_limit: many\n", "key 'data_limit': 'many' is not a valid int | None"),
    ("model: m\nmode: medium\n", "key 'mode': 'medium' is not a valid Literal['fast', 'slow']"),
    ("model: m\nadam_betas: [0.9]\n", "key 'adam_betas'"),
    ("- model\n", "expected a mapping of option names to values, got list"),
    ("model: [unclosed\n", "cannot read the config file"),
])
def test_bad_yaml_exits_2_naming_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    result = invoke("--config", str(path))
    assert result.exit_code == 2
    assert f"error: {path}: " in result.output and message in result.output


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--config", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "absent.yaml" in result.output


def test_build_config_for_python_callers(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\nlearning_rate: 1.0e-3\n")
    assert load_config_file(RunOptions, path) == {"model": "m", "learning_rate": 1e-3}
    config = build_config(RunOptions, {"data_limit": 3, "tags": ["a,b"]}, path)
    assert (config.model, config.learning_rate, config.data_limit, config.tags) == ("m", 1e-3, 3, ["a", "b"])
    with pytest.raises(ConfigError, match="missing option"):
        build_config(RunOptions, {})


class ServiceSettings(pydantic.BaseModel):
    host: str = pydantic.Field(default="127.0.0.1", description="Address to bind.")
    port: int = pydantic.Field(default=8000, ge=1, le=65535, description="Port.")
    mode: Literal["tlcr", "seq"] = pydantic.Field(default="tlcr", description="Reward mode.")
    reload: bool = pydantic.Field(default=False, description="Reload on change.")


def test_pydantic_models_give_options_too(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.command("serve")
    @config_command(ServiceSettings, param="settings")
    def serve(settings: ServiceSettings) -> None:
        typer.echo(settings.model_dump_json())

    @app.command("other")
    def other() -> None:
        """A second command."""

    help_out = runner.invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "--port" in help_out and "Address to bind." in help_out and "--reload" in help_out
    path = write(tmp_path, "port: 9000\nmode: seq\n")
    result = runner.invoke(app, ["serve", "--config", str(path), "--reload"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"host": "127.0.0.1", "port": 9000, "mode": "seq", "reload": True}
    bad = write(tmp_path, "port: 0\n")
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: key 'port'" in result.output and "greater than or equal to 1" in result.output
    result = runner.invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2 and "less than or equal to 65535" in result.output


def test_presets_are_config_files_by_name(tmp_path: Path) -> None:
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "quick.yaml").write_text("model: quick-model\nlearning_rate: 1.0e-3\n", encoding="utf-8")
    app = typer.Typer()

    @app.command("run")
    @config_command(RunOptions, yaml_only=("extra",), presets=presets)
    def run(config: RunOptions) -> None:
        typer.echo(json.dumps({"model": config.model, "learning_rate": config.learning_rate}))

    @app.command("other")
    def other() -> None:
        """A second command."""

    result = runner.invoke(app, ["run", "--preset", "quick", "--learning-rate", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"model": "quick-model", "learning_rate": 0.5}
    result = runner.invoke(app, ["run", "--preset", "slow"])
    assert result.exit_code == 2 and "'slow' is not one of" in result.output
    config = write(tmp_path, "model: m\n")
    result = runner.invoke(app, ["run", "--preset", "quick", "--config", str(config)])
    assert result.exit_code == 2 and "give --preset or --config, not both" in result.output


def test_a_field_without_a_command_line_form_must_be_yaml_only() -> None:
    with pytest.raises(TypeError, match=r"'extra'.*yaml_only"):
        config_command(RunOptions)(lambda config: None)


class SecretSettings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix="CONFIG_CLI_TEST_", env_ignore_empty=True)

    model: str = pydantic.Field(description="What to serve.")
    port: int = pydantic.Field(default=8000, ge=0, le=65535, description="TCP port.")
    api_key: pydantic.SecretStr | None = pydantic.Field(default=None, description="Bearer key.")

    @pydantic.model_validator(mode="after")
    def _no_key_on_port_80(self) -> SecretSettings:
        if self.api_key is not None and self.port == 80:
            raise ValueError("port 80 is plain HTTP: no API key there")
        return self


def _settings_app(seen_objects: list[Any]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_command(SecretSettings)
    def serve(ctx: typer.Context, config: SecretSettings) -> None:
        seen_objects.append(ctx.obj)
        typer.echo(json.dumps({"model": config.model, "port": config.port,
                               "key": config.api_key.get_secret_value() if config.api_key else None}))

    return app


def test_pydantic_settings_read_their_environment_variables_and_keep_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen_objects: list[Any] = []
    app = _settings_app(seen_objects)
    assert "CONFIG_CLI_TEST_PORT" in runner.invoke(app, ["--help"]).output
    monkeypatch.setenv("CONFIG_CLI_TEST_MODEL", "from-env")
    monkeypatch.setenv("CONFIG_CLI_TEST_PORT", "9001")
    monkeypatch.setenv("CONFIG_CLI_TEST_API_KEY", "")  # empty: unset, as pydantic-settings' env_ignore_empty
    result = runner.invoke(app, ["--port", "9002"], obj="the caller's object")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"model": "from-env", "port": 9002, "key": None}
    assert seen_objects == ["the caller's object"]  # the command's own typer.Context parameter is its context
    refused = runner.invoke(app, ["--port", "80", "--api-key", "s3cret-value"])
    assert refused.exit_code == 2
    assert "invalid SecretSettings: port 80 is plain HTTP: no API key there" in refused.output
    assert "s3cret-value" not in refused.output
    out_of_range = runner.invoke(app, ["--port", "70000", "--api-key", "s3cret-value"])
    assert out_of_range.exit_code == 2 and "--port: Input should be less than or equal to 65535" in out_of_range.output
    assert "s3cret-value" not in out_of_range.output


def test_a_subclass_that_changes_a_default_keeps_the_help() -> None:
    @dataclass
    class Smaller(RunOptions):
        learning_rate: float = 3e-3

    app = typer.Typer()
    app.command()(config_command(Smaller, yaml_only=["extra"])(lambda config: None))
    help_text = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Peak learning rate." in help_text and "0.003" in help_text
