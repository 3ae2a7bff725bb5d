"""`tlcr bootstrap-model`: the demo models a fresh `docker compose up` serves, at a tiny size.

The folder is trained for real (tokenizer, SFT, labels, discriminator), then served by a real reward
service on loopback, which must say in its log and in GET /info that it serves the demo model.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tlcr import pipeline
from tlcr.cli import app
from tlcr.core.models import demo_note, load_tokenizer
from tlcr.demo_model import DEMO_NOTE, DemoModelConfig, bootstrap_demo_model, is_complete
from tlcr.trainer.ppo_config import PPOConfig


def tiny_config() -> DemoModelConfig:
    return DemoModelConfig(pairs=120, hidden_size=32, vocab_size=512, sft_epochs=1.0, discriminator_epochs=1.0)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "demo"
    bootstrap_demo_model(out, tiny_config())
    return out


def test_writes_a_complete_marked_folder_and_nothing_beside_it(demo_dir: Path) -> None:
    from transformers import AutoConfig

    assert is_complete(demo_dir)
    assert sorted(p.name for p in demo_dir.iterdir()) == ["discriminator", "policy", "ppo.yaml"]
    assert [p.name for p in demo_dir.parent.iterdir()] == ["demo"]  # the work folder was renamed, not left
    assert demo_note(AutoConfig.from_pretrained(demo_dir / "discriminator")) == DEMO_NOTE
    assert demo_note(AutoConfig.from_pretrained(demo_dir / "policy")) is None
    # The PPO policy and the value model (the discriminator) share the tokenizer, as PPO requires.
    assert load_tokenizer(demo_dir / "policy").get_vocab() == load_tokenizer(demo_dir / "discriminator").get_vocab()


def test_ppo_yaml_is_a_valid_short_job_on_the_folder(demo_dir: Path) -> None:
    config = PPOConfig.from_yaml(demo_dir / "ppo.yaml")
    assert config.policy == str(demo_dir / "policy") and config.value_model == str(demo_dir / "discriminator")
    assert config.source == "controlled" and config.num_steps == tiny_config().ppo_steps
    assert config.max_prompt_length + config.max_new_tokens <= 256  # the discriminator's max_length


def test_service_says_it_serves_the_demo_model(demo_dir: Path, tmp_path: Path) -> None:
    from tlcr.service.launcher import start_service

    log = tmp_path / "service.log"
    with start_service(demo_dir / "discriminator", log_path=log, extra_args=["--torch-threads", "1"]) as service:
        info = httpx.get(service.url + "/info").json()
        rewards = httpx.post(service.url + "/token_rewards", json={"items": [
            {"prompt": "What is the capital of Veltria?", "response": "The capital of Veltria is Orsk."}]})
    assert info["demo"] == DEMO_NOTE
    assert rewards.status_code == 200 and rewards.json()["results"][0]["rewards"]
    assert f"serving the DEMO discriminator: {DEMO_NOTE}" in log.read_text()


def test_cli_leaves_a_complete_folder_alone_and_refuses_a_partial_one(demo_dir: Path, tmp_path: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in demo_dir.rglob("*"))
    result = CliRunner().invoke(app, ["bootstrap-model", "--output-dir", str(demo_dir)])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert sorted(p.stat().st_mtime_ns for p in demo_dir.rglob("*")) == before
    partial = tmp_path / "demo"
    (partial / "discriminator").mkdir(parents=True)
    result = CliRunner().invoke(app, ["bootstrap-model", "--output-dir", str(partial)])
    assert result.exit_code == 2
    assert "not a complete demo model" in result.output
    assert sorted(p.name for p in partial.iterdir()) == ["discriminator"]  # left as it was


def test_a_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(pipeline, "label_stage", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        bootstrap_demo_model(tmp_path / "demo", tiny_config())
    assert list(tmp_path.iterdir()) == []
