"""Packed forwards: a batch of token sequences scored as one row without padding, prompts shared.

A padded batch computes every row to the longest one's length. On workload (b) of
`benchmarks/grpo_scoring.py` (4 prompts of 120–180 tokens × 8 responses of 30–90 per forward) padding was 28 %
of the tokens a prefix-shared padded forward computed (12 % on its workload (a), distinct prompts). Here all
sequences are laid end to end in a single row of N tokens, so every per-token layer (embeddings, norms,
projections, MLP, head) computes exactly the real tokens; only attention needs to know where one sequence
ends, and it gets that from a registered attention function (transformers' `AttentionInterface`) that
gathers each sequence's queries and keys into a small padded batch for `scaled_dot_product_attention` and
scatters the result back.

A prompt shared by several responses appears once in the row: its tokens attend causally to themselves,
and each response's tokens attend to all of the prompt and causally to their own response. Position ids
are each token's position in prompt + response, as in an unpacked forward. The model's own classes run
unchanged. A model that needs more than plain causal attention (sliding windows, soft-capping, attention
sinks, bidirectional attention) is refused (`PackingUnsupported`); one whose attention does not go through the
interface would mix sequences, which the service's probe batch at load detects (`TokenScorer.enable_packing`):
either way it is scored the padded way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from tlcr.core.scoring import shared_prompt_rows

PACKED_ATTENTION = "tlcr_packed"


class PackingUnsupported(RuntimeError):
    """The model cannot be scored packed; score it with padded batches."""


@dataclass(frozen=True)
class _Rows:
    """One `scaled_dot_product_attention` call: B rows of queries against their keys, padded."""

    query_index: torch.Tensor  # [B, Lq]: token index in the packed row of each query (padding: any token)
    key_index: torch.Tensor  # [B, Lk]: token index of each key
    # [B, 1, Lq, Lk] bool, True where the query attends to the key; None: plain causal, for rows without a
    # prefix (keys past a row's end come after all of its queries, so causality alone hides them)
    mask: torch.Tensor | None


@dataclass(frozen=True)
class _Layout:
    buckets: tuple[_Rows, ...]
    output_index: torch.Tensor  # [N]: where each token's attention output is in the buckets' outputs, flattened
    single: bool = False  # one sequence fills the row: plain causal attention, nothing to gather


_LAYOUT: ContextVar[_Layout | None] = ContextVar("tlcr_packed_layout", default=None)


def _rows(spans: Sequence[tuple[int, int, int, int]]) -> _Rows:
    """Spans (prefix start, prefix length, start, length): queries are tokens start..start+length-1; keys
    are the prefix (all visible) followed by those same tokens (causal)."""
    table = torch.tensor(spans, dtype=torch.long)
    prefix_start, prefix_len, start, length = table.unbind(1)
    q = torch.arange(int(length.max()))[None, :]
    k = torch.arange(int((prefix_len + length).max()))[None, :]
    query_index = start[:, None] + torch.minimum(q, length[:, None] - 1)
    own = k - prefix_len[:, None]
    # keys past a row's end repeat its last token: masked for every query, never read
    key_index = torch.where(own < 0, prefix_start[:, None] + k,
                            start[:, None] + torch.minimum(own, length[:, None] - 1))
    # a padded query row (q >= length) sees the same keys as the row's last query: never empty, never read
    visible = (own[:, None, :] < 0) | (own[:, None, :] <= torch.minimum(q, length[:, None] - 1)[:, :, None])
    return _Rows(query_index, key_index, visible[:, None] if bool(prefix_len.any()) else None)


# Rows of similar query length share an attention call, so short rows are not padded to the longest: on
# workload (b) of benchmarks/grpo_scoring.py (h512) its 6 batches took 7.8 s with up to 4 calls per kind
# and 8.7 s with one (medians of 3; 2 threads).
ROWS_PER_CALL, MAX_CALLS_PER_KIND = 8, 4


def _calls(spans: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """Spans split into at most MAX_CALLS_PER_KIND groups of similar query length (a padded query costs a row
    of attention against all keys)."""
    if len(spans) <= ROWS_PER_CALL:
        return [spans] if spans else []
    ordered = sorted(spans, key=lambda span: span[3])
    count = min(MAX_CALLS_PER_KIND, -(-len(ordered) // ROWS_PER_CALL))
    size = -(-len(ordered) // count)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _layout(self_spans: Sequence[tuple[int, int]], prefixed_spans: Sequence[tuple[int, int, int, int]],
            tokens: int, device: torch.device) -> _Layout:
    if len(self_spans) == 1 and not prefixed_spans:  # one sequence (e.g. one client's one item): no gathers
        return _Layout((), torch.empty(0, dtype=torch.long), single=True)
    buckets: list[_Rows] = []
    output_index = torch.empty(tokens, dtype=torch.long)
    offset = 0
    for spans in [*_calls([(0, 0, s, n) for s, n in self_spans]), *_calls(list(prefixed_spans))]:
        rows = _rows(spans)
        width = rows.query_index.shape[1]
        for b, (_, _, start, length) in enumerate(spans):
            output_index[start:start + length] = torch.arange(offset + b * width, offset + b * width + length)
        offset += rows.query_index.numel()
        buckets.append(_Rows(rows.query_index.to(device), rows.key_index.to(device),
                             None if rows.mask is None else rows.mask.to(device)))
    return _Layout(tuple(buckets), output_index.to(device))


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The attention of a packed row, in the signature of transformers' attention functions:
    query [1, heads, N, head_dim] and key/value [1, kv_heads, N, head_dim] in, [1, N, heads, head_dim] out."""
    layout = _LAYOUT.get()
    if layout is None:
        raise PackingUnsupported("packed attention called outside a packed forward")
    for name in ("sliding_window", "softcap", "s_aux", "sinks"):
        if kwargs.get(name) is not None:
            raise PackingUnsupported(f"the model's attention uses {name}, which packed scoring does not apply")
    if not getattr(module, "is_causal", True):
        raise PackingUnsupported(f"{type(module).__name__} attends both ways (packing applies causal attention)")
    if query.shape[0] != 1 or dropout:
        raise PackingUnsupported("packed attention takes one packed row and no dropout")
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves consecutive query heads
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    if layout.single:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
        return out.transpose(1, 2), None
    # Token-major [N, heads, head_dim]: the projections' own memory layout, where gathering whole tokens is
    # ~5x faster than along the token dimension of [heads, N, head_dim] (measured: 0.75 vs 3.96 ms a gather).
    q, k, v = (states[0].transpose(0, 1) for states in (query, key, value))

    def gather(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # [B, heads, L, head_dim]
        return states.index_select(0, index.flatten()).unflatten(0, index.shape).transpose(1, 2)

    outputs = []
    for rows in layout.buckets:
        out = F.scaled_dot_product_attention(gather(q, rows.query_index), gather(k, rows.key_index),
                                             gather(v, rows.key_index), attn_mask=rows.mask,
                                             is_causal=rows.mask is None, scale=scaling)
        outputs.append(out.transpose(1, 2).flatten(0, 1))  # [B * Lq, heads, head_dim]
    flat = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return flat.index_select(0, layout.output_index).unsqueeze(0), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """Packed attention builds its own masks; the model's 2D → 4D mask would be N × N."""
    return None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)
AttentionMaskInterface.register(PACKED_ATTENTION, _no_mask)


@contextmanager
def _packed(model: PreTrainedModel, layout: _Layout) -> Iterator[None]:
    """The model's attention is packed attention while this lasts: one forward at a time per model (the
    service's batcher runs them in one thread)."""
    config = model.config
    before = config._attn_implementation
    token = _LAYOUT.set(layout)
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
        _LAYOUT.reset(token)


def packing_problem(model: PreTrainedModel) -> str | None:
    """Why `model` cannot be scored packed, as far as its configuration tells (None: it can)."""
    text_config = model.config.get_text_config(decoder=True)
    if getattr(text_config, "sliding_window", None) or any(
            kind != "full_attention" for kind in (getattr(text_config, "layer_types", None) or [])):
        return "sliding-window or non-attention layers"
    if text_config is not model.config:
        return "a composite model (its attention reads a sub-configuration)"
    return None


@torch.inference_mode()
def packed_token_logits(model: PreTrainedModel, items: Sequence[tuple[Sequence[int], Sequence[int]]],
                        share_prompts: bool = True) -> list[torch.Tensor]:
    """The one-logit token classifier's logits at each item's response tokens, float32, one tensor per
    (prompt_ids, response_ids) item, from one forward of all items packed without padding.

    With `share_prompts`, items whose non-empty prompts are equal token for token have that prompt computed
    once. Values equal an unpacked forward of prompt + response to float rounding (the same sums in another
    order). Raises `PackingUnsupported` when the model's attention cannot be packed.
    """
    if not items:
        return []
    groups = shared_prompt_rows([prompt for prompt, _ in items]) if share_prompts else {}
    tokens: list[int] = []
    positions: list[int] = []
    self_spans: list[tuple[int, int]] = []
    prefixed_spans: list[tuple[int, int, int, int]] = []
    response_at: list[int] = [0] * len(items)  # where each item's response starts in the packed row
    for prompt, members in groups.items():
        prompt_start = len(tokens)
        tokens.extend(prompt)
        positions.extend(range(len(prompt)))
        self_spans.append((prompt_start, len(prompt)))
        for i in members:
            response = items[i][1]
            response_at[i] = len(tokens)
            if not len(response):
                continue
            prefixed_spans.append((prompt_start, len(prompt), len(tokens), len(response)))
            tokens.extend(response)
            positions.extend(range(len(prompt), len(prompt) + len(response)))
    grouped = {i for members in groups.values() for i in members}
    for i, (prompt, response) in enumerate(items):
        if i in grouped or not (len(prompt) + len(response)):
            continue
        start = len(tokens)
        tokens.extend(prompt)
        tokens.extend(response)
        positions.extend(range(len(prompt) + len(response)))
        self_spans.append((start, len(prompt) + len(response)))
        response_at[i] = start + len(prompt)
    if not tokens:
        return [torch.zeros(0) for _ in items]
    device = next(model.parameters()).device
    layout = _layout(self_spans, prefixed_spans, len(tokens), device)
    input_ids = torch.tensor([tokens], dtype=torch.long, device=device)
    position_ids = torch.tensor([positions], dtype=torch.long, device=device)
    with _packed(model, layout):
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    if logits.shape[-1] != 1:
        raise ValueError(f"expected a one-logit token classifier, got {logits.shape[-1]} logits per token")
    row = logits[0, :, 0].float()
    return [row[response_at[i]:response_at[i] + len(items[i][1])] for i in range(len(items))]
