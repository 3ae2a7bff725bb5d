"""Command-line options derived from a config class, with `--config FILE.yaml` (TRL's TrlParser pattern).

A config class (a dataclass, or a pydantic model such as a pydantic-settings class) is the one place an
option is defined: its name, type, default and help. `config_command` turns each field into a
`--kebab-name` option and adds `--config FILE.yaml`, whose keys are field names (and, given a directory of
presets, `--preset NAME` for one of its files). Precedence, lowest first: the class's defaults, the YAML
file, the command line.

    @config_command(SFTOptions)
    def sft_command(config: SFTOptions) -> None:
        ...

    app.command("sft")(sft_command)

Field types and their options: bool gives `--x/--no-x`, or the switch `--x` alone when the default is
False (which keeps `--help` narrow; a YAML `x: true` then stands); Literal and Enum give a choice;
`X | None` takes X; a union with str (`str | list[str]`) takes the string; lists and tuples take
comma-separated values (or the option repeated). Help comes from
`field(metadata={"help": ...})` (dataclasses; a subclass field that only changes the default keeps its
base's) or `Field(description=...)` (pydantic). A dataclass field may
also carry `"envvar": "NAME"` and `"panel": "Section"` (the --help section it is listed under) in its metadata;
a pydantic-settings field reads its variable (env_prefix + NAME, e.g. TLCR_PORT; an empty one counts as unset)
as the option's environment variable. A pydantic `SecretStr` field takes a string. A command function may take
a `typer.Context` parameter of its own.

Options show the class's defaults in `--help`, but only a value the user gave (on the command line, or by
an environment variable) overrides the YAML file.

Bad input gives `error: <message>` on stderr and exit 2: an unknown YAML key, a value of the wrong type
(both name the key and the file), or a config the class itself rejects (its ValueError, e.g. from
`__post_init__`; a pydantic model's validation errors are listed by option, never echoing the values, one
of which may be a secret).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer

from tlcr.core.exit_codes import ExitCode

__all__ = [
    "EXIT_BAD_CONFIG",
    "ConfigError",
    "ConfigField",
    "build_config",
    "config_command",
    "config_fields",
    "config_options",
    "given_options",
    "load_config_file",
]

EXIT_BAD_CONFIG = ExitCode.BAD_INPUT  # click's exit code for usage errors, so every bad-option path exits the same way

CONFIG_FILE_PARAM = "config_file"  # the Python name of `--config` in a derived command's signature
PRESET_PARAM = "preset"  # `--preset NAME`, short for `--config <presets dir>/NAME.yaml`
CONTEXT_PARAM = "config_cli_context"  # the typer.Context a derived command receives, to tell given from default

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A config file or option value is invalid; the message names the key (and the file)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One field of a config class, as the command line and the YAML loader see it."""

    name: str
    annotation: Any  # resolved type
    default: Any  # MISSING when the field is required; a default_factory's value otherwise
    help: str = ""
    envvar: str | None = None
    panel: str | None = None  # the --help section the option is listed in (typer's rich_help_panel)
    validator_metadata: tuple[Any, ...] = ()  # pydantic constraints (Field(ge=...)) to check YAML values against

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def option_name(self) -> str:
        return "--" + self.name.replace("_", "-")


# ---------------------------------------------------------------------------------------- fields
def config_fields(config_class: type) -> list[ConfigField]:
    """The fields of a dataclass or pydantic model, in declaration order."""
    if dataclasses.is_dataclass(config_class):
        return _dataclass_fields(config_class)
    if hasattr(config_class, "model_fields"):
        return _pydantic_fields(config_class)
    raise TypeError(f"{config_class.__name__} is neither a dataclass nor a pydantic model")


def _dataclass_fields(config_class: type) -> list[ConfigField]:
    hints = typing.get_type_hints(config_class)
    fields = []
    for item in dataclasses.fields(config_class):
        if not item.init:
            continue
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = MISSING
        metadata = item.metadata or _inherited_metadata(config_class, item.name)
        fields.append(ConfigField(name=item.name, annotation=hints[item.name], default=default,
                                  help=metadata.get("help", ""), envvar=metadata.get("envvar"),
                                  panel=metadata.get("panel")))
    return fields


def _inherited_metadata(config_class: type, name: str) -> Mapping[str, Any]:
    """The metadata of field `name` in the nearest dataclass base that has some: a subclass that only changes
    a default (`pairs: int = 1500`) keeps the base's help."""
    for base in config_class.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            for item in dataclasses.fields(base):
                if item.name == name and item.metadata:
                    return item.metadata
    return {}


def _pydantic_fields(config_class: Any) -> list[ConfigField]:
    # pydantic-settings classes (and only they) have an env_prefix: their variables become the options'
    env_prefix = config_class.model_config.get("env_prefix")
    fields = []
    for name, info in config_class.model_fields.items():
        if info.is_required():
            default = MISSING
        elif info.default_factory is not None:
            default = info.default_factory()
        else:
            default = info.default
        fields.append(ConfigField(name=name, annotation=info.annotation, default=default,
                                  help=info.description or "", validator_metadata=tuple(info.metadata),
                                  envvar=None if env_prefix is None else f"{env_prefix}{name}".upper()))
    return fields


# ------------------------------------------------------------------------------------------ types
def _without_none(annotation: Any) -> Any:
    """X for `X | None` / Optional[X]; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_sequence(annotation: Any) -> bool:
    return get_origin(annotation) in (list, tuple, set, frozenset, Collection, typing.Sequence)


def _option_type(field: ConfigField) -> tuple[Any, dict[str, Any]]:
    """The type typer parses the option as, and extra `typer.Option` arguments."""
    inner = _without_none(field.annotation)
    if get_origin(inner) is Literal:
        return inner, {}
    if get_origin(inner) in (Union, types.UnionType) and str in get_args(inner):
        return str, {}  # e.g. `str | list[str]`: the command line gives the string form
    if _is_sequence(inner):
        return list[str], {"metavar": "A,B,..."}
    if inner in (bool, int, float, str, Path) or (isinstance(inner, type) and issubclass(inner, enum.Enum)):
        return inner, {}
    import pydantic

    if inner is pydantic.SecretStr:
        return str, {}  # the model wraps it; errors never echo it (_error_message)
    raise TypeError(f"field {field.name!r} has type {field.annotation!r}, which has no command-line form: "
                    f"list it in yaml_only to set it from --config files only")


def _option_default(field: ConfigField, option_type: Any) -> Any:
    """The default typer shows in --help (a value the user did not type is never used: see `_given`)."""
    if field.required:
        return None
    if option_type == list[str] and field.default is not None:
        return [str(item) for item in field.default]
    return field.default


def _validate(field: ConfigField, value: Any) -> Any:
    """`value` as `field`'s type (pydantic's lax conversion: "1e-4" → 1e-4, [0.9, 0.95] → a tuple)."""
    import pydantic

    annotation = Annotated[(field.annotation, *field.validator_metadata)] if field.validator_metadata \
        else field.annotation
    try:
        return pydantic.TypeAdapter(annotation).validate_python(value)
    except pydantic.ValidationError as exc:
        reasons = "; ".join((f"item {'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"]
                            for e in exc.errors())
        raise ConfigError(f"{value!r} is not a valid {_type_name(field.annotation)} ({reasons})") from None


def _type_name(annotation: Any) -> str:
    if get_args(annotation) or not hasattr(annotation, "__name__"):
        return str(annotation).replace("typing.", "")
    return annotation.__name__


# ------------------------------------------------------------------------------------------ options
def config_options(config_class: type, *, yaml_only: Collection[str] = (),
                   presets: Path | None = None) -> list[inspect.Parameter]:
    """`--config` (and `--preset` with a `presets` directory) and one keyword-only typer option per field
    (except `yaml_only`).

    Each option's default is the field's, for --help; `build_config` must receive only the values the user
    gave (`given_options` picks them from typer's parsed values).
    """
    config_option = typer.Option(
        "--config", exists=True, dir_okay=False, readable=True,
        help="YAML file of these options (keys: option names, _ for -); options given here override it.")
    params = [inspect.Parameter(CONFIG_FILE_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[Path | None, config_option])]
    if presets is not None:
        names = tuple(sorted(path.stem for path in presets.glob("*.yaml")))
        if not names:
            raise TypeError(f"no preset files (*.yaml) in {presets}")
        preset_option = typer.Option("--preset", help=f"Short for --config {presets.name}/NAME.yaml (shipped).")
        params.append(inspect.Parameter(PRESET_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Literal[names] | None, preset_option]))  # type: ignore[valid-type]
    fields = config_fields(config_class)
    unknown = set(yaml_only) - {field.name for field in fields}
    if unknown:
        raise TypeError(f"yaml_only names no field of {config_class.__name__}: {', '.join(sorted(unknown))}")
    for field in fields:
        if field.name in yaml_only:
            continue
        if field.name in (CONFIG_FILE_PARAM, PRESET_PARAM, CONTEXT_PARAM):
            raise TypeError(f"{config_class.__name__}.{field.name} clashes with a parameter of config_command")
        option_type, extra = _option_type(field)
        switch_only = option_type is bool and field.default is False
        decls = [f"{field.option_name}/--no-{field.option_name[2:]}"] if option_type is bool and not switch_only \
            else [field.option_name]
        help_text = field.help + (" [required]" if field.required else "")
        option = typer.Option(*decls, help=help_text.strip(), show_default=not field.required,
                              envvar=field.envvar, show_envvar=field.envvar is not None,
                              rich_help_panel=field.panel, **extra)
        params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=_option_default(field, option_type),
                                        annotation=Annotated[option_type | None, option]))
    return params


def load_config_file(config_class: type, path: str | Path) -> dict[str, Any]:
    """The YAML file's values, each checked against its field's type; unknown keys are an error."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(loaded).__name__}")
    fields = {field.name: field for field in config_fields(config_class)}
    unknown = sorted(str(key) for key in loaded if key not in fields)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"{config_class.__name__} has {', '.join(fields)}")
    values = {}
    for key, value in loaded.items():
        try:
            values[key] = _validate(fields[key], value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: key {key!r}: {exc}") from None
    return values


def build_config(config_class: type[ConfigT], given: Mapping[str, Any], config_file: str | Path | None = None,
                 ) -> ConfigT:
    """An instance of `config_class`: its defaults, then `config_file`'s values, then `given` (None: not given).

    `given` holds values as typer parsed them; list and tuple fields may come as lists of comma-separated
    strings. Raises ConfigError for a bad file, value or missing required field, and whatever the class
    raises for a combination it rejects.
    """
    fields = {field.name: field for field in config_fields(config_class)}
    values = load_config_file(config_class, config_file) if config_file is not None else {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(f"{config_class.__name__} has no option {name!r}")
        field = fields[name]
        if _is_sequence(_without_none(field.annotation)) and isinstance(value, (list, tuple)):
            value = [part.strip() for item in value for part in str(item).split(",") if part.strip()]
            try:
                value = _validate(field, value)
            except ConfigError as exc:
                raise ConfigError(f"{field.option_name}: {exc}") from None
        values[name] = value
    missing = [field for field in fields.values() if field.required and field.name not in values]
    if missing:
        where = f" or in {config_file}" if config_file is not None else ""
        raise ConfigError(f"missing option(s) {', '.join(field.option_name for field in missing)} "
                          f"(give them on the command line{where})")
    return config_class(**values)


# ------------------------------------------------------------------------------------------ commands
def _error_message(exc: ValueError, config_class: type) -> str:
    """A pydantic ValidationError as `--option: reason; ...` (without the input values); others as they are."""
    errors = getattr(exc, "errors", None)
    if not callable(errors) or not hasattr(exc, "title"):
        return str(exc)
    fields = {field.name: field.option_name for field in config_fields(config_class)}
    problems = []
    for error in errors():
        loc = [str(part) for part in error["loc"]]
        where = ".".join([fields.get(loc[0], loc[0]), *loc[1:]]) + ": " if loc else ""
        problems.append(where + error["msg"].removeprefix("Value error, "))
    return f"invalid {config_class.__name__}: {'; '.join(problems)}"


def given_options(context: typer.Context, parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Of typer's parsed option values, those the user gave (command line or environment variable), not
    the defaults typer filled in: only they may override the --config file."""
    given = {}
    for name, value in parsed.items():
        source = context.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[name] = value
    return given


def config_command(config_class: type[ConfigT], *, yaml_only: Collection[str] = (), presets: Path | None = None,
                   param: str = "config") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `func(config: ConfigT, ...)` into a typer command whose options are `config_class`'s fields.

    `presets`: a directory of YAML files; `--preset NAME` then stands for `--config <presets>/NAME.yaml`.

    `func`'s other parameters (typer arguments or options of its own) stay as they are. The config is built
    before `func` runs; a bad one exits 2 with `error: <message>`.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = dict(inspect.signature(func, eval_str=True).parameters)
        if param not in own:
            raise TypeError(f"{func.__name__} takes no parameter {param!r} for the {config_class.__name__}")
        del own[param]
        own_context = next((name for name, p in own.items() if p.annotation is typer.Context), None)
        if own_context is not None:
            del own[own_context]  # it gets the command's context, which typer passes once
        options = config_options(config_class, yaml_only=yaml_only, presets=presets)
        clashes = sorted(set(own) & ({option.name for option in options} | {CONTEXT_PARAM}))
        if clashes:
            raise TypeError(f"{func.__name__}'s parameters {clashes} clash with {config_class.__name__}'s options")
        field_names = [option.name for option in options if option.name not in (CONFIG_FILE_PARAM, PRESET_PARAM)]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            context = kwargs.pop(CONTEXT_PARAM)
            config_file = kwargs.pop(CONFIG_FILE_PARAM)
            preset = kwargs.pop(PRESET_PARAM, None)
            given = given_options(context, {name: kwargs.pop(name) for name in field_names})
            try:
                if preset is not None:
                    if config_file is not None:
                        raise ConfigError("give --preset or --config, not both")
                    config_file = presets / f"{preset}.yaml"  # type: ignore[operator]
                config = build_config(config_class, given, config_file)
            except ValueError as exc:
                typer.echo(f"error: {_error_message(exc, config_class)}", err=True)
                raise typer.Exit(EXIT_BAD_CONFIG) from None
            if own_context is not None:
                kwargs[own_context] = context
            return func(**{param: config}, **kwargs)

        # Positional typer arguments first, then the function's own options, then the config's.
        context_param = inspect.Parameter(CONTEXT_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        signature_params = [context_param, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.values()),
                            *options]
        if yaml_only:  # say so in --help: a config file can still set them
            command.__doc__ = (f"{inspect.getdoc(func) or ''}\n\nIn --config files only: "
                               f"{', '.join(sorted(yaml_only))}.")
        command.__signature__ = inspect.Signature(signature_params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature_params}
        return command

    return decorate
