"""`tlcr serve-ray` as a subprocess on loopback, for the Ray tests and benchmarks/ray_serve.py (Linux /proc).

The command runs in its own session, and the local Ray it starts (GCS, raylet, workers, replicas) stays in
that session, so `stop()` finds and ends every one of them by session id: nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.ports import unused_port
from tests.support.processes import wait_until_gone

REPLICA_TITLE = b"ray::ServeReplica:tlcr:RewardReplica"


def session_pids(sid: int) -> set[int]:
    """Every live process whose session id is `sid`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def reporting(metrics: str) -> float:
    """tlcr_replicas_reporting in a /metrics text (0 if absent)."""
    for line in metrics.splitlines():
        if line.startswith("tlcr_replicas_reporting "):
            return float(line.split()[-1])
    return 0.0


class RayServe:
    """A running `tlcr serve-ray`; `.url`, `.replica_pids()`, `.stop()`; a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def replica_pids(self) -> list[int]:
        """The reward replicas' processes (Ray names each process after its actor)."""
        pids = []
        for pid in session_pids(self.process.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(REPLICA_TITLE):
                    pids.append(pid)
            except OSError:
                pass
        return sorted(pids)

    def wait_ready(self, replicas: int, timeout_s: float) -> None:
        """Until /readyz answers 200 and every replica reports its metrics (each is loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tlcr serve-ray exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if (httpx.get(self.url + "/readyz", timeout=5).status_code == 200
                        and reporting(httpx.get(self.url + "/metrics", timeout=5).text) >= replicas):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"tlcr serve-ray not ready within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (the command deletes the application and stops its Ray), then SIGKILL whatever remains."""
        sid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        left = wait_until_gone(session_pids(sid), timeout_s=10)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(10)
        wait_until_gone(left, timeout_s=10)

    def __enter__(self) -> RayServe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_ray_serve(model: Path | str, log_path: Path, args: Sequence[str] = (), replicas: int = 1,
                    timeout_s: float = 300.0) -> RayServe:
    """`tlcr serve-ray --model MODEL --replicas N ARGS` on a free loopback port, on a local Ray of 2 CPUs,
    one torch thread per replica; returns once every replica runs and /readyz answers 200."""
    port = unused_port()
    tlcr = Path(sys.executable).with_name("tlcr")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "TLCR_API_KEY": ""}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(tlcr), "serve-ray", "--model", str(model), "--port", str(port), "--replicas", str(replicas),
             "--num-cpus", "2", "--cpus-per-replica", "0.5", "--torch-threads", "1", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    service = RayServe(process, port, log_path)
    try:
        service.wait_ready(replicas, timeout_s)
    except BaseException:
        service.stop()
        raise
    return service
