"""Rollouts for PPO: sampling responses, policy / reference / value forwards, and fetching rewards.

A `Rollout` holds left-padded queries and right-padded responses. Forward passes return tensors over
response positions in the convention of `tlcr.trainer.ppo_math` (index t = the action that produced y_t).

Rewards come from a `RewardBackend`: `tlcr.service.client.TokenRewardClient` in production; anything with
the same two methods (a function, an in-process model) for tests and offline experiments.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from tlcr.core.reward_modes import PolicyRewardMode
from tlcr.core.scoring import pad_sequences, position_ids_from_attention_mask
from tlcr.core.tokenization import decode_with_offsets
from tlcr.service.schemas import SequenceRewardItem, TokenRewardItem, TokenRewardResult
from tlcr.trainer.ppo_math import mask_from_lengths, response_lengths

TokenInput = Literal["ids", "text"]


class RewardContractError(RuntimeError):
    """The reward backend answered with something that does not fit the request (e.g. a wrong count)."""


class RewardBackend(Protocol):
    """What PPO needs from a reward source; `tlcr.service.client.TokenRewardClient` is one."""

    def token_rewards(self, items: Sequence[TokenRewardItem], mode: str = "continuous",
                      threshold: float = 0.6) -> list[TokenRewardResult]: ...

    def sequence_rewards(self, items: Sequence[SequenceRewardItem]) -> list[float]: ...


@dataclass
class Rollout:
    """One batch of sampled responses. Queries are left-padded, responses right-padded."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    query_ids: torch.Tensor  # [B, P]
    query_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B] actions per response (EOS included when present)
    ended: torch.Tensor  # [B] True when the response ended with EOS (False: truncated at the limit)
    mask: torch.Tensor  # [B, T] True on actions

    @property
    def context_length(self) -> int:
        return self.query_ids.shape[1]

    def text_token_ids(self) -> list[list[int]]:
        """Each response's tokens without its final EOS: what the reward model scores as text."""
        ids = self.response_ids.tolist()
        keep = (self.lengths - self.ended.long()).tolist()
        return [row[:n] for row, n in zip(ids, keep, strict=True)]

    def select(self, rows: torch.Tensor) -> Rollout:
        """The rollout restricted to `rows`, trimmed of columns that are padding in every kept row."""
        lengths = self.lengths[rows]
        width = max(int(lengths.max()), 1) if len(rows) else 1
        query_mask = self.query_mask[rows]
        first_real = int((query_mask.cumsum(1) == 0).sum(1).min()) if len(rows) else 0
        idx = rows.tolist()
        return Rollout(
            prompts=[self.prompts[i] for i in idx], prompt_ids=[self.prompt_ids[i] for i in idx],
            query_ids=self.query_ids[rows, first_real:], query_mask=query_mask[:, first_real:],
            response_ids=self.response_ids[rows, :width], lengths=lengths, ended=self.ended[rows],
            mask=self.mask[rows, :width])

    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids) of query + response, positions counted over real tokens."""
        input_ids = torch.cat([self.query_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.query_mask, self.mask.long()], dim=1)
        return input_ids, attention_mask, position_ids_from_attention_mask(attention_mask)


def sampling_config(tokenizer: PreTrainedTokenizerBase, *, max_new_tokens: int, temperature: float,
                    top_p: float, top_k: int = 0) -> GenerationConfig:
    eos = tokenizer.eos_token_id
    return GenerationConfig(do_sample=True, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                            bos_token_id=tokenizer.bos_token_id)


@torch.no_grad()
def generate_rollout(policy: PreTrainedModel, prompts: Sequence[str], prompt_ids: Sequence[Sequence[int]],
                     generation_config: GenerationConfig, *, pad_token_id: int, eos_token_ids: int | list[int],
                     batch_size: int | None = None) -> Rollout:
    """Sample one response per prompt (in chunks of `batch_size`) and record where each one ends."""
    device = next(policy.parameters()).device
    query_ids, query_mask = pad_sequences(prompt_ids, pad_token_id, padding_side="left")
    chunks = []
    step = batch_size or len(prompts)
    for start in range(0, len(prompts), step):
        ids = query_ids[start:start + step].to(device)
        attn = query_mask[start:start + step].to(device)
        out = policy.generate(input_ids=ids, attention_mask=attn, generation_config=generation_config)
        chunks.append(out[:, ids.shape[1]:].cpu())
    width = max(max(c.shape[1] for c in chunks), 1)
    response_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    row = 0
    for chunk in chunks:
        response_ids[row:row + chunk.shape[0], :chunk.shape[1]] = chunk
        row += chunk.shape[0]
    lengths, ended = response_lengths(response_ids, eos_token_ids)
    # A chunk that stopped early is padded with pad ids; they are after EOS, so lengths are unaffected.
    return Rollout(prompts=list(prompts), prompt_ids=[list(p) for p in prompt_ids], query_ids=query_ids,
                   query_mask=query_mask, response_ids=response_ids, lengths=lengths, ended=ended,
                   mask=mask_from_lengths(lengths, width))


@dataclass
class ForwardOutputs:
    logprobs: torch.Tensor  # [B, T] log π(y_t | ·), temperature applied
    entropy: torch.Tensor | None  # [B, T]
    values: torch.Tensor | None  # [B, T] V(state before y_t)
    bootstrap_values: torch.Tensor | None  # [B] V(state after the last action)


def response_logits(logits: torch.Tensor, context_length: int, response_width: int) -> torch.Tensor:
    """Logits that predict response tokens 0..T-1: those at positions P-1 .. P+T-2."""
    return logits[:, context_length - 1:context_length - 1 + response_width]


def response_values(value_logits: torch.Tensor, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(V before each action [B, T], V after the last action [B]) from a one-output token head [B, P+T]."""
    context, width = rollout.context_length, rollout.response_ids.shape[1]
    values = value_logits[:, context - 1:context - 1 + width]
    rows = torch.arange(value_logits.shape[0], device=value_logits.device)
    after_last = value_logits[rows, context - 1 + rollout.lengths.to(value_logits.device)]
    return values, after_last


def logprobs_from_logits(logits: torch.Tensor, rollout: Rollout, temperature: float) -> torch.Tensor:
    selected = response_logits(logits, rollout.context_length, rollout.response_ids.shape[1])
    return selective_log_softmax(selected.float() / temperature, rollout.response_ids.to(logits.device))


@torch.no_grad()
def forward_rollout(model: torch.nn.Module, rollout: Rollout, *, temperature: float, batch_size: int,
                    with_values: bool, with_entropy: bool) -> ForwardOutputs:
    """Log-probs (and values, entropy) of a rollout's actions, in chunks of `batch_size` rows.

    `model` returns either a causal-LM output (`.logits`) or a (policy logits, value logits) pair.
    """
    device = next(model.parameters()).device
    width = rollout.response_ids.shape[1]
    batch = rollout.response_ids.shape[0]
    logprobs = torch.zeros(batch, width)
    entropy = torch.zeros(batch, width) if with_entropy else None
    values = torch.zeros(batch, width) if with_values else None
    bootstrap = torch.zeros(batch) if with_values else None
    for start in range(0, batch, batch_size):
        rows = torch.arange(start, min(start + batch_size, batch))
        part = rollout.select(rows)
        input_ids, attention_mask, position_ids = (t.to(device) for t in part.model_inputs())
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        logits, value_logits = out if isinstance(out, tuple) else (out.logits, None)
        w = part.response_ids.shape[1]
        logprobs[rows, :w] = logprobs_from_logits(logits, part, temperature).cpu()
        if entropy is not None:
            selected = response_logits(logits, part.context_length, w).float() / temperature
            entropy[rows, :w] = entropy_from_logits(selected).cpu()
        if values is not None and bootstrap is not None:
            if value_logits is None:
                raise TypeError("with_values=True needs a model that returns (policy logits, value logits)")
            part_values, part_bootstrap = response_values(value_logits.float(), part)
            values[rows, :w] = part_values.cpu()
            bootstrap[rows] = part_bootstrap.cpu()
    mask = rollout.mask.float()
    return ForwardOutputs(logprobs=logprobs * mask, entropy=None if entropy is None else entropy * mask,
                          values=None if values is None else values * mask, bootstrap_values=bootstrap)


@dataclass
class FetchedRewards:
    dense: torch.Tensor | None  # [B, T] per-action rewards (token modes)
    scores: torch.Tensor | None  # [B] sequence scores (seq mode)
    latency_s: float  # seconds spent building the request and waiting for the answer
    cut_short: int  # responses that got fewer rewards than tokens (the service's length limit)


def fetch_rewards(backend: RewardBackend, tokenizer: PreTrainedTokenizerBase, *, prompts: Sequence[str],
                  prompt_ids: Sequence[Sequence[int]], text_token_ids: Sequence[Sequence[int]], width: int,
                  reward_mode: str, token_input: TokenInput, threshold: float) -> FetchedRewards:
    """One batched call to the reward backend for a rollout; rewards placed on the actions that made them.

    `text_token_ids` are the generated tokens without the final EOS (`Rollout.text_token_ids`): the EOS
    action has no text and the discriminator never saw an EOS in training, so its dense reward is 0, and
    every other generated token gets exactly one reward (with text input, re-aligned to the policy's
    tokens from `prompt_ids`-aware character offsets). Responses with no text (EOS straight away) are not
    sent; they get no dense reward and a score of 0.
    """
    service_mode = PolicyRewardMode.parse(reward_mode).service_mode
    started = time.perf_counter()
    batch = len(prompts)
    sent = [i for i in range(batch) if text_token_ids[i]]
    texts_and_spans = {}
    if token_input == "text" or service_mode is None:
        texts_and_spans = {i: decode_with_offsets(tokenizer, text_token_ids[i], prompt_ids[i]) for i in sent}
        sent = [i for i in sent if texts_and_spans[i][0]]
    if service_mode is None:
        scores = torch.zeros(batch)
        if sent:
            items = [SequenceRewardItem(prompt=prompts[i], response=texts_and_spans[i][0]) for i in sent]
            answer = backend.sequence_rewards(items)
            if len(answer) != len(items):
                raise RewardContractError(f"sent {len(items)} items to /sequence_rewards, got {len(answer)} rewards")
            scores[sent] = torch.tensor(answer, dtype=torch.float32)
        return FetchedRewards(None, scores, time.perf_counter() - started, 0)
    dense = torch.zeros(batch, width)
    cut_short = 0
    if sent:
        if token_input == "ids":
            token_items = [TokenRewardItem(prompt_token_ids=list(prompt_ids[i]),
                                           response_token_ids=list(text_token_ids[i])) for i in sent]
        else:
            token_items = [TokenRewardItem(prompt=prompts[i], response=texts_and_spans[i][0],
                                           response_offsets=texts_and_spans[i][1]) for i in sent]
        results = backend.token_rewards(token_items, mode=service_mode, threshold=threshold)
        if len(results) != len(token_items):
            raise RewardContractError(f"sent {len(token_items)} items to /token_rewards, got {len(results)} results")
        for i, result in zip(sent, results, strict=True):
            n_tokens = len(text_token_ids[i])
            if len(result.rewards) > n_tokens:
                raise RewardContractError(f"item {i}: {len(result.rewards)} rewards for {n_tokens} response tokens")
            if len(result.rewards) < n_tokens:
                cut_short += 1  # the service scores only what fits its max_length; the rest get 0
            dense[i, :len(result.rewards)] = torch.tensor(result.rewards, dtype=torch.float32)
    return FetchedRewards(dense, None, time.perf_counter() - started, cut_short)
