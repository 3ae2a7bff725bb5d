"""Policy-side text helpers shared by the service's OpenRLHF route and the engine adapters (integrations/):
the policy's special tokens cut off the end of a decoded text, and the per-response summary of token rewards.
(A policy's sampled tokens as text with character spans: `tlcr.core.tokenization.decode_with_offsets`.)"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from transformers import PreTrainedTokenizerBase


def special_token_strings(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The text of every special token of a tokenizer (EOS, pad, chat-template markers such as <|im_end|>)."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return tuple(sorted({*tokenizer.all_special_tokens, *added} - {""}, key=len, reverse=True))


def strip_special_suffix(text: str, specials: Iterable[str]) -> str:
    """`text` without the special tokens (and whitespace between them) that end it.

    A policy's decoded sample ends with its EOS or template end marker ("...answer.<|im_end|>\\n<|endoftext|>");
    those are not part of the response a discriminator judges.
    """
    specials = [s for s in specials if s]
    while True:
        stripped = text.rstrip()
        for special in specials:
            if stripped.endswith(special):
                text = stripped[: -len(special)]
                break
        else:
            return text


def token_reward_summary(rewards: Sequence[float], probabilities: Sequence[float]) -> dict[str, float]:
    """Statistics of one response's token rewards, as logged by engines that take one scalar per sample.

    `tlcr/score` is the mean probability that a token is good, in [0, 1] (OpenRLHF's `scores` field).
    A response without tokens gets a neutral summary (score 0.5, everything else 0).
    """
    count = len(rewards)
    if len(probabilities) != count:
        raise ValueError(f"need one probability per reward, got {len(probabilities)} for {count}")
    if count == 0:
        return dict.fromkeys(SUMMARY_KEYS, 0.0) | {"tlcr/score": 0.5}
    return {
        "tlcr/score": sum(probabilities) / count,
        "tlcr/reward_sum": float(sum(rewards)),
        "tlcr/reward_mean": sum(rewards) / count,
        "tlcr/reward_min": float(min(rewards)),
        "tlcr/reward_max": float(max(rewards)),
        "tlcr/negative_token_fraction": sum(1 for r in rewards if r < 0) / count,
        "tlcr/response_tokens": float(count),
    }


SUMMARY_KEYS = ("tlcr/score", "tlcr/reward_sum", "tlcr/reward_mean", "tlcr/reward_min", "tlcr/reward_max",
                "tlcr/negative_token_fraction", "tlcr/response_tokens")
