"""The versioned instruction and the parser of reviser answers (failures are recorded, never raised)."""

from __future__ import annotations

import pytest

from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.instruction import (
    EMPTY_OUTPUT,
    EMPTY_REVISION,
    INSTRUCTION_VERSION,
    MISSING_MARKER,
    REVISION_END,
    REVISION_START,
    TRUNCATED,
    build_messages,
    parse_revision,
    restore_outer_whitespace,
)

PAIR = PreferencePair(prompt="\n\nHuman: Capital of Kalo?\n\nAssistant:", chosen=" It is Tri.",
                      rejected=" Ugh. It is Ven.")


def test_messages_show_prompt_chosen_rejected_and_ask_for_minimal_edit_after_marker() -> None:
    messages = build_messages(PAIR)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Human: Capital of Kalo?" in user and "It is Tri." in user and "Ugh. It is Ven." in user
    assert REVISION_START in user and "edit distance" in user and "reasons" in user.lower()
    # the chosen reply is quoted as preferred, the rejected one as non-preferred
    assert user.index("It is Tri.") < user.index("Ugh. It is Ven.")
    assert INSTRUCTION_VERSION.startswith("tlcr-revise-v")


def test_parse_well_formed_answer_restores_the_rejected_outer_whitespace() -> None:
    answer = (f"<Start of Reasoning>\nRude and wrong.\n<End of Reasoning>\n\n"
              f"{REVISION_START}\nIt is Tri.\n{REVISION_END}")
    parsed = parse_revision(answer, PAIR.rejected)
    assert parsed.revision == " It is Tri."
    assert parsed.reasons == "Rude and wrong."
    assert parsed.failure is None


def test_parse_accepts_release_marker_and_missing_end_marker() -> None:
    parsed = parse_revision("reasons...\n<|Start Of Modified Response|>\nIt is Tri.", PAIR.rejected,
                            finish_reason="stop")
    assert parsed.revision == " It is Tri." and parsed.failure is None


def test_parse_takes_text_after_the_last_marker_and_ignores_text_after_end_marker() -> None:
    answer = (f"Format: {REVISION_START} ... {REVISION_END}\n{REVISION_START}\nIt is Tri.\n{REVISION_END}\n"
              "Hope this helps!")
    assert parse_revision(answer, PAIR.rejected).revision == " It is Tri."


@pytest.mark.parametrize(
    ("answer", "finish_reason", "failure"),
    [
        ("It is Tri.", "stop", MISSING_MARKER),
        (f"{REVISION_START}\n   \n{REVISION_END}", "stop", EMPTY_REVISION),
        (f"{REVISION_START}\nIt is", "length", TRUNCATED),
        ("", "stop", EMPTY_OUTPUT),
        (None, None, EMPTY_OUTPUT),
        (None, "content_filter", "content_filter"),
        ("I'm sorry, but I can't help with modifying this response.", "stop", "refusal"),
    ],
)
def test_parse_failures_are_reasons_not_exceptions(answer: str | None, finish_reason: str | None,
                                                   failure: str) -> None:
    parsed = parse_revision(answer, PAIR.rejected, finish_reason=finish_reason)
    assert parsed.revision is None and parsed.failure == failure


def test_restore_outer_whitespace() -> None:
    assert restore_outer_whitespace("b", " a \n") == " b \n"
    assert restore_outer_whitespace("b", "a") == "b"
    assert restore_outer_whitespace("b", "   ") == "b"
