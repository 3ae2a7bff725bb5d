"""The build-lock watchdog finds a thread waiting in torch's FileBaton and names its lock file (the real
ZeRO run against a stale lock: tests/trainer/test_deepspeed.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from torch.utils.file_baton import FileBaton

from tlcr.trainer.build_lock_watchdog import lock_message, waited_lock


def test_a_thread_waiting_on_a_build_lock_is_found_with_its_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()  # what an interrupted build leaves behind
    waiter = threading.Thread(target=FileBaton(str(lock), wait_seconds=0.01).wait, daemon=True)
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while (found := waited_lock(sys._current_frames().get(waiter.ident or 0))) is None:
            assert time.monotonic() < deadline, "the waiting thread was not recognised"
            time.sleep(0.01)
        assert found == lock
        assert waited_lock(sys._getframe()) is None  # this thread waits on nothing
    finally:
        lock.unlink()  # the baton's wait returns
        waiter.join(timeout=10)
    assert not waiter.is_alive()
    message = lock_message(lock, 61.0)
    assert str(lock) in message and "'deepspeed_shm_comm'" in message and f"delete {lock}" in message
