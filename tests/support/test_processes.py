"""The shared child-process helper: nothing a test starts outlives it, whatever session its children use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import processes

# A launcher whose worker runs in a session of its own (as torch's elastic agent starts ranks), both asleep.
LAUNCHER = ("import subprocess, sys, time\n"
            "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],\n"
            "                          start_new_session=True)\n"
            "print(worker.pid, flush=True)\n"
            "time.sleep(300)\n")


def test_a_timeout_kills_the_launcher_and_its_worker_in_another_session() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        processes.run([sys.executable, "-c", LAUNCHER], timeout=3)
    worker = int(str(expired.value.output).split()[0])
    assert not processes.wait_until_gone({worker}, timeout_s=5), "the worker outlived the timed-out launcher"


def test_a_failure_inside_started_kills_the_launcher_and_its_worker() -> None:
    with pytest.raises(AssertionError, match="a failing check"), \
            processes.started([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True) as launcher:
        assert launcher.stdout is not None
        worker = int(launcher.stdout.readline())
        raise AssertionError("a failing check")
    assert launcher.returncode is not None
    assert not processes.wait_until_gone({worker}, timeout_s=5), "the worker outlived the failed test"


def test_a_worker_that_ignores_sigterm_is_killed_after_its_launcher_exited() -> None:
    """The launcher dies of SIGTERM at once; its worker, in another session, ignores SIGTERM and is no longer
    the launcher's descendant when SIGKILL comes: it is still killed."""
    stubborn = LAUNCHER.replace("'import time; time.sleep(300)'",
                                "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                "time.sleep(300)'")
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        processes.run([sys.executable, "-c", stubborn], timeout=3)
    worker = int(str(expired.value.output).split()[0])
    assert not processes.wait_until_gone({worker}, timeout_s=5), "the worker outlived the timed-out launcher"
