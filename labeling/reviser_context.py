"""Whether a pair's request fits the reviser's context window, known before it is sent.

The context length comes from `--reviser-context-length`, else from the endpoint's `GET /v1/models`
(vLLM reports `max_model_len` per model; OpenAI reports none, and then nothing is checked). A request
needs its prompt (the instruction, the dialogue and both responses, as chat messages) plus the
completion budget (`--max-tokens`, at least one token) to fit.

The prompt is counted with the reviser's tokenizer when there is one (`--reviser-tokenizer`, else the
model's `root` from `/v1/models` when it is a local folder here, as when vLLM serves a local path), through
its chat template when it has one (without one, the template's own tokens are not counted). Otherwise
the count is estimated as UTF-8 bytes / ESTIMATE_BYTES_PER_TOKEN, a lower bound: on the 2,303 HH-RLHF
harmless-base test pairs, the whole request text took at most 4.44 (Llama 2), 4.71 (GPT-2) and 5.11 (Qwen2)
bytes per token. Either way a pair is refused here only when it cannot fit; one that the count lets through
and the endpoint refuses is recorded with the endpoint's 400 and its message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.instruction import build_messages

if TYPE_CHECKING:
    import openai
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TOO_LONG_FOR_REVISER = "too_long_for_reviser"
ESTIMATE_BYTES_PER_TOKEN = 8
MODELS_TIMEOUT_S = 30.0  # a server that does not answer its model list must not hold the run up for long


@dataclass(frozen=True)
class PromptBudget:
    """The reviser's context length and completion budget, and how prompts are counted."""

    context_length: int
    max_tokens: int | None
    tokenizer: PreTrainedTokenizerBase | None = None
    tokenizer_name: str | None = None

    def __post_init__(self) -> None:
        if self.context_length < 1:
            raise ValueError(f"the reviser's context length must be >= 1, got {self.context_length}")

    def prompt_tokens(self, pair: PreferencePair) -> int:
        messages = build_messages(pair)
        if self.tokenizer is None:
            return math.ceil(sum(len(m["content"].encode("utf-8")) for m in messages) / ESTIMATE_BYTES_PER_TOKEN)
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return len(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])
        encoded = self.tokenizer([m["content"] for m in messages], add_special_tokens=False)["input_ids"]
        return sum(len(ids) for ids in encoded)

    def too_long(self, pair: PreferencePair) -> str | None:
        """Why `pair` cannot fit ("1,204 prompt tokens ... > context length 512"), or None."""
        prompt = self.prompt_tokens(pair)
        completion = self.max_tokens or 1
        if prompt + completion <= self.context_length:
            return None
        how = (f"counted with {self.tokenizer_name}" if self.tokenizer is not None
               else f"at least, estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}")
        budget = f"--max-tokens {self.max_tokens}" if self.max_tokens else "1 completion token"
        return (f"{prompt:,} prompt tokens ({how}) + {budget} > the reviser's context length "
                f"{self.context_length:,}")


async def reported_model(client: openai.AsyncOpenAI, model: str) -> dict[str, object] | None:
    """The endpoint's `/v1/models` entry for `model`, or None when it cannot be had (logged)."""
    import openai

    try:
        listing = await asyncio.wait_for(client.get("/models", cast_to=object), MODELS_TIMEOUT_S)
    except (openai.APIError, ValueError, asyncio.TimeoutError) as exc:
        log.info("the endpoint's model list is unavailable (%s): the reviser's context length is unknown",
                 exc.__class__.__name__)
        return None
    entries = listing.get("data") if isinstance(listing, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            return entry
    log.info("the endpoint's model list has no %r: the reviser's context length is unknown", model)
    return None


def local_tokenizer_dir(entry: dict[str, object] | None) -> str | None:
    """The model's `root` in its `/v1/models` entry when it is a local folder with a tokenizer (vLLM serving
    a local path on this machine); None otherwise (a Hub id is not downloaded unasked)."""
    root = entry.get("root") if entry else None
    if not isinstance(root, str) or not root:
        return None
    path = Path(root)
    if path.is_dir() and any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model",
                                                                   "tokenizer_config.json")):
        return root
    return None


async def prompt_budget(client: openai.AsyncOpenAI, model: str, *, max_tokens: int | None,
                        context_length: int | None = None, tokenizer: str | None = None) -> PromptBudget | None:
    """The budget of `model` at the endpoint of `client` (the options first, then `/v1/models`); None when
    its context length is unknown. Raises ValueError when `tokenizer` (given explicitly) cannot be loaded."""
    from tlcr.core.models import ModelLoadError, load_tokenizer

    entry = None
    if context_length is None or tokenizer is None:
        entry = await reported_model(client, model)
    length = context_length or reported_context_length(entry)
    if length is None:
        log.info("the reviser's context length is unknown (the endpoint does not report it): pairs are sent "
                 "unchecked; --reviser-context-length N checks them")
        return None
    name = tokenizer or local_tokenizer_dir(entry)
    tok = None
    if name is not None:
        try:
            tok = load_tokenizer(name)
            tok.model_max_length = sys.maxsize  # it counts the prompt, which may be over any limit: no warning
        except ModelLoadError as exc:
            if tokenizer is not None:
                raise ValueError(f"--reviser-tokenizer: {exc}") from exc
            log.warning("cannot load the reviser's tokenizer from %s (%s): estimating prompt lengths", name, exc)
            name = None
    budget = PromptBudget(length, max_tokens, tok, name)
    log.info("the reviser's context length is %d tokens (%s); prompts %s", length,
             "--reviser-context-length" if context_length else "reported by the endpoint",
             f"counted with {name}" if tok is not None else
             f"estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}")
    return budget


def reported_context_length(entry: dict[str, object] | None) -> int | None:
    value = entry.get("max_model_len") if entry else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
