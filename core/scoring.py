"""Forward passes that score (prompt, response) token sequences, shared by training, evaluation and serving.

Why a shared module: transformers 5 numbers positions 0..T-1 whatever the attention mask says (checked
for Llama and GPT-2). Rotary models (Llama) only see relative positions, so a left-padded row still
scores the same; models with absolute position embeddings (GPT-2 and the like) do not (a tiny GPT-2
moved D by 0.02 between left and right padding). Every forward here passes ``position_ids`` derived
from the attention mask, which makes a row's scores independent of padding side and of its batch
companions for every architecture. The reward service must score through these functions (or pass
position ids the same way) to match what the discriminator was trained and evaluated with.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


def fit_prompt_response(prompt_ids: Sequence[int], response_ids: Sequence[int],
                        max_length: int) -> tuple[list[int], list[int]]:
    """Cut (prompt, response) to at most `max_length` tokens in total.

    The prompt loses tokens from its left (its end, next to the response, matters most); if the response
    alone is too long, it then loses tokens from its right (the scored prefix keeps its exact context).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    response = list(response_ids[:max_length])
    prompt_room = max_length - len(response)
    prompt = list(prompt_ids[len(prompt_ids) - prompt_room:]) if prompt_room > 0 else []
    return prompt, response


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens; padding gets 0 (its output is never read)."""
    mask = attention_mask.long()
    return ((mask.cumsum(dim=-1) - 1) * mask).clamp(min=0)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_token_id: int,
                  padding_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of a batch of token-id lists padded to the longest one."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max((len(s) for s in sequences), default=0)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        cols = slice(0, len(seq)) if padding_side == "right" else slice(width - len(seq), width)
        input_ids[row, cols] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, cols] = 1
    return input_ids, attention_mask


def _forward_with_mask_positions(model: PreTrainedModel, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's logits on its own device, with position ids from the attention mask (see above)."""
    device = next(model.parameters()).device
    attention_mask = attention_mask.to(device)
    return model(input_ids=input_ids.to(device), attention_mask=attention_mask,
                 position_ids=position_ids_from_attention_mask(attention_mask)).logits


@torch.inference_mode()
def token_probabilities(model: PreTrainedModel, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> torch.Tensor:
    """D = sigmoid(logit) of a one-logit token classifier at every position, as float32 [batch, length].

    Position ids come from the attention mask, so left- and right-padded batches give the same values
    at real tokens. Values at padding positions are meaningless.
    """
    logits = _forward_with_mask_positions(model, input_ids, attention_mask)
    if logits.shape[-1] != 1:
        raise ValueError(f"expected a one-logit token classifier, got {logits.shape[-1]} logits per token")
    return torch.sigmoid(logits[..., 0].float())


def response_token_probabilities(model: PreTrainedModel, pad_token_id: int,
                                 items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                                 max_length: int, batch_size: int = 16) -> list[list[float]]:
    """D for each response token of each (prompt_ids, response_ids) item, in input order.

    Items are cut with `fit_prompt_response`; a response cut short yields fewer probabilities than it
    has tokens (the first ones). Items are batched by length to waste little compute on padding.
    """
    fitted = [fit_prompt_response(p, r, max_length) for p, r in items]
    order = sorted(range(len(fitted)), key=lambda i: len(fitted[i][0]) + len(fitted[i][1]))
    out: list[list[float]] = [[] for _ in fitted]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = pad_sequences([fitted[i][0] + fitted[i][1] for i in chunk], pad_token_id)
        probs = token_probabilities(model, input_ids, attention_mask).cpu()
        for row, i in enumerate(chunk):
            prompt, response = fitted[i]
            out[i] = probs[row, len(prompt):len(prompt) + len(response)].tolist()
    return out


@torch.inference_mode()
def sequence_scores(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar score of a one-label sequence classifier for each row, as float32 [batch].

    The classifier reads each row's rightmost non-padding token, so rows may be padded on either side.
    """
    logits = _forward_with_mask_positions(model, input_ids, attention_mask)
    if logits.shape[-1] != 1:
        raise ValueError(f"expected a one-label sequence classifier, got {logits.shape[-1]} labels")
    return logits[:, 0].float()


def prompt_response_scores(model: PreTrainedModel, pad_token_id: int,
                           items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                           max_length: int, batch_size: int = 16) -> list[float]:
    """Sequence-classifier score of each (prompt_ids, response_ids) item, in input order."""
    fitted = [fit_prompt_response(p, r, max_length) for p, r in items]
    order = sorted(range(len(fitted)), key=lambda i: len(fitted[i][0]) + len(fitted[i][1]))
    out = [0.0] * len(fitted)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention_mask = pad_sequences([fitted[i][0] + fitted[i][1] for i in chunk], pad_token_id)
        scores = sequence_scores(model, input_ids, attention_mask).cpu().tolist()
        for row, i in enumerate(chunk):
            out[i] = scores[row]
    return out


# --- prefix sharing: a prompt's states computed once for all of its responses -------------------------
#
# A causal model's states at prompt positions do not depend on what follows, so n responses to one prompt
# need the prompt forwarded once: its keys and values (the KV cache) are then attended to by each
# response, whose tokens are forwarded at positions len(prompt), len(prompt) + 1, ...

ATTENTION_FOR_SHARING = ("sdpa", "eager")  # implementations that take a 2D mask with holes over the cache


class PrefixSharingUnsupported(RuntimeError):
    """The model cannot score with a shared prompt cache; score it the ordinary way."""


def prefix_sharing_problem(model: PreTrainedModel) -> str | None:
    """Why `model` cannot share prompt states (None: it can, as far as its configuration tells)."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in ATTENTION_FOR_SHARING:
        return f"attention implementation {implementation!r} (sharing needs one of {ATTENTION_FOR_SHARING})"
    if _cache_argument(model) is None:
        return f"{type(model).__name__}.forward takes no KV cache"
    text_config = model.config.get_text_config(decoder=True)
    if getattr(text_config, "sliding_window", None) or any(
            kind != "full_attention" for kind in (getattr(text_config, "layer_types", None) or [])):
        return "sliding-window or non-attention layers (a prompt's states would depend on the window)"
    return None


def _cache_argument(model: PreTrainedModel) -> str | None:
    """The forward's name for the KV cache: `cache` (transformers >= 5.x) or `past_key_values`."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


class _SharedPromptLayer(DynamicLayer):
    """One layer's prompt keys/values, one row per distinct prompt, handed to each response row on read.

    The rows are gathered per layer as the forward reaches it and not stored, so the expanded copy of
    the prompt states lives for one layer's attention only.
    """

    def __init__(self, prompt_layer: DynamicLayer, rows: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = prompt_layer.keys, prompt_layer.values
        self.device = prompt_layer.keys.device
        self.is_initialized = True
        self.rows = rows.to(self.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.cat([self.keys.index_select(0, self.rows), key_states], dim=-2),
                torch.cat([self.values.index_select(0, self.rows), value_states], dim=-2))


@torch.inference_mode()
def prefix_shared_token_probabilities(model: PreTrainedModel, pad_token_id: int,
                                      prompts: Sequence[Sequence[int]], prompt_of_row: Sequence[int],
                                      responses: Sequence[Sequence[int]]) -> torch.Tensor:
    """D at each response token, float32 [rows, longest response], each distinct prompt forwarded once.

    `prompts` are distinct and non-empty; row r scores `responses[r]` after `prompts[prompt_of_row[r]]`.
    Values equal `token_probabilities` on the concatenated rows (to float rounding: the same sums in
    another order). Raises `PrefixSharingUnsupported` when the model's cache is not a plain KV cache.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prefix sharing needs non-empty prompts")
    argument = _cache_argument(model)
    if argument is None:
        raise PrefixSharingUnsupported(f"{type(model).__name__}.forward takes no KV cache")
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = pad_sequences(prompts, pad_token_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    cache = DynamicCache(config=model.config)
    model(input_ids=prompt_ids, attention_mask=prompt_mask,
          position_ids=position_ids_from_attention_mask(prompt_mask), use_cache=True, **{argument: cache})
    if not cache.layers or any(type(layer) is not DynamicLayer or not layer.is_initialized
                               for layer in cache.layers):
        raise PrefixSharingUnsupported(f"{type(model).__name__} keeps a cache that is not a plain KV cache")
    rows = torch.as_tensor(list(prompt_of_row), dtype=torch.long, device=device)
    shared = Cache(layers=[_SharedPromptLayer(layer, rows) for layer in cache.layers])
    response_ids, response_mask = pad_sequences(responses, pad_token_id)
    response_ids, response_mask = response_ids.to(device), response_mask.to(device)
    prompt_lengths = prompt_mask.sum(dim=1).index_select(0, rows)
    # Each response token at its position in prompt + response; padding at 0 (its output is never read,
    # and a position past the model's range could not be embedded).
    positions = (prompt_lengths[:, None] + position_ids_from_attention_mask(response_mask)) * response_mask
    attention_mask = torch.cat([prompt_mask.index_select(0, rows), response_mask], dim=1)
    logits = model(input_ids=response_ids, attention_mask=attention_mask, position_ids=positions,
                   use_cache=True, **{argument: shared}).logits
    if logits.shape[-1] != 1:
        raise ValueError(f"expected a one-logit token classifier, got {logits.shape[-1]} logits per token")
    return torch.sigmoid(logits[..., 0].float())


def shared_prompt_rows(prompts: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Rows grouped by identical non-empty prompt, for the prompts that two or more rows share."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, prompt in enumerate(prompts):
        if prompt:
            groups.setdefault(tuple(prompt), []).append(row)
    return {key: rows for key, rows in groups.items() if len(rows) > 1}
