"""Input files that already carry revisions, for the `given` reviser.

Accepted records (in .jsonl, .jsonl.gz, or a .json array):

- {prompt, chosen, rejected, revision}: e.g. a labelled file of `tlcr label`, to relabel it with
  another tokenizer (records whose revision is null get status "failed", reason no_given_revision);
- HH-RLHF transcripts {chosen, rejected, revision} (revision: the response, or a full transcript);
- the official TLCR release format {prompt, reject_response, raw_response[, chosen]}, where
  `raw_response` is the reviser's answer holding the revision after `<|Start Of Modified Response|>`;
- any of the above with `raw_response` instead of `revision` (parsed like an LLM answer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcr.core.data.jsonl import DataError, OnError, SkipReport, iter_jsonl
from tlcr.core.data.pairs import ASSISTANT_MARKER, PreferencePair, pair_from_record, split_transcript
from tlcr.labeling.revisers import GivenRevision

RELEASE_KEYS = ("reject_response", "raw_response")


@dataclass
class GivenInput:
    pairs: list[PreferencePair] = field(default_factory=list)
    revisions: dict[str, GivenRevision] = field(default_factory=dict)
    duplicates: int = 0  # records repeating an earlier one exactly (same id, texts and revision)


def _records(path: Path, on_error: OnError, report: SkipReport) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a valid JSON file ({exc})") from exc
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        for index, obj in enumerate(data):
            where = f"{path}[{index}]"
            if not isinstance(obj, dict):
                problem = f"{where}: expected a JSON object, got {type(obj).__name__}"
                if on_error == "raise":
                    raise DataError(problem)
                report.add(problem)
                continue
            yield where, obj
        return
    for lineno, obj in iter_jsonl(path, on_error=on_error, report=report):
        yield f"{path}:{lineno}", obj


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        found = "missing" if key not in obj else f"a {type(value).__name__}"
        raise DataError(f"{where}: {key!r} must be a string, is {found} (have: {', '.join(sorted(obj))})")
    return value


def _release_pair(obj: dict[str, Any], where: str) -> PreferencePair:
    rejected = _string(obj, "reject_response", where)
    if "prompt" not in obj:
        raise DataError(f"{where}: TLCR release record without 'prompt' (have: {', '.join(sorted(obj))}); "
                        "the discriminator needs the prompt")
    prompt = _string(obj, "prompt", where)
    chosen_key = next((k for k in ("chosen", "chosen_response") if k in obj), None)
    chosen = _string(obj, chosen_key, where) if chosen_key else ""
    if not prompt.strip():
        raise DataError(f"{where}: empty prompt")
    if not rejected.strip():
        raise DataError(f"{where}: empty reject_response")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, id=str(obj.get("id", "")), meta=meta)


def _pair(obj: dict[str, Any], where: str) -> PreferencePair:
    """A pair in HH or {prompt, chosen, rejected} format; the chosen response may be empty here, since
    the revision is given (e.g. relabelling a labelled file made from the release format)."""
    chosen = obj.get("chosen")
    if "prompt" in obj and isinstance(chosen, str) and not chosen.strip():
        checked = pair_from_record({**obj, "chosen": "(given)"}, where)
        return PreferencePair(prompt=checked.prompt, chosen=chosen, rejected=checked.rejected,
                              id=str(obj.get("id", "")), meta=checked.meta)
    return pair_from_record(obj, where)


def _given_revision(obj: dict[str, Any], pair: PreferencePair, where: str) -> GivenRevision:
    if "raw_response" in obj:
        return GivenRevision(raw_output=_string(obj, "raw_response", where))
    if "revision" not in obj:
        raise DataError(f"{where}: no 'revision' or 'raw_response' key (have: {', '.join(sorted(obj))})")
    revision = obj["revision"]
    if revision is None:
        return GivenRevision(None)
    if not isinstance(revision, str):
        raise DataError(f"{where}: 'revision' must be a string or null, got {type(revision).__name__}")
    if revision.startswith(pair.prompt) and ASSISTANT_MARKER in revision:  # a full HH transcript
        revision = split_transcript(revision)[1]
    return GivenRevision(revision)


def load_given_input(source: str | os.PathLike[str], *, on_error: OnError = "raise",
                     report: SkipReport | None = None, limit: int | None = None) -> GivenInput:
    """Pairs and their revisions from `source`; bad records raise `DataError` naming file and line
    (or `file[index]` in a JSON array), or with on_error='skip' are counted in `report`."""
    report = report if report is not None else SkipReport()
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    result = GivenInput()
    first_seen: dict[str, tuple[str, PreferencePair]] = {}
    for where, obj in _records(path, on_error, report):
        try:
            is_release = any(k in obj for k in RELEASE_KEYS) and "rejected" not in obj
            pair = _release_pair(obj, where) if is_release else _pair(obj, where)
            given = _given_revision(obj, pair, where)
            if pair.id in first_seen:
                first_where, first_pair = first_seen[pair.id]
                if first_pair == pair and result.revisions[pair.id] == given:
                    result.duplicates += 1
                    continue
                raise DataError(f"{where}: id {pair.id!r} already used at {first_where} for a different "
                                "pair or revision")
        except DataError as exc:
            if on_error == "raise":
                raise
            report.add(str(exc))
            continue
        first_seen[pair.id] = (where, pair)
        result.pairs.append(pair)
        result.revisions[pair.id] = given
        if limit is not None and len(result.pairs) >= limit:
            break
    return result
