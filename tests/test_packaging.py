"""The package as users install it: one top-level name (`tlcr`), the base install is the HTTP client, each stage
an extra, package data shipped. The wheel is built from a copy of the checkout, as a user's `pip install` would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

from tests.support.package_layout import ROOT, package_dirs
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service
from tlcr.service.schemas import TokenRewardItem

PACKAGE_DATA = ("tlcr/service/static/heatmap.html", "tlcr/configs/demo/smoke.yaml", "tlcr/configs/ppo/paper.yaml",
                "tlcr/configs/accelerate/cpu_ddp_2proc.yaml", "tlcr/configs/integrations/verl_agent_loop.yaml")
NOT_IN_SDIST = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "runs", "*.egg-info", "__pycache__", "tests",
                                      "docs", "docker", "benchmarks", "node_modules")
# The client's check, run by the base install's interpreter: nothing heavy imported, then one scoring call.
CLIENT_SCRIPT = """
import json, sys
from tlcr.service.client import TokenRewardClient
from tlcr.service.schemas import TokenRewardItem
heavy = sorted(m for m in ("torch", "transformers", "fastapi", "numpy", "uvicorn") if m in sys.modules)
with TokenRewardClient(sys.argv[1]) as client:
    [result] = client.token_rewards([TokenRewardItem(prompt=sys.argv[2], response=sys.argv[3])])
print(json.dumps({"heavy": heavy, "rewards": result.rewards}))
"""
PROMPT, RESPONSE = "\n\nHuman: Where does Bob live?\n\nAssistant:", " Bob lives in Paris."


def build_wheel(out_dir: Path, scratch: Path) -> Path:
    """`pip wheel` of a copy of the checkout (no stale build/ folder, no untracked tests or docs)."""
    source = scratch / "source"
    shutil.copytree(ROOT, source, ignore=NOT_IN_SDIST)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(out_dir), str(source)], check=True, capture_output=True, text=True, timeout=300)
    [wheel] = out_dir.glob("tlcr-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("wheel-build"))


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        return [line.split(",")[0] for line in archive.read(record).decode().splitlines() if line]


def test_the_wheel_installs_tlcr_and_nothing_else_at_the_top(wheel: Path) -> None:
    names = wheel_names(wheel)
    assert {n.split("/")[0] for n in names} == {"tlcr", f"tlcr-{wheel.name.split('-')[1]}.dist-info"}
    missing_data = [path for path in PACKAGE_DATA if path not in names]
    assert not missing_data, f"package data missing from the wheel: {missing_data}"
    # Every module of every mapped folder is in the wheel, under its tlcr.* name.
    expected = {f"{package.replace('.', '/')}/{module.name}"
                for package, folder in package_dirs().items() for module in (ROOT / folder).glob("*.py")}
    assert not expected - set(names), f"modules missing from the wheel: {sorted(expected - set(names))}"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for package, folder in package_dirs().items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed, f"not listed: {sorted(found - listed)}; listed but no package: {sorted(listed - found)}"


def test_the_base_install_requires_only_the_clients_libraries(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = Parser().parsestr(metadata).get_all("Requires-Dist") or []
    base = sorted(r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert base == ["httpx", "pydantic"]
    extras = set(Parser().parsestr(metadata).get_all("Provides-Extra") or [])
    assert {"service", "label", "train", "eval", "all", "verl", "openrlhf", "trl"} <= extras


def run(args: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout and PYTHONSAFEPATH: the fresh environment's own tlcr, not the source folder.
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, start_new_session=True)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    yield venv


@pytest.mark.slow
def test_the_base_install_scores_and_the_service_extra_serves(
        wheel: Path, fresh_venv: Path, tiny_reward_service: ServiceProcess, tiny_token_classifier_dir: Path,
        tmp_path: Path) -> None:
    python, tlcr = fresh_venv / "bin" / "python", fresh_venv / "bin" / "tlcr"
    installed = run([python, "-m", "pip", "install", "-q", wheel], tmp_path)
    assert installed.returncode == 0, installed.stderr

    # The base install: the client imports no torch and scores as the full install's client does.
    scored = run([python, "-c", CLIENT_SCRIPT, tiny_reward_service.url, PROMPT, RESPONSE], tmp_path)
    assert scored.returncode == 0, scored.stderr
    answer = json.loads(scored.stdout)
    assert answer["heavy"] == []
    with TokenRewardClient(tiny_reward_service.url) as client:
        [expected] = client.token_rewards([TokenRewardItem(prompt=PROMPT, response=RESPONSE)])
    assert answer["rewards"] == expected.rewards

    # The command names the missing extra and its install line, exit 2, no traceback.
    refused = run([tlcr, "serve", "--model", tiny_token_classifier_dir], tmp_path)
    assert refused.returncode == 2
    assert "pip install 'tlcr[service]'" in refused.stderr and "Traceback" not in refused.stderr + refused.stdout
    usage = run([tlcr, "--help"], tmp_path)
    assert usage.returncode == 0 and "pip install 'tlcr[label]'" in usage.stdout

    # The TRL adapter needs the base install and TRL only.
    torch_spec = os.environ.get("TLCR_TORCH_SPEC", "torch==2.13.0")  # as setup.sh: never a CUDA build on CPU
    trl = run([python, "-m", "pip", "install", "-q", torch_spec, f"{wheel}[trl]"], tmp_path, timeout=900)
    assert trl.returncode == 0, trl.stderr[-3000:]
    adapter = run([python, "-c", "import tlcr.integrations.trl as m; print(m.TLCRGRPOTrainer.__name__)"], tmp_path)
    assert adapter.returncode == 0 and "TLCRGRPOTrainer" in adapter.stdout, adapter.stderr

    # The service extra from the same wheel: `tlcr serve` starts and serves its shipped page and presets.
    extra = run([python, "-m", "pip", "install", "-q", torch_spec, f"{wheel}[service]"], tmp_path, timeout=900)
    assert extra.returncode == 0, extra.stderr[-3000:]
    presets = run([python, "-c", "from tlcr.core.presets import presets_dir; print(presets_dir('demo'))"], tmp_path)
    assert presets.returncode == 0 and (Path(presets.stdout.strip()) / "smoke.yaml").is_file(), presets.stderr
    assert str(fresh_venv) in presets.stdout
    with start_service(tiny_token_classifier_dir, python=python, env={"PYTHONSAFEPATH": "1"},
                       extra_args=["--torch-threads", "1"], log_path=tmp_path / "service.log") as service:
        page = httpx.get(service.url + "/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        with TokenRewardClient(service.url) as client:
            [from_wheel] = client.token_rewards([TokenRewardItem(prompt=PROMPT, response=RESPONSE)])
    assert from_wheel.rewards == expected.rewards


OLD_TOP_LEVEL = {"core", "configs", "service", "trainer", "labeling", "evaluation", "integrations"}
CODE_IN_STRING = re.compile(r"(?:^|[;\n]\s*)(?:from|import) ([a-z_]+\.[\w.]+)")


def test_no_code_imports_a_stage_by_its_folder_name() -> None:
    # From the checkout's root, `import service` would still work (the folder is on sys.path) and hide a missed
    # rename that breaks every wheel install; only `tlcr.service` exists once installed.
    import ast

    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if {".venv", ".git", "build", "node_modules"} & {p.split("-")[0] for p in path.relative_to(ROOT).parts}:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "files" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]  # importlib.resources.files("package")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):  # code run by `python -c "..."`
                names = CODE_IN_STRING.findall(node.value)
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OLD_TOP_LEVEL]
    assert not wrong, "import these as tlcr.<name>:\n" + "\n".join(wrong)
