"""The one tokenization convention every stage uses (labels, discriminator training, service, PPO).

A prompt + response is tokenized **jointly** (`tokenizer(prompt + response, add_special_tokens=False)`)
and split at the prompt/response boundary by character offsets: the response's tokens are the joint
encoding's tokens that end after the prompt's last character. So a response is tokenized the way it
reads in context, the way a policy generates it after the prompt. Tokenizing a response alone differs
for SentencePiece tokenizers with the legacy "▁" prefix (Llama 2): `" Hello"` alone is
`["▁", "▁Hello"]`, a spurious "▁" token that never occurs after a prompt.

A token that straddles the boundary (the tokenizer merges the prompt's last characters with the
response's first ones, e.g. Qwen2's ":\\n") belongs to the response; then the prompt ids are the joint
encoding's tokens before it, which differ from the prompt tokenized alone (what a policy conditions on).
HH-RLHF prompts end with "Assistant:" and responses start with a space, which no tokenizer here merges.

For tokens a policy *generated* (not necessarily the tokenizer's own encoding of their text),
`decode_with_offsets` gives the text and each token's character span by decoding growing prefixes after
the prompt's last tokens; a token holding only part of a multi-byte character (byte-level BPE, byte
fallback) shares that character's span with the token that completes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

Span = tuple[int, int]

# Prompt tokens decoded before a policy's response: enough for a SentencePiece "▁" to keep its space and
# for a multi-byte character split across the boundary; not the whole prompt (decoding is quadratic).
CONTEXT_TOKENS = 8
REPLACEMENT_CHAR = "\ufffd"


class TokenizationError(ValueError):
    """A text cannot be tokenized under the convention; the message says why."""


@dataclass(frozen=True)
class PromptResponseIds:
    prompt_ids: list[int]
    response_ids: list[int]
    response_spans: list[Span]  # each response token's [start, end) in the response string (clipped to it)


def _split_at(ids: Sequence[int], offsets: Sequence[Sequence[int]], boundary: int,
              response_length: int) -> PromptResponseIds:
    split = len(ids)
    for i, (_, end) in enumerate(offsets):
        if end > boundary:
            split = i
            break
    spans = [(max(int(s) - boundary, 0), min(max(int(e) - boundary, 0), response_length))
             for s, e in offsets[split:]]
    return PromptResponseIds(list(ids[:split]), list(ids[split:]), spans)


def encode_prompt_response_spans(tokenizer: PreTrainedTokenizerBase, prompt: str,
                                 response: str) -> PromptResponseIds:
    """Prompt and response ids of the joint encoding, with the response tokens' character spans.

    Needs a fast tokenizer (character offsets); `encode_prompt_response` also works with slow ones.
    """
    return encode_prompt_response_batch(tokenizer, [prompt], [response])[0]


def encode_prompt_response_batch(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                                 responses: Sequence[str]) -> list[PromptResponseIds]:
    """`encode_prompt_response_spans` for many pairs in one batched tokenizer call."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    if not tokenizer.is_fast:
        raise TokenizationError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer and gives no "
                                "character offsets; save it with a tokenizer.json (a fast tokenizer)")
    if not prompts:
        return []
    enc = tokenizer([p + r for p, r in zip(prompts, responses, strict=True)], add_special_tokens=False,
                    return_offsets_mapping=True)
    return [_split_at(ids, offsets, len(p), len(r))
            for ids, offsets, p, r in zip(enc["input_ids"], enc["offset_mapping"], prompts, responses, strict=True)]


def encode_prompt_response(tokenizer: PreTrainedTokenizerBase, prompt: str,
                           response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of `prompt + response` tokenized jointly, split at the boundary.

    With an empty response, the prompt's ids are the prompt tokenized alone (what a policy conditions on).
    A slow tokenizer (no offsets) is split where the prompt tokenized alone ends, when it is a prefix.
    """
    if tokenizer.is_fast:
        pair = encode_prompt_response_spans(tokenizer, prompt, response)
        return pair.prompt_ids, pair.response_ids
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    joint = list(tokenizer(prompt + response, add_special_tokens=False)["input_ids"])
    if joint[:len(prompt_ids)] != prompt_ids:
        raise TokenizationError(f"slow tokenizer {tokenizer.name_or_path!r} merges the prompt's last token with "
                                "the response; a fast tokenizer is needed to split them by character offsets")
    return prompt_ids, joint[len(prompt_ids):]


def _agreement(prefix: str, full: str) -> int:
    """Characters of `prefix` that agree with the start of `full` (trailing partial characters excluded)."""
    if full.startswith(prefix):
        return len(prefix)
    stripped = prefix.rstrip(REPLACEMENT_CHAR)
    if full.startswith(stripped):
        return len(stripped)
    n = 0
    for a, b in zip(prefix, full, strict=False):
        if a != b:
            break
        n += 1
    return n


def decode_with_offsets(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int],
                        context_ids: Sequence[int] = ()) -> tuple[str, list[Span]]:
    """The text of generated `token_ids` (after `context_ids`, the prompt) and each token's [start, end).

    Decodes after the last `CONTEXT_TOKENS` context tokens, so a SentencePiece "▁" keeps its leading
    space as it does inside the prompt + response. A token whose bytes end inside a multi-byte character
    (an emoji or CJK character split by byte-level BPE or byte fallback) spans that character together
    with the token that completes it (spans may overlap). A token that decodes to nothing (a special
    token) gets an empty span. Spans are non-decreasing and cover the text.

    Tokens are decoded incrementally over a short sliding window (linear in the response length, as
    streaming detokenizers do); if the pieces do not add up to the whole decoded text (a decoder whose
    output for earlier tokens depends on later ones), growing prefixes are decoded instead (quadratic).
    """
    ids = [int(t) for t in token_ids]
    if not ids:
        return "", []
    context = [int(t) for t in context_ids][-CONTEXT_TOKENS:]
    head, whole = tokenizer.batch_decode([context, context + ids], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
    text = whole[_agreement(head, whole):]
    incremental = _incremental_progress(tokenizer, context, ids, text)
    committed, pending = incremental if incremental is not None else _prefix_progress(tokenizer, context, ids)
    return text, _spans(committed, pending, len(text))


def _decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))


def _incremental_progress(tokenizer: PreTrainedTokenizerBase, context: list[int], ids: list[int],
                          text: str) -> tuple[list[int], list[bool]] | None:
    """(characters of `text` settled after each token, whether each token leaves a partial character), or
    None when the incremental pieces disagree with `text`."""
    seq = context + ids
    window_start, settled_end = 0, len(context)  # seq[window_start:settled_end] decodes to settled text
    settled_text = _decode(tokenizer, seq[window_start:settled_end])
    length = 0  # characters of `text` settled up to settled_end
    committed: list[int] = []
    pending: list[bool] = []
    for end in range(len(context) + 1, len(seq) + 1):
        new_text = _decode(tokenizer, seq[window_start:end])
        if not new_text.startswith(settled_text):
            return None
        piece = new_text[len(settled_text):]
        if text.startswith(piece, length):
            length += len(piece)
            pending.append(False)
            committed.append(length)
            if piece:
                window_start, settled_end = settled_end, end
                settled_text = _decode(tokenizer, seq[window_start:settled_end])
        elif piece.endswith(REPLACEMENT_CHAR):  # a character still incomplete; what precedes it is settled
            whole_chars = piece.rstrip(REPLACEMENT_CHAR)
            ahead = len(whole_chars) if text.startswith(whole_chars, length) else 0
            pending.append(True)
            committed.append(max(committed[-1] if committed else 0, length + ahead))
        else:
            return None
    if length != len(text) and not pending[-1]:
        return None
    return committed, pending


def _prefix_progress(tokenizer: PreTrainedTokenizerBase, context: list[int],
                     ids: list[int]) -> tuple[list[int], list[bool]]:
    """As `_incremental_progress`, by decoding every prefix (quadratic; for unusual decoders)."""
    texts = tokenizer.batch_decode([context + ids[:k] for k in range(len(ids) + 1)], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    full = texts[-1]
    base = _agreement(texts[0], full)
    committed: list[int] = []
    pending: list[bool] = []
    last = 0
    for prefix in texts[1:]:
        agree = _agreement(prefix, full)
        last = max(last, agree - base)
        committed.append(last)
        pending.append(len(prefix) > agree)
    return committed, pending


def _spans(committed: list[int], pending: list[bool], length: int) -> list[Span]:
    """Token k spans [settled before it, settled after it), or, when it leaves a partial character, up to
    where that character is completed (the end of the text if never)."""
    spans: list[Span] = []
    complete_at = length
    for k in range(len(committed) - 1, -1, -1):  # backwards: where each partial character is completed
        if not pending[k]:
            complete_at = committed[k]
        start = committed[k - 1] if k else 0
        spans.append((start, complete_at if pending[k] else committed[k]))
    spans.reverse()
    return spans


def require_special_tokens(tokenizer: PreTrainedTokenizerBase, source: str, *, eos: bool = False,
                           pad: bool = False, purpose: str = "this stage") -> None:
    """Raise TokenizationError naming the special tokens `purpose` needs that `tokenizer` lacks."""
    missing = [name for name, needed, token_id in (("EOS", eos, tokenizer.eos_token_id),
                                                   ("pad", pad, tokenizer.pad_token_id))
               if needed and token_id is None]
    if missing:
        raise TokenizationError(f"tokenizer {source!r} has no {' and no '.join(missing)} token, which {purpose} "
                                f"needs; set {' and '.join(m.lower() + '_token' for m in missing)} in its "
                                "tokenizer_config.json")


_FINGERPRINT_PROBES = ("Hello, world!", "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
                       " tr\u00e8s  \u00fcber \u4f60\u597d")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of what a tokenizer does (vocabulary, special tokens, ids of a few probe texts), so two
    processes can tell whether they tokenize alike without sharing a filesystem path or a Hub name."""
    import hashlib
    import json

    summary = {"vocab": sorted(tokenizer.get_vocab().items()),
               "special": sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()),
               "probes": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in _FINGERPRINT_PROBES]}
    return hashlib.sha256(json.dumps(summary, ensure_ascii=False).encode()).hexdigest()[:32]

