"""Shared fixtures: the controlled task and tiny models built from config (same code paths as real ones)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Tests run on 2 cores beside other work: keep torch to one thread and stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

from transformers import PreTrainedTokenizerBase  # noqa: E402

from tlcr.core.data.controlled import ControlledTask  # noqa: E402
from tlcr.core.data.pairs import PreferencePair  # noqa: E402
from tlcr.core.data.sources import load_preference_pairs  # noqa: E402
from tlcr.core.models import build_tiny_model, load_token_classifier, load_tokenizer  # noqa: E402

if TYPE_CHECKING:
    from tlcr.service.launcher import ServiceProcess

# ../shared next to the checkout (as in CI), or where TLCR_SHARED_DIR points (a git worktree elsewhere).
SHARED_DATA = Path(os.environ.get("TLCR_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared") / "data"
HH_HARMLESS_TEST = SHARED_DATA / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
MT_BENCH_QUESTIONS = SHARED_DATA / "mt_bench" / "question.jsonl"
REAL_TOKENIZERS = SHARED_DATA.parent / "tokenizers"  # llama2 (SentencePiece), gpt2 and qwen2 (byte-level BPE)


@pytest.fixture(scope="session")
def controlled_task() -> ControlledTask:
    return ControlledTask(seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, controlled_task: ControlledTask) -> Path:
    """A tiny Llama causal LM + BPE tokenizer trained on the controlled task, saved by save_pretrained."""
    return build_tiny_model(controlled_task.corpus(), tmp_path_factory.mktemp("tiny-llama"), vocab_size=512,
                            hidden_size=32, num_layers=2, num_heads=2)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, controlled_task: ControlledTask) -> Path:
    """A second tiny model with a different architecture and vocabulary (for tokenizer re-alignment)."""
    return build_tiny_model(controlled_task.corpus(), tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2",
                            vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, seed=1)


def _save_untrained_discriminator(base_dir: Path, out: Path) -> Path:
    """`base_dir` with an untrained one-logit token-classification head, saved like a discriminator checkpoint."""
    from tlcr.core.models import load_tokenizer, mark_discriminator_config

    model = load_token_classifier(base_dir, num_labels=1, device="cpu", dtype="float32")
    mark_discriminator_config(model.config, max_length=256, base_model=str(base_dir))
    model.save_pretrained(out)
    load_tokenizer(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_token_classifier_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An untrained discriminator on the tiny Llama."""
    return _save_untrained_discriminator(tiny_model_dir, tmp_path_factory.mktemp("tiny-discriminator"))


@pytest.fixture(scope="session")
def tiny_gpt2_discriminator_dir(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: Path) -> Path:
    """An untrained discriminator on the tiny GPT-2, whose absolute position embeddings show padding mistakes first."""
    return _save_untrained_discriminator(tiny_gpt2_dir, tmp_path_factory.mktemp("gpt2-discriminator"))


@pytest.fixture(scope="session")
def sequence_rm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A one-label sequence classifier (untrained head) saved like a sequence reward model checkpoint."""
    from tlcr.core.models import load_sequence_classifier, load_tokenizer

    out = tmp_path_factory.mktemp("tiny-sequence-rm")
    load_sequence_classifier(tiny_model_dir, num_labels=1, device="cpu", dtype="float32").save_pretrained(out)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_reward_service(tiny_token_classifier_dir: Path, sequence_rm_dir: Path,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real reward service (subprocess on loopback) with the tiny discriminator and sequence reward model,
    default limits, shared by the tests that train or score against a service."""
    from tlcr.service.launcher import start_service

    log = tmp_path_factory.mktemp("reward-service-logs") / "service.log"
    with start_service(tiny_token_classifier_dir, sequence_model=sequence_rm_dir, log_path=log,
                       extra_args=["--torch-threads", "1", "--max-wait-ms", "2"]) as running:
        yield running


@pytest.fixture(scope="session")
def hh_harmless_test() -> Path:
    if not HH_HARMLESS_TEST.exists():
        pytest.skip(f"shared HH-RLHF sample not found at {HH_HARMLESS_TEST}")
    return HH_HARMLESS_TEST


@dataclass(frozen=True)
class DemoSmokeRun:
    run_dir: Path
    console_text: str  # what `tlcr demo` printed (stage headers, the summary table)
    wall_seconds: float


@pytest.fixture(scope="session")
def demo_smoke_run(tmp_path_factory: pytest.TempPathFactory) -> DemoSmokeRun:
    """`tlcr demo --preset smoke` once per session (the demo smoke test and the report-page browser test share it).

    The demo quiets library logging for its console; the previous logging state is restored afterwards so
    later tests see the defaults.
    """
    import io
    import logging
    import time

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from tlcr.core.logs import OUR_PACKAGES
    from tlcr.demo import DemoConfig, run_demo

    demo_loggers = [logging.getLogger(), *(logging.getLogger(name) for name in OUR_PACKAGES)]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in demo_loggers]
    hf_verbosity, hf_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    output = io.StringIO()
    start = time.perf_counter()
    try:
        run_dir = run_demo(DemoConfig.smoke(out_root=tmp_path_factory.mktemp("demo-smoke"), run_name="smoke"),
                           console=Console(file=output, width=160, color_system=None))
    finally:
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
        hf_logging.set_verbosity(hf_verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()
    return DemoSmokeRun(run_dir, output.getvalue(), time.perf_counter() - start)


def _real_tokenizer_dir(name: str) -> Path:
    path = REAL_TOKENIZERS / name
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"shared real tokenizer not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Callable[[str], Path]:
    """`get(name)`: the real tokenizer folder ../shared/tokenizers/<name> (llama2, gpt2, qwen2); skips if absent."""
    return _real_tokenizer_dir


@pytest.fixture(scope="session")
def tiny_real_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`get(name)`: a tiny Llama on the real `name` tokenizer's whole vocabulary, built once per session."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_tiny_model([], tmp_path_factory.mktemp(f"tiny-{name}"),
                                           tokenizer=_real_tokenizer_dir(name), hidden_size=16, num_layers=1,
                                           num_heads=2, seed=0)
        return built[name]

    return get


@pytest.fixture(scope="session")
def tiny_real_discriminator_dir(tmp_path_factory: pytest.TempPathFactory,
                                tiny_real_model_dir: Callable[[str], Path]) -> Callable[[str], Path]:
    """`get(name)`: an untrained discriminator on the tiny model of the real `name` tokenizer."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = _save_untrained_discriminator(tiny_real_model_dir(name),
                                                        tmp_path_factory.mktemp(f"{name}-discriminator"))
        return built[name]

    return get


@pytest.fixture(scope="module", params=["llama2", "gpt2", "qwen2"])
def named_tokenizer(request: pytest.FixtureRequest,
                    real_tokenizer_dir: Callable[[str], Path]) -> tuple[str, PreTrainedTokenizerBase]:
    """(name, tokenizer) for each real tokenizer in ../shared/tokenizers."""
    return request.param, load_tokenizer(real_tokenizer_dir(request.param))


@pytest.fixture(scope="module")
def hh_pairs(hh_harmless_test: Path) -> list[PreferencePair]:
    """The first 40 usable pairs of the shared HH-RLHF harmless-base test sample."""
    return load_preference_pairs(hh_harmless_test, on_error="skip")[:40]
