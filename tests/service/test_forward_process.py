"""The discriminator in a forward process of its own (the service's default): the same probabilities and
metadata as in-process, errors carried back, and no process left behind however the service ends."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import processes
from tlcr.core.models import ModelLoadError
from tlcr.service.forward_process import ForwardProcessError, ProcessTokenScorer
from tlcr.service.launcher import start_service
from tlcr.service.scorer import Encoded, LoadSpec, TokenScorer


def spec(model: Path | str, **overrides: object) -> LoadSpec:
    fields: dict[str, object] = {"device": "cpu", "dtype": "float32", "max_length": None, "name": None,
                                 "revision": None, "torch_threads": 1, "warmup": True, "packing": True,
                                 "prefix_sharing": True}
    fields.update(overrides)
    return LoadSpec(str(model), **fields)  # type: ignore[arg-type]


def forward_processes(service_pid: int) -> list[int]:
    """The service's forward process (multiprocessing's resource tracker is a child of it too)."""
    return [pid for pid in processes.process_tree(service_pid) - {service_pid}
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]


@pytest.fixture(scope="module")
def remote(tiny_token_classifier_dir: Path) -> ProcessTokenScorer:
    scorer = ProcessTokenScorer(spec(tiny_token_classifier_dir))
    yield scorer
    scorer.close()


def test_probabilities_and_metadata_equal_the_in_process_scorer(remote: ProcessTokenScorer,
                                                                 tiny_token_classifier_dir: Path) -> None:
    local = TokenScorer.load(str(tiny_token_classifier_dir), device="cpu", dtype="float32")
    local.enable_packing()
    local.enable_prefix_sharing()
    # Shared prompts, an empty prompt, different lengths: the packed and shared paths in the child.
    batch = [Encoded([5, 6, 7], [8, 9]), Encoded([5, 6, 7], [10, 11, 12, 13]), Encoded([], [14, 15]),
             Encoded([16, 17, 18, 19, 20], [21])]
    for theirs, ours in zip(remote.probabilities(batch), local.probabilities(batch), strict=True):
        assert theirs.dtype == np.float32 and theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-6)
    assert remote.probabilities([]) == []
    for field in ("name", "revision", "max_length", "vocab_size", "pad_id", "packing", "prefix_sharing"):
        assert getattr(remote, field) == getattr(local, field), field
    assert (remote.device, remote.dtype) == ("cpu", "torch.float32")
    assert remote.config.to_dict() == local.config.to_dict()
    assert remote.tokenizer.get_vocab() == local.tokenizer.get_vocab()


def test_a_failing_batch_raises_its_error_and_the_process_keeps_serving(remote: ProcessTokenScorer) -> None:
    with pytest.raises(IndexError):  # an id beyond the embedding table, raised by torch in the child
        remote.probabilities([Encoded([1], [remote.vocab_size + 5])])
    assert len(remote.probabilities([Encoded([1], [2, 3])])[0]) == 2


def test_a_load_failure_is_raised_in_the_parent_with_its_type(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no tokenizer|no such folder|cannot load"):
        ProcessTokenScorer(spec(tmp_path))


def test_closing_ends_the_child_and_later_calls_say_so(tiny_token_classifier_dir: Path) -> None:
    scorer = ProcessTokenScorer(spec(tiny_token_classifier_dir, warmup=False))
    pid = scorer.forward_process.pid
    assert pid is not None and processes.wait_until_gone({pid}, timeout_s=0.2) == {pid}  # alive until closed
    scorer.close()
    assert not processes.wait_until_gone({pid}, timeout_s=10.0)
    with pytest.raises(ForwardProcessError, match=r"gone|died"):
        scorer.probabilities([Encoded([1], [2])])


def test_the_child_exits_when_its_parent_is_killed(tiny_token_classifier_dir: Path, tmp_path: Path) -> None:
    """SIGKILL runs no clean-up in the parent: the child notices the pipe closing, or the parent gone."""
    pid_file = tmp_path / "pid"
    script = (f"import time\nfrom tlcr.service.forward_process import ProcessTokenScorer\n"
              f"from tlcr.service.scorer import LoadSpec\n"
              f"s = ProcessTokenScorer(LoadSpec({str(tiny_token_classifier_dir)!r}, 'cpu', 'float32', None, None, "
              f"None, 1, False, True, True))\n"
              f"open({str(pid_file)!r}, 'w').write(str(s.forward_process.pid))\n"
              f"time.sleep(600)\n")
    with processes.started([sys.executable, "-c", script]) as parent:
        child = processes.pid_written(pid_file, parent, "the forward process's pid")
        parent.send_signal(signal.SIGKILL)
        assert parent.wait(timeout=30) == -signal.SIGKILL
        assert not processes.wait_until_gone({child}, timeout_s=10.0), "the forward process outlived its parent"


def test_a_service_whose_forward_process_dies_stops_being_ready_and_exits(tiny_token_classifier_dir: Path,
                                                                           tmp_path: Path) -> None:
    """A killed (or out-of-memory) forward process takes the service out of rotation: the request in hand gets an
    error, /readyz a 503 naming why, and `tlcr serve` exits non-zero so that its supervisor restarts it."""
    service = start_service(tiny_token_classifier_dir, extra_args=["--torch-threads", "1", "--forward-process"],
                            log_path=tmp_path / "service.log")
    try:
        item = {"items": [{"prompt_token_ids": [5, 6], "response_token_ids": [7, 8]}]}
        assert httpx.post(service.url + "/token_rewards", json=item, timeout=30).status_code == 200
        (child,) = forward_processes(service.pid)
        os.kill(child, signal.SIGKILL)
        try:  # noticed at once, not at the next forward; the service may already have exited
            ready = httpx.get(service.url + "/readyz", timeout=5)
            if ready.status_code == 200:
                time.sleep(0.5)
                ready = httpx.get(service.url + "/readyz", timeout=5)
            assert ready.status_code == 503 and "forward process died" in ready.json()["detail"], ready.text
        except httpx.TransportError:
            pass
        assert service.process.wait(timeout=60) != 0
        assert "forward process died" in service.log_tail()
    finally:
        service.stop(timeout=10)


def test_a_service_with_a_forward_process_gives_the_same_rewards(tiny_token_classifier_dir: Path,
                                                                  tmp_path: Path) -> None:
    """--forward-process scores in one child process; without it, in the service's own process: same rewards."""
    item = {"items": [{"prompt_token_ids": [5, 6, 7], "response_token_ids": [8, 9, 10]},
                      {"prompt": "Which word comes next?", "response": " The next word is bravo."}]}
    answers = []
    for extra in ([], ["--forward-process"]):
        with start_service(tiny_token_classifier_dir, extra_args=["--torch-threads", "1", *extra],
                           log_path=tmp_path / f"service{len(extra)}.log") as service:
            children = forward_processes(service.pid)
            assert len(children) == len(extra)
            answers.append(httpx.post(service.url + "/token_rewards", json=item, timeout=30).json())
            assert httpx.get(service.url + "/info", timeout=10).json()["device"] == "cpu"
            service.stop()  # SIGTERM: a graceful stop, which ends the forward process too
            assert not processes.wait_until_gone(set(children), timeout_s=10.0)
    for theirs, ours in zip(answers[1]["results"], answers[0]["results"], strict=True):
        assert theirs["rewards"] == pytest.approx(ours["rewards"], abs=1e-6)
