"""The text each response token adds to the decoded response (the heatmap's and `return_tokens`' labels)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def _prefix_token_strings(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], window: int | None) -> list[str]:
    """Each token's new text, decoding from at most `window` tokens back (None: from the start)."""
    pieces: list[str] = []
    start = done = 0  # ids[start:done] were decoded into text already handed out
    for end in range(1, len(ids) + 1):
        before = tokenizer.decode(list(ids[start:done])) if done > start else ""
        text = tokenizer.decode(list(ids[start:end]))
        if text.endswith("\ufffd") and end < len(ids):
            pieces.append("")  # incomplete character: wait for the token that finishes it
            continue
        pieces.append(text[len(before):] if text.startswith(before) else text)
        if window is not None:
            start, done = max(0, end - window), end
        else:
            done = end
    return pieces


def token_strings(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded response; they concatenate to the whole response.

    Decoding tokens one by one garbles characters split over several byte-level tokens ("" or "�");
    instead each token gets the new text of the decoded prefix, and a token that ends mid-character
    gets "" while the token that completes the character carries it. Prefixes are decoded from a few
    tokens back (linear time); if that ever disagrees with decoding the whole response, every prefix is
    decoded from the start (quadratic, bounded by max_length).
    """
    pieces = _prefix_token_strings(tokenizer, ids, window=4)
    if "".join(pieces) == tokenizer.decode(list(ids)):
        return pieces
    return _prefix_token_strings(tokenizer, ids, window=None)
