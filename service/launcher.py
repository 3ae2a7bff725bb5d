"""Start a real reward service as a subprocess on loopback (for tests, the trainer and `tlcr demo`).

The launcher binds the listening socket itself and hands it to the child (`--fd`), so the port is known
before the child starts and no other process can take it in between. It then waits for GET /readyz.
Importable without torch (the child process loads the model).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ServiceProcess", "ServiceStartError", "start_service"]

LOG_TAIL_CHARS = 4000


class ServiceStartError(RuntimeError):
    """The service exited or did not become ready in time; the message ends with its log's tail."""


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - chars))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_RUNNING: set[ServiceProcess] = set()  # strong references: a dropped handle still gets stopped


@atexit.register
def _stop_leftovers() -> None:
    # A script that dies of an exception without stop() would otherwise leave its services running.
    for service in list(_RUNNING):
        service.stop(timeout=10.0)


class ServiceProcess:
    """A running service; `.url`, `.port`, `.stop()`; a context manager that stops it on exit.

    Services still running when the Python process that started them exits are stopped then; if that process
    is killed (SIGTERM, SIGKILL), the service notices it lost its parent within 0.5 s and stops as on SIGTERM.
    """

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log_path
        self.url = f"http://{_url_host(host)}:{port}"
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return _tail(self.log_path, chars)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the service drains requests in flight), then SIGKILL after `timeout` s; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _RUNNING.discard(self)
        return int(self.process.returncode)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return f"ServiceProcess({self.url}, pid={self.pid}, {state}, log={self.log_path})"


SERVICE_PYTHON_ENV = "TLCR_SERVICE_PYTHON"


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceStartError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def start_service(model: str | Path, *, sequence_model: str | Path | None = None, port: int | None = None,
                  host: str = "127.0.0.1", api_key: str | None = None, extra_args: Sequence[str] = (),
                  env: Mapping[str, str] | None = None, ready_timeout: float = 120.0,
                  log_path: Path | None = None, python: str | Path | None = None) -> ServiceProcess:
    """Run `python -m tlcr.service --model MODEL ...` and wait until GET /readyz answers 200.

    `port=None` picks a free port. The API key travels in the child's environment (TLCR_API_KEY), not on
    its command line. `extra_args` are more `tlcr serve` flags. `python`: the interpreter that runs the
    service (default: $TLCR_SERVICE_PYTHON, else this one), so a trainer's environment with only the base
    install (the client) can start a service from another environment that has `tlcr[service]`. Raises
    ServiceStartError, with the tail of the service's log, if it exits or is not ready within `ready_timeout`
    seconds.
    """
    child_env = dict(os.environ)
    child_env.update(env or {})
    if api_key is not None:
        child_env["TLCR_API_KEY"] = api_key
    child_env["TLCR_PARENT_PID"] = str(os.getpid())  # the service stops when this process is gone
    interpreter = str(python or os.environ.get(SERVICE_PYTHON_ENV) or sys.executable)
    args = [interpreter, "-m", "tlcr.service", "--model", str(model), "--host", host]
    if sequence_model is not None:
        args += ["--sequence-model", str(sequence_model)]

    sock: socket.socket | None = None
    if os.name == "posix":
        sock = _listening_socket(host, port or 0)
        bound_port = int(sock.getsockname()[1])
        args += ["--port", str(bound_port), "--fd", str(sock.fileno())]
    else:  # no fd passing: pick a port and let the child bind it (a small race on a busy machine)
        if port is None:
            probe = _listening_socket(host, 0)
            port = int(probe.getsockname()[1])
            probe.close()
        bound_port = port
        args += ["--port", str(bound_port)]
    args += list(extra_args)

    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"tlcr-service-{bound_port}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = log_path.open("ab")
    try:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                   pass_fds=(sock.fileno(),) if sock is not None else ())
    finally:
        log.close()
        if sock is not None:
            sock.close()  # the child holds its own copy
    service = ServiceProcess(process, host, bound_port, log_path)
    try:
        _wait_ready(service, ready_timeout)
    except BaseException:
        service.stop(timeout=5.0)
        raise
    return service


def _wait_ready(service: ServiceProcess, timeout: float) -> None:
    stop = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as http:
        while True:
            code = service.process.poll()
            if code is not None:
                raise ServiceStartError(f"the reward service exited with code {code} before it was ready "
                                        f"(log: {service.log_path}):\n{service.log_tail()}")
            try:
                response = http.get(service.url + "/readyz")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= stop:
                raise ServiceStartError(f"the reward service at {service.url} was not ready within {timeout:g} s "
                                        f"(last: {last}; log: {service.log_path}):\n{service.log_tail()}")
            time.sleep(0.1)
