"""The `tlcr` command's entry point: a subcommand whose extra is missing says which one to install (exit 2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tlcr import entry, extras

ROOT = Path(__file__).resolve().parents[2]


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `find_spec` report `modules` as not installed (what a base install looks like to the check)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name.split(".")[0] in modules else real(name, package)

    monkeypatch.setattr(extras, "find_spec", find_spec)


def test_a_missing_extra_is_named_with_its_install_line(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    hide(monkeypatch, "fastapi", "uvicorn")
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["-q", "serve", "--model", "runs/discriminator"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "`tlcr serve` needs the 'service' extra" in err and "fastapi, uvicorn" in err
    assert "pip install 'tlcr[service]'" in err and "Traceback" not in err


def test_the_demo_needs_every_stage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    hide(monkeypatch, "matplotlib")
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["demo"])
    assert exit_info.value.code == 2
    assert "pip install 'tlcr[all]'" in capsys.readouterr().err


def test_the_base_install_lists_each_commands_extra(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    hide(monkeypatch, "typer", "yaml", "pydantic_settings", "torch")
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "base install" in out
    for command in extras.COMMAND_EXTRAS:
        assert command in out
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["label", "--help"])  # help of a command that is not installed: still the usage, no crash
    assert exit_info.value.code == 0


def test_an_unlisted_missing_module_still_names_its_extra(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # A command whose import chain reaches a package the table does not check first (here: the data command
    # reaching for `datasets` at run time) ends with the same message instead of a traceback.
    import tlcr.cli

    def needs_datasets(*_args: object, **_kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'datasets'", name="datasets")

    monkeypatch.setattr(tlcr.cli, "app", needs_datasets)
    with pytest.raises(SystemExit) as exit_info:
        entry.main(["data", "--output-file", "x.jsonl"])
    assert exit_info.value.code == 2
    assert "imports datasets" in (err := capsys.readouterr().err) and "pip install 'tlcr[train]'" in err


def test_every_command_of_the_app_has_its_extras_listed() -> None:
    from typer.main import get_command

    from tlcr.cli import app

    assert set(get_command(app).commands) == set(extras.COMMAND_EXTRAS)  # type: ignore[attr-defined]


def test_each_extras_modules_are_what_pyproject_installs() -> None:
    import tomllib

    # docker/requirements.py: an extra's requirements with tlcr[...] references expanded.
    spec = importlib.util.spec_from_file_location("docker_requirements", ROOT / "docker" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    requirements = module.requirements
    # Distribution names whose import name differs.
    import_names = {"pyyaml": "yaml", "pydantic-settings": "pydantic_settings",
                    "prometheus-client": "prometheus_client", "python-levenshtein": "Levenshtein"}
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in extras.EXTRA_MODULES.items():
        assert extra in optional
        names = {r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
                 for r in requirements(ROOT / "pyproject.toml", [extra])}
        installed = {import_names.get(n, n) for n in names}
        assert set(modules) <= installed, f"tlcr[{extra}] does not install {set(modules) - installed}"
