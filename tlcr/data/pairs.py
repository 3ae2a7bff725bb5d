"""Preference pairs (prompt, chosen, rejected): HH-RLHF transcripts from the Hub or local files,
the offline controlled task, and the paper's deterministic 20/40/40 split."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlcr.data.jsonl import DataError, OnError, SkipReport, iter_jsonl

ASSISTANT_MARKER = "\n\nAssistant:"
HUB_DATASET = "Anthropic/hh-rlhf"
CONTROLLED = "controlled"


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            digest = hashlib.sha256("\x1f".join((self.prompt, self.chosen, self.rejected)).encode())
            self.id = digest.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_transcript(text: str) -> tuple[str, str]:
    """HH-RLHF transcript → (prompt up to and including the last '\\n\\nAssistant:', response)."""
    cut = text.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn in transcript")
    cut += len(ASSISTANT_MARKER)
    return text[:cut], text[cut:]


def pair_from_record(obj: dict[str, Any], where: str) -> PreferencePair:
    """A pair from either HH format {chosen, rejected} (full transcripts) or {prompt, chosen, rejected}.

    Raises DataError naming `where` (file:line or dataset[index]) on missing keys or empty texts.
    """
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise DataError(f"{where}: missing key {key!r} (have: {', '.join(sorted(obj)) or 'none'})")
        if not isinstance(obj[key], str):
            raise DataError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str):
            raise DataError(f"{where}: 'prompt' must be a string, got {type(obj['prompt']).__name__}")
        prompt, chosen, rejected = obj["prompt"], obj["chosen"], obj["rejected"]
    else:
        try:
            prompt, chosen = split_transcript(obj["chosen"])
            rejected_prompt, rejected = split_transcript(obj["rejected"])
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from exc
        if rejected_prompt != prompt:
            raise DataError(f"{where}: chosen and rejected transcripts have different prompts")
    if not prompt.strip():
        raise DataError(f"{where}: empty prompt")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise DataError(f"{where}: empty {name} response")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, id=str(obj.get("id", "")),
                          meta=meta)


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
        from tlcr.data.controlled import ControlledTask

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


def paper_split(pairs: Sequence[PreferencePair], seed: int = 42,
                fractions: tuple[float, float, float] = (0.2, 0.4, 0.4)) -> dict[str, list[PreferencePair]]:
    """The paper's deterministic SFT / reward-model / PPO split (20 / 40 / 40 by default)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_sft = round(fractions[0] * len(pairs))
    n_rm = round(fractions[1] * len(pairs))
    pick = lambda idx: [pairs[i] for i in idx]  # noqa: E731
    return {"sft": pick(order[:n_sft]), "rm": pick(order[n_sft:n_sft + n_rm]), "ppo": pick(order[n_sft + n_rm:])}
