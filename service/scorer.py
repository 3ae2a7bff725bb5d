"""The models behind the service: load through `tlcr.core.models`, run batched forwards, return numbers.

`TokenScorer.probabilities` gives D = sigmoid(logit) = P(token is positive) at each response token's own
position, for input prompt_ids + response_ids. Forwards go through `tlcr.core.scoring` (explicit position ids
from the attention mask, as in training), so a sequence's result does not depend on its batch companions
(tested to 1e-5 in fp32). These methods block: the batcher calls them in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tlcr.core.models import (
    DISCRIMINATOR_KIND,
    load_sequence_classifier,
    load_token_classifier,
    load_tokenizer,
)
from tlcr.core.scoring import pad_sequences, sequence_scores, token_probabilities

logger = logging.getLogger(__name__)

TokenIds = Sequence[int]


@dataclass(frozen=True)
class Encoded:
    """One item in the discriminator's vocabulary, ready for the model."""

    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def checkpoint_revision(name_or_path: str, config: Any) -> str | None:
    """The Hub commit when loaded from the Hub; for a local directory, a content fingerprint.

    The fingerprint hashes config.json and each weight file's size plus its first and last MiB: cheap
    for 7B checkpoints, and it changes when the weights are retrained.
    """
    commit = getattr(config, "_commit_hash", None)
    path = Path(name_or_path)
    if not path.is_dir():
        return commit
    digest = hashlib.sha256()
    config_file = path / "config.json"
    if config_file.exists():
        digest.update(config_file.read_bytes())
    chunk = 1 << 20
    for weights in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as f:
            digest.update(f.read(chunk))
            f.seek(max(0, size - chunk))
            digest.update(f.read(chunk))
    return "sha256:" + digest.hexdigest()[:16]


def _max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, override: int | None) -> int:
    if override is not None:
        return override
    meta = getattr(model.config, "tlcr", None)
    if isinstance(meta, dict) and isinstance(meta.get("max_length"), int):
        return int(meta["max_length"])
    limits = [getattr(model.config, "max_position_embeddings", None),
              getattr(model.config, "n_positions", None), tokenizer.model_max_length]
    usable = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    if not usable:
        raise ValueError("cannot tell the model's maximum length; pass --max-length")
    return min(usable)


class _Loaded:
    """What the token and sequence scorers share: tokenizer, model, device, name, revision."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                 revision: str | None, max_length: int | None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.max_length = _max_length(model, tokenizer, max_length)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)

    def encode(self, prompt: str, response: str) -> Encoded:
        from tlcr.core.models import encode_prompt_response

        prompt_ids, response_ids = encode_prompt_response(self.tokenizer, prompt, response)
        return Encoded(prompt_ids, response_ids)


class TokenScorer(_Loaded):
    """The token discriminator: D(token | prompt, response prefix) for every response token."""

    @classmethod
    def load(cls, model: str, *, device: str | None = None, dtype: str = "auto", max_length: int | None = None,
             name: str | None = None, revision: str | None = None) -> TokenScorer:
        tokenizer = load_tokenizer(model)
        loaded = load_token_classifier(model, device=device, dtype=dtype)
        meta = getattr(loaded.config, "tlcr", None)
        if loaded.config.num_labels != 1:
            raise ValueError(f"{model!r} has {loaded.config.num_labels} labels; a TLCR discriminator has one logit")
        if not (isinstance(meta, dict) and meta.get("kind") == DISCRIMINATOR_KIND):
            logger.warning("%s has no tlcr discriminator metadata in config.json; serving it anyway", model)
        return cls(loaded, tokenizer, name or model, revision or checkpoint_revision(model, loaded.config),
                   max_length)

    @torch.inference_mode()
    def probabilities(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        """P(positive) per response token, float32 numpy, one array per item in `batch`."""
        if not batch:
            return []
        input_ids, attention_mask = pad_sequences([e.prompt_ids + e.response_ids for e in batch], self.pad_id)
        probs = token_probabilities(self.model, input_ids, attention_mask).cpu().numpy()
        return [probs[row, len(e.prompt_ids): e.length].copy() for row, e in enumerate(batch)]

    def warm_up(self) -> None:
        self.probabilities([Encoded([self.pad_id], [self.pad_id])])


class SequenceScorer(_Loaded):
    """A one-label sequence reward model (the PPO_seq baseline): one scalar per (prompt, response)."""

    @classmethod
    def load(cls, model: str, *, device: str | None = None, dtype: str = "auto",
             max_length: int | None = None, name: str | None = None) -> SequenceScorer:
        tokenizer = load_tokenizer(model)
        loaded = load_sequence_classifier(model, device=device, dtype=dtype)
        if loaded.config.num_labels != 1:
            raise ValueError(f"{model!r} has {loaded.config.num_labels} labels; a sequence reward model has one")
        return cls(loaded, tokenizer, name or model, checkpoint_revision(model, loaded.config), max_length)

    @torch.inference_mode()
    def scores(self, batch: Sequence[Encoded]) -> list[float]:
        if not batch:
            return []
        # transformers pools at the last token that is not pad_token_id: a sequence that itself ends
        # with that id would be pooled too early in a padded batch, so it runs alone, unpadded.
        out: list[float | None] = [None] * len(batch)
        ends_with_pad = [(e.prompt_ids + e.response_ids)[-1] == self.pad_id for e in batch]
        padded_rows = [i for i, alone in enumerate(ends_with_pad) if not alone]
        alone_rows = [i for i, alone in enumerate(ends_with_pad) if alone]
        for rows in ([padded_rows] if padded_rows else []) + [[i] for i in alone_rows]:
            input_ids, attention_mask = pad_sequences([batch[i].prompt_ids + batch[i].response_ids for i in rows],
                                                      self.pad_id)
            scores = sequence_scores(self.model, input_ids, attention_mask).cpu().tolist()
            for i, value in zip(rows, scores, strict=True):
                out[i] = float(value)
        return [float(v) for v in out if v is not None]

    def warm_up(self) -> None:
        self.scores([Encoded([self.pad_id + 1 if self.pad_id + 1 < self.vocab_size else 0], [0])])


def describe(scorer: _Loaded) -> dict[str, Any]:
    """A loggable summary of what is served."""
    return {"model": scorer.name, "revision": scorer.revision, "device": str(scorer.device),
            "dtype": str(scorer.dtype).removeprefix("torch."), "max_length": scorer.max_length,
            "vocab_size": scorer.vocab_size, "tokenizer": scorer.tokenizer.name_or_path}
