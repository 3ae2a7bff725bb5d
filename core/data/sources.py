"""Where preference pairs come from: the built-in controlled task, local HH-RLHF-style JSONL files, or the Hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.data.jsonl import DataError, OnError, SkipReport, iter_jsonl
from tlcr.core.data.pairs import PreferencePair, pair_from_record

HUB_DATASET = "Anthropic/hh-rlhf"
CONTROLLED = "controlled"


def load_preference_pairs(source: str | os.PathLike[str], *, split: str = "train",
                          data_dir: str | None = "harmless-base", limit: int | None = None,
                          seed: int = 0, on_error: OnError = "raise",
                          report: SkipReport | None = None) -> list[PreferencePair]:
    """Pairs from `source`:

    - "controlled": the built-in offline controlled task (no files needed);
    - a local .jsonl / .jsonl.gz path in HH-RLHF or {prompt, chosen, rejected} format;
    - anything else: a Hub dataset id (e.g. "Anthropic/hh-rlhf") or a local folder laid out like one,
      loaded with `datasets.load_dataset(source, data_dir=data_dir, split=split)`.
    """
    report = report if report is not None else SkipReport()
    src = str(source)
    if src == CONTROLLED:
        return ControlledTask().pairs(limit or 2000, seed=seed)  # one fixed KB; the seed draws pairs
    path = Path(src)
    records: Iterator[tuple[str, dict[str, Any]]]
    if path.is_file() or path.suffix in (".jsonl", ".gz", ".json"):
        if not path.exists():
            raise DataError(f"{path}: file not found")
        records = ((f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path, on_error=on_error, report=report))
    else:  # a Hub id, or a local folder laid out like a Hub dataset repo
        import datasets

        try:
            ds = datasets.load_dataset(src, data_dir=data_dir, split=split)
        except Exception as exc:
            raise DataError(f"cannot load dataset {src!r} (data_dir={data_dir!r}, split={split!r}): {exc}") from exc
        records = ((f"{src}[{split}][{index}]", dict(obj)) for index, obj in enumerate(ds))
    pairs: list[PreferencePair] = []
    for where, obj in records:
        try:
            pairs.append(pair_from_record(obj, where))
        except DataError as exc:
            if on_error == "raise":
                raise
            report.add(str(exc))
        if limit is not None and len(pairs) >= limit:
            break
    return pairs
