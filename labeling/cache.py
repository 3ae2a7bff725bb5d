"""On-disk cache of reviser answers, so a rerun (or a resumed run) never pays for the same call twice.

Keyed by sha256 of (reviser model, instruction version, prompt, chosen, rejected). Stored in SQLite in
WAL mode: every answer is committed on arrival, and a committed answer survives a `kill -9` of the
process. The raw answer is stored (not the parsed revision), so parsing is always redone by the
current code.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def cache_key(model: str, instruction_version: str, prompt: str, chosen: str, rejected: str) -> str:
    # JSON of a list keeps field boundaries unambiguous (no separator that could occur in the texts).
    payload = json.dumps([model, instruction_version, prompt, chosen, rejected], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """One paid reviser answer: its text, why generation stopped, and the tokens it cost."""

    output: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str


class RevisionCache:
    """SQLite-backed map from `cache_key` to `CachedAnswer`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: one commit per put
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only an OS crash may lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers ("
                             "key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a usable revision cache ({exc})") from exc
        self.corrupt_entries = 0

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return CachedAnswer(**json.loads(row[0]))
        except (json.JSONDecodeError, TypeError):
            # An unreadable entry is treated as a miss (the call is paid again), and counted.
            self.corrupt_entries += 1
            return None

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)",
                         (key, json.dumps(asdict(answer), ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()
