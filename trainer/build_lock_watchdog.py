"""Say so when a run waits on a torch C++-extension build lock, instead of hanging in silence.

DeepSpeed JIT-builds ops with `torch.utils.cpp_extension.load` on first use (on CPU, ZeRO's first
`init_distributed` builds `deepspeed_shm_comm`). torch guards each build folder with a `lock` file
(`torch.utils.file_baton.FileBaton`); a build interrupted by Ctrl-C or a kill leaves that file behind, and
every later run waits for it to disappear forever, printing nothing. A daemon thread looks at the other
threads' stacks and logs, once per lock, what the run waits for and how to fix it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# A wait longer than a build takes is reported (TLCR_BUILD_LOCK_WARN_S overrides it).
DEFAULT_AFTER_S = 60.0
CHECK_EVERY_S = 1.0

_started: threading.Thread | None = None
_lock = threading.Lock()


def waited_lock(frame: FrameType | None) -> Path | None:
    """The lock file a thread waits on, if `frame` (the top of its stack) is inside `FileBaton.wait`."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wait" and code.co_filename.endswith("file_baton.py"):
            baton = frame.f_locals.get("self")
            path = getattr(baton, "lock_file_path", None)
            return Path(path) if path else None
        frame = frame.f_back
    return None


def lock_message(lock: Path, waited_s: float) -> str:
    return (f"waiting {waited_s:.0f} s for {lock} to disappear: torch's build lock of the C++ extension "
            f"{lock.parent.name!r} (DeepSpeed builds it on the first ZeRO run on CPU). If no other process is "
            f"building it, an earlier build was interrupted (Ctrl-C) and left the lock behind: stop this run, delete "
            f"{lock} (or the folder {lock.parent}) and run again. (A run that waits on a stale lock does not build "
            f"the extension itself, so it cannot go on when the file goes.)")


def _watch(after_s: float, every_s: float, report: list[str] | None) -> None:
    since: dict[tuple[int, Path], float] = {}
    reported: set[tuple[int, Path]] = set()
    me = threading.get_ident()
    while True:
        now = time.monotonic()
        waiting = {(ident, lock) for ident, frame in sys._current_frames().items()
                   if ident != me and (lock := waited_lock(frame)) is not None}
        for key in list(since):
            if key not in waiting:
                del since[key]
        for key in waiting:
            start = since.setdefault(key, now)
            if now - start >= after_s and key not in reported:
                reported.add(key)
                message = lock_message(key[1], now - start)
                log.warning(message)  # logging's last resort prints it to stderr when nothing is configured
                if report is not None:
                    report.append(message)
        time.sleep(every_s)


def watch_build_locks(after_s: float | None = None, every_s: float = CHECK_EVERY_S,
                      report: list[str] | None = None) -> threading.Thread:
    """Start the watchdog (once per process; later calls return the running thread)."""
    global _started
    if after_s is None:
        after_s = float(os.environ.get("TLCR_BUILD_LOCK_WARN_S", DEFAULT_AFTER_S))
    with _lock:
        if _started is None or not _started.is_alive():
            _started = threading.Thread(target=_watch, args=(after_s, every_s, report),
                                        name="tlcr-build-lock-watchdog", daemon=True)
            _started.start()
        return _started
