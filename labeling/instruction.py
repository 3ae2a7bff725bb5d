"""The revision instruction (versioned in code) and a robust parser of the reviser's answer.

The reviser LLM sees the dialogue, the preferred (chosen) and the non-preferred (rejected) reply. It
gives brief reasons why the chosen reply is preferred, then the rejected reply minimally edited, after
an explicit marker. Changing the wording of the instruction changes its version, so cached answers of
an older instruction are never reused for a newer one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.filters import REFUSAL, looks_like_refusal

INSTRUCTION_VERSION = "tlcr-revise-v1"

REASONING_START = "<Start of Reasoning>"
REASONING_END = "<End of Reasoning>"
REVISION_START = "<Start of Modified Response>"
REVISION_END = "<End of Modified Response>"
PREFERRED_START = "<Start of Preferred Response>"
PREFERRED_END = "<End of Preferred Response>"
REJECTED_START = "<Start of Non-Preferred Response>"
REJECTED_END = "<End of Non-Preferred Response>"
DIALOGUE_START = "<Start of Dialogue>"
DIALOGUE_END = "<End of Dialogue>"

SYSTEM_MESSAGE = "You are a careful editor who improves assistant replies with the fewest possible edits."

INSTRUCTION = f"""<Start of Instruction>
Below are a dialogue between a human and an assistant, then a preferred and a non-preferred reply of \
the assistant to the dialogue's last human turn.
First, explain briefly why the preferred reply is preferred over the non-preferred one.
Then modify the non-preferred reply so that it becomes a preferred reply. Edit it minimally: keep every \
word, sentence and the structure that need no change, and make the edit distance between your modified \
reply and the non-preferred reply as low as possible. Do not replace it with the preferred reply unless \
that is the minimal edit.
Answer in exactly this format, and write nothing after the end marker:

{REASONING_START}
brief reasons
{REASONING_END}

{REVISION_START}
the modified non-preferred reply, and nothing else
{REVISION_END}
<End of Instruction>"""

# Markers are matched leniently: any case, optional '|' inside the brackets, any spacing. This also
# accepts the official TLCR release's '<|Start Of Modified Response|>'.
_REVISION_START_RE = re.compile(r"<\|?\s*start\s+of\s+modified\s+response\s*\|?>", re.IGNORECASE)
_REVISION_END_RE = re.compile(r"<\|?\s*end\s+of\s+modified\s+response\s*\|?>", re.IGNORECASE)
_REASONING_RE = re.compile(r"<\|?\s*start\s+of\s+reasoning\s*\|?>(.*?)(?:<\|?\s*end\s+of\s+reasoning\s*\|?>|$)",
                           re.IGNORECASE | re.DOTALL)

# Failure reasons recorded in a labelled record's `reason` (status "failed").
MISSING_MARKER = "missing_marker"
EMPTY_REVISION = "empty_revision"
TRUNCATED = "truncated_output"
EMPTY_OUTPUT = "empty_output"
CONTENT_FILTER = "content_filter"


def build_messages(pair: PreferencePair) -> list[dict[str, str]]:
    """Chat messages asking the reviser to minimally revise `pair.rejected` (instruction INSTRUCTION_VERSION)."""
    user = (f"{INSTRUCTION}\n\n{DIALOGUE_START}\n{pair.prompt.strip()}\n{DIALOGUE_END}\n\n"
            f"{PREFERRED_START}\n{pair.chosen.strip()}\n{PREFERRED_END}\n\n"
            f"{REJECTED_START}\n{pair.rejected.strip()}\n{REJECTED_END}")
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class ParsedRevision:
    """The revision (None on failure), the reviser's reasons if given, and the failure reason if any."""

    revision: str | None
    reasons: str | None = None
    failure: str | None = None


def restore_outer_whitespace(revision_core: str, rejected: str) -> str:
    """`revision_core` with the leading and trailing whitespace of `rejected`.

    Why: LLMs answer with stripped text while HH-style responses start with a space; without this the
    first token would differ (e.g. ' The' vs 'The') and be labelled as an edit the reviser never made.
    """
    stripped = rejected.strip()
    if not stripped:
        return revision_core
    lead = rejected[: len(rejected) - len(rejected.lstrip())]
    trail = rejected[len(rejected.rstrip()):]
    return f"{lead}{revision_core}{trail}"


def parse_revision(output: str | None, rejected: str, *, finish_reason: str | None = None) -> ParsedRevision:
    """Extract the revision from a reviser's answer; never raises.

    The revision is the text after the last start marker, up to the end marker if present, with the
    outer whitespace of the rejected response. A missing marker (reason "refusal" when the answer
    refuses the task), an empty revision, or an answer cut by the token limit before the end marker
    is a failure.
    """
    if output is None or not output.strip():
        return ParsedRevision(None, failure=CONTENT_FILTER if finish_reason == "content_filter" else EMPTY_OUTPUT)
    reasoning = _REASONING_RE.search(output)
    reasons = (reasoning.group(1).strip() or None) if reasoning else None
    starts = list(_REVISION_START_RE.finditer(output))
    if not starts:  # a reviser refusing the task usually skips the format too: say which it was
        return ParsedRevision(None, reasons, REFUSAL if looks_like_refusal(output) else MISSING_MARKER)
    body = output[starts[-1].end():]
    end = _REVISION_END_RE.search(body)
    if end is None and finish_reason == "length":
        return ParsedRevision(None, reasons, TRUNCATED)
    core = (body[: end.start()] if end else body).strip()
    if not core:
        return ParsedRevision(None, reasons, EMPTY_REVISION)
    return ParsedRevision(restore_outer_whitespace(core, rejected), reasons)
