"""Child processes in tests: each in its own process group, the whole group killed on timeout, failure or exit,
so nothing a test starts outlives it (`accelerate launch` ranks, worker pools), and waiting for pids to end
(Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# After SIGTERM, how long a group gets to exit before SIGKILL (a torch process exits within 1-2 s here).
TERM_GRACE_S = 5.0


def kill_group(process: subprocess.Popen[Any], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the process group `process` leads and every descendant of it, SIGKILL what is left after `grace_s`,
    and reap the leader.

    Descendants are looked up as well as the group: torch's elastic launcher (`accelerate launch`, torchrun)
    starts each rank in a session of its own, so killing the launcher's group alone leaves the ranks running.
    A process in another session whose ancestors up to `process` have all exited is no longer found.
    """
    pgid = process.pid  # start_new_session=True made the child its group's leader
    targets: set[int] = set()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        # a rank whose launcher already exited is no longer in the tree: keep every pid found so far
        targets = _living(targets) | process_tree(pgid)
        if not targets:
            break
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is None:
                try:
                    process.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.05)
            if not _living(targets):
                break
    if process.poll() is None:
        process.wait(timeout=10)


def _living(pids: set[int]) -> set[int]:
    """Those of `pids` that are alive (not zombies)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def process_tree(leader: int) -> set[int]:
    """Live (not zombie) processes in `leader`'s process group or descended from `leader`."""
    parents: dict[int, int] = {}
    group: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        if int(fields[2]) == leader:
            group.add(pid)
    found = {leader} if leader in parents else set()
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found | group


@contextmanager
def started(command: Sequence[str], **popen_kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """`subprocess.Popen(command)` in its own process group; on leaving, whatever is left of the group is killed."""
    process = subprocess.Popen(list(command), start_new_session=True, **popen_kwargs)
    try:
        yield process
    finally:
        kill_group(process)


def run(command: Sequence[str], *, timeout: float, input: str | None = None, check: bool = False,
        **popen_kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(command, capture_output=True, text=True, timeout=...)` with the child in its own process
    group: on timeout the whole group is killed (subprocess.run kills only the child, then waits for the output
    pipes its grandchildren still hold, so it can hang past its timeout), and on return nothing of it is left.
    """
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    with started(command, stdin=subprocess.PIPE if input is not None else None, text=True,
                 **popen_kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            kill_group(process)
            try:  # a process no longer in the tree could still hold the pipes open: do not wait on it forever
                stdout, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                stdout, stderr = expired.output, expired.stderr
            raise subprocess.TimeoutExpired(process.args, timeout, output=stdout, stderr=stderr) from expired
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def wait_until_gone(pids: set[int], timeout_s: float = 20.0) -> set[int]:
    """The pids still alive (not zombies) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    alive = _living(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = _living(alive)
    return alive


def pid_written(path: Path, writer: subprocess.Popen[Any], what: str, timeout_s: float = 120.0) -> int:
    """The pid that `writer` writes to `path`, once it is there; fails naming `what` if `writer` exits first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert writer.poll() is None and time.monotonic() < deadline, f"{what} was not written"
        time.sleep(0.05)
    return int(path.read_text())
