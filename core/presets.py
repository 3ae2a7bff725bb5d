"""Named presets: YAML files of config values under configs/<kind>/<name>.yaml, shipped with the package.

`tlcr train-discriminator --preset tiny` is short for `--config configs/discriminator/tiny.yaml`; Python
callers (the pipeline, benchmarks) load the same files with `load_preset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from tlcr.core.config_cli import ConfigError, build_config, load_config_file

ConfigT = TypeVar("ConfigT")


def presets_dir(kind: str) -> Path:
    """configs/<kind>/, from the installed `tlcr.configs` package (or the source checkout)."""
    return Path(str(resources.files("tlcr.configs").joinpath(kind)))


def preset_names(kind: str) -> list[str]:
    return sorted(path.stem for path in presets_dir(kind).glob("*.yaml"))


def preset_file(kind: str, name: str) -> Path:
    path = presets_dir(kind) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no {kind} preset {name!r}: the presets are {', '.join(preset_names(kind)) or 'none'} "
                          f"(files in {presets_dir(kind)})")
    return path


def preset_values(config_class: type, kind: str, name: str) -> dict[str, Any]:
    """The values configs/<kind>/<name>.yaml sets, checked against `config_class`."""
    return load_config_file(config_class, preset_file(kind, name))


def load_preset(config_class: type[ConfigT], kind: str, name: str, given: Mapping[str, Any] | None = None,
                ) -> ConfigT:
    """`config_class` from configs/<kind>/<name>.yaml, with `given` values on top."""
    return build_config(config_class, given or {}, preset_file(kind, name))
