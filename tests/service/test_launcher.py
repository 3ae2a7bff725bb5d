"""The launcher: a real service subprocess on loopback; clear errors when it cannot start; graceful stop."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import processes
from tests.support.processes import wait_until_gone
from tlcr.service.launcher import ServiceProcess, ServiceStartError, start_service


def test_shared_service_is_reachable_on_its_port(shared_service: ServiceProcess) -> None:
    assert shared_service.alive()
    assert shared_service.url == f"http://127.0.0.1:{shared_service.port}"
    assert httpx.get(shared_service.url + "/healthz").json() == {"status": "alive"}
    assert shared_service.log_path.exists()
    assert "Application startup complete" in shared_service.log_tail()


def test_busy_port_is_refused_before_starting_anything() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_service("/nonexistent", port=port)


def test_missing_model_fails_fast_with_the_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    started = time.monotonic()
    with pytest.raises(ServiceStartError) as error:
        start_service(missing, ready_timeout=90, log_path=tmp_path / "service.log")
    message = str(error.value)
    assert "exited with code 2" in message
    assert f"checkpoint directory '{missing}' does not exist" in message
    assert time.monotonic() - started < 30


def test_stop_drains_requests_in_flight(tiny_token_classifier_dir: Path, tmp_path: Path) -> None:
    """SIGTERM while requests are queued: each one still gets its answer, then the process exits."""
    service = start_service(tiny_token_classifier_dir, log_path=tmp_path / "drain.log",
                            extra_args=["--max-wait-ms", "1000", "--no-adaptive-wait", "--torch-threads", "1"])
    long_item = {"prompt_token_ids": list(range(3, 200)), "response_token_ids": list(range(3, 50))}
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            status = httpx.post(service.url + "/token_rewards", json={"items": [long_item] * 4},
                                timeout=30).status_code
        except httpx.TransportError:
            status = -1
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    # Stop once every sequence is queued (the batcher holds them up to 1 s, waiting for companions).
    deadline = time.monotonic() + 20
    while 'tlcr_queue_depth{model="discriminator"} 32.0' not in httpx.get(service.url + "/metrics").text:
        assert time.monotonic() < deadline, "the requests never reached the queue"
        time.sleep(0.02)
    code = service.stop(timeout=30)
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert not service.alive() and code in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    with pytest.raises(httpx.ConnectError):
        httpx.get(service.url + "/healthz", timeout=2)


def test_services_are_stopped_when_their_starter_exits(tiny_token_classifier_dir: Path, tmp_path: Path) -> None:
    """A script that forgets stop() and dies of an exception does not leave its service running."""
    import os
    import subprocess
    import sys

    pid_file = tmp_path / "pid"
    script = (f"from tlcr.service.launcher import start_service\n"
              f"service = start_service({str(tiny_token_classifier_dir)!r}, extra_args=['--torch-threads', '1'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(service.pid))\n"
              f"raise SystemExit('the starter crashes')\n")
    with processes.started([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) as starter:
        _, stderr = starter.communicate(timeout=120)
        assert "the starter crashes" in stderr
        pid = int(pid_file.read_text())
        # checked before the starter's process group is killed on leaving the block
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (and reaped by its parent before that parent exited)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_service_stops_when_its_starter_is_killed(tiny_token_classifier_dir: Path, tmp_path: Path,
                                                    how: signal.Signals) -> None:
    """A trainer killed by SIGTERM (a scheduler's preemption) or SIGKILL runs no atexit handler; its service
    notices it has lost its parent and stops itself."""
    import sys

    pid_file = tmp_path / "pid"
    script = (f"import time\nfrom pathlib import Path\nfrom tlcr.service.launcher import start_service\n"
              f"service = start_service({str(tiny_token_classifier_dir)!r}, extra_args=['--torch-threads', '1'], "
              f"log_path=Path({str(tmp_path / 'service.log')!r}))\n"
              f"open({str(pid_file)!r}, 'w').write(str(service.pid))\n"
              f"time.sleep(600)\n")
    with processes.started([sys.executable, "-c", script]) as starter:
        service_pid = processes.pid_written(pid_file, starter, "the service's pid")
        assert wait_until_gone({service_pid}, timeout_s=1.0) == {service_pid}, "the service stopped before its starter"
        starter.send_signal(how)
        assert starter.wait(timeout=30) == -how
        assert not wait_until_gone({service_pid}, timeout_s=30.0), "the service outlived its starter"
        assert "has exited: stopping" in (tmp_path / "service.log").read_text()
