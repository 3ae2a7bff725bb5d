"""A preference pair (prompt, chosen, rejected) and how one is read from an HH-RLHF or {prompt, chosen, rejected}
record. Where pairs come from: `tlcr.core.data.sources`; the paper's split: `tlcr.core.data.splits`."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from tlcr.core.data.jsonl import DataError

ASSISTANT_MARKER = "\n\nAssistant:"


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
