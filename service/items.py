"""Turn request items into discriminator inputs, checking them; errors name the item and the field.

Text is tokenized with `tlcr.tokenization.encode_prompt_response` (the split every stage uses); token ids are
checked against the vocabulary; the caller's response offsets become a `SpanAlignment` from the
discriminator's response tokens to the caller's. Too-long items are refused (422) unless truncation of
the prompt's start was opted into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from service.alignment import SpanAlignment
from service.schemas import SequenceRewardItem, TokenRewardItem
from service.scorer import Encoded
from tlcr.data.pairs import split_transcript
from tlcr.tokenization import encode_prompt_response, encode_prompt_response_spans

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
                       limits: Limits) -> PreparedItem:
    where = f"items[{index}]"
    if item.prompt_token_ids is not None and item.response_token_ids is not None:
        _check_ids(item.prompt_token_ids, f"{where}.prompt_token_ids", limits.vocab_size)
        _check_ids(item.response_token_ids, f"{where}.response_token_ids", limits.vocab_size)
        encoded, dropped = fit_length(Encoded(list(item.prompt_token_ids), list(item.response_token_ids)),
                                      limits, where)
        return PreparedItem(encoded, dropped_prompt_tokens=dropped)
    assert item.prompt is not None and item.response is not None  # the schema guarantees one input form
    prompt_ids, response_ids = encode_prompt_response(tokenizer, item.prompt, item.response)
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
    return PreparedItem(encoded, SpanAlignment(spans, caller_spans),
                        [item.response[s:e] for s, e in caller_spans], dropped)


def prepare_sequence_item(index: int, item: SequenceRewardItem, tokenizer: PreTrainedTokenizerBase,
                          limits: Limits) -> Encoded:
    prompt_ids, response_ids = encode_prompt_response(tokenizer, item.prompt, item.response)
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
