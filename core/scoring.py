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

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel


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
