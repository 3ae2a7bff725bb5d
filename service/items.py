"""Turn request items into discriminator inputs, checking them; errors name the item and the field.

Text is tokenized with `tlcr.core.tokenization.encode_prompt_response` (the split every stage uses); token ids are
checked against the vocabulary; the caller's response offsets become a `SpanAlignment` from the
discriminator's response tokens to the caller's. Too-long items are refused (422) unless truncation of
the prompt's start was opted into.

Tokenizing costs time and memory in proportion to the text, so text that cannot fit is refused before
it is tokenized: no token of the discriminator's vocabulary spans more characters than its longest
vocabulary entry (byte-level BPE and SentencePiece entries spell at least the characters they cover), so
a text of more than max_length × that many characters has more than max_length tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from tlcr.core.data.pairs import split_transcript
from tlcr.core.tokenization import encode_prompt_response, encode_prompt_response_spans
from tlcr.service.alignment import SpanAlignment
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem
from tlcr.service.scorer import Encoded

Truncation = Literal["none", "prompt_left"]


class ItemError(ValueError):
    """A request item the service cannot score; the message starts with the item's location."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}")


@dataclass(frozen=True)
class Limits:
    vocab_size: int
    max_length: int
    truncation: Truncation = "none"
    max_chars: int | None = None  # more characters than this cannot fit in max_length tokens
    max_offsets: int = 16_384  # caller token spans per item


def longest_token_chars(tokenizer: PreTrainedTokenizerBase) -> int:
    """Characters of the longest vocabulary entry: an upper bound on the characters one token covers."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def _bound_text(prompt: str, response: str, limits: Limits, where: str) -> str:
    """The prompt to tokenize, or ItemError for text too long to fit, checked without tokenizing."""
    if limits.max_chars is None:
        return prompt
    bound = (f"more than {limits.max_chars} characters cannot fit in the discriminator's max_length of "
             f"{limits.max_length} tokens")
    if len(response) > limits.max_chars:
        raise ItemError(f"{where}.response", f"has {len(response)} characters; {bound}")
    if limits.truncation == "none":
        if len(prompt) + len(response) > limits.max_chars:
            raise ItemError(where, f"prompt + response have {len(prompt) + len(response)} characters; {bound}; "
                                   "shorten the prompt, or start the service with --truncation prompt_left")
        return prompt
    # prompt_left keeps at most max_length prompt tokens, all within its last max_chars characters; twice
    # that keeps the cut's effect on tokenization (one word) far from the tokens kept.
    return prompt[-2 * limits.max_chars:]


@dataclass
class PreparedItem:
    encoded: Encoded
    alignment: SpanAlignment | None = None  # discriminator response tokens → the caller's tokens
    caller_tokens: list[str] | None = None  # the caller's token strings, when offsets were given
    dropped_prompt_tokens: int = 0


def _check_ids(ids: list[int], location: str, vocab_size: int) -> None:
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = next(i for i, t in enumerate(ids) if not 0 <= t < vocab_size)
        raise ItemError(f"{location}[{bad}]",
                        f"token id {ids[bad]} is outside the discriminator's vocabulary [0, {vocab_size})")


def fit_length(encoded: Encoded, limits: Limits, location: str) -> tuple[Encoded, int]:
    """The item within max_length, or ItemError; with truncation 'prompt_left', the prompt's start goes."""
    if encoded.length <= limits.max_length:
        return encoded, 0
    excess = (f"{encoded.length} tokens (prompt {len(encoded.prompt_ids)} + response "
              f"{len(encoded.response_ids)}) exceed the discriminator's max_length of {limits.max_length}")
    if limits.truncation == "none":
        raise ItemError(location, f"{excess}; shorten the prompt, or start the service with "
                                  "--truncation prompt_left to drop the prompt's first tokens")
    if len(encoded.response_ids) > limits.max_length:
        raise ItemError(location, f"{excess}, and the response alone is longer than max_length, "
                                  "so truncating the prompt cannot help")
    keep = limits.max_length - len(encoded.response_ids)
    dropped = len(encoded.prompt_ids) - keep
    return Encoded(encoded.prompt_ids[dropped:], encoded.response_ids), dropped


def response_offsets(tokenizer: PreTrainedTokenizerBase, response: str,
                     prompt: str = "") -> tuple[list[int], list[tuple[int, int]]]:
    """The discriminator's response token ids (after `prompt`, as every stage splits them) with their
    [start, end) character spans in `response`."""
    pair = encode_prompt_response_spans(tokenizer, prompt, response)
    return pair.response_ids, pair.response_spans


def prepare_token_item(index: int, item: TokenRewardItem, tokenizer: PreTrainedTokenizerBase,
                       limits: Limits, return_tokens: bool = False) -> PreparedItem:
    where = f"items[{index}]"
    if item.prompt_token_ids is not None and item.response_token_ids is not None:
        _check_ids(item.prompt_token_ids, f"{where}.prompt_token_ids", limits.vocab_size)
        _check_ids(item.response_token_ids, f"{where}.response_token_ids", limits.vocab_size)
        encoded, dropped = fit_length(Encoded(list(item.prompt_token_ids), list(item.response_token_ids)),
                                      limits, where)
        return PreparedItem(encoded, dropped_prompt_tokens=dropped)
    assert item.prompt is not None and item.response is not None  # the schema guarantees one input form
    if item.response_offsets is not None and len(item.response_offsets) > limits.max_offsets:
        raise ItemError(f"{where}.response_offsets", f"{len(item.response_offsets)} spans exceed the limit of "
                                                     f"{limits.max_offsets} per item (--max-offsets-per-item)")
    prompt = _bound_text(item.prompt, item.response, limits, where)
    prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, item.response)
    if not response_ids:
        raise ItemError(f"{where}.response", "tokenizes to no tokens")
    encoded, dropped = fit_length(Encoded(prompt_ids, response_ids), limits, where)
    if item.response_offsets is None:
        return PreparedItem(encoded, dropped_prompt_tokens=dropped)
    try:
        offset_ids, spans = response_offsets(tokenizer, item.response, item.prompt)
    except ValueError as exc:
        raise ItemError(f"{where}.response_offsets", str(exc)) from exc
    if offset_ids != response_ids:  # cannot happen with one tokenizer; guards the alignment's premise
        raise ItemError(where, "the tokenizer gave different ids with and without offsets")
    caller_spans = [(int(s), int(e)) for s, e in item.response_offsets]
    caller_tokens = None
    if return_tokens:
        # Overlapping spans could repeat the response many times over in the reply: allow 8 copies.
        chars = sum(e - s for s, e in caller_spans)
        if chars > 8 * len(item.response) + 1024:
            raise ItemError(f"{where}.response_offsets",
                            f"the spans cover {chars} characters of a {len(item.response)}-character response; "
                            "too much overlap to return their tokens (send return_tokens: false)")
        caller_tokens = [item.response[s:e] for s, e in caller_spans]
    return PreparedItem(encoded, SpanAlignment(spans, caller_spans), caller_tokens, dropped)


def prepare_sequence_item(index: int, item: SequenceRewardItem, tokenizer: PreTrainedTokenizerBase,
                          limits: Limits) -> Encoded:
    prompt = _bound_text(item.prompt, item.response, limits, f"items[{index}]")
    prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, item.response)
    return fit_length(Encoded(prompt_ids, response_ids), limits, f"items[{index}]")[0]


def split_query(index: int, query: str, prompt: str | None) -> tuple[str, str]:
    """OpenRLHF sends full texts: cut off the given prompt, else split at the last Assistant turn."""
    if prompt is not None:
        if not query.startswith(prompt):
            raise ItemError(f"query[{index}]", f"does not start with prompts[{index}]")
        response = query[len(prompt):]
    else:
        try:
            prompt, response = split_transcript(query)
        except ValueError as exc:
            raise ItemError(f"query[{index}]",
                            f"{exc}; send 'prompts' alongside 'query' to mark the response") from exc
    if not response:
        raise ItemError(f"query[{index}]", "has an empty response: there is no response token to reward")
    return prompt, response
